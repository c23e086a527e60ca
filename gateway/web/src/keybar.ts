// The terminal view's key bar (writable views): the keys a phone's keyboard lacks (Esc, Tab,
// arrows, Enter, Ctrl-C) and a Ctrl held for the next key typed. Its own file: a toolbar with
// its own state (Ctrl down), that needs of the view only its terminal and its input.
import type { Terminal } from '@xterm/xterm';
import { h } from './dom';
import { withCtrl } from './format';

const KEYS: [label: string, seq: string, testid: string, title: string][] = [
  ['Esc', '\x1b', 'key-esc', 'Escape'],
  ['^C', '\x03', 'key-ctrl-c', 'Ctrl-C'],
  ['Tab', '\t', 'key-tab', 'Tab'],
  ['←', '\x1b[D', 'key-left', 'Left'],
  ['↑', '\x1b[A', 'key-up', 'Up'],
  ['↓', '\x1b[B', 'key-down', 'Down'],
  ['→', '\x1b[C', 'key-right', 'Right'],
  // Claude's menus (its permission dialog, a question's choices): ↑/↓, then Enter takes the
  // highlighted one — a phone's keyboard may be down, or have no Enter that reaches the terminal.
  ['↵', '\r', 'key-enter', 'Enter'],
];

export class KeyBar {
  readonly el: HTMLElement;
  /** The key bar's Ctrl is down: the next key typed goes with it (then it is let go). */
  private readonly ctrlKey: HTMLElement;

  /** `input`: types into the session (the view's input, as the keyboard's keys go). */
  constructor(
    private readonly term: Terminal,
    private readonly input: (data: string) => void,
  ) {
    const bar = h('div', { class: 'keybar', testid: 'keybar', role: 'toolbar', 'aria-label': 'keys' });
    // Ctrl for the next key typed: a phone's keyboard has none (Ctrl-D, Ctrl-R, Ctrl-Z, Ctrl-L).
    const ctrl = h('button', {
      class: 'key key-mod',
      testid: 'key-ctrl',
      title: 'Ctrl: hold it for the next key',
      'aria-label': 'Ctrl',
      'aria-pressed': 'false',
      text: 'Ctrl',
    });
    ctrl.addEventListener('mousedown', (e) => e.preventDefault());
    ctrl.addEventListener('click', () => {
      ctrl.ariaPressed = ctrl.ariaPressed === 'true' ? 'false' : 'true';
      this.term.focus();
    });
    this.ctrlKey = ctrl;
    bar.appendChild(ctrl);
    for (const [label, seq, testid, title] of KEYS) {
      const b = h('button', { class: 'key', testid, title, 'aria-label': title, text: label });
      // Keep focus (and the phone's keyboard) on the terminal.
      b.addEventListener('mousedown', (e) => e.preventDefault());
      b.addEventListener('click', () => {
        this.input(this.typed(seq));
        this.term.focus();
      });
      bar.appendChild(b);
    }
    this.el = bar;
  }

  /** `data` as typed with the key bar: with its Ctrl when that is down (see `takeCtrl`). */
  typed(data: string): string {
    return this.ctrlKey.ariaPressed === 'true' ? this.takeCtrl(data) : data;
  }

  /** `data` with the key bar's Ctrl, which is let go. */
  private takeCtrl(data: string): string {
    this.ctrlKey.ariaPressed = 'false';
    return withCtrl(data);
  }
}
