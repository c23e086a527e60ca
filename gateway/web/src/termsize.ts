// The terminal view's size: the size it fits (fit addon, asked of the server, debounced), a
// larger session's size followed (font shrunk, then scaled), a read-only phone's wide screen
// panned by finger with edge cues and the cursor's column kept in view, and "use this screen's
// size". Its own file: sizing is the view's largest concern after its frames, with its own
// state (the natural size, following, panning), and it needs of the view only its session.
import type { FitAddon } from '@xterm/addon-fit';
import type { Terminal } from '@xterm/xterm';
import type { Conn } from './conn';
import { debounce, h, toast } from './dom';
import { findSession, type SessionStore } from './sessions';
import type { SessionInfo } from './types';

/** How long a session stays larger than this view before the view shows it at its size. */
const FOLLOW_AFTER_MS = 700;
/** The smallest font a panning view (see `TermSize.pans`) shrinks to: 10 px monospace is still
 * read on a phone held at arm's length without zooming (its smallest UI text is 11–12 px);
 * the 7 px a 158-column screen was shrunk to on a 375 px phone could not be. Past it the
 * view pans instead. */
const PAN_MIN_FONT = 10;
/** How long after a finger panned the view it stays where the finger left it, rather than
 * going to the cursor's column as output moves it (see `TermSize.followCursor`). */
const PAN_HOLD_MS = 4000;

/** What sizing needs of its view beyond its terminal, box and connection. */
export interface SizeView {
  /** The session as the route names it (its name or id). */
  readonly route: string;
  /** Whether this view may type (and so size the session). */
  readonly writable: boolean;
  /** The font size this view draws at when it has the session's size. */
  readonly baseFont: number;
  /** The session's uuid once known. */
  uuid(): string | null;
  /** Draws the screen again, as it is now, at the terminal's size (`TermView.redrawAtSize`). */
  redraw(): void;
}

export class TermSize {
  /** The size this view fits at `baseFont` (what it last asked the server for). */
  private natural: { rows: number; cols: number } | null = null;
  /** Showing a session sized larger by another viewer (see `matchSession`). */
  private following = false;
  /** The "use this screen's size" button (writable views that follow a larger screen). */
  readonly takeSize: HTMLButtonElement;
  /** Pending decision to show a larger session (see `matchSession`). */
  private followTimer: ReturnType<typeof setTimeout> | undefined;
  /** The size and box `followSize` last fitted the font for. */
  private followed: string | null = null;
  /** A touch screen's view that cannot size the session (read-only): a screen wider than its
   * box at PAN_MIN_FONT is panned sideways by a finger, not shrunk or scaled past reading (it
   * has no other way to make it larger: a pinch zooms the whole page). A desktop's view,
   * and a writable one (whose "use this screen's size" makes the screen fit), scale instead. */
  readonly pans: boolean;
  /** The edges' cues that more of a panned screen is to that side (see `showPanCues`). */
  readonly panCues: { left: HTMLElement; right: HTMLElement };
  /** A finger is on the terminal, or when it was last lifted (see `followCursor`). */
  private touching = false;
  private touchedAt = 0;
  /** The frame that brings the cursor's column into view (one per frame, however many moves). */
  private cursorFrame = 0;
  /** Asks the server for this view's size (debounced). */
  private sendResize: ((rows: number, cols: number) => void) & { cancel: () => void } = Object.assign(
    () => {},
    { cancel: () => {} },
  );
  private ro: ResizeObserver | null = null;
  private disposed = false;

  constructor(
    private readonly term: Terminal,
    private readonly box: HTMLElement,
    private readonly fit: FitAddon,
    private readonly conn: Conn,
    private readonly store: SessionStore,
    private readonly view: SizeView,
  ) {
    this.pans = !view.writable && window.matchMedia('(pointer: coarse)').matches;
    // Shown while this view follows a larger screen's size (see `matchSession`): one tap
    // makes this screen's size the session's, as typing would, without a key to the program.
    this.takeSize = h('button', {
      class: 'take-size',
      type: 'button',
      testid: 'take-size',
      hidden: true,
      title: "another screen set this session's size; make it this screen's",
      text: "use this screen's size",
      onclick: () => this.takeSessionSize(),
    });
    // Over the terminal's edges, pointer-transparent (a drag there still pans).
    const cue = (side: 'left' | 'right', text: string) =>
      h(
        'div',
        { class: `pan-cue ${side}`, testid: `pan-more-${side}`, hidden: true, 'aria-hidden': 'true' },
        h('span', { text }),
      );
    this.panCues = { left: cue('left', '‹'), right: cue('right', '›') };
  }

  /** Sizes the terminal once it is open: follows the cursor and the box's scroll when it pans,
   * asks for the size it fits (a writable view, as its box changes). */
  mount(): void {
    if (this.pans) {
      this.term.onCursorMove(() => this.followCursor());
      // A cursor moved while the viewport was not at the bottom yet (a large write drawn over
      // several frames on a busy machine) is followed once the viewport gets there.
      this.term.onScroll(() => this.followCursor());
      this.box.addEventListener('scroll', () => this.showPanCues(), { passive: true });
    }
    const sendResize = debounce((rows: number, cols: number) => {
      const uuid = this.view.uuid();
      if (!this.view.writable || !uuid || !this.conn.isOpen()) return;
      this.conn.request({ type: 'resize', session: uuid, rows, cols }).catch(() => {});
    }, 100);
    this.sendResize = sendResize;
    // The view's own size is asked for; a size taken to show a larger session is not.
    this.term.onResize(({ rows, cols }) => {
      if (this.following) return;
      this.natural = { rows, cols };
      sendResize(rows, cols);
    });
    if (this.view.writable) {
      this.fitNow();
      this.ro = new ResizeObserver(() => this.fitNow());
      this.ro.observe(this.box);
    }
  }

  /** Stops what is pending (the view leaves). */
  dispose(): void {
    this.disposed = true;
    cancelAnimationFrame(this.cursorFrame);
    clearTimeout(this.followTimer);
    this.followTimer = undefined;
    this.sendResize.cancel();
    this.ro?.disconnect();
    this.ro = null;
  }

  /** A finger went down on the terminal (`down`), or was lifted (see `followCursor`). */
  touch(down: boolean): void {
    this.touching = down;
    if (!down) this.touchedAt = Date.now();
  }

  /** Shows the session at the size it has: a read-only view follows it, a writable one
   * follows it only while it is larger (see `matchSession`). */
  sessionSize(size: SessionInfo['size'] | undefined): void {
    if (!this.view.writable) this.followSize(size);
    else this.matchSession(size);
  }

  fitNow(): void {
    if (this.disposed || !this.box.clientWidth || !this.box.clientHeight) return;
    try {
      if (!this.following) {
        this.fit.fit();
        return;
      }
      // Showing a larger session at a smaller font: this view's own size (at its base font)
      // is still what the server keeps for it, for when it types.
      const d = this.fit.proposeDimensions();
      if (!d || !Number.isFinite(d.cols) || !Number.isFinite(d.rows)) return;
      const scale = (this.term.options.fontSize ?? this.view.baseFont) / this.view.baseFont;
      const nat = { cols: Math.max(2, Math.floor(d.cols * scale)), rows: Math.max(1, Math.floor(d.rows * scale)) };
      if (!this.natural || nat.cols !== this.natural.cols || nat.rows !== this.natural.rows) {
        this.natural = nat;
        this.sendResize(nat.rows, nat.cols);
      }
      const uuid = this.view.uuid();
      const s = uuid ? this.store.map.get(uuid) : undefined;
      this.matchSession(s?.size);
    } catch {
      /* not laid out yet */
    }
  }

  /**
   * A writable view whose session another viewer sized larger (a desktop that typed, or
   * resized last, beside this phone) shows the session at its size, the font shrunk to fit —
   * a 164-column program drawn into 52 columns was unreadable — until the session fits this
   * view again (the other left, or this one typed and took the size back).
   */
  private matchSession(size: { rows: number; cols: number } | undefined): void {
    if (!size || !this.natural) return;
    const larger = size.cols > this.natural.cols || size.rows > this.natural.rows;
    if (larger && !this.following) {
      // Only a size that stays: the session's size just after this view asked for its own
      // is the one from before (the server's answer is on its way).
      if (this.followTimer === undefined) {
        this.followTimer = setTimeout(() => {
          // The session's size as the server has it now (the list's figures are compared only
          // every 2 s: a stale one made a phone alone follow its last viewer's size).
          this.conn
            .request({ type: 'list' })
            .then((r) => {
              this.followTimer = undefined;
              const s = findSession((r.sessions ?? []) as SessionInfo[], this.view.uuid() ?? this.view.route);
              if (!s || this.disposed) return;
              this.store.upsert(s);
              const now = s.size;
              if (now && this.natural && (now.cols > this.natural.cols || now.rows > this.natural.rows)) {
                this.setFollowing(true);
                this.followSize(now);
              }
            })
            .catch(() => {
              this.followTimer = undefined;
            });
        }, FOLLOW_AFTER_MS);
      }
      return;
    }
    clearTimeout(this.followTimer);
    this.followTimer = undefined;
    if (larger) {
      this.setFollowing(true);
      this.followSize(size);
    } else if (this.following) {
      this.setFollowing(false);
      this.followed = null;
      this.scaleToFit(null);
      this.term.options.fontSize = this.view.baseFont;
      this.fitNow();
      // The session has this view's size again (that is why it fits): its screen, drawn at
      // the wider size, is drawn again at this one.
      if (this.term.cols === size.cols && this.term.rows === size.rows) this.view.redraw();
    }
  }

  /** Enters or leaves following a larger screen's size (the button to take it back with). */
  private setFollowing(on: boolean): void {
    this.following = on;
    if (on) this.box.dataset.following = 'true';
    else delete this.box.dataset.following;
    this.takeSize.hidden = !(on && this.view.writable);
  }

  /** Makes this view's own size the session's now (the server's `resize` with `take`). */
  private takeSessionSize(): void {
    const session = this.view.uuid();
    if (!session || !this.natural) return;
    const { rows, cols } = this.natural;
    this.conn
      .request({ type: 'resize', session, rows, cols, take: true })
      .then(() => {
        const uuid = this.view.uuid();
        if (uuid) this.store.patch(uuid, (s) => void (s.size = { rows, cols }));
        const s = uuid ? this.store.map.get(uuid) : undefined;
        this.matchSession(s?.size);
      })
      .catch((e: Error) => toast(`cannot take the size: ${e.message}`, 'error'));
  }

  /** Shows the session's size, shrinking the font (from the base size) until it fits: a
   * read-only viewer cannot resize the PTY, and a writable one shows a larger session so. A
   * panning view (see `pans`) stops at PAN_MIN_FONT and pans what does not fit. */
  followSize(size: { rows: number; cols: number } | undefined): void {
    if (!size) return;
    // Done already for this size in this box (the store changes often).
    const key = `${size.rows}x${size.cols} in ${this.box.clientWidth}x${this.box.clientHeight}`;
    if (key === this.followed && this.term.cols === size.cols && this.term.rows === size.rows) return;
    this.followed = key;
    if (this.term.cols !== size.cols || this.term.rows !== size.rows) {
      this.term.resize(Math.max(2, size.cols), Math.max(1, size.rows));
      // What this view holds was drawn at its old size (and reflowed by the resize): the
      // screen is drawn again, as it is now, at the new one.
      this.view.redraw();
    }
    requestAnimationFrame(() => {
      const screen = this.box.querySelector('.xterm-screen') as HTMLElement | null;
      let fs = this.view.baseFont;
      this.term.options.fontSize = fs;
      const room = this.inner();
      const wide = () => !!screen && screen.offsetWidth > room.width;
      const tall = () => !!screen && screen.offsetHeight > room.height;
      // A read-only desktop view fits the width only (its box scrolls down); a panning one
      // fits both while it can, as a writable one does.
      const over = () => wide() || ((this.view.writable || this.pans) && tall());
      const least = this.pans ? PAN_MIN_FONT : 7;
      while (fs > least && over()) {
        fs -= 1;
        this.term.options.fontSize = fs;
      }
      if (this.pans && wide()) {
        // Panned sideways whatever the font: as large a one as the box's height holds all the
        // rows at (a 158x40 screen on a phone took its top 40% at 7 px), up to the base font.
        // Half a pixel at a time: a whole one left a phone's bottom 70 px empty.
        while (fs < this.view.baseFont) {
          this.term.options.fontSize = fs + 0.5;
          if (tall()) break;
          fs += 0.5;
        }
        this.term.options.fontSize = fs;
      }
      // Still wider than the box at the smallest font that can be read (160 columns on a
      // phone): the whole screen is scaled down to fit, rather than cut off at the right, or,
      // in a panning view, panned (measured once the renderer has laid out the last font).
      requestAnimationFrame(() => (this.pans ? this.panToFit(screen) : this.scaleToFit(screen)));
    });
  }

  /** Lets a panning view's box scroll over all of `screen` (see `pans`): the terminal is as
   * large as its screen (and its scrollbar, then by the last column, not over the middle of
   * the screen); the cues say that more is to the side, and the cursor's column is shown. */
  private panToFit(screen: HTMLElement | null): void {
    const xterm = this.box.querySelector('.xterm') as HTMLElement | null;
    if (!xterm) return;
    xterm.style.width = '';
    xterm.style.height = '';
    const inner = this.inner();
    const wide = !!screen && screen.offsetWidth > inner.width;
    const tall = !!screen && screen.offsetHeight > inner.height;
    if (screen && wide) {
      const bar = (xterm.querySelector('.scrollbar.vertical') as HTMLElement | null)?.offsetWidth ?? 0;
      xterm.style.width = `${screen.offsetWidth + bar}px`;
    }
    if (screen && tall) xterm.style.height = `${screen.offsetHeight}px`;
    if (wide || tall) this.box.dataset.pans = 'true';
    else delete this.box.dataset.pans;
    this.showPanCues();
    this.followCursor();
  }

  /** Shows the cue on each edge that the panned screen goes on past (none when it fits). */
  private showPanCues(): void {
    const b = this.box;
    const on = b.dataset.pans === 'true';
    this.panCues.left.hidden = !(on && b.scrollLeft > 1);
    this.panCues.right.hidden = !(on && b.scrollWidth - b.clientWidth - b.scrollLeft > 1);
  }

  /**
   * Pans to the cursor's column when it is out of view, so the output being written is seen
   * as it comes (a shell's prompt and typing at column 150 of a desktop's screen), and to its
   * row when the box is shorter than the screen (a phone in landscape: an agent's input box is
   * at the bottom), unless a finger is on the terminal or moved it in the last PAN_HOLD_MS
   * (it is being read there). Not while the scrollback is scrolled up (the cursor's row is
   * not shown).
   */
  private followCursor(): void {
    if (!this.pans || this.cursorFrame) return;
    this.cursorFrame = requestAnimationFrame(() => {
      this.cursorFrame = 0;
      const b = this.box;
      if (this.disposed || b.dataset.pans !== 'true') return;
      if (this.touching || Date.now() - this.touchedAt < PAN_HOLD_MS) return;
      const buf = this.term.buffer.active;
      if (buf.viewportY !== buf.baseY) return;
      const screen = b.querySelector('.xterm-screen') as HTMLElement | null;
      if (!screen) return;
      const cs = getComputedStyle(b);
      // Into view along one axis: the cell at `at` (of `size`), with `margin` around it.
      const show = (at: number, size: number, margin: number, scroll: number, room: number): number => {
        if (at - margin < scroll) return Math.max(0, at - margin);
        return at + size + margin > scroll + room ? at + size + margin - room : scroll;
      };
      const cell = screen.offsetWidth / Math.max(1, this.term.cols);
      const x = (parseFloat(cs.paddingLeft) || 0) + Math.min(buf.cursorX, this.term.cols - 1) * cell;
      // A few columns around it: what was just typed before it, a little after.
      const left = show(x, cell, 4 * cell, b.scrollLeft, b.clientWidth);
      if (Math.abs(left - b.scrollLeft) >= 1) b.scrollLeft = left;
      const row = screen.offsetHeight / Math.max(1, this.term.rows);
      const y = (parseFloat(cs.paddingTop) || 0) + buf.cursorY * row;
      const top = show(y, row, row, b.scrollTop, b.clientHeight);
      if (Math.abs(top - b.scrollTop) >= 1) b.scrollTop = top;
    });
  }

  /** The box's room for the terminal (its size less its padding). */
  private inner(): { width: number; height: number } {
    const cs = getComputedStyle(this.box);
    const px = (v: string) => parseFloat(v) || 0;
    return {
      width: this.box.clientWidth - px(cs.paddingLeft) - px(cs.paddingRight),
      height: this.box.clientHeight - px(cs.paddingTop) - px(cs.paddingBottom),
    };
  }

  /** Scales the terminal down (a CSS transform) until `screen` fits the box; none when it does.
   * Scaled, the terminal is as wide as its screen and scrollbar: it was as wide as the box, so
   * its scrollbar, at its right edge, was scaled into the middle of the screen. */
  private scaleToFit(screen: HTMLElement | null): void {
    const xterm = this.box.querySelector('.xterm') as HTMLElement | null;
    if (!xterm) return;
    xterm.style.transform = '';
    xterm.style.width = '';
    if (!screen || !screen.offsetWidth) return;
    const inner = this.inner();
    const k = Math.min(
      1,
      inner.width / screen.offsetWidth,
      this.view.writable ? inner.height / Math.max(1, screen.offsetHeight) : 1,
    );
    if (k < 1) {
      const bar = (xterm.querySelector('.scrollbar.vertical') as HTMLElement | null)?.offsetWidth ?? 0;
      const width = screen.offsetWidth + bar;
      xterm.style.width = `${width}px`;
      xterm.style.transformOrigin = '0 0';
      xterm.style.transform = `scale(${Math.min(k, inner.width / width)})`;
    }
  }
}
