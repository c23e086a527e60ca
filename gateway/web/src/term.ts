// Terminal view #/s/<id>: xterm.js attached to one session over the shared socket. First
// subscription without `from` (snapshot frame, then live output); after a reconnect it resumes
// with `from: next`, so output is neither duplicated nor missing. Lags are written into the
// terminal as a visible yellow line. Input goes out as binary INPUT frames; size follows the
// element (fit addon) with a debounced `resize`. Flow control: acks as xterm digests output.
import { FitAddon } from '@xterm/addon-fit';
import { WebglAddon } from '@xterm/addon-webgl';
import { Terminal } from '@xterm/xterm';
import { type Conn, type ConnState, FLOW_WINDOW, RequestError } from './conn';
import { confirmDialog, debounce, h, setText, toast } from './dom';
import { EventsPanel } from './events';
import {
  attentionLabel,
  formatExit,
  formatUptime,
  isAlive,
  joinArgv,
  parseTime,
  permissionSummary,
  statusBadge,
  withCtrl,
} from './format';
import { answerPermission } from './http';
import { overScrollback } from './redraw';
import { apiURL } from './url';
import { findSession, type SessionStore } from './sessions';
import {
  type BinFrame,
  KIND_OUTPUT,
  type PermissionAsk,
  KIND_SNAPSHOT,
  type ServerMsg,
  type SessionEvent,
  type SessionInfo,
  type Whoami,
} from './types';

/** Ack once this much output was digested beyond the last ack (a quarter of the window). */
/** Most bytes of keys kept while the connection is down (see TermView.keep). */
const UNSENT_MAX = 64 * 1024;
/** How long a session stays larger than this view before the view shows it at its size. */
const FOLLOW_AFTER_MS = 700;
/** The smallest font a panning view (see `TermView.pans`) shrinks to: 10 px monospace is still
 * read on a phone held at arm's length without zooming (its smallest UI text is 11–12 px);
 * the 7 px a 158-column screen was shrunk to on a 375 px phone could not be. Past it the
 * view pans instead. */
const PAN_MIN_FONT = 10;
/** How long after a finger panned the view it stays where the finger left it, rather than
 * going to the cursor's column as output moves it (see `TermView.followCursor`). */
const PAN_HOLD_MS = 4000;
const utf8 = new TextEncoder();
/** The bytes `data` is on the wire. */
function byteLength(data: string | Uint8Array): number {
  return typeof data === 'string' ? utf8.encode(data).length : data.length;
}
const ACK_STEP = FLOW_WINDOW / 4;
/** Pipe sessions have no screen to snapshot: show up to this much of their recent output. */
const PIPE_BACKLOG = 256 * 1024;

const KEYS: [label: string, seq: string, testid: string, title: string][] = [
  ['Esc', '\x1b', 'key-esc', 'Escape'],
  ['^C', '\x03', 'key-ctrl-c', 'Ctrl-C'],
  ['Tab', '\t', 'key-tab', 'Tab'],
  ['←', '\x1b[D', 'key-left', 'Left'],
  ['↑', '\x1b[A', 'key-up', 'Up'],
  ['↓', '\x1b[B', 'key-down', 'Down'],
  ['→', '\x1b[C', 'key-right', 'Right'],
  // Claude's menus (its permission dialog, a question's choices): ↑/↓, then Enter takes the
  // highlighted one — a phone's keyboard may be down, or have no Enter that reaches the terminal.
  ['↵', '\r', 'key-enter', 'Enter'],
];

const THEME = {
  background: '#0b0e14',
  foreground: '#d8dee9',
  cursor: '#e6edf3',
  cursorAccent: '#0b0e14',
  selectionBackground: '#264f78',
  scrollbarSliderBackground: 'rgba(110, 118, 129, 0.22)',
  scrollbarSliderHoverBackground: 'rgba(110, 118, 129, 0.4)',
  scrollbarSliderActiveBackground: 'rgba(110, 118, 129, 0.55)',
  black: '#1c2128',
  red: '#ff7b72',
  green: '#3fb950',
  yellow: '#d29922',
  blue: '#58a6ff',
  magenta: '#bc8cff',
  cyan: '#39c5cf',
  white: '#b1bac4',
  brightBlack: '#6e7681',
  brightRed: '#ffa198',
  brightGreen: '#56d364',
  brightYellow: '#e3b341',
  brightBlue: '#79c0ff',
  brightMagenta: '#d2a8ff',
  brightCyan: '#56d4dd',
  brightWhite: '#f0f6fc',
};

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

/** Erases `c` typed at the cursor: back, blank, back — over two cells for a wide character. */
function erase(c: string): string {
  const cp = c.codePointAt(0) ?? 0;
  const wide =
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) ||
    (cp >= 0x20000 && cp <= 0x3fffd);
  return wide ? '\b\b  \b\b' : '\b \b';
}

type Queued = { f: BinFrame } | { m: ServerMsg };

export class TermView {
  readonly el: HTMLElement;
  readonly term: Terminal;
  private readonly fit = new FitAddon();
  private readonly box: HTMLElement;
  private readonly body: HTMLElement;
  private readonly overlay: HTMLElement;
  private readonly head: Record<string, HTMLElement> = {};
  private readonly events: EventsPanel;
  private readonly offs: (() => void)[] = [];
  private readonly admin: boolean;
  private readonly writable: boolean;
  private ro: ResizeObserver | null = null;
  /** The WebGL renderer and its context, released by `unmount` (see `disposeTerminal`). */
  private gl: WebglAddon | null = null;
  private glContext: WebGL2RenderingContext | null = null;
  /** The font size this view draws at when it has the session's size. */
  private readonly baseFont: number;
  /** The size this view fits at `baseFont` (what it last asked the server for). */
  private natural: { rows: number; cols: number } | null = null;
  /** Showing a session sized larger by another viewer (see `matchSession`). */
  private following = false;
  /** The "use this screen's size" button (writable views that follow a larger screen). */
  private readonly takeSize: HTMLButtonElement;
  /** Snapshots still to ask for when one comes older than what was shown (see `redrawAtSize`). */
  private redrawTries = 0;
  /** Pending decision to show a larger session (see `matchSession`). */
  private followTimer: ReturnType<typeof setTimeout> | undefined;
  /** The size and box `followSize` last fitted the font for. */
  private followed: string | null = null;
  /** A touch screen's view that cannot size the session (read-only): a screen wider than its
   * box at PAN_MIN_FONT is panned sideways by a finger, not shrunk or scaled past reading (it
   * has no other way to make it larger: a pinch zooms the whole page). A desktop's view,
   * and a writable one (whose "use this screen's size" makes the screen fit), scale instead. */
  private readonly pans: boolean;
  /** The edges' cues that more of a panned screen is to that side (see `showPanCues`). */
  private readonly panCues: { left: HTMLElement; right: HTMLElement };
  /** A finger is on the terminal, or when it was last lifted (see `followCursor`). */
  private touching = false;
  private touchedAt = 0;
  /** The frame that brings the cursor's column into view (one per frame, however many moves). */
  private cursorFrame = 0;
  /** Asks the server for this view's size (debounced). */
  private sendResize: ((rows: number, cols: number) => void) & { cancel: () => void } = Object.assign(
    () => {},
    { cancel: () => {} },
  );

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
  /** The program's own window title (OSC 0/2), shown in the tab title after the name. */
  private programTitle = '';
  /** The line being typed into a session on pipes (see `cooked`). */
  private line = '';
  /** When typing into an ended session was last refused with a toast. */
  private toldStopped = 0;
  /** The key bar's Ctrl is down: the next key typed goes with it (then it is let go). */
  private ctrlKey: HTMLElement | null = null;
  /** Keys typed while the connection was down, sent once this view is attached again (at
   * most UNSENT_MAX bytes: past it, typing is refused and said to be). */
  private unsent: (string | Uint8Array)[] = [];
  private unsentBytes = 0;
  /** Keys were refused past UNSENT_MAX: none is kept until the connection is back. */
  private unsentFull = false;
  /** The keys kept were said to wait for the connection (see `sayUnsent`). */
  private toldUnsent = false;
  /** The id of the question the ask bar shows (an answer names it). */
  private askId: string | undefined;
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
    this.pans = !this.writable && window.matchMedia('(pointer: coarse)').matches;
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
    this.overlay = h('div', { class: 'overlay', testid: 'term-overlay', hidden: true });
    // Shown while this view follows a larger screen's size (see `matchSession`): one tap
    // makes this screen's size the session's, as typing would, without a key to the program.
    this.takeSize = h('button', {
      class: 'take-size',
      type: 'button',
      testid: 'take-size',
      hidden: true,
      title: "another screen set this session's size; make it this screen's",
      text: "use this screen's size",
      onclick: () => this.takeSessionSize(),
    });
    // Over the terminal's edges, pointer-transparent (a drag there still pans).
    const cue = (side: 'left' | 'right', text: string) =>
      h(
        'div',
        { class: `pan-cue ${side}`, testid: `pan-more-${side}`, hidden: true, 'aria-hidden': 'true' },
        h('span', { text }),
      );
    this.panCues = { left: cue('left', '‹'), right: cue('right', '›') };
    this.events = new EventsPanel(
      conn,
      () => this.uuid,
      () => this.toggleEvents(false),
    );
    this.body = h(
      'div',
      { class: 'term-body' },
      h('div', { class: 'term-wrap' }, this.box, this.panCues.left, this.panCues.right, this.overlay, this.takeSize),
      this.events.el,
    );
    this.el = h(
      'main',
      { class: `view term-view${this.writable ? '' : ' read-only'}` },
      this.header(),
      this.askBar(),
      this.body,
      this.writable ? this.keybar() : null,
    );
  }

  mount(parent: HTMLElement): void {
    parent.appendChild(this.el);
    this.term.open(this.box);
    this.loadRenderer();
    this.touchScroll();
    if (this.pans) {
      this.term.onCursorMove(() => this.followCursor());
      this.box.addEventListener('scroll', () => this.showPanCues(), { passive: true });
    }
    this.term.onData((d) => this.input(this.ctrlKey?.ariaPressed === 'true' ? this.takeCtrl(d) : d));
    this.term.onBinary((d) => {
      const b = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 0xff;
      this.input(b);
    });
    const sendResize = debounce((rows: number, cols: number) => {
      if (!this.writable || !this.uuid || !this.conn.isOpen()) return;
      this.conn.request({ type: 'resize', session: this.uuid, rows, cols }).catch(() => {});
    }, 100);
    this.sendResize = sendResize;
    // The view's own size is asked for; a size taken to show a larger session is not.
    this.term.onResize(({ rows, cols }) => {
      if (this.following) return;
      this.natural = { rows, cols };
      sendResize(rows, cols);
    });
    this.term.onTitleChange((t) => {
      this.programTitle = t;
      this.renderTabTitle();
    });
    if (this.writable) {
      this.fitNow();
      this.ro = new ResizeObserver(() => this.fitNow());
      this.ro.observe(this.box);
    }
    this.offs.push(
      this.conn.onOpen(() => void this.attach()),
      this.conn.onFrame((f) => this.onFrame(f)),
      this.conn.onMessage((m) => this.onMessage(m)),
      this.conn.onState((s) => this.showConn(s)),
      this.store.onChange(() => this.renderInfo()),
      () => sendResize.cancel(),
    );
    this.tick = setInterval(() => this.renderUptime(), 1000);
    this.showConn(this.conn.state);
    if (this.conn.isOpen()) void this.attach();
    this.term.focus();
  }

  /** Leaves the session and releases everything the view holds: nothing of it may outlive it
   * (the page opens view after view for hours, and each holds up to 10 000 rows and a WebGL
   * context). */
  unmount(): void {
    this.disposed = true;
    cancelAnimationFrame(this.cursorFrame);
    clearTimeout(this.followTimer);
    this.followTimer = undefined;
    for (const off of this.offs.splice(0)) off();
    clearInterval(this.tick);
    this.refreshInfo.cancel();
    this.sendResize.cancel();
    this.ro?.disconnect();
    this.ro = null;
    this.store.setViewTitle(null);
    // A subscribe still on its way is ended when its answer comes (see `attach`); a session
    // gone has nothing left to end.
    if (this.uuid && !this.subscribing) {
      if (this.gone) this.conn.release(this.uuid, this);
      else this.conn.unsubscribe(this.uuid, this);
    }
    this.queue = [];
    this.unsent = [];
    this.disposeTerminal();
    this.el.remove();
  }

  /** Disposes the terminal, its addons and its WebGL context. */
  private disposeTerminal(): void {
    const gl = this.gl;
    const ctx = this.glContext;
    this.gl = null;
    this.glContext = null;
    // xterm.js 6.0's WebGL renderer never disposes its cursor blink timer (xterm.js#5818,
    // fixed after 6.0.0 by #5817): while the terminal had the focus, the interval went on after
    // `dispose` and held the renderer, and through it the terminal with its rows and the WebGL
    // context, for as long as the page lived (every session opened, kept). Stopped here;
    // nothing when a later xterm has no such field.
    const renderer = (gl as unknown as { _renderer?: { _cursorBlinkStateManager?: { dispose?: () => void } } })
      ?._renderer;
    renderer?._cursorBlinkStateManager?.dispose?.();
    // The terminal disposes its addons (the WebGL one after the terminal's core, so it sets up
    // no DOM renderer in its place); again by hand in case it did not (a no-op otherwise).
    this.term.dispose();
    gl?.dispose();
    this.fit.dispose();
    // The GPU context now, not when the canvas is collected: until then it counted among the
    // page's live contexts ("Too many active WebGL contexts", the oldest then lost).
    if (ctx && !ctx.isContextLost()) ctx.getExtension('WEBGL_lose_context')?.loseContext();
  }

  /** The terminal buffer as text: logical lines (wrapped rows joined), trailing spaces trimmed. */
  /** The terminal's size and font now (for tests). */
  size(): { rows: number; cols: number; font: number } {
    return { rows: this.term.rows, cols: this.term.cols, font: this.term.options.fontSize ?? this.baseFont };
  }

  /** Lines the view is scrolled back from the bottom of its scrollback (for tests). */
  scrolledBack(): number {
    const buf = this.term.buffer.active;
    return buf.baseY - buf.viewportY;
  }

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
      this.renderInfo();
      if (!this.writable) this.followSize(info.size);
      else if (this.uuid && resize) {
        // Size first, so the snapshot is drawn at the size this view shows.
        this.fitNow();
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
      } else if (start > this.next) {
        this.lagNotice(this.next, start);
      }
      this.acked = start;
      this.flushUnsent();
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
    this.write(payload, this.next);
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
    const nl = this.atLineStart ? '' : '\r\n';
    this.write(
      `${nl}\x1b[0;30;43m— output skipped: bytes ${from}..${to} (viewer too slow) —\x1b[0m\r\n`,
      to,
    );
  }

  /**
   * A finger dragged over the terminal scrolls its scrollback (xterm.js 6.0 does not: its
   * touch scrolling regressed, xtermjs/xterm.js#5489, fixed only in a 6.1 beta): a line per
   * line height dragged, up to the top of what it holds. On the alternate screen (a pager, an
   * editor: no scrollback there) it scrolls the program, as a wheel does in xterm's
   * "alternate scroll" mode: an arrow key per line (Down as the finger goes up), in the
   * cursor-key mode the program asked for. A tap is left alone (it raises the keyboard).
   * A panning view (see `pans`) takes a drag's direction from its first move: sideways, or up
   * and down while the box itself has rows hidden that way (a landscape phone), the browser
   * scrolls the box, with its momentum; otherwise the scrollback as above.
   */
  private touchScroll(): void {
    let lastY: number | null = null;
    let startX = 0;
    let startY = 0;
    // The drag's axis once its first move said it: 'box' is left to the browser.
    let axis: 'box' | 'lines' | null = null;
    let carry = 0;
    this.box.addEventListener(
      'touchstart',
      (e) => {
        lastY = e.touches.length === 1 ? e.touches[0].clientY : null;
        if (lastY !== null) {
          startX = e.touches[0].clientX;
          startY = lastY;
        }
        axis = null;
        carry = 0;
        this.touching = true;
      },
      { passive: true },
    );
    this.box.addEventListener(
      'touchmove',
      (e) => {
        if (lastY === null || e.touches.length !== 1) return;
        if (axis === null) {
          const t = e.touches[0];
          axis = this.pans ? this.dragAxis(t.clientX - startX, t.clientY - startY) : 'lines';
        }
        if (axis === 'box') return;
        const buf = this.term.buffer.active;
        const alternate = buf.type !== 'normal';
        if (!alternate && buf.baseY === 0) return;
        if (alternate && !this.writable) return;
        const y = e.touches[0].clientY;
        const lineHeight = this.box.clientHeight / Math.max(1, this.term.rows);
        carry += lastY - y;
        lastY = y;
        const lines = Math.trunc(carry / lineHeight);
        if (lines !== 0) {
          carry -= lines * lineHeight;
          if (!alternate) this.term.scrollLines(lines);
          else {
            const app = this.term.modes.applicationCursorKeysMode;
            const key = `\x1b${app ? 'O' : '['}${lines > 0 ? 'B' : 'A'}`;
            this.input(key.repeat(Math.min(Math.abs(lines), 50)));
          }
        }
        e.preventDefault();
      },
      { passive: false },
    );
    const lift = () => {
      lastY = null;
      this.touching = false;
      this.touchedAt = Date.now();
    };
    this.box.addEventListener('touchend', lift, { passive: true });
    this.box.addEventListener('touchcancel', lift, { passive: true });
  }

  /** Who takes a panning view's drag that started by (`dx`, `dy`): the browser scrolling the
   * box ('box': sideways, or up and down while the box has rows hidden that way), or the
   * scrollback ('lines'). */
  private dragAxis(dx: number, dy: number): 'box' | 'lines' {
    const b = this.box;
    if (Math.abs(dx) > Math.abs(dy)) return b.scrollWidth > b.clientWidth + 1 ? 'box' : 'lines';
    // The finger going down shows what is above.
    const room = dy > 0 ? b.scrollTop : b.scrollHeight - b.clientHeight - b.scrollTop;
    return room > 1 ? 'box' : 'lines';
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
    if (!this.channel || this.unsent.length || !this.conn.sendInput(this.channel, data)) this.keep(data);
  }

  /** Keeps keys typed while the connection is down (a phone in a tunnel): they are sent, in
   * order, once this view is attached again; past UNSENT_MAX they are refused, and said to be,
   * never dropped unsaid. */
  private keep(data: string | Uint8Array): void {
    const n = byteLength(data);
    // Past the bound nothing more is kept until the connection is back: a later key kept
    // after a refused paste would reach the program without what came between.
    if (this.unsentFull || this.unsentBytes + n > UNSENT_MAX) {
      this.flashOverlay();
      if (!this.unsentFull) {
        toast('not connected: typing is not kept past 64 KiB; what you type now is not sent', 'error', 4000);
      }
      this.unsentFull = true;
      return;
    }
    this.unsent.push(data);
    this.unsentBytes += n;
    if (!this.conn.isOpen()) this.sayUnsent();
  }

  /** Says, once until they are sent, that kept keys wait for the connection. Only while the
   * socket is down: while it is up this view is only (re)attaching (a redraw after a lag, a
   * first subscribe) and the keys go in a moment, unsaid; if the socket drops with keys kept
   * so, it is said then (`showConn`), or at the next key. Not at every key: the toast would
   * count them ("×37"). */
  private sayUnsent(): void {
    if (this.toldUnsent || !this.unsent.length) return;
    this.toldUnsent = true;
    toast('not connected: what you type is sent when the connection is back', 'info', 3000);
  }

  /** Sends the keys kept while the connection was down (see `keep`). */
  private flushUnsent(): void {
    while (this.unsent.length && this.channel) {
      if (!this.conn.sendInput(this.channel, this.unsent[0])) return;
      const sent = this.unsent.shift()!;
      this.unsentBytes -= byteLength(sent);
    }
    if (!this.unsent.length) this.unsentFull = this.toldUnsent = false;
  }

  /**
   * A session on pipes has no terminal line discipline: the page does what one would (echo,
   * line editing, Enter as a newline), and sends a line at a time — raw with its newline to a
   * pipe program, as a prompt (one user message) to a structured agent, whose input must be
   * JSON lines. Escape sequences (arrows, function keys) and other control keys mean nothing
   * on a pipe and are ignored.
   */
  private cooked(data: string, mode: string): void {
    if (data.startsWith('\x1b')) return;
    const lines: string[] = [];
    for (const ch of data) {
      if (ch === '\r' || ch === '\n') {
        lines.push(this.line);
        this.line = '';
        this.term.write('\r\n');
      } else if (ch === '\x7f' || ch === '\b') {
        const chars = [...this.line];
        const last = chars.pop();
        if (last !== undefined) {
          this.line = chars.join('');
          this.term.write(erase(last));
        }
      } else if (ch === '\x15') {
        this.term.write([...this.line].map(erase).join(''));
        this.line = '';
      } else if (ch >= ' ' || ch === '\t') {
        this.line += ch;
        this.term.write(ch);
      }
    }
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

  // ---- size and rendering ------------------------------------------------------------------

  private fitNow(): void {
    if (this.disposed || !this.box.clientWidth || !this.box.clientHeight) return;
    try {
      if (!this.following) {
        this.fit.fit();
        return;
      }
      // Showing a larger session at a smaller font: this view's own size (at its base font)
      // is still what the server keeps for it, for when it types.
      const d = this.fit.proposeDimensions();
      if (!d || !Number.isFinite(d.cols) || !Number.isFinite(d.rows)) return;
      const scale = (this.term.options.fontSize ?? this.baseFont) / this.baseFont;
      const nat = { cols: Math.max(2, Math.floor(d.cols * scale)), rows: Math.max(1, Math.floor(d.rows * scale)) };
      if (!this.natural || nat.cols !== this.natural.cols || nat.rows !== this.natural.rows) {
        this.natural = nat;
        this.sendResize(nat.rows, nat.cols);
      }
      const s = this.uuid ? this.store.map.get(this.uuid) : undefined;
      this.matchSession(s?.size);
    } catch {
      /* not laid out yet */
    }
  }

  /**
   * A writable view whose session another viewer sized larger (a desktop that typed, or
   * resized last, beside this phone) shows the session at its size, the font shrunk to fit —
   * a 164-column program drawn into 52 columns was unreadable — until the session fits this
   * view again (the other left, or this one typed and took the size back).
   */
  private matchSession(size: { rows: number; cols: number } | undefined): void {
    if (!size || !this.natural) return;
    const larger = size.cols > this.natural.cols || size.rows > this.natural.rows;
    if (larger && !this.following) {
      // Only a size that stays: the session's size just after this view asked for its own
      // is the one from before (the server's answer is on its way).
      if (this.followTimer === undefined) {
        this.followTimer = setTimeout(() => {
          // The session's size as the server has it now (the list's figures are compared only
          // every 2 s: a stale one made a phone alone follow its last viewer's size).
          this.conn
            .request({ type: 'list' })
            .then((r) => {
              this.followTimer = undefined;
              const s = findSession((r.sessions ?? []) as SessionInfo[], this.uuid ?? this.route);
              if (!s || this.disposed) return;
              this.store.upsert(s);
              const now = s.size;
              if (now && this.natural && (now.cols > this.natural.cols || now.rows > this.natural.rows)) {
                this.setFollowing(true);
                this.followSize(now);
              }
            })
            .catch(() => {
              this.followTimer = undefined;
            });
        }, FOLLOW_AFTER_MS);
      }
      return;
    }
    clearTimeout(this.followTimer);
    this.followTimer = undefined;
    if (larger) {
      this.setFollowing(true);
      this.followSize(size);
    } else if (this.following) {
      this.setFollowing(false);
      this.followed = null;
      this.scaleToFit(null);
      this.term.options.fontSize = this.baseFont;
      this.fitNow();
      // The session has this view's size again (that is why it fits): its screen, drawn at
      // the wider size, is drawn again at this one.
      if (this.term.cols === size.cols && this.term.rows === size.rows) this.redrawAtSize();
    }
  }

  /** Enters or leaves following a larger screen's size (the button to take it back with). */
  private setFollowing(on: boolean): void {
    this.following = on;
    if (on) this.box.dataset.following = 'true';
    else delete this.box.dataset.following;
    this.takeSize.hidden = !(on && this.writable);
  }

  /** Makes this view's own size the session's now (the server's `resize` with `take`). */
  private takeSessionSize(): void {
    if (!this.uuid || !this.natural) return;
    const { rows, cols } = this.natural;
    this.conn
      .request({ type: 'resize', session: this.uuid, rows, cols, take: true })
      .then(() => {
        if (this.uuid) this.store.patch(this.uuid, (s) => void (s.size = { rows, cols }));
        const s = this.uuid ? this.store.map.get(this.uuid) : undefined;
        this.matchSession(s?.size);
      })
      .catch((e: Error) => toast(`cannot take the size: ${e.message}`, 'error'));
  }

  /** Shows the session's size, shrinking the font (from the base size) until it fits: a
   * read-only viewer cannot resize the PTY, and a writable one shows a larger session so. A
   * panning view (see `pans`) stops at PAN_MIN_FONT and pans what does not fit. */
  private followSize(size: { rows: number; cols: number } | undefined): void {
    if (!size) return;
    // Done already for this size in this box (the store changes often).
    const key = `${size.rows}x${size.cols} in ${this.box.clientWidth}x${this.box.clientHeight}`;
    if (key === this.followed && this.term.cols === size.cols && this.term.rows === size.rows) return;
    this.followed = key;
    if (this.term.cols !== size.cols || this.term.rows !== size.rows) {
      this.term.resize(Math.max(2, size.cols), Math.max(1, size.rows));
      // What this view holds was drawn at its old size (and reflowed by the resize): the
      // screen is drawn again, as it is now, at the new one.
      this.redrawAtSize();
    }
    requestAnimationFrame(() => {
      const screen = this.box.querySelector('.xterm-screen') as HTMLElement | null;
      let fs = this.baseFont;
      this.term.options.fontSize = fs;
      const room = this.inner();
      const wide = () => !!screen && screen.offsetWidth > room.width;
      const tall = () => !!screen && screen.offsetHeight > room.height;
      // A read-only desktop view fits the width only (its box scrolls down); a panning one
      // fits both while it can, as a writable one does.
      const over = () => wide() || ((this.writable || this.pans) && tall());
      const least = this.pans ? PAN_MIN_FONT : 7;
      while (fs > least && over()) {
        fs -= 1;
        this.term.options.fontSize = fs;
      }
      if (this.pans && wide()) {
        // Panned sideways whatever the font: as large a one as the box's height holds all the
        // rows at (a 158x40 screen on a phone took its top 40% at 7 px), up to the base font.
        // Half a pixel at a time: a whole one left a phone's bottom 70 px empty.
        while (fs < this.baseFont) {
          this.term.options.fontSize = fs + 0.5;
          if (tall()) break;
          fs += 0.5;
        }
        this.term.options.fontSize = fs;
      }
      // Still wider than the box at the smallest font that can be read (160 columns on a
      // phone): the whole screen is scaled down to fit, rather than cut off at the right, or,
      // in a panning view, panned (measured once the renderer has laid out the last font).
      requestAnimationFrame(() => (this.pans ? this.panToFit(screen) : this.scaleToFit(screen)));
    });
  }

  /** Lets a panning view's box scroll over all of `screen` (see `pans`): the terminal is as
   * large as its screen (and its scrollbar, then by the last column, not over the middle of
   * the screen); the cues say that more is to the side, and the cursor's column is shown. */
  private panToFit(screen: HTMLElement | null): void {
    const xterm = this.box.querySelector('.xterm') as HTMLElement | null;
    if (!xterm) return;
    xterm.style.width = '';
    xterm.style.height = '';
    const inner = this.inner();
    const wide = !!screen && screen.offsetWidth > inner.width;
    const tall = !!screen && screen.offsetHeight > inner.height;
    if (screen && wide) {
      const bar = (xterm.querySelector('.scrollbar.vertical') as HTMLElement | null)?.offsetWidth ?? 0;
      xterm.style.width = `${screen.offsetWidth + bar}px`;
    }
    if (screen && tall) xterm.style.height = `${screen.offsetHeight}px`;
    if (wide || tall) this.box.dataset.pans = 'true';
    else delete this.box.dataset.pans;
    this.showPanCues();
    this.followCursor();
  }

  /** Shows the cue on each edge that the panned screen goes on past (none when it fits). */
  private showPanCues(): void {
    const b = this.box;
    const on = b.dataset.pans === 'true';
    this.panCues.left.hidden = !(on && b.scrollLeft > 1);
    this.panCues.right.hidden = !(on && b.scrollWidth - b.clientWidth - b.scrollLeft > 1);
  }

  /**
   * Pans to the cursor's column when it is out of view, so the output being written is seen
   * as it comes (a shell's prompt and typing at column 150 of a desktop's screen), and to its
   * row when the box is shorter than the screen (a phone in landscape: an agent's input box is
   * at the bottom), unless a finger is on the terminal or moved it in the last PAN_HOLD_MS
   * (it is being read there). Not while the scrollback is scrolled up (the cursor's row is
   * not shown).
   */
  private followCursor(): void {
    if (!this.pans || this.cursorFrame) return;
    this.cursorFrame = requestAnimationFrame(() => {
      this.cursorFrame = 0;
      const b = this.box;
      if (this.disposed || b.dataset.pans !== 'true') return;
      if (this.touching || Date.now() - this.touchedAt < PAN_HOLD_MS) return;
      const buf = this.term.buffer.active;
      if (buf.viewportY !== buf.baseY) return;
      const screen = b.querySelector('.xterm-screen') as HTMLElement | null;
      if (!screen) return;
      const cs = getComputedStyle(b);
      // Into view along one axis: the cell at `at` (of `size`), with `margin` around it.
      const show = (at: number, size: number, margin: number, scroll: number, room: number): number => {
        if (at - margin < scroll) return Math.max(0, at - margin);
        return at + size + margin > scroll + room ? at + size + margin - room : scroll;
      };
      const cell = screen.offsetWidth / Math.max(1, this.term.cols);
      const x = (parseFloat(cs.paddingLeft) || 0) + Math.min(buf.cursorX, this.term.cols - 1) * cell;
      // A few columns around it: what was just typed before it, a little after.
      const left = show(x, cell, 4 * cell, b.scrollLeft, b.clientWidth);
      if (Math.abs(left - b.scrollLeft) >= 1) b.scrollLeft = left;
      const row = screen.offsetHeight / Math.max(1, this.term.rows);
      const y = (parseFloat(cs.paddingTop) || 0) + buf.cursorY * row;
      const top = show(y, row, row, b.scrollTop, b.clientHeight);
      if (Math.abs(top - b.scrollTop) >= 1) b.scrollTop = top;
    });
  }

  /** The box's room for the terminal (its size less its padding). */
  private inner(): { width: number; height: number } {
    const cs = getComputedStyle(this.box);
    const px = (v: string) => parseFloat(v) || 0;
    return {
      width: this.box.clientWidth - px(cs.paddingLeft) - px(cs.paddingRight),
      height: this.box.clientHeight - px(cs.paddingTop) - px(cs.paddingBottom),
    };
  }

  /** Scales the terminal down (a CSS transform) until `screen` fits the box; none when it does.
   * Scaled, the terminal is as wide as its screen and scrollbar: it was as wide as the box, so
   * its scrollbar, at its right edge, was scaled into the middle of the screen. */
  private scaleToFit(screen: HTMLElement | null): void {
    const xterm = this.box.querySelector('.xterm') as HTMLElement | null;
    if (!xterm) return;
    xterm.style.transform = '';
    xterm.style.width = '';
    if (!screen || !screen.offsetWidth) return;
    const inner = this.inner();
    const k = Math.min(
      1,
      inner.width / screen.offsetWidth,
      this.writable ? inner.height / Math.max(1, screen.offsetHeight) : 1,
    );
    if (k < 1) {
      const bar = (xterm.querySelector('.scrollbar.vertical') as HTMLElement | null)?.offsetWidth ?? 0;
      const width = screen.offsetWidth + bar;
      xterm.style.width = `${width}px`;
      xterm.style.transformOrigin = '0 0';
      xterm.style.transform = `scale(${Math.min(k, inner.width / width)})`;
    }
  }

  private loadRenderer(): void {
    try {
      const gl = new WebglAddon();
      gl.onContextLoss(() => {
        // Falls back to the DOM renderer.
        if (this.gl === gl) this.gl = this.glContext = null;
        gl.dispose();
      });
      this.term.loadAddon(gl);
      this.gl = gl;
      // Its canvas's context (the other canvases are 2D ones: none for them here).
      for (const c of this.box.querySelectorAll('canvas')) {
        const ctx = c.getContext('webgl2');
        if (ctx) this.glContext = ctx;
      }
      this.box.dataset.renderer = 'webgl';
    } catch {
      this.box.dataset.renderer = 'dom';
    }
  }

  private showConn(s: ConnState): void {
    if (s === 'connected') {
      this.overlay.hidden = true;
    } else {
      this.sayUnsent();
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
    this.el.querySelector('.actions')?.replaceChildren();
    // No session: no state or badge for one (a grey dot and an empty outline were left).
    this.head.state.hidden = true;
    this.head.badge.hidden = true;
  }

  private header(): HTMLElement {
    const H = this.head;
    H.name = h('span', { class: 'term-name mono', testid: 'term-name', text: this.route });
    // Both shown once the session is known (`renderInfo`): an empty dot and outline said
    // nothing of a session that does not exist.
    H.state = h('span', { class: 'state', testid: 'term-state', hidden: true });
    H.badge = h('span', { class: 'badge', testid: 'attention', hidden: true });
    // The session's output cannot be logged (a full disk): its program may be waiting.
    H.logWarn = h('span', { class: 'badge log-failing', testid: 'persist-error', text: 'log failing' });
    H.logWarn.hidden = true;
    H.meta = h('span', { class: 'term-meta muted mono' });
    H.cast = h('a', {
      class: 'btn small',
      testid: 'download-cast',
      title: 'download the retained output as an asciicast recording',
      text: '⤓ .cast',
    });
    const btn = (label: string, testid: string, cls: string, fn: () => void, title = '') =>
      h('button', { class: `btn small ${cls}`, testid, title, text: label, onclick: fn });
    H.eventsBtn = btn('events', 'events-toggle', '', () => this.toggleEvents(), 'event journal');
    const actions = h('div', { class: 'actions' }, H.eventsBtn, H.cast);
    if (this.admin) {
      actions.append(
        btn('restart', 'btn-restart', '', () => void this.act('restart')),
        (H.stopBtn = btn('stop', 'btn-stop', 'warn', () => void this.act('stop'))),
        (H.killBtn = btn('kill', 'btn-kill', 'danger', () => void this.act('kill'))),
        btn('remove', 'btn-remove', 'danger', () => void this.act('remove')),
      );
    }
    return h(
      'header',
      { class: 'term-head' },
      h(
        'div',
        { class: 'term-title' },
        this.admin
          ? h('a', { class: 'btn small ghost back', href: '#/', testid: 'back', text: '←', title: 'sessions' })
          : null,
        H.name,
        H.state,
        H.badge,
        H.logWarn,
        this.writable
          ? null
          : h('span', { class: 'badge readonly', testid: 'read-only', text: 'read-only' }),
        H.meta,
      ),
      actions,
    );
  }

  /** The question an agent waits for, with Allow / Deny and a Deny with a reason (writers
   * only; hidden otherwise); or, for a question held by the agent's own terminal (its hook's
   * wait ran out, or the server was restarted or upgraded while it asked), a note that it is
   * answered there. */
  private askBar(): HTMLElement {
    const H = this.head;
    H.askText = h('span', { class: 'ask-text mono', testid: 'ask-text' });
    const answer = (behavior: 'allow' | 'deny') => async () => this.answerAsk(behavior);
    H.askChoices = h('span', { class: 'ask-choices', testid: 'ask-choices', hidden: true });
    // Deny with a reason the agent reads ("do X instead"): a field under the question, opened
    // by its own button so that a plain Deny stays one tap.
    const reason = h('input', {
      class: 'input ask-reason-input',
      type: 'text',
      testid: 'ask-reason-input',
      placeholder: 'why not, or what to do instead',
      'aria-label': 'reason for denying (the agent reads it)',
      enterkeyhint: 'send',
      autocomplete: 'off',
    });
    H.askReasonInput = reason;
    const send = () => {
      const form = H.askReason;
      const msg = reason.value.trim();
      void this.answerAsk('deny', undefined, msg || undefined, form.dataset.for || undefined).then((ok) => {
        if (ok) this.closeReason();
      });
    };
    reason.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.isComposing) {
        e.preventDefault();
        send();
      } else if (e.key === 'Escape') {
        e.preventDefault();
        this.closeReason();
      }
    });
    H.askReason = h(
      'form',
      { class: 'ask-reason', testid: 'ask-reason', hidden: true, onsubmit: (e: Event) => e.preventDefault() },
      reason,
      h(
        'span',
        { class: 'ask-actions' },
        h('button', { class: 'btn small danger', type: 'button', testid: 'ask-reason-send', text: 'Send', onclick: send }),
        h('button', {
          class: 'btn small',
          type: 'button',
          testid: 'ask-reason-cancel',
          text: 'Cancel',
          onclick: () => this.closeReason(),
        }),
      ),
    );
    H.askActions = h(
      'span',
      { class: 'ask-actions' },
      h('button', { class: 'btn small primary', testid: 'ask-allow', text: 'Allow', onclick: answer('allow') }),
      h('button', { class: 'btn small danger', testid: 'ask-deny', text: 'Deny', onclick: answer('deny') }),
      h('button', {
        class: 'btn small',
        testid: 'ask-deny-why',
        text: 'Deny + reason…',
        title: 'deny, with a message the agent reads',
        onclick: () => this.openReason(),
      }),
    );
    H.ask = h(
      'div',
      { class: 'ask', testid: 'ask', role: 'alert', hidden: true },
      (H.askLabel = h('span', { class: 'ask-label', text: 'asks permission' })),
      H.askText,
      H.askChoices,
      H.askActions,
      H.askReason,
    );
    // A question only the agent's terminal can answer: said where Allow / Deny were (the
    // header's "needs permission" alone left a phone's user with a dialog and no way shown).
    H.askTerm = h(
      'div',
      { class: 'ask ask-term', testid: 'ask-terminal', role: 'status', hidden: true },
      h('span', { class: 'ask-label', text: 'asks in its terminal' }),
      h('span', {
        class: 'ask-text',
        testid: 'ask-terminal-text',
        text: 'answer it there: ↑/↓ to choose, ↵ Enter = its highlighted choice, Esc = no',
      }),
    );
    return h('div', { class: 'ask-host' }, H.ask, H.askTerm);
  }

  /** Opens the field for a reason to deny the question shown (kept for that question). */
  private openReason(): void {
    const H = this.head;
    H.askReason.dataset.for = this.askId ?? '';
    H.askReason.hidden = false;
    H.askActions.hidden = true;
    (H.askReasonInput as HTMLInputElement).focus();
    requestAnimationFrame(() => this.fitNow());
  }

  private closeReason(): void {
    const H = this.head;
    if (H.askReason.hidden) return;
    H.askReason.hidden = true;
    H.askActions.hidden = false;
    (H.askReasonInput as HTMLInputElement).value = '';
    delete H.askReason.dataset.for;
    requestAnimationFrame(() => this.fitNow());
  }

  /** Answers the question shown (with an AskUserQuestion's choice: `answers`; a denial with
   * `message`, for the question `question` names when given). True once answered. */
  private async answerAsk(
    behavior: 'allow' | 'deny',
    answers?: Record<string, string>,
    message?: string,
    question?: string,
  ): Promise<boolean> {
    const H = this.head;
    if (!this.uuid) return false;
    H.ask.classList.add('busy');
    try {
      await answerPermission(this.uuid, behavior, question ?? this.askId, message, answers);
      toast(answers ? 'answered' : behavior === 'allow' ? 'allowed' : message ? 'denied, with your reason' : 'denied');
      return true;
    } catch (e) {
      toast(`not answered: ${(e as Error).message}`, 'error');
      return false;
    } finally {
      H.ask.classList.remove('busy');
    }
  }

  /** An AskUserQuestion's questions (text and option labels); null for any other tool. */
  private static choicesOf(tool: string, input: unknown): { question: string; labels: string[] }[] | null {
    if (tool !== 'AskUserQuestion') return null;
    const qs = (input as { questions?: unknown } | null)?.questions;
    if (!Array.isArray(qs)) return [];
    return qs.map((q) => ({
      question: String((q as { question?: unknown }).question ?? ''),
      labels: (Array.isArray((q as { options?: unknown }).options) ? (q as { options: unknown[] }).options : []).map(
        (o) => String((o as { label?: unknown }).label ?? ''),
      ),
    }));
  }

  /** Shows the question asked: an AskUserQuestion of one question as a button per choice
   * (several questions are answered with `corral answer --choose` or in the terminal), any
   * other tool as what it would run, with Allow / Deny. */
  private renderAsk(p: PermissionAsk, then: string): void {
    const H = this.head;
    const choices = TermView.choicesOf(p.tool, p.input);
    const allow = H.ask.querySelector('[data-testid="ask-allow"]') as HTMLButtonElement;
    const deny = H.ask.querySelector('[data-testid="ask-deny"]') as HTMLButtonElement;
    const why = H.ask.querySelector('[data-testid="ask-deny-why"]') as HTMLButtonElement;
    allow.hidden = choices != null;
    why.hidden = choices != null;
    setText(deny, choices != null ? 'Dismiss' : 'Deny');
    setText(H.askLabel, choices != null ? 'asks you to choose' : 'asks permission');
    H.askChoices.hidden = choices == null || choices.length !== 1;
    const key = `${p.id ?? ''}`;
    if (choices == null) {
      setText(H.askText, permissionSummary(p.tool, p.input, 4000) + then);
    } else if (choices.length === 1) {
      setText(H.askText, choices[0].question + then);
      if (H.askChoices.dataset.for !== key) {
        H.askChoices.dataset.for = key;
        H.askChoices.replaceChildren(
          ...choices[0].labels.map((label) =>
            h('button', {
              class: 'btn small primary',
              testid: 'ask-choice',
              text: label,
              onclick: () => void this.answerAsk('allow', { [choices[0].question]: label }),
            }),
          ),
        );
      }
    } else {
      setText(
        H.askText,
        `asks ${choices.length} questions: answer with \`corral answer --choose\` or in its terminal${then}`,
      );
    }
  }

  private toggleEvents(on = !this.events.visible): void {
    this.events.show(on);
    this.head.eventsBtn.classList.toggle('active', on);
    requestAnimationFrame(() => this.fitNow());
  }

  private async act(op: 'stop' | 'kill' | 'restart' | 'remove'): Promise<void> {
    const info = this.uuid ? this.store.map.get(this.uuid) : undefined;
    const name = info?.name ?? this.route;
    const ask: Record<string, [string, string]> = {
      stop: [`Stop ${name}?`, 'Sends the stop signal, waits the grace period, then kills its process tree.'],
      kill: [`Kill ${name}?`, 'Sends SIGKILL to its whole process tree at once.'],
      remove: [`Remove ${name}?`, 'Stops it and deletes its records, events and scrollback.'],
      restart: [
        `Restart ${name}?`,
        'Stops its process (stop signal, grace, then kill) and starts it again; an agent resumes its conversation.',
      ],
    };
    const label = op[0].toUpperCase() + op.slice(1);
    const yes = !ask[op] || (await confirmDialog(ask[op][0], ask[op][1], label));
    // Keys go to the terminal again, not to the button the closed dialog gave the focus back
    // to: Enter pressed it again, and once stop disabled it the keys went nowhere, unsaid (a
    // stopped session's terminal says nothing runs to take them). Not on a touch screen,
    // whose keyboard would come up.
    if (!window.matchMedia('(pointer: coarse)').matches) this.term.focus();
    if (!yes) return;
    try {
      await this.conn.request({ type: op, session: this.uuid ?? this.route });
      if (op === 'remove') {
        this.gone = true; // nothing left to unsubscribe from
        location.hash = '#/';
      }
    } catch (e) {
      toast(`${op} failed: ${(e as Error).message}`, 'error');
    }
  }

  /** The tab title: the session's name, then the program's title when it set one (bounded). */
  private renderTabTitle(): void {
    const name = (this.uuid && this.store.map.get(this.uuid)?.name) || this.route;
    const full = this.programTitle ? `${name}: ${this.programTitle}` : name;
    this.store.setViewTitle(full.length > 100 ? `${full.slice(0, 99)}…` : full);
  }

  private renderInfo(): void {
    // A session gone (removed, or not this token's) has nothing left to show in the header.
    if (!this.uuid || this.gone) return;
    const s = this.store.map.get(this.uuid);
    if (!s) return;
    const H = this.head;
    setText(H.name, s.name);
    this.renderTabTitle();
    H.name.title = joinArgv(s.argv);
    setText(H.state, s.state);
    H.state.hidden = false;
    H.state.className = `state st-${s.state}`;
    H.state.title = s.reason ?? '';
    const b = statusBadge(s);
    const att = attentionLabel(s.attention) != null;
    const ended = !isAlive(s.state) && !!s.last_exit;
    H.badge.hidden = !att && !ended;
    setText(H.badge, att || ended ? b.text : '');
    H.badge.className = `badge ${b.cls}`;
    H.badge.dataset.attention = s.attention ?? '';
    H.badge.title = s.attention ?? '';
    H.logWarn.hidden = !s.persist_error;
    H.logWarn.title = s.persist_error ? `its output is not being logged: ${s.persist_error}` : '';
    // A toast about this session said what is now on screen: it goes (it covered the dialog).
    this.store.dismissToast(s.id);
    const asks = this.writable && s.attention === 'needs_permission' && !!s.permission;
    // Nothing outside can answer it (no `permission`): the agent's own dialog holds it.
    const inTerminal = this.writable && s.attention === 'needs_permission' && !s.permission && isAlive(s.state);
    this.askId = s.permission?.id;
    // A reason being typed was for the question it was opened on: another question (or none)
    // closes it, rather than send it to a question it was not written for.
    if (!H.askReason.hidden && (!asks || (H.askReason.dataset.for ?? '') !== (this.askId ?? ''))) {
      this.closeReason();
    }
    if (asks && s.permission) {
      const more = s.permission_queue?.length ?? 0;
      const then = more ? ` (then ${more} more)` : '';
      this.renderAsk(s.permission, then);
    }
    if (H.ask.hidden === asks || H.askTerm.hidden === inTerminal) {
      H.ask.hidden = !asks;
      H.askTerm.hidden = !inTerminal;
      requestAnimationFrame(() => this.fitNow());
    }
    // Nothing runs to stop or kill in an ended session (one waiting to restart can be stopped).
    const over = s.state === 'stopped' || s.state === 'failed';
    for (const b of [H.stopBtn, H.killBtn]) if (b) (b as HTMLButtonElement).disabled = over;
    const cast = H.cast as HTMLAnchorElement;
    cast.href = apiURL(`/v1/sessions/${encodeURIComponent(s.id)}/export?format=asciicast`).toString();
    cast.setAttribute('download', `${s.name}.cast`);
    if (!this.writable) this.followSize(s.size);
    else this.matchSession(s.size);
    this.renderUptime();
  }

  private renderUptime(): void {
    const s = this.uuid ? this.store.map.get(this.uuid) : undefined;
    if (!s) return;
    const t = parseTime(s.started_at);
    const parts: string[] = [];
    if (s.pid != null && (s.state === 'running' || s.state === 'stopping')) parts.push(`pid ${s.pid}`);
    if (t != null && isAlive(s.state)) parts.push(`up ${formatUptime(Date.now() - t)}`);
    if (s.restarts) parts.push(`↻${s.restarts}`);
    setText(this.head.meta, parts.join(' · '));
  }

  private keybar(): HTMLElement {
    const bar = h('div', { class: 'keybar', testid: 'keybar', role: 'toolbar', 'aria-label': 'keys' });
    // Ctrl for the next key typed: a phone's keyboard has none (Ctrl-D, Ctrl-R, Ctrl-Z, Ctrl-L).
    const ctrl = h('button', {
      class: 'key key-mod',
      testid: 'key-ctrl',
      title: 'Ctrl: hold it for the next key',
      'aria-label': 'Ctrl',
      'aria-pressed': 'false',
      text: 'Ctrl',
    });
    ctrl.addEventListener('mousedown', (e) => e.preventDefault());
    ctrl.addEventListener('click', () => {
      ctrl.ariaPressed = ctrl.ariaPressed === 'true' ? 'false' : 'true';
      this.term.focus();
    });
    this.ctrlKey = ctrl;
    bar.appendChild(ctrl);
    for (const [label, seq, testid, title] of KEYS) {
      const b = h('button', { class: 'key', testid, title, 'aria-label': title, text: label });
      // Keep focus (and the phone's keyboard) on the terminal.
      b.addEventListener('mousedown', (e) => e.preventDefault());
      b.addEventListener('click', () => {
        this.input(this.ctrlKey?.ariaPressed === 'true' ? this.takeCtrl(seq) : seq);
        this.term.focus();
      });
      bar.appendChild(b);
    }
    return bar;
  }

  /** `data` with the key bar's Ctrl, which is let go. */
  private takeCtrl(data: string): string {
    if (this.ctrlKey) this.ctrlKey.ariaPressed = 'false';
    return withCtrl(data);
  }
}

