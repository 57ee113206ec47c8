//! Counters for dashboards and tests: what the server accepted, refused and closed, and why.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of a server's counters. Totals since start, except `open`.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct WsStats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> WsStats {
                WsStats { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// WebSocket connections open right now (upgraded, not yet closed).
    open,
    /// Connections upgraded.
    upgraded,
    /// Handshakes refused with 401 (no, invalid or expired credentials).
    rejected_unauthorized,
    /// Handshakes refused with 403 (origin not allowed, or the authenticator forbade it).
    rejected_forbidden,
    /// Handshakes refused with 503 (the global connection cap) or with the connection dropped
    /// outright because even the budget for refusals was spent.
    rejected_busy,
    /// Handshakes refused with 429 (the per-address connection cap).
    rejected_per_ip,
    /// Handshakes refused with another 4xx (malformed, not WebSocket, too large, wrong path).
    rejected_bad_request,
    /// Handshakes that did not complete within the handshake timeout (slowloris), or whose
    /// client went away mid-request.
    handshake_abandoned,
    /// Closed because the engine or the server shut down (1001).
    closed_shutdown,
    /// Closed as slow consumers (1013).
    closed_slow_consumer,
    /// Closed for a policy violation, e.g. ignoring rate limits (1008).
    closed_policy_violation,
    /// Closed because the user logged out or the token was revoked (4401).
    closed_revoked,
    /// Closed because a connection admitted without credentials did not authenticate with a
    /// `hello` (4401).
    closed_unauthenticated,
    /// Closed because the peer stopped answering pings (1001).
    closed_idle,
    /// Closed for an oversized message or frame (1009).
    closed_too_big,
    /// Closed for invalid UTF-8 in a text frame (1007).
    closed_invalid_utf8,
    /// Closed for a WebSocket protocol violation (1002).
    closed_protocol_error,
    /// Closed by the peer (close frame or end of stream).
    closed_by_peer,
    /// Ended by an I/O error or a reset without a close handshake.
    closed_io,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
