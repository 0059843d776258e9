//! Errors of the application layer (state, rooms, admission, recordings): what went wrong, as a
//! kind, a stable code and a message, with no HTTP in it. The HTTP layer maps each kind to a
//! status ([`crate::http::error::ApiError`]); other front ends could map them otherwise.

use std::time::Duration;

use townhall_core::{DirectoryError, RoomError, SpaceError, StageError, TokenError};

/// What kind of failure: the caller's input, their credentials, the state of things, or us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input.
    BadRequest,
    /// No (valid) credentials.
    Unauthorized,
    /// Credentials that do not allow this.
    Forbidden,
    /// No such thing.
    NotFound,
    /// The current state does not allow this.
    Conflict,
    /// It existed and is over (an ended space).
    Gone,
    /// Well-formed input whose values are not acceptable.
    Unprocessable,
    /// Too much, too fast: retry later.
    TooManyRequests,
    /// The node cannot take this now (full, draining, behind): retry later.
    Unavailable,
    /// Our fault.
    Internal,
    /// Another node this one needs (a space's origin) cannot be reached.
    Upstream,
    /// Another node this one needs did not answer in time.
    UpstreamTimeout,
}

/// An application error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Stable, machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// When to try again, if it makes sense.
    pub retry_after: Option<Duration>,
}

impl AppError {
    /// An error of `kind` with `code` and `message`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> AppError {
        AppError { kind, code, message: message.into(), retry_after: None }
    }

    /// The same error, telling the caller when to retry.
    pub fn retry_after(self, after: Duration) -> AppError {
        AppError { retry_after: Some(after), ..self }
    }

    /// No such space (or route, recording, ...).
    pub fn not_found(message: impl Into<String>) -> AppError {
        AppError::new(ErrorKind::NotFound, "not_found", message)
    }

    /// No credentials.
    pub fn unauthorized(message: impl Into<String>) -> AppError {
        AppError::new(ErrorKind::Unauthorized, "unauthorized", message)
    }

    /// Credentials that do not allow this.
    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(ErrorKind::Forbidden, "forbidden", message)
    }

    /// Values that are not acceptable.
    pub fn unprocessable(message: impl Into<String>) -> AppError {
        AppError::new(ErrorKind::Unprocessable, "invalid", message)
    }

    /// The state does not allow this.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(ErrorKind::Conflict, code, message)
    }

    /// Malformed input.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(ErrorKind::BadRequest, code, message)
    }

    /// Too many requests from this `scope` (address, subnet, identity, ...).
    pub fn rate_limited(scope: &str, retry_after: Duration) -> AppError {
        let message = format!("too many requests from this {scope}; slow down");
        AppError::new(ErrorKind::TooManyRequests, "rate_limited", message).retry_after(retry_after)
    }

    /// The space has ended.
    pub fn ended() -> AppError {
        AppError::new(ErrorKind::Gone, "ended", "this space has ended")
    }

    /// The node is draining.
    pub fn draining() -> AppError {
        // Retry-After: clients go back through the door (another node) after it.
        AppError {
            retry_after: Some(Duration::from_secs(1)),
            ..AppError::new(
                ErrorKind::Unavailable,
                "draining",
                "this node is shutting down; join again (through the door) elsewhere",
            )
        }
    }

    /// Our fault.
    pub fn internal(message: impl Into<String>) -> AppError {
        AppError::new(ErrorKind::Internal, "internal", message)
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AppError {}

impl From<TokenError> for AppError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::WrongSpace(_) => AppError::forbidden(e.to_string()),
            TokenError::Signing(_) => AppError::internal(e.to_string()),
            _ => AppError::new(ErrorKind::Unauthorized, "invalid_token", e.to_string()),
        }
    }
}

impl From<DirectoryError> for AppError {
    fn from(e: DirectoryError) -> Self {
        match &e {
            DirectoryError::NotFound(_) => AppError::not_found(e.to_string()),
            DirectoryError::Exists(_) | DirectoryError::NoFreeId => {
                AppError::conflict("exists", e.to_string())
            }
            DirectoryError::Full(_) => {
                AppError::new(ErrorKind::Unavailable, "capacity", e.to_string())
            }
            DirectoryError::Space(inner) => inner.clone().into(),
        }
    }
}

impl From<crate::app::store::StoreError> for AppError {
    fn from(e: crate::app::store::StoreError) -> Self {
        AppError::internal(e.to_string())
    }
}

impl From<SpaceError> for AppError {
    fn from(e: SpaceError) -> Self {
        match e {
            SpaceError::InvalidTransition { .. } => {
                AppError::conflict("invalid_state", e.to_string())
            }
            SpaceError::Invalid(_) => AppError::unprocessable(e.to_string()),
        }
    }
}

impl From<StageError> for AppError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::NotAllowed(_) => AppError::forbidden(e.to_string()),
            StageError::Full(_) => AppError::conflict("stage_full", e.to_string()),
        }
    }
}

impl From<crate::pipeline::rtc::ReserveError> for AppError {
    fn from(e: crate::pipeline::rtc::ReserveError) -> Self {
        let (kind, code) = match e {
            crate::pipeline::rtc::ReserveError::Full => (ErrorKind::Unavailable, "webrtc_full"),
            crate::pipeline::rtc::ReserveError::PerClient(_) => {
                (ErrorKind::TooManyRequests, "too_many_sessions")
            }
        };
        AppError::new(kind, code, e.to_string()).retry_after(Duration::from_secs(5))
    }
}

impl From<RoomError> for AppError {
    fn from(e: RoomError) -> Self {
        // The room classifies its refusals in HTTP terms already; read them back as kinds.
        let kind = match e.http_status() {
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            410 => ErrorKind::Gone,
            422 => ErrorKind::Unprocessable,
            429 => ErrorKind::TooManyRequests,
            503 => ErrorKind::Unavailable,
            500..=599 => ErrorKind::Internal,
            _ => ErrorKind::Conflict,
        };
        let retry_after = e.retry_after_secs().map(Duration::from_secs);
        AppError { retry_after, ..AppError::new(kind, e.code(), e.to_string()) }
    }
}
