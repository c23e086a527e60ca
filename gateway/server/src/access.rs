//! Access: who is asking and what they may touch, as axum extractors, so every handler states
//! its rule in its signature instead of repeating a `match` on the token. A token is taken from
//! `Authorization: Bearer`, from a `corral.token.<token>` WebSocket subprotocol (browsers cannot
//! set headers on a WebSocket) or from the web page's HttpOnly cookie; refusals are
//! [`ApiError`]s (401 without a valid token, 403 when the token does not allow it) and are
//! counted in /metrics by reason.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use corral_actors::SessionHandle;

use crate::app::App;
use crate::auth::Grant;
use crate::error::ApiError;
use crate::protocol::TOKEN_PROTOCOL_PREFIX;

/// The cookie the web page's login sets (HttpOnly, SameSite=Strict).
pub const COOKIE: &str = "corral_token";

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The token of a `corral.token.<t>` WebSocket subprotocol, if any.
fn protocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
}

/// The token from `Authorization`, a `corral.token.<t>` subprotocol, or the login cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    bearer(headers)
        .or_else(|| protocol_token(headers))
        .map(str::to_string)
        .or_else(|| cookie_token(headers))
}

/// The token of the web page's login cookie, when the request presents no other (bearer or
/// subprotocol) — what the page's own requests carry. Two different ones are none: cookies
/// ignore ports, so a page on another port of this host can set a second `corral_token` (with
/// a longer path, sent first) to log this page out or into a token of its own; which one is
/// ours cannot be told, so neither is taken.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    if bearer(headers).is_some() || protocol_token(headers).is_some() {
        return None;
    }
    let mut tokens = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v);
    let first = tokens.next()?;
    tokens.all(|v| v == first).then(|| first.to_string())
}

/// The grant of the token a request presents, or a 401.
pub fn authenticate(app: &App, headers: &HeaderMap) -> Result<Grant, ApiError> {
    app.tokens
        .check(presented_token(headers).as_deref())
        .map_err(|e| {
            app.metrics.reject("unauthorized");
            ApiError::from(e)
        })
}

/// Cross-origin requests are refused unless the origin is allowed (`allowed_origins`): what
/// a WebSocket upgrade and every request a browser makes with the login cookie is checked by.
/// Requests without an Origin (CLI clients) and same-origin pages pass.
pub fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.get_all(header::ORIGIN).iter().count() > 1 {
        // No browser sends two; the first one alone would decide.
        app.metrics.reject("origin");
        return Err(ApiError::forbidden("a request may carry one Origin header"));
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o == host);
    if same || app.config.allowed_origins.iter().any(|a| a == origin) {
        Ok(())
    } else {
        app.metrics.reject("origin");
        Err(ApiError::forbidden(format!(
            "origin {origin} is not allowed"
        )))
    }
}

/// Cross-site request forgery: a browser attaches the page's login cookie to every request to
/// this server, whichever page makes it. `SameSite=Strict` does not stop a page on another
/// port of the same host (one site: every `http://127.0.0.1:*` page), and a `text/plain` POST
/// needs no CORS preflight, so without this check any local web page could spawn a program.
/// A request that changes something (any method but GET, HEAD, OPTIONS) and authenticates by
/// the cookie must therefore name its origin, and the origin must be the server's own (or an
/// allowed one): browsers always send `Origin` on such requests; clients that send no cookie
/// (the CLI, scripts with a bearer token) are not concerned.
pub async fn cookie_origin(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    let headers = request.headers();
    if !request.method().is_safe() && cookie_token(headers).is_some() {
        if !headers.contains_key(header::ORIGIN) {
            app.metrics.reject("origin");
            return Err(ApiError::forbidden(
                "a request with the login cookie that changes something must carry an Origin header",
            ));
        }
        check_origin(&app, headers)?;
    }
    Ok(next.run(request).await)
}

/// DNS rebinding: any web site can make a name of its own resolve to 127.0.0.1, and the
/// browser then sends that site's requests to this server with `Host: <its name>`. So a
/// request that comes over loopback must name this machine by a loopback name (`localhost`,
/// `*.localhost`, `127.x.y.z`, `[::1]`) or by the host of an allowed origin
/// (`allowed_origins`: a proxy on this machine passing its public name). Requests from other
/// machines, to a server bound beyond loopback, and over the Unix socket are not concerned. Before
/// this, such a page could probe session ids through the ttyd upgrade and keep every ttyd
/// client out with connections that never authenticate.
pub async fn loopback_host(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    let over_loopback = request
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::listen::Peer>>()
        .is_some_and(|p| p.0.0.ip().is_loopback());
    // Bound beyond loopback (`listen = "0.0.0.0:…"`), the machine's own names (its hostname,
    // which Debian maps to 127.0.1.1) are expected: the operator chose the exposure.
    let bound_to_loopback = app
        .url
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if over_loopback && bound_to_loopback {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !loopback_name(host) && !allowed_host(&app, host) {
            app.metrics.reject("host");
            return Err(ApiError::forbidden(format!(
                "Host {host:?} is not a name of this machine: use 127.0.0.1, localhost or [::1] \
                 (or add the name's origin to allowed_origins)"
            )));
        }
    }
    Ok(next.run(request).await)
}

/// Whether `host` (`name[:port]`) is a loopback name.
fn loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    }
    .to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `host` is the host (and port) of an allowed origin.
fn allowed_host(app: &App, host: &str) -> bool {
    app.config.allowed_origins.iter().any(|o| {
        o.split_once("://")
            .is_some_and(|(_, h)| h.eq_ignore_ascii_case(host))
    })
}

/// A 503 for a bound of the server's own that is reached (`what`, at most `max`), counted.
pub fn at_limit(app: &App, what: &str, max: usize) -> ApiError {
    app.metrics.reject("max_connections");
    ApiError::new(
        crate::error::ErrorCode::Unavailable,
        format!("{what} ({max})"),
    )
}

/// A 403, counted.
pub fn forbid(app: &App, message: impl Into<String>) -> ApiError {
    app.metrics.reject("forbidden");
    ApiError::forbidden(message)
}

/// Any authenticated caller, with its grant.
#[derive(Debug, Clone)]
pub struct Caller(pub Grant);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        authenticate(app, &parts.headers).map(Caller)
    }
}

/// A caller with the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Caller(grant) = Caller::from_request_parts(parts, app).await?;
        if grant.is_admin() {
            Ok(Admin)
        } else {
            Err(forbid(app, "this needs the admin token"))
        }
    }
}

/// The session named by the `{key}` path segment (id or name), or a 404.
pub async fn path_session(parts: &mut Parts, app: &App) -> Result<SessionHandle, ApiError> {
    let Path(key) = Path::<String>::from_request_parts(parts, &())
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    // A session being spawned is waited for: its program may call back (an agent's first
    // hook) before the spawn has indexed it.
    Ok(app
        .corral
        .sessions()
        .get_started(&key, std::time::Duration::from_secs(5))
        .await?)
}

/// The `{key}` session, which the caller's token may watch.
pub struct Readable(pub SessionHandle);

impl FromRequestParts<Arc<App>> for Readable {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        scoped(
            parts,
            app,
            Grant::can_read,
            "token does not allow this session",
        )
        .await
        .map(Readable)
    }
}

/// The `{key}` session, which the caller's token may drive (type into, answer for).
pub struct Driven(pub SessionHandle);

impl FromRequestParts<Arc<App>> for Driven {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        scoped(
            parts,
            app,
            Grant::can_write,
            "token may not drive this session",
        )
        .await
        .map(Driven)
    }
}

/// The `{key}` session, with the admin token.
pub struct Managed(pub SessionHandle);

impl FromRequestParts<Arc<App>> for Managed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        Admin::from_request_parts(parts, app).await?;
        Ok(Managed(path_session(parts, app).await?))
    }
}

/// The `{key}` session, with a token that may post its hook events (its hook token or admin).
pub struct Hooked(pub SessionHandle);

impl FromRequestParts<Arc<App>> for Hooked {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        scoped(
            parts,
            app,
            Grant::can_hook,
            "token may not post events for this session",
        )
        .await
        .map(Hooked)
    }
}

/// The `{key}` session if the caller's grant `allows` it: 401 without a valid token, 404 for an
/// unknown session, 403 (counted) with `refusal` otherwise.
async fn scoped(
    parts: &mut Parts,
    app: &App,
    allows: fn(&Grant, uuid::Uuid) -> bool,
    refusal: &'static str,
) -> Result<SessionHandle, ApiError> {
    let grant = authenticate(app, &parts.headers)?;
    let session = match path_session(parts, app).await {
        // A token for other sessions is refused the same way whether this one exists or not:
        // it cannot probe which names do.
        Err(e) if e.code == crate::error::ErrorCode::NotFound && !grant.is_admin() => {
            return Err(forbid(app, refusal));
        }
        found => found?,
    };
    if allows(&grant, session.id()) {
        Ok(session)
    } else {
        Err(forbid(app, refusal))
    }
}

/// Longest a request's body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The most bytes a request body may hold (`DefaultBodyLimit` in the router).
pub const MAX_BODY: usize = 256 * 1024;

/// A request's body, whole; one over [`MAX_BODY`] is a `too_large` [`ApiError`] (413 with the
/// JSON body every refusal has, not axum's plain text).
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        // A body sent a byte at a time must not hold its connection for good (the login takes
        // one before any token is known).
        let Ok(read) =
            tokio::time::timeout(BODY_TIMEOUT, axum::body::Bytes::from_request(req, state)).await
        else {
            return Err(ApiError::new(
                crate::error::ErrorCode::Timeout,
                format!(
                    "request body not received within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ));
        };
        match read {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    crate::error::ErrorCode::TooLarge,
                    format!("request body over {} KiB", MAX_BODY / 1024),
                ))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "reading the request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// A JSON request body of type `T` (every one is an object), or a 400 naming `what` and the
/// problem. An array is refused too: serde reads one as a struct's fields in order, so
/// `["hi", "raw"]` was taken as a message.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request(format!(
            "invalid {what}: the body must be a JSON object"
        )));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_body_is_a_json_object() {
        #[derive(serde::Deserialize, Debug)]
        struct Message {
            content: String,
        }
        let m: Message = parse_json(br#" {"content": "hi"}"#, "message").unwrap();
        assert_eq!(m.content, "hi");
        for bad in [&br#"["hi"]"#[..], b"", b"null", b"\"hi\""] {
            let e = parse_json::<Message>(bad, "message").unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        }
        let e = parse_json::<Message>(br#"["hi"]"#, "message").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
    }

    #[test]
    fn two_different_login_cookies_are_no_login() {
        let one = cookies(&["theme=dark; corral_token=corral_a_1"]);
        assert_eq!(cookie_token(&one).as_deref(), Some("corral_a_1"));
        // The same one twice (two paths) is still that one.
        let twice = cookies(&["corral_token=corral_a_1; corral_token=corral_a_1"]);
        assert_eq!(cookie_token(&twice).as_deref(), Some("corral_a_1"));
        // Another port's page set its own: neither is taken.
        let shadowed = cookies(&["corral_token=corral_b_2", "corral_token=corral_a_1"]);
        assert_eq!(cookie_token(&shadowed), None);
        assert_eq!(cookie_token(&cookies(&["theme=dark"])), None);
    }
}
