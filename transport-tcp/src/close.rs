//! Why a connection ended, what the client is told, and the lingering close.

use crate::Error;
use crate::stats::Counters;
use chat_core::conn::PumpEnd;
use chat_core::{CloseReason, ErrorCode};
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a connection ended.
///
/// TCP has no close frame, so before closing for a reason the client should know, the server
/// sends a last **error frame without an id** (binary mode) or a last `!` line (line mode).
/// In binary mode the frame's `message` starts with the stable reason string ([`as_str`])
/// and a colon, so that programs can tell the reasons apart even where they share a code:
///
/// | cause | binary: `code` | line mode |
/// |---|---|---|
/// | `Shutdown` | `internal` | `! server shutting down` |
/// | `IdleTimeout` | `internal` | `! disconnected: idle for too long` |
/// | `SlowConsumer` | `limit_reached` | `! disconnected: you are not reading fast enough` |
/// | `PolicyViolation` | `rate_limited` | `! disconnected: too many requests` |
/// | `Revoked` | `invalid_token` | `! signed out: your session was revoked` |
/// | `FrameTooLarge` | `bad_frame` | — |
/// | `ServerFull` | `limit_reached` | `! server full, try again later` |
/// | `TooManyConnections` | `limit_reached` | `! too many connections from your address` |
/// | `Unauthenticated` | the `hello`'s error (its own code, with the hello's id) | the sign-in error |
/// | `Quit` | — | `* bye` |
/// | `PeerClosed`, `Truncated`, `Io` | nothing: the peer is gone | nothing |
///
/// The codes are the nearest of the protocol's stable codes: `limit_reached` for caps (a
/// slow consumer fell too far behind), `invalid_token` for a revoked session (log in again,
/// do not retry the token), `internal` where the protocol has no closer code (shutdown, idle):
/// reconnect with backoff.
///
/// [`as_str`]: CloseCause::as_str
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// The server shut down, or the engine asked every session to close.
    Shutdown,
    /// Nothing arrived from the peer within the idle timeout.
    IdleTimeout,
    /// The peer read too slowly: it fell too far behind a room, its queue overflowed, or a
    /// write stalled.
    SlowConsumer,
    /// The session kept sending after being rate limited.
    PolicyViolation,
    /// The user logged out or the token was revoked.
    Revoked,
    /// A binary length prefix announced more than `max_frame_bytes`.
    FrameTooLarge,
    /// The peer's stream ended in the middle of a binary frame. The partial frame was
    /// discarded: nothing of it was applied.
    Truncated,
    /// The connection did not authenticate: a refused `hello`, a first frame that was not a
    /// `hello`, sign-in attempts used up, an attempt the
    /// [`SignInGate`](crate::SignInGate) refused, or the authentication timeout.
    Unauthenticated,
    /// Refused: the server holds `max_connections`.
    ServerFull,
    /// Refused: this address holds `max_connections_per_ip`.
    TooManyConnections,
    /// A line-mode user typed `/quit`.
    Quit,
    /// The peer closed the connection.
    PeerClosed,
    /// The connection failed (reset, I/O error).
    Io,
}

impl CloseCause {
    /// A stable name: also the prefix of the last error frame's message in binary mode.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Shutdown => "shutdown",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::PolicyViolation => "policy_violation",
            CloseCause::Revoked => "revoked",
            CloseCause::FrameTooLarge => "frame_too_large",
            CloseCause::Truncated => "truncated",
            CloseCause::Unauthenticated => "unauthenticated",
            CloseCause::ServerFull => "server_full",
            CloseCause::TooManyConnections => "too_many_connections",
            CloseCause::Quit => "quit",
            CloseCause::PeerClosed => "peer_closed",
            CloseCause::Io => "io",
        }
    }

    /// The last error frame of a binary connection closed for this cause: its code and the
    /// human part of its message (after the reason prefix). `None`: nothing is sent.
    pub(crate) fn binary_farewell(self) -> Option<(ErrorCode, &'static str)> {
        Some(match self {
            CloseCause::Shutdown => (ErrorCode::Internal, "the server is shutting down"),
            CloseCause::IdleTimeout => (
                ErrorCode::Internal,
                "nothing received within the idle timeout; send `ping` regularly",
            ),
            CloseCause::SlowConsumer => (
                ErrorCode::LimitReached,
                "fell too far behind: read faster, then reconnect and resume",
            ),
            CloseCause::PolicyViolation => {
                (ErrorCode::RateLimited, "kept sending while rate limited")
            }
            CloseCause::Revoked => (ErrorCode::InvalidToken, "the session was revoked"),
            CloseCause::ServerFull => (ErrorCode::LimitReached, "server full, try again later"),
            CloseCause::TooManyConnections => (
                ErrorCode::LimitReached,
                "too many connections from your address",
            ),
            // Sent where it is detected, with the numbers in it.
            CloseCause::FrameTooLarge
            | CloseCause::Unauthenticated
            | CloseCause::Truncated
            | CloseCause::Quit
            | CloseCause::PeerClosed
            | CloseCause::Io => return None,
        })
    }

    /// The last line of a line-mode connection closed for this cause.
    pub(crate) fn line_farewell(self) -> Option<&'static str> {
        Some(match self {
            CloseCause::Shutdown => "! server shutting down",
            CloseCause::IdleTimeout => "! disconnected: idle for too long",
            CloseCause::SlowConsumer => "! disconnected: you are not reading fast enough",
            CloseCause::PolicyViolation => "! disconnected: too many requests",
            CloseCause::Revoked => "! signed out: your session was revoked",
            CloseCause::ServerFull => "! server full, try again later",
            CloseCause::TooManyConnections => "! too many connections from your address",
            CloseCause::Quit => "* bye",
            CloseCause::FrameTooLarge
            | CloseCause::Unauthenticated
            | CloseCause::Truncated
            | CloseCause::PeerClosed
            | CloseCause::Io => return None,
        })
    }

    /// The cause of a pump's end.
    pub(crate) fn of(end: &PumpEnd<Error>) -> CloseCause {
        match end {
            PumpEnd::Closed(reason) => match reason {
                CloseReason::Shutdown => CloseCause::Shutdown,
                CloseReason::SlowConsumer => CloseCause::SlowConsumer,
                CloseReason::Revoked => CloseCause::Revoked,
                // `CloseReason` may grow; anything the engine objects to is a policy matter.
                _ => CloseCause::PolicyViolation,
            },
            PumpEnd::PeerClosed => CloseCause::PeerClosed,
            PumpEnd::IdleTimeout => CloseCause::IdleTimeout,
            PumpEnd::ReadError(e) => CloseCause::of_error(e),
            PumpEnd::WriteError(_) => CloseCause::Io,
        }
    }

    /// What a read error means for the connection.
    pub(crate) fn of_error(e: &Error) -> CloseCause {
        match e {
            Error::FrameTooLarge { .. } => CloseCause::FrameTooLarge,
            Error::Truncated { .. } => CloseCause::Truncated,
            _ => CloseCause::Io,
        }
    }

    /// The counter of connections closed for this cause, if it has one.
    pub(crate) fn counter(self, c: &Counters) -> Option<&AtomicU64> {
        Some(match self {
            CloseCause::Shutdown => &c.closed_shutdown,
            CloseCause::IdleTimeout => &c.closed_idle,
            CloseCause::SlowConsumer => &c.closed_slow_consumer,
            CloseCause::PolicyViolation => &c.closed_policy_violation,
            CloseCause::Revoked => &c.closed_revoked,
            CloseCause::FrameTooLarge => &c.closed_frame_too_large,
            CloseCause::Truncated => &c.closed_truncated,
            CloseCause::Quit => &c.closed_quit,
            CloseCause::PeerClosed => &c.closed_by_peer,
            CloseCause::Io => &c.closed_io,
            // Counted where they are decided (`auth_failed`, `auth_timeout`, `refused_*`).
            CloseCause::Unauthenticated
            | CloseCause::ServerFull
            | CloseCause::TooManyConnections => {
                return None;
            }
        })
    }
}

/// Reads and discards whatever the peer still sends, until its end of stream or `timeout`,
/// into a fixed buffer.
///
/// Why: closing a socket that has unread input makes the kernel send a reset, and a reset can
/// destroy our last frame or line in the peer's receive buffer before the peer reads it — a
/// client that sent an oversized frame would see "connection reset" instead of the error.
/// Call it after shutting down the write side (our FIN is then already on its way).
pub(crate) async fn linger<R: AsyncRead + Unpin>(read: &mut R, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        let mut sink = [0u8; 512];
        while let Ok(n) = read.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A duration as people write it in messages: `300 ms`, `10 s`, `30 min`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 || ms % 1000 != 0 {
        format!("{ms} ms")
    } else if ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{} s", ms / 1000)
    }
}
