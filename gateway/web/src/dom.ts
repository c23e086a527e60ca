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

/** A short message at the bottom of the screen; with `href`, a tap on it goes there. */
export function toast(msg: string, kind: 'info' | 'error' = 'info', ms = 5000, href?: string): HTMLElement {
  if (!toastBox) {
    toastBox = h('div', { class: 'toasts', 'aria-live': 'polite' });
    document.body.appendChild(toastBox);
  }
  const t = href
    ? h('a', { class: `toast ${kind} link`, testid: 'toast', role: 'status', text: msg, href })
    : h('div', { class: `toast ${kind}`, testid: 'toast', role: 'status', text: msg });
  // Tapped, it has done its work: it goes (left there it covered what it opened).
  if (href) t.addEventListener('click', () => setTimeout(() => t.remove()));
  toastBox.appendChild(t);
  setTimeout(() => t.remove(), ms);
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
