// Touch scrolling of the terminal view: a finger's drag scrolls the scrollback, or a program on
// the alternate screen with arrow keys, or (a panning view) the box itself. Its own file: it
// works around xterm.js 6.0's touch handling, and needs of the view only a few of its parts.
import type { Terminal } from '@xterm/xterm';

/** What touch scrolling needs of its view. */
export interface TouchView {
  /** The view pans a screen wider than its box (see `TermSize.pans`). */
  readonly pans: boolean;
  /** Whether this view may type (scroll a program with arrow keys). */
  readonly writable: boolean;
  /** Types `keys` into the session (as the keyboard would). */
  input(keys: string): void;
  /** A finger went down on the terminal (`down`), or was lifted (see `TermSize.touch`). */
  touch(down: boolean): void;
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
export function touchScroll(box: HTMLElement, term: Terminal, view: TouchView): void {
  let lastY: number | null = null;
  let startX = 0;
  let startY = 0;
  // The drag's axis once its first move said it: 'box' is left to the browser.
  let axis: 'box' | 'lines' | null = null;
  let carry = 0;
  box.addEventListener(
    'touchstart',
    (e) => {
      lastY = e.touches.length === 1 ? e.touches[0].clientY : null;
      if (lastY !== null) {
        startX = e.touches[0].clientX;
        startY = lastY;
      }
      axis = null;
      carry = 0;
      view.touch(true);
    },
    { passive: true },
  );
  box.addEventListener(
    'touchmove',
    (e) => {
      if (lastY === null || e.touches.length !== 1) return;
      if (axis === null) {
        const t = e.touches[0];
        axis = view.pans ? dragAxis(box, t.clientX - startX, t.clientY - startY) : 'lines';
      }
      if (axis === 'box') return;
      const buf = term.buffer.active;
      const alternate = buf.type !== 'normal';
      if (!alternate && buf.baseY === 0) return;
      if (alternate && !view.writable) return;
      const y = e.touches[0].clientY;
      const lineHeight = box.clientHeight / Math.max(1, term.rows);
      carry += lastY - y;
      lastY = y;
      const lines = Math.trunc(carry / lineHeight);
      if (lines !== 0) {
        carry -= lines * lineHeight;
        if (!alternate) term.scrollLines(lines);
        else {
          const app = term.modes.applicationCursorKeysMode;
          const key = `\x1b${app ? 'O' : '['}${lines > 0 ? 'B' : 'A'}`;
          view.input(key.repeat(Math.min(Math.abs(lines), 50)));
        }
      }
      e.preventDefault();
    },
    { passive: false },
  );
  const lift = () => {
    lastY = null;
    view.touch(false);
  };
  box.addEventListener('touchend', lift, { passive: true });
  box.addEventListener('touchcancel', lift, { passive: true });
}

/** Who takes a panning view's drag that started by (`dx`, `dy`): the browser scrolling the
 * box ('box': sideways, or up and down while the box has rows hidden that way), or the
 * scrollback ('lines'). */
function dragAxis(b: HTMLElement, dx: number, dy: number): 'box' | 'lines' {
  if (Math.abs(dx) > Math.abs(dy)) return b.scrollWidth > b.clientWidth + 1 ? 'box' : 'lines';
  // The finger going down shows what is above.
  const room = dy > 0 ? b.scrollTop : b.scrollHeight - b.clientHeight - b.scrollTop;
  return room > 1 ? 'box' : 'lines';
}
