//! Web: the page built into the binary (`gateway/web/dist`, embedded with rust-embed, so the
//! README's two commands stay all a user needs and the Rust build never runs node), and its
//! Jupyter-style login: the page posts the `?token=` of its first URL to `/v1/login` once and
//! gets it back as an HttpOnly, SameSite=Strict cookie, which authenticates its API calls and
//! its WebSocket from then on (the Origin check still applies to the upgrade).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::access::{COOKIE, Caller, forbid};
use crate::app::App;
use crate::auth::Grant;
use crate::error::ApiError;

/// How long a login lasts in its browser (its cookie's Max-Age), in days.
pub const LOGIN_DAYS: u64 = 30;

/// The built page.
#[derive(rust_embed::Embed)]
#[folder = "../web/dist"]
struct Assets;

/// What the page may load: itself, its WebSocket and inline styles (xterm.js injects them).
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /`, `/index.html`, `/app.js`, `/app.css`: an embedded file, gzipped when the browser
/// accepts it. The page itself is never cached (it names the current asset versions); the
/// assets are immutable (their URLs carry a content hash).
pub async fn asset(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let name = match uri.path().trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let (file, encoded) = match gzip.then(|| Assets::get(&format!("{name}.gz"))).flatten() {
        Some(f) => (f, true),
        None => match Assets::get(name) {
            Some(f) => (f, false),
            None => return ApiError::not_found(format!("no such page: /{name}")).into_response(),
        },
    };
    let kind = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    };
    let cache = if name == "index.html" {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    let mut response = (StatusCode::OK, file.data.into_owned()).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// `POST /v1/login` body (its `Debug` leaves the token out).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The token pasted on the login page (or from a link of before login codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The code from a login link (`POST /v1/login/code`): good once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").finish_non_exhaustive()
    }
}

/// `GET /v1/whoami` answer: what the presented token (or cookie) allows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    /// `admin`, `read` or `write`.
    pub scope: String,
    /// The one session a read/write token is scoped to.
    pub session: Option<uuid::Uuid>,
}

impl WhoAmI {
    fn of(grant: &Grant) -> Option<WhoAmI> {
        let (scope, session) = match grant {
            Grant::Admin => ("admin", None),
            Grant::Read(s) => ("read", Some(*s)),
            Grant::Write(s) => ("write", Some(*s)),
            Grant::Hook(_) => return None,
        };
        Some(WhoAmI {
            scope: scope.into(),
            session,
        })
    }
}

/// `POST /v1/login {token}`: a valid admin, read or write token becomes the page's cookie
/// (204); anything else is a 401/403 and sets nothing.
pub async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    crate::access::Body(body): crate::access::Body,
) -> Result<Response, ApiError> {
    // JSON only: another page (any origin) can post a form or text/plain without asking the
    // browser first, and so log this browser into a token of its choosing; a JSON post from
    // another origin needs a CORS preflight, which this server never grants.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::bad_request(
            "login takes a JSON body (content-type: application/json)",
        ));
    }
    let token = match crate::access::parse_json(&body, "login")? {
        Login {
            token: Some(token),
            code: None,
        } => token,
        Login {
            token: None,
            code: Some(code),
        } => app.login_codes.redeem(code.trim()).ok_or_else(|| {
            app.metrics.reject("unauthorized");
            ApiError::new(
                crate::protocol::ErrorCode::Unauthorized,
                "this login link was used already or has expired: `corral web` prints a new one",
            )
        })?,
        _ => return Err(ApiError::bad_request("login takes a token or a code")),
    };
    let grant = app.tokens.check(Some(token.trim())).map_err(|e| {
        app.metrics.reject("unauthorized");
        ApiError::from(e)
    })?;
    if WhoAmI::of(&grant).is_none() {
        return Err(forbid(&app, "hook tokens cannot log in"));
    }
    // Token characters are [A-Za-z0-9_] (auth::new_secret), all valid in a cookie value. It
    // outlives the browser's session (LOGIN_DAYS): a phone's browser, killed and opened
    // again, is still logged in (the token's link is not at hand there); logging out, or the
    // token's revocation, ends it sooner.
    // A page served over HTTPS (a TLS proxy in front, as docs/operations.md advises; its
    // login post says so in its Origin) gets a `Secure` cookie: never sent over plain HTTP.
    let https = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        token.trim(),
        LOGIN_DAYS * 24 * 3600,
        if https { "; Secure" } else { "" }
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| ApiError::bad_request("malformed token"))?,
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /v1/login/code`: a code that logs a browser in once, within `login_code::CODE_TTL`,
/// as the token that asked for it (admin, read or write; not a hook's) → 201 `{code,
/// expires_in}`. What a login link carries (`corral web`).
pub async fn login_code(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    crate::access::Caller(grant): crate::access::Caller,
) -> Result<(StatusCode, axum::Json<crate::protocol::LoginCode>), ApiError> {
    if WhoAmI::of(&grant).is_none() {
        return Err(forbid(&app, "hook tokens cannot log in"));
    }
    // invariant: Caller let the request in with the token it presented.
    let token = crate::access::presented_token(&headers).expect("a token was presented");
    Ok((
        StatusCode::CREATED,
        axum::Json(crate::protocol::LoginCode {
            code: app.login_codes.issue(&token),
            expires_in: crate::login_code::CODE_TTL.as_secs(),
        }),
    ))
}

/// `POST /v1/logout`: clears the cookie.
pub async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // The other tabs of this browser share the cookie that goes now: their live connections
    // close too (1008 `logged out`), so none of them stays logged in on its open socket.
    if let Some(id) = crate::access::cookie_token(&headers)
        .filter(|t| app.tokens.check(Some(t)).is_ok())
        .as_deref()
        .and_then(crate::auth::token_id)
    {
        let closed = app.connections.log_out(id);
        tracing::info!(token = %id, closed, "logged out");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("corral_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}

/// `GET /v1/whoami`.
pub async fn whoami(
    State(app): State<Arc<App>>,
    Caller(grant): Caller,
) -> Result<Json<WhoAmI>, ApiError> {
    WhoAmI::of(&grant)
        .map(Json)
        .ok_or_else(|| forbid(&app, "hook tokens may only post events"))
}

/// The login URL `corral serve` and `corral web` print: the page at `url` with a login code
/// (`POST /v1/login/code`), good once.
pub fn login_url(url: &str, code: &str) -> String {
    format!("{}/?code={code}", url.trim_end_matches('/'))
}
