//! ApiError: the one typed error of the API. Every refusal, over HTTP or over the WebSocket, is
//! an [`ApiError`]: a machine-readable [`ErrorCode`] and a message for humans. It is mapped here,
//! and only here, to an HTTP status (with a `{"error", "code", "title", "status", "detail"}`
//! JSON body) and to a WebSocket
//! `error` frame, so the two transports can never disagree about the same failure.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use corral_actors::SessionError;
use serde::{Deserialize, Serialize};

use crate::auth::AuthError;
pub use crate::protocol::ErrorCode;
use crate::protocol::Reply;

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure (decides the HTTP status).
    pub code: ErrorCode,
    /// What was wrong, for humans.
    pub message: String,
}

/// The JSON body of an HTTP error answer (also what corral-client decodes). It also carries
/// the fields of an RFC 9457 problem (`title`, `status`, `detail`), which agentapi's server
/// answers with and its clients read (its chat page shows `detail`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, for humans.
    pub error: String,
    /// The machine-readable code, as in a WebSocket `error` frame.
    pub code: ErrorCode,
    /// The HTTP status's reason phrase (`Conflict`).
    #[serde(default)]
    pub title: String,
    /// The HTTP status.
    #[serde(default)]
    pub status: u16,
    /// The same as `error`.
    #[serde(default)]
    pub detail: String,
}

impl ApiError {
    /// An error of kind `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }

    /// The WebSocket `error` frame of this error, answering request `id`.
    pub fn reply(&self, id: Option<u64>) -> Reply {
        Reply::Error {
            id,
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// The HTTP status of an error code: the one table both transports follow.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let code = match &e {
            SessionError::NotFound(_) => ErrorCode::NotFound,
            SessionError::BadSpec(_)
            | SessionError::BadInput(_)
            | SessionError::OffsetBeyondHead { .. } => ErrorCode::BadRequest,
            SessionError::Unavailable(_) => ErrorCode::Unavailable,
            SessionError::NameTaken(_)
            | SessionError::TooMany { .. }
            | SessionError::Spawn(_)
            | SessionError::InputFull { .. }
            | SessionError::NotRunning(_)
            | SessionError::Unsupported(_) => ErrorCode::Conflict,
        };
        Self::new(code, e.to_string())
    }
}

impl From<corral_actors::persist::PersistError> for ApiError {
    fn from(e: corral_actors::persist::PersistError) -> Self {
        use corral_actors::persist::PersistError as P;
        let code = match &e {
            P::Unavailable(_) | P::InUse { .. } => ErrorCode::Unavailable,
            P::Db { .. } | P::Data(_) | P::Io { .. } => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Missing | AuthError::Invalid => ErrorCode::Unauthorized,
            AuthError::Full | AuthError::Unrecorded(_) => ErrorCode::Unavailable,
        };
        Self::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            detail: self.message.clone(),
            error: self.message,
            code: self.code,
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_errors_map_to_one_code_each() {
        let cases = [
            (SessionError::NotFound("x".into()), StatusCode::NOT_FOUND),
            (
                SessionError::BadSpec(corral_actors::SpecError::EmptyArgv),
                StatusCode::BAD_REQUEST,
            ),
            (SessionError::NameTaken("x".into()), StatusCode::CONFLICT),
            // The session limit (`max_sessions`, 4096 by default): refused as a conflict.
            (
                SessionError::TooMany {
                    max: 4096,
                    ended: 0,
                },
                StatusCode::CONFLICT,
            ),
            (
                SessionError::Unavailable("x".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (e, status) in cases {
            let api = ApiError::from(e.clone());
            assert_eq!(api.status(), status, "{e}");
            match api.reply(Some(7)) {
                Reply::Error { id, code, message } => {
                    assert_eq!((id, code), (Some(7), api.code));
                    assert_eq!(message, e.to_string());
                }
                other => panic!("not an error frame: {other:?}"),
            }
        }
    }
}
