// Tiny DOM helpers (element builder, confirm dialog, toasts): enough to avoid a framework,
// which would cost more bytes than the whole UI logic.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, unknown>;

/**
 * Creates an element. Attributes: `class`, `testid` (→ data-testid), `text`, `on<event>`
 * handlers, `data-*`, boolean properties (`disabled`, `checked`, …) and plain attributes.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = String(v);
      else if (k === 'testid') el.setAttribute('data-testid', String(v));
      else if (k === 'text') el.textContent = String(v);
      else if (k.startsWith('on') && typeof v === 'function') {
        el.addEventListener(k.slice(2), v as EventListener);
      } else if (v === true) {
        el.setAttribute(k, '');
      } else if (k === 'value' && 'value' in el) {
        (el as HTMLInputElement).value = String(v);
      } else el.setAttribute(k, String(v));
    }
  }
  append(el, ...children);
  return el;
}

export function append(el: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c == null || c === false) continue;
    el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
}

/** Sets text only when it changed (keeps re-renders cheap and selection stable). */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

/** Modal yes/no question; resolves true on confirm. */
export function confirmDialog(
  title: string,
  body: string,
  okLabel: string,
  danger = true,
): Promise<boolean> {
  return new Promise((resolve) => {
    const ok = h('button', {
      class: danger ? 'btn danger' : 'btn primary',
      testid: 'confirm-ok',
      value: 'ok',
      text: okLabel,
    });
    const cancel = h('button', {
      class: 'btn',
      testid: 'confirm-cancel',
      value: 'cancel',
      text: 'Cancel',
    });
    const dlg = h(
      'dialog',
      { class: 'dialog', testid: 'confirm-dialog' },
      h(
        'form',
        { method: 'dialog' },
        h('h2', { text: title }),
        h('p', { text: body }),
        h('div', { class: 'dialog-actions' }, cancel, ok),
      ),
    );
    document.body.appendChild(dlg);
    dlg.addEventListener('close', () => {
      resolve(dlg.returnValue === 'ok');
      dlg.remove();
    });
    dlg.showModal();
    cancel.focus();
  });
}

let toastBox: HTMLElement | null = null;
/** Most toasts on screen at once: a new one takes the oldest's place (a flood's notices, one
 * per redraw, stacked up over a phone's header and its stop and kill buttons). */
const TOASTS_MAX = 3;
/** When each toast on screen goes (restarted when it is said again). */
const toastTimers = new WeakMap<HTMLElement, ReturnType<typeof setTimeout>>();

/** A short message at the bottom of the screen; with `href`, a tap on it goes there. A toast
 * with the `key` of one on screen (by default its text) replaces it, with a count. */
export function toast(
  msg: string,
  kind: 'info' | 'error' = 'info',
  ms = 5000,
  href?: string,
  key = msg,
): HTMLElement {
  if (!toastBox) {
    toastBox = h('div', { class: 'toasts', 'aria-live': 'polite' });
    document.body.appendChild(toastBox);
  }
  const same = [...toastBox.children].find((t) => (t as HTMLElement).dataset.key === key) as
    | HTMLElement
    | undefined;
  let t: HTMLElement;
  if (same && !!href === (same.tagName === 'A')) {
    // Said again: the one on screen says it, counted, and stays for as long as a new one would.
    t = same;
    const n = Number(t.dataset.count ?? '1') + 1;
    t.dataset.count = String(n);
    t.textContent = `${msg} (×${n})`;
    t.className = `toast ${kind}${href ? ' link' : ''}`;
    if (href) t.setAttribute('href', href);
    clearTimeout(toastTimers.get(t));
  } else {
    same?.remove();
    t = href
      ? h('a', { class: `toast ${kind} link`, testid: 'toast', role: 'status', text: msg, href })
      : h('div', { class: `toast ${kind}`, testid: 'toast', role: 'status', text: msg });
    t.dataset.key = key;
    // Tapped, it has done its work: it goes (left there it covered what it opened).
    if (href) t.addEventListener('click', () => setTimeout(() => t.remove()));
  }
  toastBox.appendChild(t);
  while (toastBox.children.length > TOASTS_MAX) toastBox.firstElementChild?.remove();
  toastTimers.set(t, setTimeout(() => t.remove(), ms));
  return t;
}

/** Debounces a function (trailing call wins). */
export function debounce<A extends unknown[]>(fn: (...a: A) => void, ms: number) {
  let t: ReturnType<typeof setTimeout> | undefined;
  const d = (...a: A) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}
