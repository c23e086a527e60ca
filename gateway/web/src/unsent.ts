// Keys typed while the terminal view is not attached (a phone in a tunnel, a reconnect): kept
// in order and sent once it is attached again, up to a bound past which typing is refused and
// said to be, never dropped unsaid. Its own file: a bounded queue with its own sayings, that
// needs of the view only its connection and its flash of refused keys.
import type { Conn } from './conn';
import { toast } from './dom';

/** Most bytes of keys kept while the connection is down (see `Unsent.keep`). */
const UNSENT_MAX = 64 * 1024;
const utf8 = new TextEncoder();
/** The bytes `data` is on the wire. */
function byteLength(data: string | Uint8Array): number {
  return typeof data === 'string' ? utf8.encode(data).length : data.length;
}

export class Unsent {
  /** Keys typed while the connection was down, sent once this view is attached again (at
   * most UNSENT_MAX bytes: past it, typing is refused and said to be). */
  private unsent: (string | Uint8Array)[] = [];
  private unsentBytes = 0;
  /** Keys were refused past UNSENT_MAX: none is kept until the connection is back. */
  private unsentFull = false;
  /** The keys kept were said to wait for the connection (see `say`). */
  private toldUnsent = false;

  /** `refused`: shows that keys typed went nowhere (the view's overlay flashes). */
  constructor(
    private readonly conn: Conn,
    private readonly refused: () => void,
  ) {}

  /** Keys are kept, waiting to be sent (a key typed now goes after them). */
  get waiting(): boolean {
    return this.unsent.length > 0;
  }

  /** Keeps keys typed while the connection is down (a phone in a tunnel): they are sent, in
   * order, once this view is attached again; past UNSENT_MAX they are refused, and said to be,
   * never dropped unsaid. */
  keep(data: string | Uint8Array): void {
    const n = byteLength(data);
    // Past the bound nothing more is kept until the connection is back: a later key kept
    // after a refused paste would reach the program without what came between.
    if (this.unsentFull || this.unsentBytes + n > UNSENT_MAX) {
      this.refused();
      if (!this.unsentFull) {
        toast('not connected: typing is not kept past 64 KiB; what you type now is not sent', 'error', 4000);
      }
      this.unsentFull = true;
      return;
    }
    this.unsent.push(data);
    this.unsentBytes += n;
    if (!this.conn.isOpen()) this.say();
  }

  /** Says, once until they are sent, that kept keys wait for the connection. Only while the
   * socket is down: while it is up this view is only (re)attaching (a redraw after a lag, a
   * first subscribe) and the keys go in a moment, unsaid; if the socket drops with keys kept
   * so, it is said then (`TermView.showConn`), or at the next key. Not at every key: the toast
   * would count them ("×37"). */
  say(): void {
    if (this.toldUnsent || !this.unsent.length) return;
    this.toldUnsent = true;
    toast('not connected: what you type is sent when the connection is back', 'info', 3000);
  }

  /** Sends the keys kept while the connection was down (see `keep`) on `channel`, the view's
   * subscription (none: 0). */
  flush(channel: number): void {
    while (this.unsent.length && channel) {
      if (!this.conn.sendInput(channel, this.unsent[0])) return;
      const sent = this.unsent.shift()!;
      this.unsentBytes -= byteLength(sent);
    }
    if (!this.unsent.length) this.unsentFull = this.toldUnsent = false;
  }

  /** Drops the keys kept (the view leaves). */
  clear(): void {
    this.unsent = [];
  }
}
