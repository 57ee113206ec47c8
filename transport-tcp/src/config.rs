//! Every limit and policy of the TCP transport, with its default and the reason for it.

use crate::Error;
use chat_core::conn::PumpConfig;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Binary frames must stay below 16 MiB so that the first byte of a binary connection (the
/// high byte of the 4-byte length prefix of its `hello`) is always `0x00`: that byte is how a
/// connection's mode is told apart from a person typing (see the crate docs).
pub(crate) const BINARY_FIRST_BYTE_LIMIT: usize = 1 << 24;

/// A budget of sign-in attempts per client address, kept by the application and consulted by
/// the transport (see [`TcpConfig::sign_in_gate`]).
///
/// Why: `line_max_login_attempts` (line mode) and the one `hello` of a binary connection limit
/// attempts *per connection*, and reconnecting starts afresh, so on their own they let one host
/// guess passwords as fast as it can reconnect, each guess costing the server a deliberately
/// slow password hash. A per-address budget has to outlive connections, and an application
/// that also signs people in elsewhere (an HTTP login form) wants one budget for all of its
/// doors, so the transport asks the application instead of keeping a budget of its own.
///
/// The gate is asked before every attempt that carries credentials: a binary `hello` with a
/// login or a guest name, a line-mode `/login` or `/nick`. Not before a `hello` with a token:
/// a token of chat-core's accounts is 256 random bits checked by one SHA-256 and a lookup, not
/// a slow hash, so guessing one is hopeless and cheap to refuse, while reconnecting clients
/// resuming with their tokens would otherwise spend the budget people need to type their
/// passwords.
///
/// A refused attempt is not made: the authenticator (and its password hash) is not run, the
/// client is told (binary: an `error` with code `rate_limited` and the hello's id; line mode:
/// `! too many sign-in attempts from your address; try again later`), and the connection is
/// closed.
pub trait SignInGate: Send + Sync + 'static {
    /// Whether a client at `peer` may make one more sign-in attempt now. Taking one attempt
    /// from the budget is this method's job: it is called once per attempt, on the connection's
    /// task, so it should not block.
    fn admit(&self, peer: IpAddr) -> bool;
}

/// What a client refused by the [`SignInGate`] is told (line mode prefixes it with `! `).
pub(crate) const SIGN_IN_REFUSED: &str =
    "too many sign-in attempts from your address; try again later";

/// Printed as `SignInGate`: the gate's state (e.g. every address it tracks) is not
/// configuration, and [`TcpConfig`] is `Debug`.
impl std::fmt::Debug for dyn SignInGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignInGate")
    }
}

/// The transport's configuration. `TcpConfig::default()` is meant to be safe on the public
/// internet; every field says what it guards against.
///
/// Engine-level limits (message body size, per-session queue, request rate, whether guests
/// may sign in) live in [`chat_core::Limits`]; this struct holds what only a TCP server knows
/// about.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TcpConfig {
    /// Largest binary frame a client may send (the payload, without its 4-byte length prefix).
    /// Default 64 KiB: four times the largest message body `Limits` allows by default, the same
    /// as the WebSocket transport's message limit. A length prefix above it gets a `bad_frame`
    /// error and the connection is closed *before* anything of that length is allocated. Must
    /// be below 16 MiB (see [`TcpConfig::validate`]).
    pub max_frame_bytes: usize,
    /// Largest frame the server will write. Default 32 MiB. This is a cap, not an allocation:
    /// it must exceed the largest reply the engine can send — a full `history` page of
    /// maximum-size bodies is about 17 MiB with default `Limits` — or such a reply would fail
    /// the connection. Clients should accept frames this large.
    pub max_write_frame_bytes: usize,
    /// Longest line a line-mode client may send, in bytes, without its `\n` (or `\r\n`).
    /// Default 4 KiB: a long chat message typed or pasted at a terminal. A longer line is
    /// refused with an error line and discarded as it arrives (never buffered whole); the
    /// connection stays usable.
    pub max_line_bytes: usize,
    /// Initial capacity of each connection's read buffer. Default 512 bytes (the WebSocket
    /// transport's too): chat frames are small and idle connections are the common case, so
    /// this is much of a connection's memory. It grows (up to `max_frame_bytes` plus the
    /// prefix) only for a larger frame.
    pub read_buffer_bytes: usize,

    /// How long a binary connection has, from being accepted, to complete its `hello`.
    /// Default 10 s (the WebSocket transport's handshake timeout). A connection that has not
    /// authenticated by then gets an `unauthenticated` error frame and is closed, so a silent
    /// or dribbling client holds a connection slot at most this long.
    pub auth_timeout: Duration,
    /// How long a line-mode connection has, from being accepted, to sign in with `/login` or
    /// `/nick`. Default 60 s: a person has to read the banner and type. (A connection that has
    /// sent nothing at all is not known to be a person yet, but this is also the longest it is
    /// waited for.)
    pub line_auth_timeout: Duration,
    /// Failed sign-in attempts a line-mode connection may make before it is closed. Default 3.
    /// Every password attempt costs the server an argon2 hash; this (with the per-address
    /// connection cap) bounds what one connection can make it spend.
    pub line_max_login_attempts: u32,
    /// Asked before every sign-in attempt that carries credentials (a password or a guest
    /// name), in both modes, with the client's address; see [`SignInGate`]. Default `None`:
    /// no per-address budget, only the per-connection limits above. Set it on a public
    /// server, to the same budget the application's other sign-in paths use.
    pub sign_in_gate: Option<Arc<dyn SignInGate>>,

    /// Most open connections, in both modes and including those not yet authenticated.
    /// Default 10 000. Beyond it, a new connection gets a "server full" error (a frame or a
    /// line, by its first byte) and is closed.
    pub max_connections: usize,
    /// Most open connections from one client address (an IPv4 address or an IPv6 /64).
    /// Default 64: several devices behind one NAT fit; one host cannot take the whole server.
    /// Beyond it: a "too many connections" error, then close. Behind a proxy every client has
    /// the proxy's address — raise this or enforce the cap at the proxy.
    pub max_connections_per_ip: usize,

    /// Binary mode: after how long a silence of the client the server sends it a keepalive
    /// frame (an unsolicited `pong`, with no id), and again after each further interval of
    /// silence. Default 25 s (the WebSocket ping interval): it keeps NAT and proxy mappings
    /// alive and lets a client that only listens notice a dead connection. A client that
    /// pings more often than this gets its own pongs instead.
    pub keepalive_interval: Duration,
    /// Binary mode: a connection from which nothing at all arrives for this long is closed
    /// (`idle_timeout`). Default 60 s. TCP has no ping the server could send and expect an
    /// answer to, so liveness is the client's job: send a `ping` (or anything) more often than
    /// this — every 15 to 25 s is right. This reaps half-open connections (a client that
    /// vanished without a FIN).
    pub idle_timeout: Duration,
    /// Line mode: a connection that sends no line for this long is closed. Default 30 min:
    /// people read without typing, and `nc` cannot answer a keepalive. Line mode has no other
    /// liveness check; a vanished client that is sent anything is caught by `write_timeout`.
    pub line_idle_timeout: Duration,
    /// Longest one batch of outgoing frames (or lines) may take to reach the socket. Default
    /// 10 s. A peer that stops reading is normally cut off sooner, when it falls more than
    /// `Limits::session_queue` entries behind a busy room; this catches the one in a quiet
    /// room.
    pub write_timeout: Duration,
    /// Most frames written per flush. Default 64.
    pub max_batch_frames: usize,
    /// Least time between two flushes to one binary-mode connection; frames queued meanwhile
    /// go out together. Default 0 (write at once). Trades up to this much latency for fewer,
    /// larger writes under load; see [`chat_core::conn::PumpConfig::flush_interval`]. Line
    /// mode (people at terminals) always writes at once.
    pub flush_interval: Duration,
    /// How long the goodbye may take: writing the last error frame or line (a courtesy — a
    /// slow consumer's socket is full), and then, separately, waiting for the client to close
    /// its side before dropping the connection. Default 2 s. Closing a socket with unread input
    /// makes the kernel send a reset, which can destroy the last error frame before the client
    /// reads it; reading (and discarding, into a fixed 512-byte buffer) until the client's end
    /// of stream lets it arrive.
    pub close_timeout: Duration,
    /// On graceful shutdown, how long each connection may spend writing what is still queued
    /// before its final "server shutting down" error. Default 5 s. The whole shutdown takes at
    /// most `write_timeout + shutdown_timeout + 2 × close_timeout` (a batch already being
    /// written, the drain, the goodbye); stragglers are then dropped.
    pub shutdown_timeout: Duration,

    /// The first line of the line-mode banner, shown when a person first types something.
    /// Default `"Welcome to chat."`.
    pub banner: String,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_frame_bytes: 64 * 1024,
            max_write_frame_bytes: 32 * 1024 * 1024,
            max_line_bytes: 4 * 1024,
            read_buffer_bytes: 512,
            auth_timeout: Duration::from_secs(10),
            line_auth_timeout: Duration::from_secs(60),
            line_max_login_attempts: 3,
            sign_in_gate: None,
            max_connections: 10_000,
            max_connections_per_ip: 64,
            keepalive_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            line_idle_timeout: Duration::from_secs(30 * 60),
            write_timeout: Duration::from_secs(10),
            max_batch_frames: 64,
            flush_interval: Duration::ZERO,
            close_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
            banner: "Welcome to chat.".to_string(),
        }
    }
}

impl TcpConfig {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_string()));
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return bad("connection caps must be at least 1");
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes >= BINARY_FIRST_BYTE_LIMIT {
            return bad(
                "max_frame_bytes must be positive and below 16 MiB (the first byte of a binary \
                 connection must be 0x00 for mode detection)",
            );
        }
        if self.max_write_frame_bytes < self.max_frame_bytes
            || self.max_write_frame_bytes > u32::MAX as usize
        {
            return bad(
                "max_write_frame_bytes must be at least max_frame_bytes and fit a 4-byte length",
            );
        }
        if self.max_line_bytes < 16 {
            return bad("max_line_bytes must be at least 16");
        }
        if self.read_buffer_bytes == 0 || self.max_batch_frames == 0 {
            return bad("read_buffer_bytes and max_batch_frames must be positive");
        }
        if self.line_max_login_attempts == 0 {
            return bad("line_max_login_attempts must be at least 1");
        }
        for (name, d) in [
            ("auth_timeout", self.auth_timeout),
            ("line_auth_timeout", self.line_auth_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("idle_timeout", self.idle_timeout),
            ("line_idle_timeout", self.line_idle_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        if self.banner.chars().any(char::is_control) {
            return bad("the banner must be one line without control characters");
        }
        Ok(())
    }

    /// Whether a sign-in attempt from `peer` may go ahead: always without a gate.
    pub(crate) fn admit_sign_in(&self, peer: IpAddr) -> bool {
        self.sign_in_gate
            .as_ref()
            .is_none_or(|gate| gate.admit(peer))
    }

    /// The session pump's deadlines for a binary connection.
    pub(crate) fn binary_pump(&self) -> PumpConfig {
        PumpConfig {
            probe_interval: self.keepalive_interval,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_batch: self.max_batch_frames,
            drain_timeout: self.shutdown_timeout,
            flush_interval: self.flush_interval,
        }
    }

    /// The session pump's deadlines for a line-mode connection: no keepalive probes (a
    /// terminal cannot answer one), only the idle deadline.
    pub(crate) fn line_pump(&self) -> PumpConfig {
        PumpConfig {
            probe_interval: Duration::ZERO,
            idle_timeout: self.line_idle_timeout,
            write_timeout: self.write_timeout,
            max_batch: self.max_batch_frames,
            drain_timeout: self.shutdown_timeout,
            flush_interval: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        TcpConfig::default().validate().unwrap();
    }

    #[test]
    fn a_frame_limit_that_breaks_mode_detection_is_refused() {
        let c = TcpConfig {
            max_frame_bytes: 16 * 1024 * 1024,
            ..TcpConfig::default()
        };
        assert!(c.validate().is_err());
        let c = TcpConfig {
            idle_timeout: Duration::ZERO,
            ..TcpConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
