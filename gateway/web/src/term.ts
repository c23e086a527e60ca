// Terminal view #/s/<id>: xterm.js attached to one session over the shared socket. First
// subscription without `from` (snapshot frame, then live output); after a reconnect it resumes
// with `from: next`, so output is neither duplicated nor missing. Lags are written into the
// terminal as a visible yellow line. Input goes out as binary INPUT frames; size follows the
// element (fit addon) with a debounced `resize`. Flow control: acks as xterm digests output.
// This file is the view's core (attach, frames, input); its other parts are their own files,
// each given only what it needs of the view: the header and its actions (`termhead.ts`), the
// ask bar (`askbar.ts`), sizing and panning (`termsize.ts`), touch scrolling (`termtouch.ts`),
// the key bar (`keybar.ts`), keys kept while offline (`unsent.ts`), a pipe session's line
// discipline (`pipeline.ts`), and its colours and WebGL renderer (`renderer.ts`).
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { AskBar } from './askbar';
import { type Conn, type ConnState, FLOW_WINDOW, RequestError } from './conn';
import { debounce, h, toast } from './dom';
import { EventsPanel } from './events';
import { formatExit, isAlive } from './format';
import { KeyBar } from './keybar';
import { AgentLines } from './agentlines';
import { PipeLine } from './pipeline';
import { Renderer, THEME } from './renderer';
import { overScrollback } from './redraw';
import { findSession, type SessionStore } from './sessions';
import { TermHead } from './termhead';
import { TermSize } from './termsize';
import { touchScroll } from './termtouch';
import {
  type BinFrame,
  KIND_OUTPUT,
  KIND_SNAPSHOT,
  type ServerMsg,
  type SessionEvent,
  type SessionInfo,
  type Whoami,
} from './types';
import { Unsent } from './unsent';

/** Ack once this much output was digested beyond the last ack (a quarter of the window). */
const ACK_STEP = FLOW_WINDOW / 4;
/** Pipe sessions have no screen to snapshot: show up to this much of their recent output. */
const PIPE_BACKLOG = 256 * 1024;

/** What a new process starts from (the server's screen: `NEW_PROCESS_MODES`), after `?47l`:
 * it leaves the alternate screen if the last process was on it and does nothing otherwise
 * (`?1049l` on the primary screen restores the cursor: the new output went over the old;
 * whether xterm is on the alternate screen cannot be asked here, its writes are queued).
 * Then no window title (OSC 0 with none): the last process's stayed in the tab's title. It is
 * cleared in the output's order, so a title the old process set just before it ended does not
 * come back over it, and one the new process sets is kept. */
const NEW_PROCESS_MODES =
  '\x1b[?47l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?1015l\x1b[?1004l' +
  '\x1b[?2004l\x1b[?1l\x1b>\x1b[?7h\x1b[?25h' +
  '\x1b[4l\x1b(B\x0f\x1b[0 q\x1b[>4m\x1b[<u' +
  '\x1b7\x1b[r\x1b8' +
  '\x1b[0m' +
  '\x1b]0;\x07';

/** The line that says a process ended (`how`: `exit 3`, `signal 1`), drawn in the output. */
function endedLine(how: string): string {
  return `\x1b[0;2m— process ended: ${how} —\x1b[0m\r\n`;
}

type Queued = { f: BinFrame } | { m: ServerMsg };

export class TermView {
  readonly el: HTMLElement;
  readonly term: Terminal;
  private readonly fit = new FitAddon();
  private readonly box: HTMLElement;
  private readonly body: HTMLElement;
  private readonly overlay: HTMLElement;
  private readonly head: TermHead;
  private readonly ask: AskBar;
  /** Its size: fitted, following a larger session's, panned (see `TermSize`). */
  private readonly sizing: TermSize;
  /** The key bar (writable views only). */
  private readonly keys: KeyBar | null;
  /** Keys typed while the connection was down (see `Unsent`). */
  private readonly unsent: Unsent;
  /** The line being typed into a session on pipes (see `cooked`). */
  private readonly pipeLine: PipeLine;
  /** A structured agent's output lines, shown as a person reads them (null: the output as it is). */
  private agentLines: AgentLines | null = null;
  private readonly events: EventsPanel;
  private readonly offs: (() => void)[] = [];
  private readonly admin: boolean;
  private readonly writable: boolean;
  /** Its WebGL renderer, released by `unmount` with the terminal (see `Renderer`). */
  private readonly renderer: Renderer;
  /** The font size this view draws at when it has the session's size. */
  private readonly baseFont: number;
  /** Snapshots still to ask for when one comes older than what was shown (see `redrawAtSize`). */
  private redrawTries = 0;

  /** The session's uuid once known (the route may name it by name). */
  uuid: string | null = null;
  private channel = 0;
  /** Offset of the next byte expected from the server (received so far). */
  next: number | null = null;
  /** The last event seq this view received (or the one before its first subscription's live
   *  events): a resubscription at `next` asks for the events after it, so a process's exit or
   *  start that came while the page was away is drawn where it happened in the output. */
  private lastEvent: number | null = null;
  /** Offset up to which output has been parsed into the terminal buffer. */
  written = 0;
  /** Gaps shown to the user, [from, to) each. */
  readonly lags: [number, number][] = [];
  /** Set while re-attaching after a lag (where the skip starts): the next snapshot is drawn
   * over the scrollback, with a note of the bytes up to it. */
  private redrawFrom: number | null = null;
  /** The skip the last lag toast says, while it is on screen (a flood laps a view again and
   * again: one toast says them all). */
  private lagToast: { from: number; el: HTMLElement } | null = null;
  /** Whether the last byte handed to xterm ended a line (for placing lag notices). */
  private atLineStart = true;
  /** A fresh view of a session that had ended: how it ended, said under what the view shows
   * once the output up to `at` is drawn (see `sayEnded`); `due` once that is on its way. */
  private ended: { how: string; at: number; due?: boolean } | null = null;
  private acked = 0;
  private subscribing = false;
  private queue: Queued[] = [];
  private gone = false;
  private disposed = false;
  /** When typing into an ended session was last refused with a toast. */
  private toldStopped = 0;
  private tick: ReturnType<typeof setInterval> | undefined;
  private refreshInfo = debounce(() => void this.loadInfo(), 300);

  constructor(
    private readonly conn: Conn,
    private readonly store: SessionStore,
    who: Whoami,
    readonly route: string,
  ) {
    this.admin = who.scope === 'admin';
    this.writable = who.scope !== 'read';
    const phone = window.matchMedia('(max-width: 640px)').matches;
    this.baseFont = phone ? 12 : 14;
    this.term = new Terminal({
      fontFamily:
        'ui-monospace, "SF Mono", "Cascadia Mono", "JetBrains Mono", Menlo, "DejaVu Sans Mono", Consolas, monospace',
      fontSize: this.baseFont,
      lineHeight: 1.1,
      theme: THEME,
      scrollback: 10000,
      cursorBlink: this.writable,
      disableStdin: !this.writable,
      allowProposedApi: false,
    });
    this.term.loadAddon(this.fit);

    this.box = h('div', { class: 'term', testid: 'terminal' });
    this.renderer = new Renderer(this.term, this.box);
    this.overlay = h('div', { class: 'overlay', testid: 'term-overlay', hidden: true });
    this.sizing = new TermSize(this.term, this.box, this.fit, conn, store, {
      route,
      writable: this.writable,
      baseFont: this.baseFont,
      uuid: () => this.uuid,
      redraw: () => this.redrawAtSize(),
    });
    this.events = new EventsPanel(
      conn,
      () => this.uuid,
      () => this.head.toggleEvents(false),
    );
    this.ask = new AskBar(
      () => this.uuid,
      () => this.sizing.fitNow(),
      this.writable,
    );
    this.head = new TermHead(conn, store, this.events, this.ask, this.sizing, {
      route,
      admin: this.admin,
      writable: this.writable,
      uuid: () => this.uuid,
      gone: () => this.gone,
      removed: () => void (this.gone = true),
      focus: () => this.term.focus(),
    });
    this.keys = this.writable ? new KeyBar(this.term, (d) => this.input(d)) : null;
    this.unsent = new Unsent(conn, () => this.flashOverlay());
    this.pipeLine = new PipeLine(this.term);
    const { panCues, takeSize } = this.sizing;
    this.body = h(
      'div',
      { class: 'term-body' },
      h('div', { class: 'term-wrap' }, this.box, panCues.left, panCues.right, this.overlay, takeSize),
      this.events.el,
    );
    this.el = h(
      'main',
      { class: `view term-view${this.writable ? '' : ' read-only'}` },
      this.head.el,
      this.ask.el,
      this.body,
      this.keys?.el ?? null,
    );
  }

  mount(parent: HTMLElement): void {
    parent.appendChild(this.el);
    this.term.open(this.box);
    this.renderer.load();
    touchScroll(this.box, this.term, {
      pans: this.sizing.pans,
      writable: this.writable,
      input: (keys) => this.input(keys),
      touch: (down) => this.sizing.touch(down),
    });
    this.term.onData((d) => this.input(this.keys ? this.keys.typed(d) : d));
    this.term.onBinary((d) => {
      const b = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 0xff;
      this.input(b);
    });
    this.term.onTitleChange((t) => this.head.setProgramTitle(t));
    // Follows the cursor when it pans, asks for the size it fits, and fits it as it changes.
    this.sizing.mount();
    this.offs.push(
      this.conn.onOpen(() => void this.attach()),
      this.conn.onFrame((f) => this.onFrame(f)),
      this.conn.onMessage((m) => this.onMessage(m)),
      this.conn.onState((s) => this.showConn(s)),
      this.store.onChange(() => this.head.renderInfo()),
    );
    this.tick = setInterval(() => this.head.renderUptime(), 1000);
    this.showConn(this.conn.state);
    if (this.conn.isOpen()) void this.attach();
    this.term.focus();
  }

  /** Leaves the session and releases everything the view holds: nothing of it may outlive it
   * (the page opens view after view for hours, and each holds up to 10 000 rows and a WebGL
   * context). */
  unmount(): void {
    this.disposed = true;
    this.sizing.dispose();
    for (const off of this.offs.splice(0)) off();
    clearInterval(this.tick);
    this.refreshInfo.cancel();
    this.store.setViewTitle(null);
    // A subscribe still on its way is ended when its answer comes (see `attach`); a session
    // gone has nothing left to end.
    if (this.uuid && !this.subscribing) {
      if (this.gone) this.conn.release(this.uuid, this);
      else this.conn.unsubscribe(this.uuid, this);
    }
    this.queue = [];
    this.unsent.clear();
    this.renderer.disposeTerminal(this.fit);
    this.el.remove();
  }

  /** The terminal's size and font now (for tests). */
  size(): { rows: number; cols: number; font: number } {
    return { rows: this.term.rows, cols: this.term.cols, font: this.term.options.fontSize ?? this.baseFont };
  }

  /** Lines the view is scrolled back from the bottom of its scrollback (for tests). */
  scrolledBack(): number {
    const buf = this.term.buffer.active;
    return buf.baseY - buf.viewportY;
  }

  /** The terminal buffer as text: logical lines (wrapped rows joined), trailing spaces trimmed. */
  text(): string {
    const buf = this.term.buffer.active;
    const lines: string[] = [];
    let cur = '';
    for (let i = 0; i < buf.length; i++) {
      const line = buf.getLine(i);
      if (!line) continue;
      const nextWrapped = i + 1 < buf.length && !!buf.getLine(i + 1)?.isWrapped;
      cur += line.translateToString(!nextWrapped);
      if (!nextWrapped) {
        lines.push(cur.replace(/ +$/, ''));
        cur = '';
      }
    }
    while (lines.length && lines[lines.length - 1] === '') lines.pop();
    return lines.join('\n');
  }

  /** Resolves once xterm has parsed everything written so far. */
  flushed(): Promise<void> {
    return new Promise((resolve) => this.term.write('', () => resolve()));
  }

  // ---- attaching ---------------------------------------------------------------------------

  private async loadInfo(): Promise<SessionInfo | null> {
    if (this.admin && this.store.loaded) {
      const s = this.store.get(this.uuid ?? this.route);
      if (s) return s;
    }
    const r = await this.conn.request({ type: 'list' });
    const list = (r.sessions ?? []) as SessionInfo[];
    const key = this.uuid ?? this.route;
    const s = findSession(list, key) ?? null;
    if (s) this.store.upsert(s);
    return s;
  }

  /** Subscribes (again): from the next byte this view needs, or from the screen. `resize`:
   * this view's size is sent first (not when it re-attaches to redraw after a lag). */
  private async attach(resize = true): Promise<void> {
    if (this.gone || this.disposed || this.subscribing) return;
    this.subscribing = true;
    this.queue = [];
    this.channel = 0;
    this.ended = null;
    try {
      const info = await this.loadInfo();
      // Left meanwhile: nothing subscribed yet, nothing to.
      if (this.disposed) return;
      if (!info) {
        this.showGone('No such session', true);
        return;
      }
      this.uuid = info.id;
      this.term.options.convertEol = info.mode !== 'pty';
      this.agentLines = info.mode === 'stream_json' ? (this.agentLines ?? new AgentLines()) : null;
      this.head.renderInfo();
      if (!this.writable) this.sizing.followSize(info.size);
      else if (this.uuid && resize) {
        // Size first, so the snapshot is drawn at the size this view shows.
        this.sizing.fitNow();
        this.conn
          .request({ type: 'resize', session: this.uuid, rows: this.term.rows, cols: this.term.cols })
          .catch(() => {});
      }
      const op: Record<string, unknown> = { type: 'subscribe', session: info.id };
      if (this.next != null) {
        op.from = this.next;
        if (this.lastEvent != null) op.after = this.lastEvent;
      }
      else if (info.mode !== 'pty') op.from = Math.max(0, (info.output_offset ?? 0) - PIPE_BACKLOG);
      // A fresh view gets the rows that scrolled off the screen too, to scroll back through
      // (not a redraw after a lag, which keeps this view's own scrollback).
      else if (this.redrawFrom == null) {
        op.history = true;
        // Into this terminal, whose height the session may not have taken yet: rows the
        // server scrolled for a shorter one were erased here instead.
        op.rows = this.term.rows;
      }
      this.conn.claim(info.id, this);
      let r: ServerMsg;
      try {
        r = await this.conn.request(op);
      } catch (e) {
        this.conn.release(info.id, this);
        throw e;
      }
      if (this.disposed) {
        // Left while the subscribe was on its way: `unmount` had no subscription to end, so
        // it is ended now (unless a later view of the session subscribed meanwhile, which
        // replaced it), and whatever came for it is dropped.
        this.conn.unsubscribe(info.id, this);
        return;
      }
      this.channel = r.channel;
      // A fresh screen (no resume point) is the session as it is now: events from here on.
      if (op.after == null && typeof r.last_event === 'number') this.lastEvent = r.last_event;
      const start = Number(r.offset ?? 0);
      if (this.next == null) {
        this.next = start;
        this.agentLines?.restart(start);
      } else if (start > this.next) {
        this.lagNotice(this.next, start);
      }
      this.acked = start;
      this.unsent.flush(this.channel);
      // A fresh view of a session that had ended gets no events from before it: how it ended
      // is said under its screen (or its output, on pipes: none may come), as a live view
      // said it when it happened.
      const state = typeof r.state === 'string' ? r.state : info.state;
      if (op.after == null && !isAlive(state) && info.last_exit) {
        this.ended = { how: formatExit(info.last_exit), at: Math.max(start, info.output_offset ?? 0) };
        if (info.mode !== 'pty') this.sayEnded();
      }
      if (typeof r.state === 'string' && this.uuid) {
        const st = r.state;
        this.store.patch(this.uuid, (s) => void (s.state = st));
      }
      if (r.approximate) {
        // Said, not only marked: the screen drawn may lack what a flood took away.
        this.box.dataset.approximate = 'true';
        toast("this screen may be incomplete: output was lost before the server drew it (exact after the program's next full redraw)");
      }
      this.events.resync();
    } catch (e) {
      if (this.disposed) return;
      const err = e as RequestError;
      if (err.code === 'not_found') this.showGone('No such session', true);
      else if (err.code === 'forbidden') this.showGone('This token may not view that session', false);
      else if (err.code === 'disconnected') return; // the next `open` attaches again
      else if (this.next != null && /beyond|head/i.test(err.message)) {
        // The server no longer has our resume point (its log was cut back): start over from
        // the current screen rather than stall.
        toast('the server no longer has this output position; showing the current screen', 'error');
        this.next = null;
        setTimeout(() => void this.attach(), 0);
      } else {
        toast(`cannot attach: ${err.message}; retrying`, 'error');
        setTimeout(() => void (this.conn.isOpen() && this.attach()), 3000);
      }
      return;
    } finally {
      this.subscribing = false;
      const q = this.disposed ? [] : this.queue;
      this.queue = [];
      for (const item of q) {
        if ('f' in item) this.onFrame(item.f);
        else this.onMessage(item.m);
      }
    }
  }

  // ---- server → terminal -------------------------------------------------------------------

  private onFrame(f: BinFrame): void {
    if (this.gone) return;
    if (f.channel !== this.channel || !this.channel) {
      if (this.subscribing) this.queue.push({ f });
      return;
    }
    if (f.kind === KIND_SNAPSHOT) {
      if (this.next != null && f.offset < this.next) {
        // Older than what this view has shown already (output went on meanwhile): asked
        // again, a few times, rather than drawn and the output after it lost.
        if (this.redrawTries > 0 && this.uuid) {
          this.redrawTries--;
          this.conn.send({ type: 'snapshot', session: this.uuid, history: true, rows: this.term.rows });
        }
        return;
      }
      this.next = f.offset;
      const from = this.redrawFrom;
      this.redrawFrom = null;
      const over = from == null ? null : this.redrawNote(from, f.offset);
      this.write(over == null ? f.payload : overScrollback(f.payload, this.term.rows, over), f.offset);
      this.sayEnded();
      return;
    }
    if (f.kind !== KIND_OUTPUT) return;
    const next = this.next ?? f.offset;
    let payload = f.payload;
    let offset = f.offset;
    if (offset < next) {
      // Already have these bytes (never expected; guards exactness).
      const skip = next - offset;
      if (skip >= payload.length) return;
      payload = payload.subarray(skip);
      offset = next;
    } else if (offset > next) {
      // A gap not announced by `lagged`: still never silent.
      this.lagNotice(next, offset);
    }
    this.next = offset + payload.length;
    this.write(this.agentLines ? this.agentLines.feed(payload) : payload, this.next);
    this.sayEnded();
  }

  private onMessage(m: ServerMsg): void {
    if (this.gone) return;
    const mine = typeof m.channel === 'number' && m.channel === this.channel && this.channel !== 0;
    if (typeof m.channel === 'number' && !mine) {
      if (this.subscribing) this.queue.push({ m });
      return;
    }
    switch (m.type) {
      case 'lagged': {
        if (!mine) return;
        const from = Number(m.from);
        const to = Number(m.to);
        if (this.next != null && to <= this.next) return; // already shown
        const s = this.uuid ? this.store.map.get(this.uuid) : undefined;
        if (s?.mode === 'pty') this.redrawAfterLag(from);
        else this.lagNotice(from, to);
        break;
      }
      case 'event':
        if (mine) this.onEvent(m.event as SessionEvent);
        break;
      case 'closed':
        if (mine) this.showGone('Session removed', true);
        break;
      case 'events_lagged':
        if (m.session === this.uuid) this.events.resync();
        break;
    }
  }

  private onEvent(ev: SessionEvent): void {
    if (typeof ev.seq === 'number') this.lastEvent = Math.max(this.lastEvent ?? 0, ev.seq);
    this.events.push(ev);
    if (!this.uuid) return;
    const k = ev.kind ?? { kind: '' };
    // A new process of the session (a restart) starts from plain modes, not from what the last
    // one left (its alternate screen, mouse reporting, hidden cursor): the server's screen does
    // the same, and the event comes between the two processes' output.
    if (k.kind === 'spawned' && this.next != null) this.write(NEW_PROCESS_MODES, this.next);
    // Where a process ended, in the output (the next one's output would run on from it).
    if (k.kind === 'exited' && this.next != null) {
      const nl = this.atLineStart ? '' : '\r\n';
      this.write(`${nl}${endedLine(formatExit(k.status as SessionInfo['last_exit']))}`, this.next);
    }
    // The session goes on live from here: an end said for the screen it had is out of date.
    if (k.kind === 'spawned' || k.kind === 'exited') this.ended = null;
    if (!this.admin) {
      // Without the admin watch, keep this session's info current from its own events.
      this.store.patch(this.uuid, (s) => {
        if (k.kind === 'state' && typeof k.state === 'string') {
          s.state = k.state;
          s.reason = (k.reason as string | null) ?? null;
        } else if (k.kind === 'exited') s.last_exit = k.status as SessionInfo['last_exit'];
        else if (k.kind === 'spawned') {
          s.pid = k.pid as number;
          s.started_at = ev.time;
        }
      });
      if (k.kind === 'hook' || k.kind === 'state') this.refreshInfo();
    }
  }

  /** Writes output; `end` is the offset after it, counted as digested when xterm parsed it. */
  private write(data: Uint8Array | string, end: number): void {
    const channel = this.channel;
    if (data.length) {
      const last = typeof data === 'string' ? data.charCodeAt(data.length - 1) : data[data.length - 1];
      this.atLineStart = last === 10;
    }
    this.term.write(data, () => {
      if (end > this.written) this.written = end;
      if (channel === this.channel && this.written - this.acked >= ACK_STEP && this.uuid) {
        if (this.conn.send({ type: 'ack', session: this.uuid, offset: this.written })) {
          this.acked = this.written;
        }
      }
    });
  }

  /** Says how the session ended (see `ended`) once its output up to there is drawn: on the
   * cursor's row if it is blank, else on the next (the screen drawn ends with a cursor move,
   * not with the end of a line: only xterm can tell where it is), unless more came meanwhile. */
  private sayEnded(): void {
    const end = this.ended;
    if (!end || end.due || this.next == null || this.next < end.at) return;
    end.due = true;
    const at = this.next;
    this.term.write('', () => {
      if (this.ended !== end || this.next !== at) return;
      this.ended = null;
      const buf = this.term.buffer.active;
      const row = buf.getLine(buf.baseY + buf.cursorY)?.translateToString(true) ?? '';
      const nl = buf.cursorX === 0 && !row.trim() ? '' : '\r\n';
      this.write(`${nl}${endedLine(end.how)}`, at);
    });
  }

  /** A terminal the output lapped (this tab could not keep up): the skipped bytes may have
   * set modes and colours (an alternate screen, a background) that the rest of the output
   * assumes, so the screen is drawn again as it is now — attached afresh, from the server's
   * snapshot (see `redrawNote`). */
  private redrawAfterLag(from: number): void {
    if (this.uuid) this.conn.unsubscribe(this.uuid, this);
    this.channel = 0;
    this.next = null;
    // Drawn over what this view shows, which stays in its scrollback with the note (a fresh
    // attach's full reset wipes the scrollback); and this view's size is not sent again (a
    // phone that lagged took the session's size from the desktop that was typing).
    this.redrawFrom = from;
    void this.attach(false);
  }

  /** The note over a redraw after a lag, and its toast (the log keeps the bytes): what this
   * view misses is everything from where the skip started up to the snapshot (`to`), not only
   * what the server's `lagged` named — the output went on while it re-attached. */
  private redrawNote(from: number, to: number): string {
    this.lags.push([from, to]);
    // Lapped again while the last toast is up: that toast says the whole skip, counted.
    const first = this.lagToast?.el.isConnected ? this.lagToast.from : from;
    const said = `output skipped: bytes ${first}..${to} (this view was too slow); the screen is redrawn`;
    const el = toast(said, 'info', 5000, undefined, 'lag');
    this.lagToast = { from: first, el };
    return `\x1b[0;30;43m— output skipped: bytes ${from}..${to} (viewer too slow); the screen is redrawn —\x1b[0m`;
  }

  /** Attaches afresh (the server's snapshot of the screen, then live output) without sending
   * this view's size: after this view took the session's size, its old content was drawn at
   * another width (a 164-column screen written into 52 columns is torn, and stays so until the
   * program redraws). */
  private redrawAtSize(): void {
    if (!this.uuid || !this.channel || this.subscribing) return;
    // On the same subscription (unsubscribing would tell the server this viewer left, and its
    // size with it): the screen as the server has it now, then the output after it.
    this.redrawTries = 3;
    // Its scrollback, written at the other width, goes with the full reset: the server's
    // history comes back in its place.
    this.conn.send({ type: 'snapshot', session: this.uuid, history: true, rows: this.term.rows });
  }

  private lagNotice(from: number, to: number): void {
    this.lags.push([from, to]);
    this.next = Math.max(this.next ?? 0, to);
    this.agentLines?.restart(this.next);
    const nl = this.atLineStart ? '' : '\r\n';
    this.write(
      `${nl}\x1b[0;30;43m— output skipped: bytes ${from}..${to} (viewer too slow) —\x1b[0m\r\n`,
      to,
    );
  }

  // ---- terminal → server -------------------------------------------------------------------

  private input(data: string | Uint8Array): void {
    if (!this.writable || this.gone) return;
    const s = this.uuid ? this.store.map.get(this.uuid) : undefined;
    if (s && !isAlive(s.state)) {
      // Nothing runs to take it: say so (once in a while), instead of dropping it quietly.
      const now = Date.now();
      if (now - this.toldStopped > 3000) {
        this.toldStopped = now;
        // Only an admin has a restart button: a write token's user is not told to use one.
        const restart = this.admin ? ' (restart it to type)' : '';
        toast(`${s.name} is ${s.state}: nothing was typed${restart}`, 'error', 3000);
      }
      return;
    }
    if (s && s.mode !== 'pty' && typeof data === 'string') {
      if (this.channel) this.cooked(data, s.mode);
      else this.flashOverlay();
      return;
    }
    // Not attached (reconnecting), keys already waiting, or the socket gone: kept, in order.
    if (!this.channel || this.unsent.waiting || !this.conn.sendInput(this.channel, data)) this.unsent.keep(data);
  }

  /**
   * A session on pipes has no terminal line discipline: the page does what one would (echo,
   * line editing, Enter as a newline), and sends a line at a time — raw with its newline to a
   * pipe program, as a prompt (one user message) to a structured agent, whose input must be
   * JSON lines. Escape sequences (arrows, function keys) and other control keys mean nothing
   * on a pipe and are ignored.
   */
  private cooked(data: string, mode: string): void {
    const lines = this.pipeLine.type(data);
    if (!lines.length || !this.uuid) return;
    if (mode === 'stream_json') {
      // Input has no reply on success (an error names the request).
      for (const text of lines.filter((l) => l.trim())) {
        if (!this.conn.send({ type: 'input', session: this.uuid, data: text, paste: true })) this.flashOverlay();
      }
    } else if (!this.conn.sendInput(this.channel, lines.map((l) => `${l}\n`).join(''))) {
      this.flashOverlay();
    }
  }

  private flashOverlay(): void {
    this.overlay.classList.remove('flash');
    void this.overlay.offsetWidth;
    this.overlay.classList.add('flash');
  }

  // ---- rendering ---------------------------------------------------------------------------

  private showConn(s: ConnState): void {
    if (s === 'connected') {
      this.overlay.hidden = true;
    } else {
      this.unsent.say();
      this.overlay.hidden = false;
      this.overlay.textContent = s === 'connecting' ? 'connecting…' : 'reconnecting…';
    }
  }

  private showGone(title: string, notFound: boolean): void {
    this.gone = true;
    this.channel = 0;
    if (this.uuid) this.conn.release(this.uuid, this);
    const back = this.admin ? h('a', { class: 'btn', href: '#/', text: '← back to sessions' }) : null;
    this.body.replaceChildren(
      h(
        'div',
        { class: 'gone', testid: notFound ? 'no-session' : 'term-error' },
        h('h2', { text: title }),
        h('p', { class: 'mono muted', text: this.uuid ?? this.route }),
        back,
      ),
    );
    this.el.querySelector('.keybar')?.remove();
    this.head.showGone();
  }
}
