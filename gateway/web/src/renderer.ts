// How the terminal view draws: its colours, and its WebGL renderer (the DOM one when WebGL is
// not there or its context is lost), released in full when the view leaves. Its own file: the
// release works around xterm.js 6.0's renderer leak and frees the GPU context at once, which
// the view's core need not know about.
import type { FitAddon } from '@xterm/addon-fit';
import { WebglAddon } from '@xterm/addon-webgl';
import type { Terminal } from '@xterm/xterm';

/** The terminal's colours. */
export const THEME = {
  background: '#0b0e14',
  foreground: '#d8dee9',
  cursor: '#e6edf3',
  cursorAccent: '#0b0e14',
  selectionBackground: '#264f78',
  scrollbarSliderBackground: 'rgba(110, 118, 129, 0.22)',
  scrollbarSliderHoverBackground: 'rgba(110, 118, 129, 0.4)',
  scrollbarSliderActiveBackground: 'rgba(110, 118, 129, 0.55)',
  black: '#1c2128',
  red: '#ff7b72',
  green: '#3fb950',
  yellow: '#d29922',
  blue: '#58a6ff',
  magenta: '#bc8cff',
  cyan: '#39c5cf',
  white: '#b1bac4',
  brightBlack: '#6e7681',
  brightRed: '#ffa198',
  brightGreen: '#56d364',
  brightYellow: '#e3b341',
  brightBlue: '#79c0ff',
  brightMagenta: '#d2a8ff',
  brightCyan: '#56d4dd',
  brightWhite: '#f0f6fc',
};

export class Renderer {
  /** The WebGL renderer and its context, released by `disposeTerminal`. */
  private gl: WebglAddon | null = null;
  private glContext: WebGL2RenderingContext | null = null;

  constructor(
    private readonly term: Terminal,
    private readonly box: HTMLElement,
  ) {}

  /** Draws the terminal (open in `box`) with WebGL, or says the DOM renderer does
   * (`data-renderer` on the box). */
  load(): void {
    try {
      const gl = new WebglAddon();
      gl.onContextLoss(() => {
        // Falls back to the DOM renderer.
        if (this.gl === gl) this.gl = this.glContext = null;
        gl.dispose();
      });
      this.term.loadAddon(gl);
      this.gl = gl;
      // Its canvas's context (the other canvases are 2D ones: none for them here).
      for (const c of this.box.querySelectorAll('canvas')) {
        const ctx = c.getContext('webgl2');
        if (ctx) this.glContext = ctx;
      }
      this.box.dataset.renderer = 'webgl';
    } catch {
      this.box.dataset.renderer = 'dom';
    }
  }

  /** Disposes the terminal, its addons (this renderer, `fit`) and its WebGL context. */
  disposeTerminal(fit: FitAddon): void {
    const gl = this.gl;
    const ctx = this.glContext;
    this.gl = null;
    this.glContext = null;
    // xterm.js 6.0's WebGL renderer never disposes its cursor blink timer (xterm.js#5818,
    // fixed after 6.0.0 by #5817): while the terminal had the focus, the interval went on after
    // `dispose` and held the renderer, and through it the terminal with its rows and the WebGL
    // context, for as long as the page lived (every session opened, kept). Stopped here;
    // nothing when a later xterm has no such field.
    const renderer = (gl as unknown as { _renderer?: { _cursorBlinkStateManager?: { dispose?: () => void } } })
      ?._renderer;
    renderer?._cursorBlinkStateManager?.dispose?.();
    // The terminal disposes its addons (the WebGL one after the terminal's core, so it sets up
    // no DOM renderer in its place); again by hand in case it did not (a no-op otherwise).
    this.term.dispose();
    gl?.dispose();
    fit.dispose();
    // The GPU context now, not when the canvas is collected: until then it counted among the
    // page's live contexts ("Too many active WebGL contexts", the oldest then lost).
    if (ctx && !ctx.isContextLost()) ctx.getExtension('WEBGL_lose_context')?.loseContext();
  }
}
