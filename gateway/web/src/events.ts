// Event journal panel of the terminal view: history paged from the server's journal
// (`events` with `after`, 1000 per page), then live `event` pushes, deduplicated by seq.
import type { Conn } from './conn';
import { h } from './dom';
import { formatClock, formatDelay, formatExit, summarize } from './format';
import type { SessionEvent } from './types';

const PAGE = 1000;
const MAX_ROWS = 5000;

/** One line of text describing an event's kind. */
export function describe(ev: SessionEvent): string {
  const k = ev.kind ?? { kind: '?' };
  switch (k.kind) {
    case 'state':
      return `${k.state}${k.reason ? ` — ${k.reason}` : ''}`;
    case 'spawned':
      return `pid ${k.pid}`;
    case 'exited':
      return formatExit(k.status as never);
    case 'restarting':
      return `in ${formatDelay(k.delay)} (restart ${k.restarts})`;
    case 'resized':
      return `${k.cols}×${k.rows}`;
    case 'recovery':
      return String(k.decision ?? '');
    case 'hook': {
      const p = (k.payload ?? {}) as Record<string, unknown>;
      const detail = p.message ?? p.tool_name ?? p.prompt ?? p.reason ?? p.source ?? '';
      return `${k.name ?? ''}${detail ? `: ${summarize(detail, 120)}` : ''}`;
    }
    case 'json':
      return summarize(k.value);
    default: {
      const { kind: _kind, ...rest } = k;
      return summarize(rest);
    }
  }
}

export class EventsPanel {
  readonly el: HTMLElement;
  private readonly list: HTMLElement;
  private readonly status: HTMLElement;
  private lastSeq = 0;
  private loaded = false;
  private loading = false;
  private buffered: SessionEvent[] = [];

  constructor(
    private readonly conn: Conn,
    private readonly session: () => string | null,
    onClose: () => void,
  ) {
    this.list = h('ol', { class: 'event-list' });
    this.status = h('div', { class: 'muted event-status' });
    this.el = h(
      'aside',
      { class: 'events', testid: 'events-panel', hidden: true },
      h(
        'div',
        { class: 'events-head' },
        h('h2', { text: 'Events' }),
        h('button', {
          class: 'btn ghost small',
          text: '✕',
          title: 'close',
          'aria-label': 'close events',
          onclick: onClose,
        }),
      ),
      this.status,
      this.list,
    );
  }

  get visible(): boolean {
    return !this.el.hidden;
  }

  show(on: boolean): void {
    this.el.hidden = !on;
    if (on && !this.loaded) void this.load();
  }

  /** After a (re)subscription: fetch what happened while we were away. */
  resync(): void {
    if (this.loaded) void this.load();
  }

  /** A live event of this session. */
  push(ev: SessionEvent): void {
    if (this.loading) this.buffered.push(ev);
    else if (this.loaded) this.add(ev);
  }

  private async load(): Promise<void> {
    const session = this.session();
    if (this.loading || !session) return;
    this.loading = true;
    this.status.textContent = 'loading…';
    try {
      for (;;) {
        const r = await this.conn.request({
          type: 'events',
          session,
          after: this.lastSeq,
          limit: PAGE,
        });
        const evs = (r.events ?? []) as SessionEvent[];
        for (const ev of evs) this.add(ev);
        if (evs.length < PAGE) break;
      }
      this.loaded = true;
      this.status.textContent = '';
    } catch (e) {
      this.status.textContent = `cannot load events: ${(e as Error).message}`;
    } finally {
      this.loading = false;
      const b = this.buffered.splice(0);
      if (this.loaded) for (const ev of b) this.add(ev);
    }
    if (this.loaded && !this.list.childElementCount) this.status.textContent = 'no events yet';
  }

  private add(ev: SessionEvent): void {
    if (typeof ev.seq === 'number') {
      if (ev.seq <= this.lastSeq) return;
      this.lastSeq = ev.seq;
    }
    if (this.status.textContent === 'no events yet') this.status.textContent = '';
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 24;
    const kind = ev.kind?.kind ?? '?';
    this.list.appendChild(
      h(
        'li',
        { class: `event ev-${kind}`, testid: 'event-row', 'data-seq': ev.seq, 'data-kind': kind },
        h('span', { class: 'ev-time', text: formatClock(ev.time), title: `offset ${ev.offset}` }),
        h('span', { class: 'ev-kind', text: kind }),
        h('span', { class: 'ev-text', text: describe(ev) }),
      ),
    );
    while (this.list.childElementCount > MAX_ROWS) this.list.firstElementChild?.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }
}
