//! API errors: every failure is an HTTP status with a JSON body
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use townhall_core::{DirectoryError, SpaceError, StageError, TokenError};

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
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is shutting down; retry",
        )
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

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::WrongSpace(_) => ApiError::forbidden(e.to_string()),
            TokenError::Signing(_) => ApiError::internal(e.to_string()),
            _ => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()),
        }
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match &e {
            DirectoryError::NotFound(_) => ApiError::not_found(e.to_string()),
            DirectoryError::Exists(_) => ApiError::conflict("exists", e.to_string()),
            DirectoryError::NoFreeId => ApiError::conflict("exists", e.to_string()),
            DirectoryError::Full(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "capacity", e.to_string())
            }
            DirectoryError::Space(inner) => inner.clone().into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<SpaceError> for ApiError {
    fn from(e: SpaceError) -> Self {
        match e {
            SpaceError::InvalidTransition { .. } => {
                ApiError::conflict("invalid_state", e.to_string())
            }
            SpaceError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
        }
    }
}

impl From<StageError> for ApiError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::NotAllowed(_) => ApiError::forbidden(e.to_string()),
            StageError::Full(_) => ApiError::conflict("stage_full", e.to_string()),
        }
    }
}

impl From<townhall_core::RoomError> for ApiError {
    fn from(e: townhall_core::RoomError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::CONFLICT);
        let retry_after = e.retry_after_secs().map(std::time::Duration::from_secs);
        ApiError { retry_after, ..ApiError::new(status, e.code(), e.to_string()) }
    }
}

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
