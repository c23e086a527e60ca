// Entry point of corral's web page: Jupyter-style login (a link's ?code= — good once — or
// ?token= → cookie, removed from the address bar), whoami, the shared WebSocket, the hash router (#/ list, #/s/<id> terminal)
// and the `window.corral` hooks that browser tests use.
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { Conn, type ConnState } from './conn';
import { confirmDialog, h, setText, toast } from './dom';
import { HttpError, login, loginCode, logout, whoami } from './http';
import { ListView } from './list';
import {
  notificationsOn,
  notificationsRefused,
  notificationsSupported,
  SessionStore,
  toggleNotifications,
} from './sessions';
import { TermView } from './term';
import type { Whoami } from './types';

interface View {
  el: HTMLElement;
  mount(parent: HTMLElement): void;
  unmount(): void;
}

const root = document.getElementById('app')!;
let current: View | null = null;
let term: TermView | null = null;
let conn: Conn | null = null;

declare global {
  interface Window {
    corral: {
      termText(): string;
      termSize(): { rows: number; cols: number; font: number } | null;
      nextOffset(): number;
      receivedOffset(): number;
      sessionId(): string | null;
      flushed(): Promise<void>;
      lags(): [number, number][];
      connState(): ConnState | 'logged-out';
      scrolledBack(): number;
    };
  }
}

window.corral = {
  termText: () => term?.text() ?? '',
  termSize: () => term?.size() ?? null,
  scrolledBack: () => term?.scrolledBack() ?? 0,
  nextOffset: () => term?.written ?? 0,
  receivedOffset: () => term?.next ?? 0,
  sessionId: () => term?.uuid ?? null,
  flushed: () => term?.flushed() ?? Promise.resolve(),
  lags: () => term?.lags.slice() ?? [],
  connState: () => conn?.state ?? 'logged-out',
};

/** Login view; `message` says why it is shown. */
function showLogin(message: string, error = true): void {
  conn?.stop();
  conn = null;
  current?.unmount();
  current = null;
  term = null;
  document.title = 'corral';
  const msg = h('p', {
    class: `login-message${error ? '' : ' neutral'}`,
    testid: 'login-message',
    role: 'alert',
    text: message,
  });
  const input = h('input', {
    class: 'input mono',
    type: 'password',
    name: 'token',
    testid: 'login-token',
    placeholder: 'paste a token',
    // A password manager may keep it (the token is this server's password), under the
    // server's address as its user name (the hidden field below).
    autocomplete: 'current-password',
    autocapitalize: 'off',
    spellcheck: 'false',
    'aria-label': 'token',
  });
  const submit = h('button', { class: 'btn primary', type: 'submit', testid: 'login-submit', text: 'Log in' });
  const form = h(
    'form',
    { class: 'card login-card' },
    h('h1', { class: 'brand' }, h('span', { class: 'logo', text: '▚' }), ' corral'),
    msg,
    h('input', {
      type: 'text',
      name: 'username',
      autocomplete: 'username',
      value: location.host,
      hidden: true,
      readonly: true,
      tabindex: '-1',
      'aria-hidden': 'true',
    }),
    input,
    submit,
    h(
      'p',
      { class: 'muted hint' },
      'Open the link that ',
      h('code', { text: 'corral web' }),
      ' prints (it ends in ',
      h('code', { text: '?code=…' }),
      ' and logs in once), or paste a token here.',
    ),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) {
      msg.textContent = 'paste a token first';
      return;
    }
    submit.disabled = true;
    try {
      await login(token);
      input.value = '';
      await enter();
    } catch (e) {
      msg.className = 'login-message';
      msg.textContent = (e as Error).message;
    } finally {
      submit.disabled = false;
    }
  });
  root.replaceChildren(h('main', { class: 'login', testid: 'login' }, form));
  input.focus();
}

/** Asks who we are and starts the app, or shows the login view. */
async function enter(): Promise<void> {
  let who: Whoami | null;
  try {
    who = await whoami();
  } catch (e) {
    showLogin(`${(e as Error).message}; try again`);
    return;
  }
  if (!who) {
    showLogin('Log in with a token.', false);
    return;
  }
  startApp(who);
}

function startApp(who: Whoami): void {
  const admin = who.scope === 'admin';
  const c = new Conn((why) => showLogin(why ?? 'Logged out by the server: token expired or wrong.'));
  conn = c;
  const store = new SessionStore(c, admin);

  const connState = h('span', { class: 'conn', testid: 'conn-state', role: 'status' });
  const paint = (s: ConnState) => {
    setText(connState, s);
    connState.className = `conn conn-${s}`;
  };
  c.onState(paint);
  paint(c.state);

  const bell =
    admin && notificationsSupported()
      ? h('button', { class: 'btn small ghost', testid: 'notify-toggle', title: 'browser notification when a session starts waiting' })
      : null;
  const paintBell = () => {
    if (!bell) return;
    const on = notificationsOn();
    bell.replaceChildren(bellIcon(), on ? 'notify: on' : 'notify');
    bell.classList.toggle('active', on);
  };
  bell?.addEventListener('click', async () => {
    const was = notificationsOn();
    const on = await toggleNotifications();
    paintBell();
    // Asked for and still off: the browser refused, and the button alone did not say so.
    if (!was && !on) toast(notificationsRefused(), 'error', 8000);
  });
  paintBell();

  const out = h('button', {
    class: 'btn small ghost',
    testid: 'logout',
    text: 'log out',
    onclick: async () => {
      // Logging back in needs the token again (on a phone: its link, found and opened again);
      // an admin can get a new link, a scoped token's user has only the link given to them.
      const again = admin
        ? 'a new login link (the command corral web prints one) or the admin token'
        : 'the link you were given, or its token';
      if (!(await confirmDialog('Log out?', `This browser forgets its login: opening the page again needs ${again}.`, 'Log out'))) return;
      c.stop();
      await logout();
      showLogin('Logged out.', false);
    },
  });
  const scope = admin
    ? null
    : h('span', { class: `badge scope scope-${who.scope}`, testid: 'scope', text: `${who.scope} token` });
  const view = h('div', { class: 'view-host' });
  root.replaceChildren(
    h(
      'div',
      { class: 'shell' },
      h(
        'header',
        { class: 'topbar' },
        h('a', { class: 'brand', href: admin ? '#/' : undefined }, h('span', { class: 'logo', text: '▚' }), ' corral'),
        scope,
        h('span', { class: 'spacer' }),
        connState,
        bell,
        out,
      ),
      view,
    ),
  );

  const route = () => {
    if (conn !== c) return;
    const m = /^#\/s\/(.+)$/.exec(location.hash);
    let target: string | null = null;
    if (m) {
      try {
        target = decodeURIComponent(m[1]);
      } catch {
        // A malformed escape (`%E0%A4%A`): as it is, which names no session ("No such session").
        target = m[1];
      }
    }
    if (!admin) {
      // A scoped token sees its one session and nothing else.
      target = who.session;
      const want = `#/s/${encodeURIComponent(target ?? '')}`;
      if (location.hash !== want) history.replaceState(history.state, '', want);
    }
    if (target && term && current === term && (term.uuid === target || term.route === target)) return;
    current?.unmount();
    term = null;
    if (target) {
      term = new TermView(c, store, who, target);
      current = term;
    } else {
      current = new ListView(c, store);
    }
    current.mount(view);
  };
  window.onhashchange = route;
  route();
  c.start();
}

function bellIcon(): SVGSVGElement {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(NS, 'path');
  path.setAttribute(
    'd',
    'M8 16a2 2 0 0 0 2-2H6a2 2 0 0 0 2 2zm5-5V7a5 5 0 0 0-4-4.9V1a1 1 0 1 0-2 0v1.1A5 5 0 0 0 3 7v4l-1.5 1.5V13h13v-.5L13 11z',
  );
  svg.appendChild(path);
  return svg;
}

async function boot(): Promise<void> {
  // Viewport height that follows the phone's on-screen keyboard.
  const vv = window.visualViewport;
  const setH = () =>
    document.documentElement.style.setProperty('--app-h', `${Math.round(vv?.height ?? window.innerHeight)}px`);
  vv?.addEventListener('resize', setH);
  window.addEventListener('resize', setH);
  setH();

  const params = new URLSearchParams(location.search);
  // A login link: a code (`corral web`: good once) or a token (a scoped token's link).
  const code = params.get('code');
  const token = params.get('token');
  if (code != null || token != null) {
    // Out of the address bar (and history) at once, whatever the outcome; the hash stays.
    params.delete('code');
    params.delete('token');
    const qs = params.toString();
    history.replaceState(history.state, '', `${location.pathname}${qs ? `?${qs}` : ''}${location.hash}`);
    try {
      await (code != null ? loginCode(code) : login(token ?? ''));
    } catch (e) {
      showLogin(e instanceof HttpError ? e.message : 'login failed');
      return;
    }
  }
  await enter();
}

boot().catch((e) => {
  console.error(e);
  showLogin('Something went wrong; reload the page.');
});
