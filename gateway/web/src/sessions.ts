// The live session list (admin): one `watch` per connection fills it, then the server pushes
// `session` / `removed`; no polling. Also owns what depends on the whole list: the tab title's
// attention count and the opt-in browser notification when a session starts waiting.
import type { Conn } from './conn';
import { toast } from './dom';
import { attentionLabel, attentionOf, findSession, isAlive } from './format';

export { findSession };
import type { ServerMsg, SessionInfo } from './types';

const NOTIFY_KEY = 'corral.notify';
/** When the page first saw each session waiting (see `SessionStore.since`), kept across reloads. */
const SINCE_KEY = 'corral.waitingSince';

/** What a session waits for, as far as its waiting time goes: its attention's label and the
 * question it asks (a question answered and another asked later is a new wait). */
interface Since {
  label: string;
  question: string;
  at: number;
}

export class SessionStore {
  readonly map = new Map<string, SessionInfo>();
  /** True once the first full list arrived (before that, changes are not news). */
  loaded = false;
  error: string | null = null;
  private readonly listeners = new Set<() => void>();
  /** What the open terminal view adds to the tab title (session name and program title). */
  private viewTitle: string | null = null;
  /** The toast said of each session (see `maybeNotify`). */
  private readonly told = new Map<string, HTMLElement>();
  /** Since when each waiting session has waited, as far as this page knows: a session's info
   * has no time for its question or its attention's last change, so it is when the page (or
   * an earlier load of it in this browser: localStorage, same session, same question) first
   * saw it waiting. */
  private readonly waits = new Map<string, Since>();
  private readonly savedWaits: Record<string, Since> = loadWaits();

  constructor(
    private readonly conn: Conn,
    admin: boolean,
  ) {
    conn.onMessage((m) => this.onMessage(m));
    if (admin) {
      conn.onOpen(() => this.watch());
      if (conn.isOpen()) this.watch();
    }
  }

  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** By id, name, or the start of an id naming one session (as `corral ps` prints it). */
  get(idOrName: string): SessionInfo | undefined {
    return findSession([...this.map.values()], idOrName);
  }

  all(): SessionInfo[] {
    return [...this.map.values()];
  }

  waitingCount(): number {
    let n = 0;
    for (const s of this.map.values()) if (attentionLabel(s.attention) != null) n++;
    return n;
  }

  /** Since when session `id` has waited for its user (ms since the epoch; see `waits`);
   * undefined when it waits for nothing. */
  since(id: string): number | undefined {
    return this.waits.get(id)?.at;
  }

  /** Notes when a session started to wait, or that it no longer does. */
  private noteWait(s: SessionInfo): boolean {
    const label = (isAlive(s.state) && attentionLabel(s.attention)) || null;
    const had = this.waits.get(s.id);
    // What tells this wait from an earlier one of the same kind: the question's id, or the
    // process a start screen belongs to. None for a finished turn (an agent idle before a
    // reload may have worked and stopped again since): its wait is not kept across reloads.
    const question =
      s.permission?.id ?? (s.attention === 'asks_at_start' ? `start ${JSON.stringify(s.started_at)}` : '');
    // A saved time is for the first sight of a session after a reload, never later.
    const saved = this.savedWaits[s.id];
    delete this.savedWaits[s.id];
    if (!label) return this.waits.delete(s.id);
    // Still the same wait (the next of its questions shown after the first was answered is
    // part of it: the agent has been held up since the first).
    if (had && had.label === label) {
      const moved = had.question !== question;
      had.question = question;
      return moved;
    }
    const at =
      !had && question && saved && saved.label === label && saved.question === question && saved.at <= Date.now()
        ? saved.at
        : Date.now();
    this.waits.set(s.id, { label, question, at });
    return true;
  }

  private saveWaits(): void {
    try {
      const kept = [...this.waits].filter(([, w]) => w.question);
      localStorage.setItem(SINCE_KEY, JSON.stringify(Object.fromEntries(kept)));
    } catch {
      /* storage full or refused: only the order after a reload suffers */
    }
  }

  /** Removes the toast said about session `id` (it is on screen now). */
  dismissToast(id: string): void {
    this.told.get(id)?.remove();
    this.told.delete(id);
  }

  /** Merges a session info from anywhere (a reply, a push, a `list`). */
  upsert(info: SessionInfo): void {
    info.attention = attentionOf(info);
    const prev = this.map.get(info.id);
    this.map.set(info.id, info);
    if (this.noteWait(info) && this.loaded) this.saveWaits();
    if (this.loaded) this.maybeNotify(prev, info);
    this.changed();
  }

  /** Applies a session's own event to its info (for viewers that have no watch). */
  patch(id: string, fn: (s: SessionInfo) => void): void {
    const s = this.map.get(id);
    if (!s) return;
    const copy = { ...s };
    fn(copy);
    this.upsert(copy);
  }

  private async watch(): Promise<void> {
    try {
      const r = await this.conn.request({ type: 'watch' });
      const list = ((r.sessions ?? []) as SessionInfo[]).map((s) => ({ ...s, attention: attentionOf(s) }));
      const fresh = new Map(list.map((s) => [s.id, s]));
      if (this.loaded) {
        for (const s of list) this.maybeNotify(this.map.get(s.id), s);
      }
      this.map.clear();
      for (const [k, v] of fresh) this.map.set(k, v);
      for (const id of [...this.waits.keys()]) if (!fresh.has(id)) this.waits.delete(id);
      for (const s of list) this.noteWait(s);
      this.saveWaits();
      this.loaded = true;
      this.error = null;
    } catch (e) {
      const err = e as { code?: string; message?: string };
      if (err.code === 'disconnected') return;
      this.error = err.message ?? 'cannot list sessions';
    }
    this.changed();
  }

  private onMessage(m: ServerMsg): void {
    if (m.type === 'session' && m.session && typeof m.session === 'object') {
      this.upsert(m.session as SessionInfo);
    } else if (m.type === 'removed' && typeof m.session === 'string') {
      this.waits.delete(m.session);
      if (this.map.delete(m.session)) this.changed();
    }
  }

  /** The id of the session the page shows (its route names it by id, name or id prefix,
   * percent-encoded), or the route's key when no listed session has it; null on the list. */
  private openSession(): string | null {
    const m = /^#\/s\/(.+)$/.exec(location.hash);
    if (!m) return null;
    let key = m[1];
    try {
      key = decodeURIComponent(key);
    } catch {
      /* as it is (it names no session) */
    }
    return this.get(key)?.id ?? key;
  }

  /** The terminal view's part of the tab title (null when no session is open). */
  setViewTitle(title: string | null): void {
    if (title === this.viewTitle) return;
    this.viewTitle = title;
    this.renderTitle();
  }

  private renderTitle(): void {
    const n = this.waitingCount();
    document.title = `${n > 0 ? `(${n}) ` : ''}${this.viewTitle ? `${this.viewTitle} — ` : ''}corral`;
  }

  private changed(): void {
    this.renderTitle();
    for (const fn of this.listeners) fn();
  }

  private maybeNotify(prev: SessionInfo | undefined, next: SessionInfo): void {
    // Entering a state that waits for the user, or another one (an idle agent that starts to
    // ask a permission is news too: it was missed).
    const now = attentionLabel(next.attention);
    // One toast per session: the last one said goes when its state moves on (a question
    // answered elsewhere must not stay on screen as if it still asked).
    if (prev && prev.attention !== next.attention) {
      this.told.get(next.id)?.remove();
      this.told.delete(next.id);
    }
    if (now == null || (prev && attentionLabel(prev.attention) === now)) return;
    // Watching another session (a phone shows one at a time): said on the page too, a tap
    // away — the tab title's count alone went unseen, and a phone's browser may not notify.
    const open = this.openSession();
    if (prev && open && open !== next.id) {
      const what =
        next.attention === 'asks_at_start'
          ? 'waits on its start screen'
          : next.attention !== 'needs_permission'
            ? 'waits for you'
            : next.permission?.tool === 'AskUserQuestion'
              ? 'asks you to choose'
              : 'asks permission';
      this.told.set(next.id, toast(`${next.name} ${what} — open it`, 'info', 8000, `#/s/${next.id}`));
    }
    if (!notificationsOn()) return;
    try {
      const n = new Notification(`${next.name} is waiting`, {
        body: attentionLabel(next.attention) ?? 'waiting',
        tag: `corral-${next.id}`,
      });
      n.onclick = () => {
        window.focus();
        location.hash = `#/s/${next.id}`;
        n.close();
      };
    } catch {
      /* some browsers (Android Chrome) only notify through a service worker */
    }
  }
}

function loadWaits(): Record<string, Since> {
  try {
    const v = JSON.parse(localStorage.getItem(SINCE_KEY) ?? '{}');
    return v && typeof v === 'object' ? (v as Record<string, Since>) : {};
  } catch {
    return {};
  }
}

export function notificationsSupported(): boolean {
  return typeof Notification !== 'undefined';
}

export function notificationsOn(): boolean {
  return (
    notificationsSupported() &&
    Notification.permission === 'granted' &&
    localStorage.getItem(NOTIFY_KEY) === '1'
  );
}

/** Toggles notifications; asks the browser's permission the first time. */
export async function toggleNotifications(): Promise<boolean> {
  if (!notificationsSupported()) return false;
  if (notificationsOn()) {
    localStorage.removeItem(NOTIFY_KEY);
    return false;
  }
  const p =
    Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
  if (p === 'granted') localStorage.setItem(NOTIFY_KEY, '1');
  return p === 'granted';
}

/** Why notifications are off after the user asked for them: the browser refused, and only
 * its settings (or an https address) can change that; a question dismissed can be asked again. */
export function notificationsRefused(): string {
  if (!window.isSecureContext) {
    return 'notifications need this page over https (or localhost): the browser refuses them here';
  }
  if (Notification.permission === 'denied') {
    return "notifications are blocked for this site: allow them in the browser's site settings, then try again";
  }
  return 'notifications were not allowed (the browser asked and had no answer): try again';
}

