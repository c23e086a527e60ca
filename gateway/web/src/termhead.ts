// The terminal view's header: the session's name, state, attention badge, log warning, pid
// and uptime, the tab's title, and its actions (events, .cast download, restart / stop / kill /
// remove). Its own file: it renders the session's info (from the store) and acts on the
// session, and needs of the view only its session's uuid and whether it is gone.
import type { Conn } from './conn';
import type { AskBar } from './askbar';
import { confirmDialog, h, setText, toast } from './dom';
import type { EventsPanel } from './events';
import { attentionLabel, formatUptime, isAlive, joinArgv, parseTime, statusBadge } from './format';
import type { SessionStore } from './sessions';
import type { TermSize } from './termsize';
import { apiURL } from './url';

/** What the header needs of its view. */
export interface HeadView {
  /** The session as the route names it (its name or id). */
  readonly route: string;
  readonly admin: boolean;
  readonly writable: boolean;
  /** The session's uuid once known. */
  uuid(): string | null;
  /** The session is gone (removed, or not this token's): nothing left to show of it. */
  gone(): boolean;
  /** This page removed the session: nothing left to unsubscribe from. */
  removed(): void;
  /** Gives the terminal the keyboard's focus. */
  focus(): void;
}

export class TermHead {
  readonly el: HTMLElement;
  private readonly name: HTMLElement;
  private readonly state: HTMLElement;
  private readonly badge: HTMLElement;
  private readonly logWarn: HTMLElement;
  private readonly meta: HTMLElement;
  private readonly cast: HTMLAnchorElement;
  private readonly eventsBtn: HTMLElement;
  private readonly actions: HTMLElement;
  private stopBtn: HTMLButtonElement | undefined;
  private killBtn: HTMLButtonElement | undefined;
  /** The program's own window title (OSC 0/2), shown in the tab title after the name. */
  private programTitle = '';

  constructor(
    private readonly conn: Conn,
    private readonly store: SessionStore,
    private readonly events: EventsPanel,
    private readonly ask: AskBar,
    private readonly size: TermSize,
    private readonly view: HeadView,
  ) {
    this.name = h('span', { class: 'term-name mono', testid: 'term-name', text: view.route });
    // Both shown once the session is known (`renderInfo`): an empty dot and outline said
    // nothing of a session that does not exist.
    this.state = h('span', { class: 'state', testid: 'term-state', hidden: true });
    this.badge = h('span', { class: 'badge', testid: 'attention', hidden: true });
    // The session's output cannot be logged (a full disk): its program may be waiting.
    this.logWarn = h('span', { class: 'badge log-failing', testid: 'persist-error', text: 'log failing' });
    this.logWarn.hidden = true;
    this.meta = h('span', { class: 'term-meta muted mono' });
    this.cast = h('a', {
      class: 'btn small',
      testid: 'download-cast',
      title: 'download the retained output as an asciicast recording',
      text: '⤓ .cast',
    });
    const btn = (label: string, testid: string, cls: string, fn: () => void, title = '') =>
      h('button', { class: `btn small ${cls}`, testid, title, text: label, onclick: fn });
    this.eventsBtn = btn('events', 'events-toggle', '', () => this.toggleEvents(), 'event journal');
    const actions = h('div', { class: 'actions' }, this.eventsBtn, this.cast);
    if (view.admin) {
      actions.append(
        btn('restart', 'btn-restart', '', () => void this.act('restart')),
        (this.stopBtn = btn('stop', 'btn-stop', 'warn', () => void this.act('stop'))),
        (this.killBtn = btn('kill', 'btn-kill', 'danger', () => void this.act('kill'))),
        btn('remove', 'btn-remove', 'danger', () => void this.act('remove')),
      );
    }
    this.actions = actions;
    this.el = h(
      'header',
      { class: 'term-head' },
      h(
        'div',
        { class: 'term-title' },
        view.admin
          ? h('a', { class: 'btn small ghost back', href: '#/', testid: 'back', text: '←', title: 'sessions' })
          : null,
        this.name,
        this.state,
        this.badge,
        this.logWarn,
        view.writable
          ? null
          : h('span', { class: 'badge readonly', testid: 'read-only', text: 'read-only' }),
        this.meta,
      ),
      actions,
    );
  }

  /** Shows or hides the event journal (`on`: toggled when not given). */
  toggleEvents(on = !this.events.visible): void {
    this.events.show(on);
    this.eventsBtn.classList.toggle('active', on);
    requestAnimationFrame(() => this.size.fitNow());
  }

  /** The program set its window title (`t`): the tab's title says it. */
  setProgramTitle(t: string): void {
    this.programTitle = t;
    this.renderTabTitle();
  }

  /** The session is gone (see `TermView.showGone`): no actions, and no state or badge. */
  showGone(): void {
    this.actions.replaceChildren();
    // No session: no state or badge for one (a grey dot and an empty outline were left).
    this.state.hidden = true;
    this.badge.hidden = true;
  }

  private async act(op: 'stop' | 'kill' | 'restart' | 'remove'): Promise<void> {
    const uuid = this.view.uuid();
    const info = uuid ? this.store.map.get(uuid) : undefined;
    const name = info?.name ?? this.view.route;
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
    if (!window.matchMedia('(pointer: coarse)').matches) this.view.focus();
    if (!yes) return;
    try {
      await this.conn.request({ type: op, session: this.view.uuid() ?? this.view.route });
      if (op === 'remove') {
        this.view.removed(); // nothing left to unsubscribe from
        location.hash = '#/';
      }
    } catch (e) {
      toast(`${op} failed: ${(e as Error).message}`, 'error');
    }
  }

  /** The tab title: the session's name, then the program's title when it set one (bounded). */
  private renderTabTitle(): void {
    const uuid = this.view.uuid();
    const name = (uuid && this.store.map.get(uuid)?.name) || this.view.route;
    const full = this.programTitle ? `${name}: ${this.programTitle}` : name;
    this.store.setViewTitle(full.length > 100 ? `${full.slice(0, 99)}…` : full);
  }

  renderInfo(): void {
    const uuid = this.view.uuid();
    // A session gone (removed, or not this token's) has nothing left to show in the header.
    if (!uuid || this.view.gone()) return;
    const s = this.store.map.get(uuid);
    if (!s) return;
    setText(this.name, s.name);
    this.renderTabTitle();
    this.name.title = joinArgv(s.argv);
    setText(this.state, s.state);
    this.state.hidden = false;
    this.state.className = `state st-${s.state}`;
    this.state.title = s.reason ?? '';
    const b = statusBadge(s);
    const att = attentionLabel(s.attention) != null;
    const ended = !isAlive(s.state) && !!s.last_exit;
    this.badge.hidden = !att && !ended;
    setText(this.badge, att || ended ? b.text : '');
    this.badge.className = `badge ${b.cls}`;
    this.badge.dataset.attention = s.attention ?? '';
    this.badge.title = s.attention ?? '';
    this.logWarn.hidden = !s.persist_error;
    this.logWarn.title = s.persist_error ? `its output is not being logged: ${s.persist_error}` : '';
    // A toast about this session said what is now on screen: it goes (it covered the dialog).
    this.store.dismissToast(s.id);
    this.ask.show(s);
    // Nothing runs to stop or kill in an ended session (one waiting to restart can be stopped).
    const over = s.state === 'stopped' || s.state === 'failed';
    for (const b of [this.stopBtn, this.killBtn]) if (b) b.disabled = over;
    const cast = this.cast;
    cast.href = apiURL(`/v1/sessions/${encodeURIComponent(s.id)}/export?format=asciicast`).toString();
    cast.setAttribute('download', `${s.name}.cast`);
    this.size.sessionSize(s.size);
    this.renderUptime();
  }

  renderUptime(): void {
    const uuid = this.view.uuid();
    const s = uuid ? this.store.map.get(uuid) : undefined;
    if (!s) return;
    const t = parseTime(s.started_at);
    const parts: string[] = [];
    if (s.pid != null && (s.state === 'running' || s.state === 'stopping')) parts.push(`pid ${s.pid}`);
    if (t != null && isAlive(s.state)) parts.push(`up ${formatUptime(Date.now() - t)}`);
    if (s.restarts) parts.push(`↻${s.restarts}`);
    setText(this.meta, parts.join(' · '));
  }
}
