//! Errors: the JSON error every endpoint answers with, and the server's own start-up error.
//!
//! Every failure of the JSON API is `{"error": {"code": "...", "message": "..."}}` with an HTTP
//! status that says the same thing. The codes are the engine's stable protocol codes
//! (`docs/PROTOCOL.md` §7) where the engine decided, plus a few HTTP-level ones
//! (`malformed_json`, `invalid_request`, `payload_too_large`, …). [`status_of`] is the one
//! place where an engine code becomes a status.

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_core::ErrorCode;
use std::borrow::Cow;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The options contradict each other or are out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened (not a database, a newer schema, no permission…).
    #[error("cannot open the database: {0}")]
    Store(#[source] chat_store::OpenError),
    /// The WebSocket transport refused its configuration.
    #[error(transparent)]
    Transport(#[from] transport_ws::Error),
    /// The TCP transport refused its configuration.
    #[error(transparent)]
    TcpTransport(#[from] transport_tcp::Error),
}

/// An error answer of the JSON API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: Cow<'static, str>,
    pub(crate) message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up, at least 1): when a refusal knows
    /// when the client may come back (a rate limit), it says so rather than have the client
    /// guess or hammer.
    pub(crate) retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After`.
    pub(crate) fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn unauthenticated() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first: no valid session cookie or bearer token",
        )
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// The HTTP status for an engine error code. Client mistakes are 4xx; the store failing is
/// 503 (the request did not take effect and may be retried); only a bug is 500.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadFrame | ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated | ErrorCode::InvalidCredentials | ErrorCode::InvalidToken => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::Forbidden | ErrorCode::NotMember => StatusCode::FORBIDDEN,
        ErrorCode::RoomNotFound | ErrorCode::UserNotFound | ErrorCode::InviteUnknown => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::AlreadyExists | ErrorCode::SeqAhead => StatusCode::CONFLICT,
        ErrorCode::EmptyBody | ErrorCode::BodyTooLarge | ErrorCode::InvalidField => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorCode::InviteExpired | ErrorCode::InviteExhausted => StatusCode::GONE,
        ErrorCode::RateLimited | ErrorCode::LimitReached => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::StorageError => StatusCode::SERVICE_UNAVAILABLE,
        // `Internal`, and any code a newer engine adds: a server-side failure.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<chat_core::Error> for ApiError {
    fn from(e: chat_core::Error) -> Self {
        let code = e.code();
        let status = status_of(code);
        if status.is_server_error() {
            // The details stay here; the client gets the engine's public message only.
            tracing::error!(error = %e, "request failed");
        }
        ApiError {
            status,
            code: Cow::Borrowed(code.as_str()),
            message: e.public_message(),
            retry_after: None,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonSyntaxError(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::JsonDataError(e) => ApiError::bad_request(format!(
                "missing or mistyped field: {}",
                serde_detail(&e.body_text())
            )),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with \"Content-Type: application/json\"",
            ),
            other => body_rejection(other.status(), other.body_text()),
        }
    }
}

impl From<FormRejection> for ApiError {
    fn from(r: FormRejection) -> Self {
        match r {
            FormRejection::FailedToDeserializeForm(e) => {
                ApiError::bad_request(format!("missing or mistyped field: {}", e.body_text()))
            }
            FormRejection::FailedToDeserializeFormBody(e) => {
                ApiError::bad_request(format!("missing or mistyped field: {}", e.body_text()))
            }
            other => body_rejection(other.status(), other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("bad path parameter: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query parameter: {}", r.body_text()))
    }
}

/// A body that could not be read: too large (the body-size limit), or cut short.
fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "payload_too_large",
            "the request body is larger than this server accepts",
        )
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        ApiError::new(status, "unsupported_media_type", text)
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", text)
    }
}

/// serde's message without axum's prefix ("Failed to deserialize the JSON body into the
/// target type: ").
fn serde_detail(text: &str) -> &str {
    text.split_once(": ").map(|(_, d)| d).unwrap_or(text)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        self.set_retry_after(headers);
        response
    }
}

impl ApiError {
    /// Writes this error's `Retry-After`, if it has one, into `headers`: for the pages that
    /// answer an `ApiError` with HTML rather than JSON.
    pub(crate) fn set_retry_after(&self, headers: &mut axum::http::HeaderMap) {
        if let Some(wait) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
    }
}

/// `Retry-After` in whole seconds: rounded up (coming back early only earns another
/// refusal), at least 1 (0 invites an immediate retry loop), at most an hour.
pub(crate) fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    secs.clamp(1, 3_600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_within_bounds() {
        use std::time::Duration;
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(20)), 20);
        assert_eq!(retry_after_secs(Duration::MAX), 3_600);
        let r = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
            .retry_after(Duration::from_millis(2_500))
            .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let r = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "x").into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn every_engine_code_has_a_deliberate_status() {
        for &code in ErrorCode::ALL {
            let status = status_of(code);
            let server_side = matches!(code, ErrorCode::Internal | ErrorCode::StorageError);
            assert_eq!(status.is_server_error(), server_side, "{code}");
        }
        assert_eq!(status_of(ErrorCode::RoomNotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::NotMember), StatusCode::FORBIDDEN);
        assert_eq!(status_of(ErrorCode::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(
            status_of(ErrorCode::InvalidField),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn internal_details_never_reach_the_client() {
        let e = ApiError::from(chat_core::Error::Internal("secret path /etc".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("/etc"));
    }
}
