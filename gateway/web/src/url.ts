/**
 * URLs of corral's API as the page reaches them. The page may be served under a path prefix by
 * a reverse proxy (`https://host/corral/`), where `/v1/...` is not corral's: every API path is
 * taken relative to the page's own location (its routes live in the fragment, `#/s/<id>`, so
 * that location is always corral's root).
 */

/** An API path (`/v1/...`) under the page's location. */
export function apiURL(path: string): URL {
  return new URL(path.replace(/^\//, ''), new URL('.', location.href));
}
