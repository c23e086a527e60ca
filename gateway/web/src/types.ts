// Wire types of corral's native WebSocket protocol (docs/protocol.md) as the page sees them.
// Kept loose where the server has two spellings (legacy SystemTime objects, exit-status case),
// because the page must render whatever a given server version sends.

/** `{"Code":0}` / `{"code":0}` / `{"Signal":9}` / `{"signal":9}`. */
export type ExitStatus = Record<string, number>;

/** RFC 3339 string, or serde's SystemTime object. */
export type WireTime = string | { secs_since_epoch: number; nanos_since_epoch?: number } | number;

export type SessionState =
  | 'starting'
  | 'running'
  | 'stopping'
  | 'exited'
  | 'restarting'
  | 'stopped'
  | 'failed';

export interface SessionInfo {
  id: string;
  name: string;
  argv: string[];
  mode: 'pty' | 'pipe' | 'stream_json';
  state: SessionState | string;
  pid: number | null;
  started_at: WireTime | null;
  restarts: number;
  last_exit: ExitStatus | null;
  reason: string | null;
  size: { rows: number; cols: number };
  output_offset: number;
  viewers: number;
  lag_events: number;
  attention: string | null;
  /** What a session in `needs_permission` asks for: the tool and its input. */
  permission?: PermissionAsk | null;
  /** Questions asked while `permission` was open, shown in turn. */
  permission_queue?: PermissionAsk[];
  agent_session_id?: string;
  /** An agent that has not worked in its conversation yet: its `idle` is "ready", not
   * "waiting for input" after a turn. */
  agent_fresh?: boolean;
  /** An agent that has not started (no hook yet) sits on a screen asking this (Claude Code's
   * folder trust): it needs a key at its terminal. */
  agent_asks_at_start?: string | null;
  cpu_percent?: number | null;
  rss_kib?: number | null;
  persist_error?: string | null;
}

export interface EventKind {
  kind: string;
  [k: string]: unknown;
}

export interface SessionEvent {
  session?: string;
  seq: number;
  time: WireTime;
  offset: number;
  kind: EventKind;
}

export interface Whoami {
  scope: 'admin' | 'read' | 'write';
  session: string | null;
}

/** A JSON control message from the server (replies and pushes). */
export interface ServerMsg {
  type: string;
  id?: number;
  [k: string]: any;
}

/** Binary frame kinds (13-byte header: kind u8, channel u32 BE, offset u64 BE). */
export const KIND_OUTPUT = 1;
export const KIND_SNAPSHOT = 2;
export const KIND_INPUT = 3;

export interface BinFrame {
  kind: number;
  channel: number;
  offset: number;
  payload: Uint8Array;
}

/** A permission question; `id` names it in an answer (absent: it is in the agent's terminal). */
export interface PermissionAsk {
  id?: string;
  tool: string;
  input: unknown;
  request_id?: string;
}
