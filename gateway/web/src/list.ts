// Home view (admin): the live session list with filter, attention badges and ticking uptimes,
// plus the spawn form. Rows are keyed by session id and updated in place, so the 1 s uptime
// tick and server pushes never rebuild the whole list.
import type { Conn } from './conn';
import { h, setText } from './dom';
import {
  attentionLabel,
  attentionRank,
  formatCpu,
  formatExit,
  formatKiB,
  formatUptime,
  isAlive,
  joinArgv,
  parseEnv,
  parseTime,
  permissionSummary,
  shortArgv,
  splitArgv,
  statusBadge,
} from './format';
import type { SessionStore } from './sessions';
import type { SessionInfo } from './types';

interface Row {
  el: HTMLAnchorElement;
  name: HTMLElement;
  argv: HTMLElement;
  state: HTMLElement;
  badge: HTMLElement;
  uptime: HTMLElement;
  restarts: HTMLElement;
  viewers: HTMLElement;
  cpu: HTMLElement;
  rss: HTMLElement;
}

/** What a session that asks something asks, as its row says it (in place of its command line). */
function asksLine(s: SessionInfo): string | null {
  if (s.attention === 'needs_permission') {
    // A question gone to its own dialog (no hook waits any more) is answered there.
    return s.permission
      ? `asks: ${permissionSummary(s.permission.tool, s.permission.input)}`
      : 'asks in its own terminal: answer it there';
  }
  if (s.attention === 'asks_at_start' && s.agent_asks_at_start) {
    return `has not started, its screen asks: ${s.agent_asks_at_start}`;
  }
  return null;
}

export class ListView {
  readonly el: HTMLElement;
  private readonly rows = new Map<string, Row>();
  private readonly body: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly filter: HTMLInputElement;
  private readonly count: HTMLElement;
  private readonly offs: (() => void)[] = [];
  private tick: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly conn: Conn,
    private readonly store: SessionStore,
  ) {
    this.filter = h('input', {
      type: 'search',
      class: 'input filter',
      placeholder: 'filter by name, state or program…',
      testid: 'filter',
      'aria-label': 'filter sessions',
      oninput: () => this.render(),
    });
    this.count = h('span', { class: 'muted count', testid: 'session-count' });
    this.body = h('div', { class: 'rows', testid: 'session-list' });
    this.empty = h('div', { class: 'empty muted', testid: 'empty' });
    this.el = h(
      'main',
      { class: 'view list-view' },
      h(
        'section',
        { class: 'card' },
        h('div', { class: 'list-head' }, h('h1', { text: 'Sessions' }), this.count, this.filter),
        h(
          'div',
          { class: 'row row-header', 'aria-hidden': 'true' },
          h('span', { class: 'c-name', text: 'name' }),
          h('span', { class: 'c-state', text: 'state' }),
          h('span', { class: 'c-badge', text: 'status' }),
          h('span', { class: 'c-uptime', text: 'uptime' }),
          h('span', { class: 'c-restarts', text: 'restarts' }),
          h('span', { class: 'c-viewers', text: 'viewers' }),
          h('span', { class: 'c-cpu', text: 'cpu' }),
          h('span', { class: 'c-rss', text: 'rss' }),
        ),
        this.body,
        this.empty,
      ),
      this.spawnForm(),
    );
  }

  mount(parent: HTMLElement): void {
    parent.appendChild(this.el);
    this.offs.push(this.store.onChange(() => this.render()));
    this.tick = setInterval(() => this.updateUptimes(), 1000);
    this.render();
  }

  unmount(): void {
    for (const off of this.offs.splice(0)) off();
    clearInterval(this.tick);
    this.el.remove();
  }

  private render(): void {
    const words = this.filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const all = this.store.all();
    const shown = all
      .filter((s) => {
        if (!words.length) return true;
        // Its name, what it does or waits for (in the page's words and the CLI's:
        // `needs_permission`), and its program — not the program's flags (every
        // `claude --permission-mode default` matched "permission").
        const hay = [
          s.name,
          s.state,
          s.attention ?? '',
          attentionLabel(s.attention) ?? '',
          statusBadge(s).text,
          shortArgv(s.argv.slice(0, 1)),
          // What it asks, as its row says it; "asking" as the count says it.
          asksLine(s) ?? '',
          attentionRank(s) === 0 && isAlive(s.state) ? 'asking' : '',
        ]
          .join(' ')
          .toLowerCase();
        return words.every((w) => hay.includes(w));
      })
      .sort(
        (a, b) =>
          attentionRank(a) - attentionRank(b) ||
          this.waitedSince(a) - this.waitedSince(b) ||
          a.name.localeCompare(b.name, undefined, { numeric: true }),
      );
    const keep = new Set(shown.map((s) => s.id));
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.el.remove();
        this.rows.delete(id);
      }
    }
    let prev: Element | null = null;
    for (const s of shown) {
      let row = this.rows.get(s.id);
      if (!row) {
        row = this.makeRow(s);
        this.rows.set(s.id, row);
      }
      this.fill(row, s);
      // Keep DOM order equal to the sorted order with minimal moves.
      const want: Element | null = prev ? prev.nextElementSibling : this.body.firstElementChild;
      if (want !== row.el) this.body.insertBefore(row.el, want);
      prev = row.el;
    }
    // Questions apart from finished turns: "2 asking" is what cannot wait.
    const asking = all.filter((s) => attentionRank(s) === 0 && isAlive(s.state)).length;
    const waiting = this.store.waitingCount() - asking;
    setText(
      this.count,
      `${all.length} session${all.length === 1 ? '' : 's'}` +
        (asking ? ` · ${asking} asking` : '') +
        (waiting ? ` · ${waiting} waiting` : ''),
    );
    let msg = '';
    if (this.store.error) msg = this.store.error;
    else if (!this.store.loaded) msg = 'loading…';
    else if (!all.length) msg = 'No sessions yet. Start one with the form below.';
    else if (!shown.length) msg = 'No session matches the filter.';
    setText(this.empty, msg);
    this.empty.hidden = !msg;
  }

  /** For the order within a rank: the one that has waited longest first (when the page first
   * saw it waiting: a session's info has no time for its question), then those that wait for
   * nothing (0 between two of them: by name). */
  private waitedSince(s: SessionInfo): number {
    return this.store.since(s.id) ?? Number.MAX_SAFE_INTEGER;
  }

  private makeRow(s: SessionInfo): Row {
    const cell = (cls: string, label?: string) =>
      h('span', { class: cls, ...(label ? { 'data-label': label } : {}) });
    const row: Row = {
      el: h('a', {
        class: 'row session-row',
        href: `#/s/${encodeURIComponent(s.id)}`,
        testid: 'session-row',
      }),
      name: h('span', { class: 'name' }),
      argv: h('span', { class: 'argv' }),
      state: cell('c-state state'),
      badge: h('span', { class: 'badge', testid: 'attention' }),
      uptime: cell('c-uptime num', 'up'),
      restarts: cell('c-restarts num', '↻'),
      viewers: cell('c-viewers num', 'viewers'),
      cpu: cell('c-cpu num', 'cpu'),
      rss: cell('c-rss num', 'rss'),
    };
    row.el.append(
      h('span', { class: 'c-name' }, row.name, row.argv),
      row.state,
      h('span', { class: 'c-badge' }, row.badge),
      row.uptime,
      row.restarts,
      row.viewers,
      row.cpu,
      row.rss,
    );
    return row;
  }

  private fill(row: Row, s: SessionInfo): void {
    row.el.dataset.sessionId = s.id;
    row.el.dataset.name = s.name;
    row.el.dataset.state = s.state;
    row.el.classList.toggle('waiting', attentionLabel(s.attention) != null);
    setText(row.name, s.name);
    // A question waiting for an answer says what it asks, in place of the command line.
    const asks = asksLine(s);
    // Output that cannot be logged (a full disk) is said where the command line was: the
    // program may be waiting for the disk.
    const failing = !asks && s.persist_error ? `log failing: ${s.persist_error}` : null;
    const line = asks ?? failing ?? shortArgv(s.argv);
    setText(row.argv, line);
    row.argv.title = asks ?? failing ?? joinArgv(s.argv);
    row.argv.classList.toggle('asks', asks != null || failing != null);
    row.el.dataset.persistError = s.persist_error ?? '';
    setText(row.state, s.state);
    row.state.className = `c-state state st-${s.state}`;
    row.state.title = s.reason ?? (s.last_exit ? formatExit(s.last_exit) : '');
    const b = statusBadge(s);
    setText(row.badge, b.text);
    // A badge that only repeats the state column (`running`) is not shown beside it (a phone,
    // whose rows have no state column, shows it: see style.css).
    row.badge.className = `badge ${b.cls}${b.text === s.state ? ' same-as-state' : ''}`;
    row.badge.dataset.attention = s.attention ?? '';
    row.badge.title = s.attention ?? '';
    setText(row.restarts, String(s.restarts ?? 0));
    setText(row.viewers, String(s.viewers ?? 0));
    setText(row.cpu, isAlive(s.state) ? formatCpu(s.cpu_percent) : '—');
    setText(row.rss, isAlive(s.state) ? formatKiB(s.rss_kib) : '—');
    this.fillUptime(row, s);
  }

  private fillUptime(row: Row, s: SessionInfo): void {
    const t = parseTime(s.started_at);
    setText(row.uptime, t != null && isAlive(s.state) ? formatUptime(Date.now() - t) : '—');
  }

  private updateUptimes(): void {
    for (const [id, row] of this.rows) {
      const s = this.store.map.get(id);
      if (s) this.fillUptime(row, s);
    }
  }

  private spawnForm(): HTMLElement {
    const argv = h('input', {
      class: 'input mono',
      name: 'argv',
      testid: 'spawn-argv',
      placeholder: "bash -i   ·   claude   ·   python3 -c 'print(1)'",
      autocomplete: 'off',
      autocapitalize: 'off',
      spellcheck: 'false',
      required: true,
    });
    const name = h('input', {
      class: 'input mono',
      name: 'name',
      testid: 'spawn-name',
      placeholder: 'from the program',
      autocomplete: 'off',
      autocapitalize: 'off',
    });
    const cwd = h('input', {
      class: 'input mono',
      name: 'cwd',
      testid: 'spawn-cwd',
      placeholder: "server's own",
      autocomplete: 'off',
      autocapitalize: 'off',
    });
    const env = h('textarea', {
      class: 'input mono',
      name: 'env',
      testid: 'spawn-env',
      rows: 2,
      placeholder: 'KEY=value (one per line)',
      autocapitalize: 'off',
      spellcheck: 'false',
    });
    const agent = h(
      'select',
      { class: 'input', name: 'agent', testid: 'spawn-agent' },
      h('option', { value: '', text: 'none' }),
      h('option', { value: 'claude', text: 'claude' }),
    );
    const restart = h(
      'select',
      { class: 'input', name: 'restart', testid: 'spawn-restart' },
      h('option', { value: 'never', text: 'never' }),
      h('option', { value: 'on_failure', text: 'on failure' }),
      h('option', { value: 'always', text: 'always' }),
    );
    const submit = h('button', {
      class: 'btn primary',
      type: 'submit',
      testid: 'spawn-submit',
      text: 'Start',
    });
    const error = h('div', { class: 'form-error', testid: 'spawn-error', role: 'alert' });
    const ok = h('div', { class: 'form-ok', testid: 'spawn-ok', role: 'status' });
    const field = (label: string, input: HTMLElement, cls = '') =>
      h('label', { class: `field ${cls}` }, h('span', { class: 'label', text: label }), input);

    const form = h(
      'form',
      { class: 'card spawn', testid: 'spawn-form', novalidate: true },
      h('h2', { text: 'New session' }),
      h(
        'div',
        { class: 'spawn-grid' },
        field('command (argv, not run by a shell)', argv, 'wide'),
        field('name', name),
        field('working dir', cwd),
        field('agent profile', agent),
        field('restart', restart),
        field('environment', env, 'wide'),
      ),
      h('div', { class: 'form-actions' }, error, ok, submit),
    );
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      error.textContent = '';
      ok.replaceChildren();
      const spec: Record<string, unknown> = {};
      try {
        const a = splitArgv(argv.value);
        if (!a.length) throw new Error('the command is empty');
        spec.argv = a;
        const e = parseEnv(env.value);
        if (e.length) spec.env = e;
      } catch (e) {
        error.textContent = (e as Error).message;
        return;
      }
      if (name.value.trim()) spec.name = name.value.trim();
      if (cwd.value.trim()) spec.cwd = cwd.value.trim();
      if (agent.value) spec.agent = agent.value;
      spec.restart = restart.value;
      submit.disabled = true;
      try {
        const r = await this.conn.request({ type: 'spawn', spec });
        const s = r.session as SessionInfo;
        form.reset();
        ok.append(
          'Started ',
          h('a', { href: `#/s/${encodeURIComponent(s.id)}`, text: s.name, class: 'mono' }),
        );
      } catch (e) {
        error.textContent = (e as Error).message || 'spawn failed';
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }
}
