//! The HTTP + WebSocket server (`corral serve`): routes, authentication at the edge, and the
//! ordered lifecycle: data dir lock → token → corral tree → listener → `server.json`; on
//! SIGTERM/SIGINT the reverse: stop accepting → close every client (close frame) → stop every
//! session gracefully → unpublish.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use corral_actors::{Corral, CorralConfig, SessionSpec, SessionsConfig};
use corral_runtime::{ChildSpec, Restart, Shutdown, Supervisor, SupervisorSpec};
use serde::Deserialize;
use serde_json::json;

use crate::app::{App, GatewayConfig};
use crate::auth::{AuthError, Grant, Tokens};
use crate::client::{Client, ClientArgs, Dialect};
use crate::datadir::{DataDir, ServerInfo};
use crate::metrics::Metrics;
use crate::protocol::{SUBPROTOCOL, TOKEN_PROTOCOL_PREFIX};

/// What `corral serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Gateway settings.
    pub gateway: GatewayConfig,
}

/// Runs the server until SIGTERM/SIGINT, then shuts down in order.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let data = DataDir::open_exclusive(&opts.data_dir)?;
    let admin = data.admin_token()?;
    match corral_actors::process::limits::raise_nofile() {
        Ok((old, new)) => tracing::debug!(old, new, "RLIMIT_NOFILE raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise RLIMIT_NOFILE"),
    }
    let tmp_root = data.path().join("tmp");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp_root)?;
    }
    let corral = Corral::start(CorralConfig {
        sessions: SessionsConfig {
            tmp_root,
            ..SessionsConfig::default()
        },
        subreaper: true,
        persist: Some(opts.gateway.persist.to_config(data.path())?),
    })
    .await?;
    let tokens = Tokens::new(admin);
    if let Some(report) = corral.recovery() {
        // Restored agents keep the hook token in their environment: accept it again.
        for (id, spec) in &report.specs {
            if let Some((_, token)) = spec.env.iter().find(|(k, _)| k == "CORRAL_HOOK_TOKEN")
                && let Err(e) = tokens.register(token.clone(), Grant::Hook(*id))
            {
                tracing::warn!(session = %id, error = %e, "hook token of a restored session not accepted");
            }
        }
    }
    let (clients, _) = Supervisor::start(
        SupervisorSpec::new("gateway")
            .max_children(opts.gateway.limits.max_connections)
            .intensity(1, Duration::from_secs(5)),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(opts.gateway.listen).await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let app = Arc::new(App {
        corral: corral.clone(),
        tokens,
        metrics: Metrics::default(),
        config: opts.gateway.clone(),
        clients: clients.clone(),
        url: url.clone(),
        next_viewer: AtomicU64::new(1),
        shutdown: tokio::sync::watch::channel(false).0,
    });
    data.publish(&ServerInfo {
        url: url.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
    })?;
    tracing::info!(%url, data_dir = %data.path().display(), "corral serving");
    let router = router(app.clone());
    // Keystrokes and echoes are tiny writes: Nagle must not hold one back waiting for an ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("shutting down: clients, then sessions");
    app.shutdown.send_replace(true);
    if let Err(e) = clients.stop(Some(Duration::from_secs(5))).await {
        tracing::warn!(error = %e, "clients did not stop cleanly");
    }
    if let Err(e) = corral.shutdown().await {
        tracing::warn!(error = %e, "session tree did not stop cleanly");
    }
    data.unpublish();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; serving until killed");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// Every route.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/ws", get(ws_native))
        .route("/v1/sessions", get(list_sessions).post(spawn_session))
        .route(
            "/v1/sessions/{key}",
            get(get_session).delete(remove_session),
        )
        .route("/v1/sessions/{key}/stop", post(stop_session))
        .route("/v1/sessions/{key}/export", get(export_session))
        .route("/v1/sessions/{key}/events", post(post_hook))
        .route("/v1/tokens", post(create_token))
        .route("/v1/recovery", get(recovery_report))
        .route("/ttyd/{key}/ws", get(ws_ttyd))
        .route("/ttyd/{key}/token", get(ttyd_token))
        .layer(DefaultBodyLimit::max(256 * 1024))
        .with_state(app)
}

/// An HTTP error with a JSON body naming the problem.
fn err(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A refused request, turned into [`err`]'s response at the handler.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        err(self.0, self.1)
    }
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The token from `Authorization` or from a `corral.token.<t>` subprotocol.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = bearer(headers) {
        return Some(t.to_string());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
        .map(str::to_string)
}

fn authenticate(app: &App, headers: &HeaderMap) -> Result<Grant, Refusal> {
    app.tokens
        .check(presented_token(headers).as_deref())
        .map_err(|e| {
            app.metrics.reject("unauthorized");
            let status = match e {
                AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
                AuthError::Full => StatusCode::SERVICE_UNAVAILABLE,
            };
            Refusal(status, e.to_string())
        })
}

fn admin(app: &App, headers: &HeaderMap) -> Result<Grant, Refusal> {
    let g = authenticate(app, headers)?;
    if g.is_admin() {
        Ok(g)
    } else {
        app.metrics.reject("forbidden");
        Err(Refusal(
            StatusCode::FORBIDDEN,
            "this needs the admin token".into(),
        ))
    }
}

/// An admin request's JSON body, or the refusal that names what is wrong.
fn admin_json<T: serde::de::DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<T, Refusal> {
    admin(app, headers)?;
    serde_json::from_slice(body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("invalid {what}: {e}")))
}

/// Cross-origin WebSocket upgrades are refused unless the origin is allowed. Requests without
/// an Origin (CLI clients) and same-origin pages pass.
fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), Refusal> {
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
        Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("origin {origin} is not allowed"),
        ))
    }
}

fn capacity(app: &App) -> Result<(), Refusal> {
    if app.metrics.clients.get() as usize >= app.config.limits.max_connections {
        app.metrics.reject("max_connections");
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "connection limit reached ({})",
                app.config.limits.max_connections
            ),
        ));
    }
    Ok(())
}

/// Starts a client actor for an upgraded socket under the clients supervisor.
async fn start_client(app: Arc<App>, args: ClientArgs) {
    let slot = Arc::new(parking_lot::Mutex::new(Some(args)));
    // Unique per connection (a load here would give connections accepted at the same moment the
    // same id, and the supervisor would refuse all but one).
    let id = format!(
        "client-{}",
        app.next_viewer
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let spec = ChildSpec::new(id, move |sup| {
        let args = slot.lock().take();
        async move {
            let args =
                args.ok_or_else(|| ractor::SpawnErr::StartupFailed("socket already used".into()))?;
            let (r, _) = ractor::Actor::spawn_linked(None, Client, args, sup).await?;
            Ok(r.get_cell().into())
        }
    })
    .restart(Restart::Temporary)
    .shutdown(Shutdown::Timeout(Duration::from_secs(2)));
    if let Err(e) = app.clients.start_child(spec).await {
        tracing::warn!(error = %e, "client actor not started; connection dropped");
    }
}

async fn ws_native(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let grant =
        match authenticate(&app, &headers).and_then(|g| check_origin(&app, &headers).map(|()| g)) {
            Ok(g) => g,
            Err(r) => return r.into_response(),
        };
    if matches!(grant, Grant::Hook(_)) {
        app.metrics.reject("forbidden");
        return err(StatusCode::FORBIDDEN, "hook tokens may only post events");
    }
    if let Err(r) = capacity(&app) {
        return r.into_response();
    }
    upgrade(app, ws, SUBPROTOCOL, Dialect::Native { grant })
}

/// Upgrades with the frame limits and hands the socket to a new client actor.
fn upgrade(
    app: Arc<App>,
    ws: WebSocketUpgrade,
    protocol: &'static str,
    dialect: Dialect,
) -> Response {
    let max = app.config.limits.max_frame;
    ws.protocols([protocol])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let args = ClientArgs {
                socket,
                dialect,
                app: app.clone(),
            };
            start_client(app, args)
        })
}

async fn ws_ttyd(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(r) = check_origin(&app, &headers).and_then(|()| capacity(&app)) {
        return r.into_response();
    }
    let session = match app.corral.sessions().get(&key) {
        Ok(h) => h,
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    upgrade(app, ws, "tty", Dialect::Ttyd { session })
}

/// ttyd's web client fetches its AuthToken here; corral hands back the token it was given.
async fn ttyd_token(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let grant = match authenticate(&app, &headers) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    match app.corral.sessions().get(&key) {
        Ok(h) if grant.can_read(h.id()) => {
            Json(json!({ "token": presented_token(&headers).unwrap_or_default() })).into_response()
        }
        Ok(_) => err(StatusCode::FORBIDDEN, "token does not allow this session"),
        Err(e) => err(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn health() -> Response {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })).into_response()
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&app, &headers) {
        return r.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(app.corral.sessions()),
    )
        .into_response()
}

async fn list_sessions(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let grant = match authenticate(&app, &headers) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    let list: Vec<_> = app
        .corral
        .sessions()
        .list()
        .into_iter()
        .filter(|s| grant.can_read(s.id))
        .collect();
    Json(list).into_response()
}

async fn get_session(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let grant = match authenticate(&app, &headers) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    match app.corral.sessions().get(&key) {
        Ok(h) if grant.can_read(h.id()) => Json(h.info()).into_response(),
        Ok(_) => err(StatusCode::FORBIDDEN, "token does not allow this session"),
        Err(e) => err(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// `GET /v1/recovery` (admin): what boot reconciliation did at this server's start.
async fn recovery_report(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match authenticate(&app, &headers) {
        Ok(g) if g.is_admin() => {}
        Ok(_) => return err(StatusCode::FORBIDDEN, "needs the admin token"),
        Err(r) => return r.into_response(),
    }
    match app.corral.recovery() {
        Some(report) => Json(report).into_response(),
        None => err(StatusCode::NOT_FOUND, "this server keeps no persistence"),
    }
}

/// `?format=` of an export.
#[derive(Debug, Deserialize)]
struct ExportQuery {
    /// Only `asciicast` (the default).
    #[serde(default)]
    format: Option<String>,
}

/// `GET /v1/sessions/{key}/export?format=asciicast`: the retained scrollback as an asciicast v2
/// recording, streamed (written by a blocking task into a bounded channel: memory stays small
/// whatever the log's size, and the task ends at its first write after the client goes away).
async fn export_session(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ExportQuery>,
    headers: HeaderMap,
) -> Response {
    let grant = match authenticate(&app, &headers) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    match q.format.as_deref() {
        None | Some("asciicast") => {}
        Some(other) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("unknown export format '{other}' (asciicast)"),
            );
        }
    }
    let h = match app.corral.sessions().get(&key) {
        Ok(h) if grant.can_read(h.id()) => h,
        Ok(_) => return err(StatusCode::FORBIDDEN, "token does not allow this session"),
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    let Some(persist) = app.corral.persist() else {
        return err(StatusCode::CONFLICT, "export needs persistence");
    };
    let reader = match persist.reader(h.id()).await {
        Ok(r) => r,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let size = h.info().size;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(8);
    let writer = ChannelWriter(tx.clone());
    // Owned by the response: it finishes with the log or at the first write after the client
    // left (the channel closes), so it cannot outlive the request by more than one write.
    drop(tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
        let result = reader
            .export_asciicast(&mut out, size.cols, size.rows)
            .and_then(|()| out.flush());
        if let Err(e) = result
            && tx.blocking_send(Err(e)).is_err()
        {
            tracing::debug!("export abandoned by its client");
        }
    }));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-asciicast")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// A `Write` into a bounded channel (blocking: used from a blocking task only).
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn session_status(e: &corral_actors::SessionError) -> StatusCode {
    use corral_actors::SessionError as E;
    match e {
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::BadSpec(_) | E::OffsetBeyondHead { .. } => StatusCode::BAD_REQUEST,
        E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::CONFLICT,
    }
}

async fn spawn_session(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let spec: SessionSpec = match admin_json(&app, &headers, &body, "session spec") {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match app.spawn(spec).await {
        Ok(h) => (StatusCode::CREATED, Json(h.info())).into_response(),
        Err(e) => err(session_status(&e), e.to_string()),
    }
}

#[derive(Deserialize)]
struct StopBody {
    #[serde(default)]
    grace: Option<f64>,
}

async fn stop_session(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Option<Json<StopBody>>,
) -> Response {
    if let Err(r) = admin(&app, &headers) {
        return r.into_response();
    }
    let grace = body
        .and_then(|b| b.grace)
        .map(|g| Duration::from_secs_f64(g.clamp(0.0, 3600.0)));
    let h = match app.corral.sessions().get(&key) {
        Ok(h) => h,
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    match h.stop(grace).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => err(session_status(&e), e.to_string()),
    }
}

async fn remove_session(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&app, &headers) {
        return r.into_response();
    }
    match app.remove(&key).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => err(session_status(&e), e.to_string()),
    }
}

/// Claude Code hook events (posted by `corral hook` with the session's hook token).
async fn post_hook(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let grant = match authenticate(&app, &headers) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    let h = match app.corral.sessions().get(&key) {
        Ok(h) => h,
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    if !grant.can_hook(h.id()) {
        app.metrics.reject("forbidden");
        return err(
            StatusCode::FORBIDDEN,
            "token may not post events for this session",
        );
    }
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                "hook payload must be a JSON object",
            );
        }
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("hook payload is not JSON: {e}"),
            );
        }
    };
    let Some(name) = payload
        .get("hook_event_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        return err(
            StatusCode::BAD_REQUEST,
            "hook payload lacks hook_event_name",
        );
    };
    let event = h.shared().hook(&name, payload);
    app.metrics.hook_events.inc();
    (StatusCode::ACCEPTED, Json(json!({ "seq": event.seq }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    session: String,
    scope: String,
}

async fn create_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req: TokenRequest = match admin_json(&app, &headers, &body, "token request") {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let h = match app.corral.sessions().get(&req.session) {
        Ok(h) => h,
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    let grant = match req.scope.as_str() {
        "read" => Grant::Read(h.id()),
        "write" => Grant::Write(h.id()),
        other => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("scope must be read or write, not {other}"),
            );
        }
    };
    match app.tokens.issue(grant) {
        Ok(token) => (
            StatusCode::CREATED,
            Json(json!({ "token": token, "session": h.id(), "scope": req.scope })),
        )
            .into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
