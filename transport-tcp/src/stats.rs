//! Counters for dashboards and tests: what the server accepted, refused and closed, and why.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of a server's counters. Totals since start, except the `open_*` gauges.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct TcpStats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> TcpStats {
                TcpStats { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Authenticated binary-mode sessions open right now.
    open_binary,
    /// Signed-in line-mode sessions open right now.
    open_line,
    /// Binary connections that authenticated with a `hello`.
    binary_sessions,
    /// Line-mode connections that signed in.
    line_sessions,
    /// Connections refused because the server was at `max_connections` ("server full"), or
    /// dropped outright because even the budget for refusals was spent.
    refused_full,
    /// Connections refused by `max_connections_per_ip` ("too many connections").
    refused_per_ip,
    /// Failed authentications: a binary `hello` refused (or a first frame that was not a
    /// `hello`), or a line-mode connection out of sign-in attempts.
    auth_failed,
    /// Sign-in attempts the `sign_in_gate` refused (each closed its connection). Not counted
    /// in `auth_failed`: these attempts were never made.
    auth_gated,
    /// Connections that did not authenticate within `auth_timeout` / `line_auth_timeout`
    /// (including those that never sent a byte).
    auth_timeout,
    /// Closed because the server or the engine shut down.
    closed_shutdown,
    /// Closed because nothing arrived within the idle timeout.
    closed_idle,
    /// Closed as slow consumers.
    closed_slow_consumer,
    /// Closed for a policy violation, e.g. ignoring rate limits.
    closed_policy_violation,
    /// Closed because the user logged out or the token was revoked.
    closed_revoked,
    /// Closed for a length prefix over `max_frame_bytes`.
    closed_frame_too_large,
    /// Ended by an end of stream in the middle of a frame.
    closed_truncated,
    /// Closed by `/quit`.
    closed_quit,
    /// Closed by the peer (end of stream between frames or lines).
    closed_by_peer,
    /// Ended by an I/O error.
    closed_io,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn drop_one(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}
