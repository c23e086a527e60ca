// Pure helpers: argv/env parsing for the spawn form and formatting of session data
// (times, exits, sizes, badges). No DOM here, so they are unit-tested under node (format.test.ts).
import type { ExitStatus, SessionInfo, WireTime } from './types';

/**
 * Splits a command line into argv like a POSIX shell would tokenize it, without any expansion:
 * whitespace separates words, '…' is literal, "…" allows \" and \\ escapes, and a backslash
 * outside quotes escapes the next character. The result is sent as an argv array: nothing on the
 * server ever runs it through a shell. Throws on an unclosed quote.
 */
export function splitArgv(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error('unclosed single quote');
      cur += line.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      let closed = false;
      while (i < line.length) {
        const d = line[i];
        if (d === '"') {
          closed = true;
          i++;
          break;
        }
        if (d === '\\' && i + 1 < line.length && (line[i + 1] === '"' || line[i + 1] === '\\')) {
          cur += line[i + 1];
          i += 2;
        } else {
          cur += d;
          i++;
        }
      }
      if (!closed) throw new Error('unclosed double quote');
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[i + 1];
      inWord = true;
      i += 2;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
      i++;
    } else {
      cur += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

/** Parses `K=V` lines (blank lines and `#` comments skipped). Throws on a line without `=`. */
export function parseEnv(text: string): [string, string][] {
  const out: [string, string][] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!line.trim() || line.trimStart().startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`env line "${line.trim()}" is not KEY=VALUE`);
    const key = line.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new Error(`env name "${key}" is not valid`);
    out.push([key, line.slice(eq + 1)]);
  }
  return out;
}

/** Milliseconds since the epoch, from an RFC 3339 string or a serde SystemTime object. */
export function parseTime(t: WireTime | null | undefined): number | null {
  if (t == null) return null;
  if (typeof t === 'string') {
    const ms = Date.parse(t);
    return Number.isNaN(ms) ? null : ms;
  }
  if (typeof t === 'number') return t > 1e12 ? t : t * 1000;
  if (typeof t === 'object' && typeof t.secs_since_epoch === 'number') {
    return t.secs_since_epoch * 1000 + Math.floor((t.nanos_since_epoch ?? 0) / 1e6);
  }
  return null;
}

/** "exit 0" / "signal 9" from `{"Code":0}`, `{"code":0}`, `{"Signal":9}`, `{"signal":9}`. */
export function formatExit(e: ExitStatus | number | string | null | undefined): string {
  if (e == null) return '';
  if (typeof e === 'number') return `exit ${e}`;
  if (typeof e === 'string') return e;
  for (const [k, v] of Object.entries(e)) {
    const key = k.toLowerCase();
    if (key === 'code') return `exit ${v}`;
    if (key === 'signal') return `signal ${v}`;
  }
  return JSON.stringify(e);
}

/** Whether an exit status is a success (exit 0). */
export function exitOk(e: ExitStatus | null | undefined): boolean {
  return formatExit(e) === 'exit 0';
}

const pad = (n: number) => String(n).padStart(2, '0');

/** Compact elapsed time: "45s", "3m 05s", "2h 03m", "4d 05h". */
export function formatUptime(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${pad(m % 60)}m`;
  return `${Math.floor(h / 24)}d ${pad(h % 24)}h`;
}

/** "512 KiB", "45.6 MiB", "1.20 GiB" from KiB. */
export function formatKiB(kib: number | null | undefined): string {
  if (kib == null || !Number.isFinite(kib)) return '—';
  if (kib < 1024) return `${Math.round(kib)} KiB`;
  const mib = kib / 1024;
  if (mib < 1024) return `${mib < 10 ? mib.toFixed(1) : Math.round(mib)} MiB`;
  return `${(mib / 1024).toFixed(2)} GiB`;
}

export function formatCpu(p: number | null | undefined): string {
  if (p == null || !Number.isFinite(p)) return '—';
  return `${p < 10 ? p.toFixed(1) : Math.round(p)}%`;
}

/** serde Duration `{secs, nanos}` (or seconds) → "1.5s", rounded for reading (a backoff's
 * jittered 1.7106072810000001 s is "1.7s"): tenths under 10 s, hundredths under 1 s. */
export function formatDelay(d: unknown): string {
  let s: number;
  if (typeof d === 'number') s = d;
  else if (d && typeof d === 'object' && 'secs' in d) {
    const o = d as { secs: number; nanos?: number };
    s = o.secs + (o.nanos ?? 0) / 1e9;
  } else return String(d);
  if (!Number.isFinite(s)) return String(d);
  return `${Number(s.toFixed(s < 1 ? 2 : s < 10 ? 1 : 0))}s`;
}

/** Whether a process is (or is about to be) alive in this state. */
export function isAlive(state: string): boolean {
  return state === 'starting' || state === 'running' || state === 'stopping';
}

/**
 * Short words for an attention value; null when the session does not wait for the user. The
 * server may send a code (needs_permission, idle, waiting, notification), a hook name
 * (PermissionRequest, Notification) or the agent's own message ("Claude needs your permission
 * to use Bash"); long free text is reduced to a short label (the badge's title keeps it all).
 */
export function attentionLabel(a: string | null | undefined): string | null {
  if (a == null) return null;
  const k = a.trim().toLowerCase();
  // The server's attention states that do not wait for the user (`ready`: an agent idle
  // before its first prompt, see `attentionOf`).
  if (k === 'starting' || k === 'working' || k === 'exited' || k === 'ready') return null;
  if (k === 'notification') return 'notification';
  if (/permission|approv/.test(k)) return 'needs permission';
  // An agent that has not started waits on its screen (its folder trust): see `attentionOf`.
  if (k === 'asks_at_start') return 'asks on its screen';
  if (/^(idle|waiting|waiting_for_input|idle_prompt)$/.test(k) || /waiting|input|idle/.test(k)) {
    return 'waiting for input';
  }
  if (k.length <= 24 && /^[a-z0-9_ -]+$/.test(k)) return k.replace(/_/g, ' ');
  return 'waiting';
}

/** A session's attention as the page shows it: an agent idle before it ever worked in its
 * conversation is `ready` (a first prompt), not waiting for its user after a turn. */
export function attentionOf(
  s: Pick<SessionInfo, 'attention' | 'agent_fresh' | 'agent_asks_at_start'>,
): string | null {
  if (s.attention === 'starting' && s.agent_asks_at_start) return 'asks_at_start';
  return s.attention === 'idle' && s.agent_fresh ? 'ready' : s.attention;
}

/** Whether an attention label is a question for its user (a permission, a start screen's),
 * not a finished turn. */
function asksSomething(label: string): boolean {
  return label === 'needs permission' || label === 'asks on its screen';
}

/** The one-glance status badge of a session: what it waits for, or how it runs/ended. */
export function statusBadge(
  s: Pick<SessionInfo, 'state' | 'attention' | 'last_exit'> & {
    reason?: string | null;
    permission?: { tool: string } | null;
  },
): {
  text: string;
  cls: string;
} {
  const att = attentionLabel(s.attention);
  // A question to choose from (AskUserQuestion) asks no permission: the badge says what the
  // ask bar says.
  if (att === 'needs permission' && s.permission?.tool === 'AskUserQuestion') {
    return { text: 'asks you to choose', cls: 'att-perm' };
  }
  if (att) return { text: att, cls: asksSomething(att) ? 'att-perm' : 'att-wait' };
  // An agent at work says so: not the same green `running` as any long-lived process.
  if (s.state === 'running' && s.attention === 'working') return { text: 'working', cls: 'att-work' };
  if (s.state === 'running' && s.attention === 'ready') return { text: 'ready', cls: 'att-ready' };
  if (isAlive(s.state)) return { text: s.state, cls: `st-${s.state}` };
  // Stopped on request (a stop, a kill, a server shutdown): the signal it took is no failure.
  if (s.state === 'stopped' && s.last_exit && s.reason?.startsWith('stopped')) {
    return { text: 'stopped', cls: 'st-stopped' };
  }
  // Given up on by its restart policy: not the same as a program that ended badly once.
  if (s.state === 'failed') {
    return { text: s.last_exit ? `failed: ${formatExit(s.last_exit)}` : 'failed', cls: 'exit-bad' };
  }
  if (s.last_exit && (s.state === 'stopped' || s.state === 'exited')) {
    return { text: formatExit(s.last_exit), cls: exitOk(s.last_exit) ? 'exit-ok' : 'exit-bad' };
  }
  return { text: s.state, cls: `st-${s.state}` };
}

/** An argv as one command line a shell would split back into it: words that need it quoted
 * (`bash -c 'echo $FOO; sleep 1'`), the inverse of `splitArgv`. */
export function joinArgv(argv: string[]): string {
  return argv
    .map((a) => (a !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))
    .join(' ');
}

/** Escapes nothing: only for making a short one-line summary of a JSON value. */
export function summarize(v: unknown, max = 160): string {
  let s: string;
  if (typeof v === 'string') s = v;
  else {
    try {
      s = JSON.stringify(v) ?? '';
    } catch {
      s = String(v);
    }
  }
  s = s.replace(/\s+/g, ' ');
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

/** "HH:MM:SS" local time of a wire time (with the date when not today). */
export function formatClock(t: WireTime | null | undefined, now = Date.now()): string {
  const ms = parseTime(t);
  if (ms == null) return '';
  const d = new Date(ms);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (new Date(now).toDateString() === d.toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

/** What a permission question asks, in one line: a Bash command, a file path, or the input
 * (at most `max` characters; the ask bar shows far more than a list row, so nothing that
 * matters hides behind the cut). */
export function permissionSummary(tool: string, input: unknown, max = 300): string {
  const o = (input && typeof input === 'object' ? input : {}) as Record<string, unknown>;
  // A question to choose from (Claude Code's AskUserQuestion) says its question, not its JSON.
  const questions = Array.isArray(o.questions) ? (o.questions as Record<string, unknown>[]) : [];
  const question = questions.find((q) => q && typeof q.question === 'string')?.question as
    | string
    | undefined;
  if (tool === 'AskUserQuestion' && question) {
    const more = questions.length > 1 ? ` (+${questions.length - 1} more)` : '';
    return `choose: ${oneLine(question, max)}${more}`;
  }
  const pick = ['command', 'file_path', 'path', 'url', 'pattern', 'prompt']
    .map((k) => o[k])
    .find((v) => typeof v === 'string' && v.length > 0) as string | undefined;
  const what = pick ?? (input === undefined ? '' : JSON.stringify(input));
  const short = oneLine(what, max);
  return short ? `${tool}: ${short}` : tool;
}

/** `text` on one line, at most `max` characters. */
function oneLine(what: string, max: number): string {
  // A newline in a command starts another command: it stays visible (⏎), never a plain space
  // that would make `echo safe⏎rm -rf ~` read as one harmless command.
  const line = what
    .replace(/\r?\n/g, ' ⏎ ')
    .replace(/[^\S\n]+/g, ' ')
    .trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** Where a session goes in the list: what needs its user first (a question, then a finished
 * turn), then agents at work, then the rest that runs, then what ended. */
export function attentionRank(s: Pick<SessionInfo, 'state' | 'attention'>): number {
  const att = attentionLabel(s.attention);
  if (att && asksSomething(att)) return 0;
  // A session its restart policy gave up on needs a look as much as a finished turn.
  if (att || s.state === 'failed') return 1;
  if (s.attention === 'working' && isAlive(s.state)) return 2;
  return isAlive(s.state) ? 3 : 4;
}

/** A command line for a glance: the program's name rather than its whole path
 * (`claude --permission-mode default`, not `/home/u/.npm/…/node_modules/.bin/claude …`). */
export function shortArgv(argv: string[]): string {
  if (!argv.length) return '';
  const [prog, ...rest] = argv;
  const base = prog.includes('/') ? prog.slice(prog.lastIndexOf('/') + 1) || prog : prog;
  return joinArgv([base, ...rest]);
}

/**
 * `data` typed with Ctrl held (the key bar's Ctrl, for a phone keyboard that has none): a
 * letter or one of `@[\\]^_` becomes its control character (`c` → ETX, Ctrl-C), space NUL,
 * `?` DEL, an arrow its Ctrl form (`\x1b[1;5D`, Ctrl-Left); anything else (a paste) goes as it is.
 */
export function withCtrl(data: string): string {
  // An arrow key (the key bar's, or a keyboard's in normal or application mode): Ctrl-Left
  // and the others, as xterm sends them (word by word in a shell).
  const arrow = /^\x1b[[O]([ABCD])$/.exec(data);
  if (arrow) return `\x1b[1;5${arrow[1]}`;
  if (data.length !== 1) return data;
  const c = data.toUpperCase().charCodeAt(0);
  if (c >= 0x40 && c <= 0x5f) return String.fromCharCode(c & 0x1f);
  if (data === ' ') return '\x00';
  if (data === '?') return '\x7f';
  return data;
}

/** The session `key` names in `list`, as the server reads a session key (docs/protocol.md): its
 * id, its name, or the start of its id from the 8 characters `corral ps` shows when that names
 * one session; a key that is one session's name and the start of another's id names neither.
 * (With 4, a page left open at a removed session's short name re-attached to another session
 * whose id began so, and took keys for it.) */
export function findSession(list: SessionInfo[], key: string): SessionInfo | undefined {
  const byId = list.find((s) => s.id === key);
  if (byId) return byId;
  const named = list.find((s) => s.name === key);
  const started =
    key.length >= 8 && /^[0-9a-f-]+$/i.test(key)
      ? list.filter((s) => s.id.startsWith(key.toLowerCase()))
      : [];
  if (named) return started.some((s) => s.id !== named.id) ? undefined : named;
  return started.length === 1 ? started[0] : undefined;
}
