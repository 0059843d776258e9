//! API errors: every failure is an HTTP status with a JSON body
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use townhall_core::{DirectoryError, SpaceError, StageError, TokenError};

use crate::app::error::{AppError, ErrorKind};

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable, machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// When to try again (sent as `Retry-After`, rounded up to whole seconds).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// 404 for an unknown space or route.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: no credentials.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: credentials that do not allow this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 422: well-formed JSON whose fields are not acceptable.
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 409: the space's state does not allow this.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 400: malformed input.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 429: too many requests from this client; retry after the given time.
    pub fn rate_limited(scope: &str, retry_after: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from this {scope}; slow down"),
            )
        }
    }

    /// `Retry-After` in whole seconds (at least 1), if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// 410: the space has ended.
    pub fn ended() -> ApiError {
        ApiError::new(StatusCode::GONE, "ended", "this space has ended")
    }

    /// 503: the node is draining.
    pub fn draining() -> ApiError {
        ApiError {
            retry_after: Some(std::time::Duration::from_secs(1)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "this node is shutting down; join again (through the door) elsewhere",
            )
        }
    }

    /// 500 for failures that are the server's fault.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The code of an error response, for middleware that classifies traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    /// Counts the rejection in `/metrics`.
    pub fn count(&self) {
        metrics::counter!(crate::metrics::REJECTIONS, "reason" => self.code).increment(1);
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.count();
        let mut res = (self.status, Json(self.body())).into_response();
        res.extensions_mut().insert(ErrorCode(self.code));
        if let Some(secs) = self.retry_after_secs() {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let status = match e.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Gone => StatusCode::GONE,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        };
        ApiError { status, code: e.code, message: e.message, retry_after: e.retry_after }
    }
}

/// Errors of the libraries reach HTTP through the application's kinds.
macro_rules! through_app_error {
    ($($source:ty),* $(,)?) => {
        $(impl From<$source> for ApiError {
            fn from(e: $source) -> Self {
                AppError::from(e).into()
            }
        })*
    };
}

through_app_error!(
    TokenError,
    DirectoryError,
    crate::app::store::StoreError,
    SpaceError,
    StageError,
    townhall_core::RoomError,
    crate::pipeline::rtc::ReserveError,
);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match &r {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                "too_large"
            }
            JsonRejection::JsonDataError(_) => "invalid",
            _ => "malformed_json",
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("bad_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("bad_query", r.body_text())
    }
}
