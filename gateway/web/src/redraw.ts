/**
 * Redraw: a session's screen drawn over a view that shows it already (a view the output
 * lapped), keeping that view's scrollback — the same sequence the server sends a ttyd viewer
 * (`Snapshot::over_scrollback` in actors/src/screen/snapshot.rs).
 */
/** The full reset a snapshot starts with (`actors/src/screen/snapshot.rs`, FULL_RESET). */
const FULL_RESET = '\x1b[?47l\x1bc';
/** Modes turned off before a redraw over a live terminal (`Snapshot::over_scrollback`). */
const MODES_OFF =
  '\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?2004l\x1b[?1l\x1b>\x1b[?25h\x1b[?47l';

/** A snapshot drawn over a terminal that shows the session already, as the server's
 * `Snapshot::over_scrollback` draws it for ttyd viewers: what it shows goes up into its
 * scrollback with `note` on a new line under its bottom row, then a soft reset instead of the
 * full one (which in xterm.js wipes the scrollback too). Resetting the scroll region and origin
 * mode homes the cursor: the note went over the screen's second row, a line received far
 * above where the output was skipped. */
export function overScrollback(snapshot: Uint8Array, rows: number, note: string): Uint8Array {
  const reset = new TextEncoder().encode(FULL_RESET);
  const starts = reset.every((b, i) => snapshot[i] === b);
  const body = starts ? snapshot.subarray(reset.length) : snapshot;
  const head = new TextEncoder().encode(
    `${MODES_OFF}\x1b[r\x1b[?6l\x1b[0m\x1b[${rows};1H\r\n${note}${'\r\n'.repeat(rows)}\x1b[!p\x1b[H\x1b[2J`,
  );
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}
