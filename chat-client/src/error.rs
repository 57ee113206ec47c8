//! The crate's one error type, and why a client stopped for good.

use chat_core::ErrorCode;
use std::fmt;
use std::time::Duration;

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered the request with an `error` frame. `code` is the stable
    /// [`ErrorCode`] (see `docs/PROTOCOL.md` §7); `message` is for humans.
    #[error("{message} ({})", code.as_str())]
    Server {
        /// The stable, machine-readable code.
        code: ErrorCode,
        /// The server's human-readable explanation.
        message: String,
    },
    /// No reply within [`ClientConfig::request_timeout`](crate::ClientConfig::request_timeout)
    /// (including any time spent reconnecting). A `send` may still have been stored: retry it
    /// with the same `client_msg_id` ([`Client::send_with_id`](crate::Client::send_with_id)).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection dropped while a request that is not safe to repeat (`create_room`,
    /// `leave`, `kick`, `create_invite`, a `send` without `client_msg_id`) was in flight. It
    /// may or may not have taken effect.
    #[error(
        "the connection was lost with the request in flight; it may or may not have taken effect"
    )]
    ConnectionLost,
    /// The client has stopped for good (see [`CloseReason`]); make a new one.
    #[error("the client is closed: {0}")]
    Closed(CloseReason),
    /// The TCP connection could not be established (or the address did not resolve).
    #[error("could not connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The WebSocket handshake was answered with an HTTP error (401 for a bad token, 429/503
    /// when the server is at its connection caps, ...). `message` is the server's JSON body
    /// when it sent one.
    #[error("the server refused the WebSocket handshake with HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The response body, if any.
        message: String,
    },
    /// The connection failed below the chat protocol (I/O, WebSocket framing, a frame over the
    /// size limit, the server closing during the handshake).
    #[error("connection failed: {0}")]
    Transport(String),
    /// The server sent something this client did not expect (a reply of the wrong type, an
    /// undecodable reply to a request).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The encoded request is larger than the server accepts
    /// ([`ClientConfig::max_request_bytes`](crate::ClientConfig::max_request_bytes)); it was
    /// not sent.
    #[error("the request is {size} bytes encoded, over the limit of {max}")]
    RequestTooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The configuration is unusable (a bad URL, `wss://`, no credentials over TCP, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The protocol error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Closed(CloseReason::AuthFailed { code, .. }) => Some(*code),
            _ => None,
        }
    }

    /// Whether this error means the credentials were refused (bad password or token, guest
    /// access disabled, revoked session, HTTP 401 at the WebSocket handshake). Retrying with
    /// the same credentials will not help.
    pub fn is_auth(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => is_auth_code(*code),
            ClientError::Refused { status, .. } => *status == 401,
            ClientError::Closed(CloseReason::AuthFailed { .. } | CloseReason::Revoked) => true,
            _ => false,
        }
    }
}

/// Error codes that refuse the credentials of a `hello`: reconnecting with the same
/// credentials cannot succeed.
pub(crate) fn is_auth_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthenticated
            | ErrorCode::InvalidCredentials
            | ErrorCode::InvalidToken
            | ErrorCode::Forbidden
            | ErrorCode::AlreadyExists
            | ErrorCode::InvalidField
            | ErrorCode::UnsupportedVersion
    )
}

/// Why a client stopped for good. It is the last [`Event`](crate::Event) the event stream
/// yields ([`Event::Closed`](crate::Event::Closed)), and what requests fail with afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Client::close`](crate::Client::close) was called, or every `Client` handle was
    /// dropped.
    Closed,
    /// The server revoked the session (logout, token revoked, the application closed the
    /// user's sessions: WebSocket close code 4401 `revoked`). The client does not reconnect:
    /// go back to login.
    Revoked,
    /// Reconnecting, the server refused the credentials (`invalid_token` after a logout, a
    /// changed password, ...). The client does not try again.
    AuthFailed {
        /// The code of the server's `error` frame (or `invalid_token` for an HTTP 401).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// Reconnecting, the server refused in a way retrying cannot fix (HTTP 403 or 404 at the
    /// WebSocket handshake, ...).
    Refused {
        /// What the server said.
        message: String,
    },
    /// Every reconnection attempt allowed by
    /// [`ReconnectPolicy::max_attempts`](crate::ReconnectPolicy::max_attempts) failed.
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// Why the last one failed.
        last_error: String,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Closed => f.write_str("closed by the client"),
            CloseReason::Revoked => f.write_str("the server revoked the session; log in again"),
            CloseReason::AuthFailed { code, message } => {
                write!(
                    f,
                    "the server refused the credentials: {message} ({})",
                    code.as_str()
                )
            }
            CloseReason::Refused { message } => write!(f, "the server refused: {message}"),
            CloseReason::GaveUp {
                attempts,
                last_error,
            } => write!(
                f,
                "gave up reconnecting after {attempts} attempts (last: {last_error})"
            ),
        }
    }
}
