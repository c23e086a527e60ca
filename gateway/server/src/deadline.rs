//! The client's deadline ([`crate::protocol::DEADLINE_HEADER`]) as a middleware: a request
//! read after its client stopped waiting is refused before anything of it is done. Without it,
//! a server stopped with SIGSTOP took the requests clients sent meanwhile — each reported to
//! its user as failed ("did not answer in time") — and carried out every one when it resumed:
//! a spawn, a removal, a shutdown of every session, minutes late, and twice if a script retried.

use std::sync::Arc;

use crate::app::App;
use crate::error::ApiError;
use crate::protocol::{DEADLINE_HEADER, ErrorCode};

/// Refuses a request whose deadline passed (408, `timeout`); a deadline that is not a number
/// of milliseconds is a bad request.
pub async fn client_deadline(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    if let Some(value) = request.headers().get(DEADLINE_HEADER) {
        let Some(deadline) = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return Err(ApiError::bad_request(format!(
                "{DEADLINE_HEADER} must be milliseconds since the Unix epoch"
            )));
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now > deadline {
            app.metrics.reject("deadline");
            tracing::warn!(
                method = %request.method(),
                path = %request.uri().path(),
                late_ms = now - deadline,
                "a request read after its client stopped waiting (was the server stopped?): refused, nothing done"
            );
            return Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "this request was read {:.1} s after its client stopped waiting (the server was \
                     stopped or stalled): nothing was done",
                    (now - deadline) as f64 / 1000.0
                ),
            ));
        }
    }
    Ok(next.run(request).await)
}
