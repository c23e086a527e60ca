// The one WebSocket to corral (/v1/ws, subprotocol corral.v1, cookie-authenticated): request/
// reply by id, pushes to listeners, binary frames, and reconnection with exponential backoff
// (250 ms → 5 s, jitter). Views re-establish their watch/subscriptions on every `open`.
import { toast } from './dom';
import { apiURL } from './url';
import { whoami } from './http';
import type { BinFrame, ServerMsg } from './types';

export type ConnState = 'connecting' | 'connected' | 'reconnecting';

export class RequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Bytes the server may send on one subscription beyond our last ack (docs/protocol.md). */
export const FLOW_WINDOW = 1 << 20;
const HEADER = 13;
const PING_EVERY_MS = 25_000;
const PING_TIMEOUT_MS = 10_000;
/** After input, a ping if none was sent for this long, answered within INPUT_PING_TIMEOUT_MS
 * or the socket is taken as dead. */
const INPUT_PING_AFTER_MS = 3_000;
const INPUT_PING_TIMEOUT_MS = 5_000;

export function wsURL(path: string): string {
  const u = apiURL(path);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

type Pending = { resolve: (m: ServerMsg) => void; reject: (e: RequestError) => void };

export class Conn {
  state: ConnState = 'connecting';
  private ws: WebSocket | null = null;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private pinger: ReturnType<typeof setInterval> | undefined;
  /** When the last ping was sent (ms since the epoch). */
  private lastPing = 0;
  /** Input frames sent on this socket, and how many of them a ping's answer has vouched for
   * (the server read them: it answered a ping sent after them). */
  private inputSent = 0;
  private inputVouched = 0;
  private stopped = false;
  private readonly stateListeners = new Set<(s: ConnState) => void>();
  private readonly msgListeners = new Set<(m: ServerMsg) => void>();
  private readonly frameListeners = new Set<(f: BinFrame) => void>();
  private readonly openListeners = new Set<() => void>();
  private readonly enc = new TextEncoder();
  /** The view that last subscribed to each session on this socket (see `claim`). */
  private readonly subscribers = new Map<string, object>();

  /** `onAuthLost` runs when the server refuses us (cookie gone, token revoked): the app shows
   * the login view, with `why` when the server said it. */
  constructor(private readonly onAuthLost: (why?: string) => void) {
    const kick = () => {
      if (this.state === 'reconnecting' && !this.stopped) this.connectSoon(0);
    };
    window.addEventListener('online', kick);
    // The device says it lost its network: the socket cannot be trusted (a half-open link
    // looked "connected" for 25–35 s, and keys typed then were lost). Reconnect at once; it
    // succeeds when the network is back (`online` kicks it too).
    window.addEventListener('offline', () => {
      if (this.state === 'connected') this.dropSocket('offline');
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') {
        kick();
        if (this.state === 'connected') this.ping();
      }
    });
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, 'logout');
    this.failPending('disconnected', 'disconnected');
  }

  /** Sends a request and waits for its reply (or error, or the socket's end). */
  request(op: Record<string, unknown>): Promise<ServerMsg> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.isOpen()) {
        reject(new RequestError('disconnected', 'not connected'));
        return;
      }
      this.pending.set(id, { resolve, reject });
      this.ws!.send(JSON.stringify({ ...op, id }));
    });
  }

  /** Fire and forget; false when not connected. */
  send(op: Record<string, unknown>): boolean {
    if (!this.isOpen()) return false;
    this.ws!.send(JSON.stringify(op));
    return true;
  }

  /** INPUT frame(s) on a channel; large input is split to stay below the frame limit. */
  sendInput(channel: number, data: string | Uint8Array): boolean {
    if (!this.isOpen()) return false;
    const bytes = typeof data === 'string' ? this.enc.encode(data) : data;
    const CHUNK = 32 * 1024;
    for (let at = 0; at < bytes.length || at === 0; at += CHUNK) {
      const part = bytes.subarray(at, Math.min(bytes.length, at + CHUNK));
      const frame = new Uint8Array(HEADER + part.length);
      const dv = new DataView(frame.buffer);
      dv.setUint8(0, 3);
      dv.setUint32(1, channel);
      dv.setBigUint64(5, 0n);
      frame.set(part, HEADER);
      this.ws!.send(frame);
      this.inputSent++;
      if (bytes.length === 0) break;
    }
    // Typing on a link that may have died (a phone on a bus): a ping soon after tells, in
    // seconds rather than at the next periodic ping.
    if (Date.now() - this.lastPing > INPUT_PING_AFTER_MS) this.ping(INPUT_PING_TIMEOUT_MS);
    return true;
  }

  /** Notes `owner` as the last to subscribe to `session` on this socket, before it sends the
   * subscribe. The server keeps one subscription per session and connection (a later subscribe
   * replaces the earlier one) and `unsubscribe` names the session, not the channel: only the
   * last subscriber may end it, or a view left while its subscribe was on its way would end,
   * when the answer came, the next view's subscription to the same session. */
  claim(session: string, owner: object): void {
    this.subscribers.set(session, owner);
  }

  /** Forgets `owner`'s claim on `session` without unsubscribing (its subscribe failed, or the
   * session is gone). */
  release(session: string, owner: object): void {
    if (this.subscribers.get(session) === owner) this.subscribers.delete(session);
  }

  /** Ends `owner`'s subscription to `session`, unless a later subscribe replaced it (see
   * `claim`); true if the unsubscribe was sent. */
  unsubscribe(session: string, owner: object): boolean {
    if (this.subscribers.get(session) !== owner) return false;
    this.subscribers.delete(session);
    return this.send({ type: 'unsubscribe', session });
  }

  isOpen(): boolean {
    return this.state === 'connected' && this.ws?.readyState === WebSocket.OPEN;
  }

  onState(fn: (s: ConnState) => void): () => void {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }
  onMessage(fn: (m: ServerMsg) => void): () => void {
    this.msgListeners.add(fn);
    return () => this.msgListeners.delete(fn);
  }
  onFrame(fn: (f: BinFrame) => void): () => void {
    this.frameListeners.add(fn);
    return () => this.frameListeners.delete(fn);
  }
  /** Called after every successful (re)connection and hello. */
  onOpen(fn: () => void): () => void {
    this.openListeners.add(fn);
    return () => this.openListeners.delete(fn);
  }

  private setState(s: ConnState): void {
    if (this.state === s) return;
    this.state = s;
    for (const fn of this.stateListeners) fn(s);
  }

  private connect(): void {
    if (this.stopped) return;
    let opened = false;
    let ws: WebSocket;
    try {
      ws = new WebSocket(wsURL('/v1/ws'), ['corral.v1']);
    } catch {
      this.scheduleReconnect(false);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = async () => {
      opened = true;
      try {
        const id = this.nextId++;
        const hello = new Promise<ServerMsg>((resolve, reject) =>
          this.pending.set(id, { resolve, reject }),
        );
        ws.send(JSON.stringify({ type: 'hello', id, protocol: 1, window: FLOW_WINDOW }));
        await hello;
      } catch (e) {
        console.warn('corral: hello failed', e);
        return; // the close handler reconnects
      }
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.setState('connected');
      this.startPinger();
      for (const fn of this.openListeners) {
        try {
          fn();
        } catch (e) {
          console.error(e);
        }
      }
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (typeof ev.data === 'string') this.onText(ev.data);
      else this.onBinary(ev.data as ArrayBuffer);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.inputSent = 0;
      this.inputVouched = 0;
      clearInterval(this.pinger);
      this.failPending('disconnected', 'connection lost');
      if (this.stopped) return;
      if (ev.code === 1008 && (ev.reason === 'token revoked' || ev.reason === 'logged out')) {
        // Retrying cannot heal this: say so at once.
        this.stop();
        this.onAuthLost(ev.reason === 'logged out' ? 'You logged out (in another tab).' : 'This token was revoked.');
        return;
      }
      this.setState('reconnecting');
      this.scheduleReconnect(opened);
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  private scheduleReconnect(hadOpened: boolean): void {
    const base = Math.min(5000, 250 * 2 ** this.attempt);
    this.attempt++;
    const delay = Math.min(5000, base * (0.75 + Math.random() * 0.5));
    this.connectSoon(delay);
    if (!hadOpened) {
      // The upgrade was refused or the server is down: tell them apart, since a lost login
      // (401) never heals by retrying.
      whoami()
        .then((w) => {
          if (w === null && !this.stopped) {
            this.stop();
            this.onAuthLost();
          }
        })
        .catch(() => {});
    }
  }

  private connectSoon(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), ms);
  }

  private startPinger(): void {
    clearInterval(this.pinger);
    this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  /** A ping that must come back in time, or the socket is taken as dead (phones, NAT). */
  private ping(timeoutMs = PING_TIMEOUT_MS): void {
    const ws = this.ws;
    if (!ws || !this.isOpen()) return;
    this.lastPing = Date.now();
    const sent = this.inputSent;
    const t = setTimeout(() => {
      if (this.ws === ws) this.dropSocket('ping timeout');
    }, timeoutMs);
    this.request({ type: 'ping' })
      .then(() => {
        if (this.ws === ws) this.inputVouched = Math.max(this.inputVouched, sent);
      })
      .catch(() => {})
      .finally(() => clearTimeout(t));
  }

  /** Gives up the socket now (no answer in time, or the device went offline) and reconnects:
   * a close on a half-open socket may never fire onclose promptly, so the state is forced. */
  private dropSocket(why: string): void {
    const ws = this.ws;
    if (!ws) return;
    // Keys sent on a link that died may never have arrived: said, not left to be guessed.
    if (this.inputSent > this.inputVouched) {
      toast('the connection was lost: what you typed in the last seconds may not have arrived', 'error', 6000);
    }
    this.inputSent = 0;
    this.inputVouched = 0;
    this.ws = null;
    ws.close(4000, why);
    clearInterval(this.pinger);
    this.failPending('disconnected', 'connection lost');
    this.setState('reconnecting');
    this.scheduleReconnect(true);
  }

  private failPending(code: string, msg: string): void {
    // The socket is gone, and every subscription on it with it.
    this.subscribers.clear();
    const p = [...this.pending.values()];
    this.pending.clear();
    for (const { reject } of p) reject(new RequestError(code, msg));
  }

  private onText(text: string): void {
    let msg: ServerMsg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn('corral: unparsable message');
      return;
    }
    if (typeof msg.id === 'number' && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id)!;
      this.pending.delete(msg.id);
      if (msg.type === 'error') p.reject(new RequestError(msg.code ?? 'error', msg.message ?? 'error'));
      else p.resolve(msg);
      // Replies that carry state (a session info) are also news for the store.
      if (msg.type !== 'session') return;
    }
    if (msg.type === 'error') console.warn('corral: server error', msg.code, msg.message);
    for (const fn of this.msgListeners) {
      try {
        fn(msg);
      } catch (e) {
        console.error(e);
      }
    }
  }

  private onBinary(buf: ArrayBuffer): void {
    if (buf.byteLength < HEADER) return;
    const dv = new DataView(buf);
    const frame: BinFrame = {
      kind: dv.getUint8(0),
      channel: dv.getUint32(1),
      offset: Number(dv.getBigUint64(5)),
      payload: new Uint8Array(buf, HEADER),
    };
    for (const fn of this.frameListeners) {
      try {
        fn(frame);
      } catch (e) {
        console.error(e);
      }
    }
  }
}
