//! Routes: the HTTP API and the WebSocket upgrades. Each handler states who may call it through
//! its extractors ([`crate::access`]) and answers errors as [`ApiError`], so the status and the
//! body of every refusal come from one table (`crate::error`). Request and response bodies are
//! the serde types of [`crate::protocol`], which corral-client decodes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use corral_actors::SessionSpec;
use corral_runtime::{ChildSpec, Restart, Shutdown};

use crate::access::{
    Admin, Caller, Driven, Hooked, Managed, Readable, authenticate, check_origin, forbid,
    parse_json, presented_token,
};
use crate::app::App;
use crate::auth::Grant;
use crate::connection::{Connection, ConnectionArgs, Dialect};
use crate::error::ApiError;
use crate::protocol::{
    ErrorCode, ExportQuery, Health, HookAccepted, HookQuery, SUBPROTOCOL, SessionView, StopBody,
    TokenCreated, TokenInfo, TokenList, TokenRequest, TokenRevoked, TtydToken,
};

mod agent;
mod export;

pub(crate) use agent::take_hook;
use agent::{answer_permission, get_notify, post_hook, set_notify};
use export::export_session;

/// Every route.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(crate::web::asset))
        .route("/index.html", get(crate::web::asset))
        .route("/app.js", get(crate::web::asset))
        .route("/app.css", get(crate::web::asset))
        .route("/v1/login", post(crate::web::login))
        .route("/v1/login/code", post(crate::web::login_code))
        .route("/v1/logout", post(crate::web::logout))
        .route("/v1/whoami", get(crate::web::whoami))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/ws", get(ws_native))
        .route("/v1/sessions", get(list_sessions).post(spawn_session))
        .route(
            "/v1/sessions/{key}",
            get(get_session).delete(remove_session),
        )
        .route("/v1/sessions/{key}/stop", post(stop_session))
        .route("/v1/sessions/{key}/kill", post(kill_session))
        .route("/v1/sessions/{key}/restart", post(restart_session))
        .route("/v1/sessions/{key}/export", get(export_session))
        .route("/v1/sessions/{key}/events", post(post_hook))
        .route("/v1/sessions/{key}/permission", post(answer_permission))
        .route(
            "/v1/sessions/{key}/notify",
            get(get_notify).post(set_notify),
        )
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/recovery", get(recovery_report))
        .route("/v1/shutdown", post(crate::upgrade::shutdown))
        .route("/v1/upgrade", post(crate::upgrade::upgrade))
        .route("/agentapi/{key}/status", get(crate::agentapi::get_status))
        .route(
            "/agentapi/{key}/messages",
            get(crate::agentapi::get_messages),
        )
        .route(
            "/agentapi/{key}/message",
            post(crate::agentapi::post_message),
        )
        .route("/agentapi/{key}/events", get(crate::agentapi::get_events))
        .route(
            "/agentapi/{key}/openapi.json",
            get(crate::agentapi::openapi),
        )
        .route("/ttyd/{key}/ws", get(ws_ttyd))
        .route("/ttyd/{key}/token", get(ttyd_token))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(DefaultBodyLimit::max(crate::access::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::access::cookie_origin,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::access::loopback_host,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::deadline::client_deadline,
        ))
        .with_state(app)
}

/// A path no route serves: 404 with the JSON body of every refusal.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

/// A path served with other methods: 405 with the JSON body of every refusal (axum's own was
/// empty); axum adds the `Allow` header.
async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} does not take {method} (its Allow header says what it takes)",
            uri.path()
        ),
    )
}

/// The connection bound, taken at the upgrade (a plain 503 before any WebSocket exists): the
/// place goes with the connection to its actor and is given back when it ends.
fn capacity(app: &App, admin: bool) -> Result<crate::connections::Place, ApiError> {
    let max = app.config.limits.max_connections;
    app.connections
        .websocket(max, admin)
        .ok_or_else(|| crate::access::at_limit(app, "connection limit reached", max))
}

/// Starts a connection actor for an upgraded socket under the connections supervisor.
async fn start_connection(app: Arc<App>, args: ConnectionArgs) {
    let id = args.stats.id.clone();
    let slot = Arc::new(parking_lot::Mutex::new(Some(args)));
    let spec = ChildSpec::new(id, move |sup| {
        let args = slot.lock().take();
        async move {
            let args =
                args.ok_or_else(|| ractor::SpawnErr::StartupFailed("socket already used".into()))?;
            let (r, _) = ractor::Actor::spawn_linked(None, Connection, args, sup).await?;
            Ok(r.get_cell().into())
        }
    })
    .restart(Restart::Temporary)
    .shutdown(Shutdown::Timeout(Duration::from_secs(2)));
    if let Err(e) = app.clients.start_child(spec).await {
        tracing::warn!(error = %e, "connection actor not started; connection dropped");
    }
}

/// The peer of a request: `ip:port` over TCP; `unix` on the data dir's socket (whose peer was
/// checked by uid at accept), where no TCP address is recorded.
fn peer_of(
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::listen::Peer>>>,
) -> String {
    peer.map(|p| p.0.0.to_string())
        .unwrap_or_else(|| "unix".into())
}

async fn ws_native(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::listen::Peer>>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let grant = authenticate(&app, &headers)?;
    check_origin(&app, &headers)?;
    if matches!(grant, Grant::Hook(_)) {
        return Err(forbid(&app, "hook tokens may only post events"));
    }
    let place = capacity(&app, grant.is_admin())?;
    let by_cookie = crate::access::cookie_token(&headers).is_some();
    Ok(upgrade(
        app,
        ws,
        place,
        Dialect::Native { grant },
        peer_of(peer),
        presented_token(&headers)
            .as_deref()
            .and_then(crate::auth::token_id)
            .map(str::to_string),
        by_cookie,
    ))
}

/// Bytes tungstenite reads from a WebSocket at a time. Its default, 128 KiB, is zero-filled
/// before every `read(2)` (`BytesMut::resize` in `FrameCodec::read_in`), including the reads
/// that find nothing: twice 128 KiB of `memset` per keystroke, a quarter of the server's CPU
/// in the echo benchmark (perf). A keystroke or a resize is a few bytes; a large frame just
/// takes more reads.
const WS_READ_BUFFER: usize = 8 * 1024;

/// Upgrades with the frame limits and hands the socket to a new connection actor. `token` is
/// the id of the token it was let in with (a ttyd client's comes in its first frame).
fn upgrade(
    app: Arc<App>,
    ws: WebSocketUpgrade,
    place: crate::connections::Place,
    dialect: Dialect,
    peer: String,
    token: Option<String>,
    by_cookie: bool,
) -> Response {
    // ttyd's own client sends a paste as one message, whatever its size, and cannot be told
    // a limit: its messages may be as large as a session's whole input queue (a type byte and
    // 1 MiB), so a large paste arrives instead of closing the connection with 1009.
    let (protocol, max) = match dialect {
        Dialect::Native { .. } => (SUBPROTOCOL, app.config.limits.max_frame),
        Dialect::Ttyd { .. } => (
            "tty",
            app.config
                .limits
                .max_frame
                .max(corral_actors::session::INPUT_QUEUE_BYTES + 1),
        ),
    };
    ws.protocols([protocol])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            // Unique per connection (a load here would give connections accepted at the same
            // moment the same id, and the supervisor would refuse all but one).
            let id = format!(
                "connection-{}",
                app.next_viewer
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let endpoint = match dialect {
                Dialect::Native { .. } => "native",
                Dialect::Ttyd { .. } => "ttyd",
            };
            let stats = crate::connections::ConnStats::new(id, endpoint, peer);
            *stats.token.lock() = token;
            stats
                .by_cookie
                .store(by_cookie, std::sync::atomic::Ordering::Relaxed);
            app.connections.add(stats.clone());
            // Revoked since it was checked: closed at the connection's first turn.
            stats.close_if_revoked(&app.tokens);
            let args = ConnectionArgs {
                socket,
                dialect,
                app: app.clone(),
                stats,
                place,
            };
            start_connection(app, args)
        })
}

/// The ttyd endpoint: the token comes in the first frame (ttyd's AuthToken), so only the origin,
/// the capacity and the session are checked at the upgrade.
async fn ws_ttyd(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::listen::Peer>>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_origin(&app, &headers)?;
    // A browser logged in by cookie sends it with the upgrade (same origin, checked above), a
    // client may send a bearer header or corral's token subprotocol: that is its token, and
    // ttyd's AuthToken may then be empty. Checked once, here.
    let presented = crate::access::presented_token(&headers)
        .and_then(|t| app.tokens.check(Some(&t)).ok().map(|g| (t, g)));
    // An admin token at the upgrade may take the places kept for it.
    let admin = presented.as_ref().is_some_and(|(_, g)| g.is_admin());
    let place = capacity(&app, admin)?;
    // An unknown name is told at once only to a token that may see every session; any other
    // upgrade goes ahead and learns it from its first frame's answer, as a wrong token does.
    let session = match app.corral.sessions().get(&key) {
        Ok(s) => Some(s),
        Err(e) if admin => return Err(e.into()),
        Err(_) => None,
    };
    let credential = presented
        .filter(|(_, g)| session.as_ref().is_some_and(|s| g.can_read(s.id())))
        .map(|(t, _)| (t, crate::access::cookie_token(&headers).is_some()));
    // Only a connection still to show a token waits among the unauthenticated (64 of those
    // shut every ttyd client out, a logged-in page too).
    let unauthenticated = match credential {
        Some(_) => None,
        None => Some(app.connections.unauthenticated().ok_or_else(|| {
            crate::access::at_limit(
                &app,
                "too many connections waiting to authenticate",
                crate::connections::MAX_UNAUTHENTICATED,
            )
        })?),
    };
    Ok(upgrade(
        app,
        ws,
        place,
        Dialect::Ttyd {
            session,
            unauthenticated,
            credential,
        },
        peer_of(peer),
        None,
        false,
    ))
}

/// ttyd's web client fetches its AuthToken here; corral hands back the token it was given —
/// but not the login cookie's, which is HttpOnly so that no script can read it: a page logged
/// in by cookie gets an empty AuthToken, and its WebSocket is let in by the same cookie.
async fn ttyd_token(Readable(_): Readable, headers: HeaderMap) -> Json<TtydToken> {
    let token = match crate::access::cookie_token(&headers) {
        Some(_) => String::new(),
        None => presented_token(&headers).unwrap_or_default(),
    };
    Json(TtydToken { token })
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
    })
}

async fn metrics(State(app): State<Arc<App>>, _: Admin) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(app.corral.sessions()),
    )
        .into_response()
}

/// `GET /v1/sessions`: the sessions the token may read, with their process figures.
async fn list_sessions(
    State(app): State<Arc<App>>,
    Caller(grant): Caller,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    // As at the WebSocket upgrade: a hook token posts its session's events, nothing more.
    if matches!(grant, Grant::Hook(_)) {
        return Err(forbid(&app, "hook tokens may only post events"));
    }
    let list = app
        .corral
        .sessions()
        .list()
        .into_iter()
        .filter(|s| grant.can_read(s.id))
        .collect();
    Ok(Json(SessionView::measure_all(list).await))
}

async fn get_session(Readable(h): Readable) -> Json<SessionView> {
    Json(SessionView::measure(h.info()).await)
}

/// `GET /v1/recovery` (admin): what boot reconciliation did at this server's start.
async fn recovery_report(State(app): State<Arc<App>>, _: Admin) -> Result<Response, ApiError> {
    match app.corral.recovery() {
        Some(report) => Ok(Json(report).into_response()),
        None => Err(ApiError::not_found("this server keeps no persistence")),
    }
}

async fn spawn_session(
    State(app): State<Arc<App>>,
    _: Admin,
    crate::access::Body(body): crate::access::Body,
) -> Result<Response, ApiError> {
    let spec: SessionSpec = parse_json(&body, "session spec")?;
    let h = app.spawn(spec).await?;
    Ok((StatusCode::CREATED, Json(h.info())).into_response())
}

async fn stop_session(
    Managed(h): Managed,
    crate::access::Body(body): crate::access::Body,
) -> Result<Response, ApiError> {
    let body: StopBody = if body.is_empty() {
        StopBody::default()
    } else {
        parse_json(&body, "stop request")?
    };
    let grace = crate::protocol::stop_grace(body.grace)?;
    Ok(Json(h.stop(grace).await?).into_response())
}

/// `POST /v1/sessions/{key}/kill`: SIGKILL of the session's whole process tree now (the WS
/// `kill`, the CLI's `corral kill`).
async fn kill_session(Managed(h): Managed) -> Result<Response, ApiError> {
    Ok(Json(h.kill().await?).into_response())
}

/// `POST /v1/sessions/{key}/restart`: a new process of the session (a running one is stopped
/// first, with its grace); a stopped or failed session starts again (the WS `restart`).
async fn restart_session(Managed(h): Managed) -> Result<Response, ApiError> {
    Ok(Json(h.restart().await?).into_response())
}

async fn remove_session(
    State(app): State<Arc<App>>,
    Managed(h): Managed,
) -> Result<Response, ApiError> {
    Ok(Json(app.remove(&h.id().to_string()).await?).into_response())
}

async fn create_token(
    State(app): State<Arc<App>>,
    _: Admin,
    crate::access::Body(body): crate::access::Body,
) -> Result<Response, ApiError> {
    let req: TokenRequest = parse_json(&body, "token request")?;
    let h = app.corral.sessions().get(&req.session)?;
    let grant = req.scope.grant(h.id());
    // Recorded in the data dir's token log before it is handed out: off the runtime's workers.
    let issuer = app.clone();
    let token = tokio::task::spawn_blocking(move || issuer.tokens.issue(grant))
        .await
        .map_err(|e| ApiError::internal(format!("issuing a token: {e}")))??;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token,
            session: h.id(),
            scope: req.scope,
        }),
    )
        .into_response())
}

/// `GET /v1/tokens` (admin): the valid viewer and driver tokens (ids, never tokens).
async fn list_tokens(State(app): State<Arc<App>>, _: Admin) -> Json<TokenList> {
    let sessions = app.corral.sessions();
    let tokens = app
        .tokens
        .list()
        .into_iter()
        .map(|(id, scope, session)| TokenInfo {
            id,
            scope,
            session,
            name: sessions
                .get(&session.to_string())
                .map(|h| h.name().to_string())
                .unwrap_or_default(),
        })
        .collect();
    Json(TokenList { tokens })
}

/// `DELETE /v1/tokens/{id}` (admin): revokes a viewer or driver token for good and closes the
/// connections it let in.
async fn revoke_token(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<TokenRevoked>, ApiError> {
    // The whole token names its id, as in `corral token revoke`; nothing of a secret is said
    // back (an error body can end up in a log).
    let id = match crate::auth::token_id(&id) {
        Some(of_token) => of_token.to_string(),
        None if id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()) => id,
        None => {
            return Err(ApiError::bad_request(
                "not a token id (the 12 hex digits after `corral_`) nor a whole token",
            ));
        }
    };
    // Recorded in the token log before it takes effect: off the runtime's workers.
    let tokens = app.clone();
    let key = id.clone();
    let revoked = tokio::task::spawn_blocking(move || tokens.tokens.revoke(&key))
        .await
        .map_err(|e| ApiError::internal(format!("revoking a token: {e}")))??;
    if !revoked {
        return Err(ApiError::not_found(format!(
            "no viewer or driver token with id '{id}' (revoked already, or never issued; `corral token list` shows the valid ones)"
        )));
    }
    let connections_closed = app.connections.close_token(&id);
    tracing::info!(token = %id, connections_closed, "token revoked");
    Ok(Json(TokenRevoked {
        id,
        connections_closed,
    }))
}
