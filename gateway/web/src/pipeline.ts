// The line discipline the terminal view gives a session on pipes, which has no terminal to do
// it: echo, line editing (Backspace, Ctrl-U) and a line per Enter. Its own file: a small
// editor with its own state (the line being typed); the view sends the lines it completes.
import type { Terminal } from '@xterm/xterm';

/** Erases `c` typed at the cursor: back, blank, back — over two cells for a wide character. */
function erase(c: string): string {
  const cp = c.codePointAt(0) ?? 0;
  const wide =
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) ||
    (cp >= 0x20000 && cp <= 0x3fffd);
  return wide ? '\b\b  \b\b' : '\b \b';
}

export class PipeLine {
  /** The line being typed into a session on pipes (see `TermView.cooked`). */
  private line = '';

  constructor(private readonly term: Terminal) {}

  /** Echoes and edits what was typed (`data`) as a terminal's line discipline would; the
   * lines it ended (Enter), none yet for most keys. Escape sequences (arrows, function keys)
   * and other control keys mean nothing on a pipe and are ignored. */
  type(data: string): string[] {
    if (data.startsWith('\x1b')) return [];
    const lines: string[] = [];
    for (const ch of data) {
      if (ch === '\r' || ch === '\n') {
        lines.push(this.line);
        this.line = '';
        this.term.write('\r\n');
      } else if (ch === '\x7f' || ch === '\b') {
        const chars = [...this.line];
        const last = chars.pop();
        if (last !== undefined) {
          this.line = chars.join('');
          this.term.write(erase(last));
        }
      } else if (ch === '\x15') {
        this.term.write([...this.line].map(erase).join(''));
        this.line = '';
      } else if (ch >= ' ' || ch === '\t') {
        this.line += ch;
        this.term.write(ch);
      }
    }
    return lines;
  }
}
