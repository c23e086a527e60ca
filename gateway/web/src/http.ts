// The page's few HTTP calls: cookie login (Jupyter-style ?token=), whoami, logout and the
// answer to an agent's permission question.
// The token is only ever sent once in a POST body; afterwards an HttpOnly cookie set by the
// server authenticates every request and the WebSocket upgrade.
import { apiURL } from './url';
import type { Whoami } from './types';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function call(method: string, path: string, body?: unknown): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(apiURL(path), {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new HttpError(0, 'cannot reach the server');
  }
  return res;
}

/** Exchanges a token for the session cookie. Throws HttpError (401: wrong or expired token). */
export async function login(token: string): Promise<void> {
  return loginWith({ token }, 'token expired or wrong');
}

/** Logs in with a login link's code (good once, for a few minutes). */
export async function loginCode(code: string): Promise<void> {
  return loginWith({ code }, 'this login link was used already or has expired: run corral web for a new one');
}

async function loginWith(body: Record<string, string>, refused: string): Promise<void> {
  const res = await call('POST', '/v1/login', body);
  if (res.status === 204 || res.ok) return;
  if (res.status === 401 || res.status === 403) {
    throw new HttpError(res.status, refused);
  }
  throw new HttpError(res.status, `login failed (HTTP ${res.status})`);
}

/** Who the cookie says we are; null when not logged in (401). */
export async function whoami(): Promise<Whoami | null> {
  const res = await call('GET', '/v1/whoami');
  if (res.status === 401 || res.status === 403) return null;
  if (!res.ok) throw new HttpError(res.status, `server answered HTTP ${res.status}`);
  try {
    return (await res.json()) as Whoami;
  } catch {
    throw new HttpError(res.status, 'unexpected answer from the server');
  }
}

export async function logout(): Promise<void> {
  try {
    await call('POST', '/v1/logout');
  } catch {
    /* the view changes anyway */
  }
}

/** Answers the permission question session `id` waits for. Throws HttpError with the server's
 * message (409: it waits for none any more, e.g. answered in its terminal). */
export async function answerPermission(
  id: string,
  behavior: 'allow' | 'deny',
  question?: string,
  message?: string,
  answers?: Record<string, string>,
): Promise<void> {
  const body: Record<string, unknown> = { behavior };
  if (message) body.message = message;
  // An AskUserQuestion's choices: the question's text → the label chosen.
  if (answers) body.answers = answers;
  // The question shown: if another answer got there first, the server refuses this one
  // instead of applying it to the next question.
  if (question) body.id = question;
  const res = await call('POST', `/v1/sessions/${encodeURIComponent(id)}/permission`, body);
  if (res.ok) return;
  let why = `HTTP ${res.status}`;
  try {
    why = ((await res.json()) as { error?: string }).error ?? why;
  } catch {
    /* keep the status */
  }
  throw new HttpError(res.status, why);
}
