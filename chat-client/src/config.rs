//! How to reach the server, who to be, and every timeout and bound of the client.

use chat_core::Codec;
use std::fmt;
use std::time::Duration;

/// Where the server is and which wire it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TCP binary mode: `host:port`. Frames are a 4-byte big-endian length, then a postcard
    /// `Request`/`Response` (the codec is always postcard).
    Tcp(String),
    /// WebSocket: a `ws://host[:port]/path[?query]` URL. Query parameters are sent as given,
    /// so a development server's `?user=carol` works with [`Auth::Transport`]. `wss://` is not
    /// supported by this build (terminate TLS in front of the client or use a tunnel).
    Ws(String),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp(addr) => write!(f, "tcp://{addr}"),
            Transport::Ws(url) => f.write_str(url),
        }
    }
}

/// Who the client is. Accounts are registered through the server's HTTP API (the protocol
/// has no frame for it); log in here with the password, or pass the token that API issued.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A session token. Over WebSocket it goes where [`ClientConfig::ws_token`] says
    /// (default: the `Authorization: Bearer` header); over TCP in the `hello`.
    Token(String),
    /// Username and password, sent in the `hello`. Over WebSocket this needs a server with
    /// `AuthConfig::hello` enabled (the connection is upgraded without credentials).
    Login {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
    /// A guest name, sent in the `hello` (only on servers that allow guests; over WebSocket,
    /// also needs `AuthConfig::hello`).
    Guest(String),
    /// The transport authenticates the connection by itself — a cookie or `?token=` already in
    /// the URL, or a development server's `?user=` — and the client sends a `hello` without
    /// credentials. WebSocket only.
    Transport,
}

impl fmt::Debug for Auth {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(..)"),
            Auth::Login { username, .. } => write!(f, "Login {{ username: {username:?}, .. }}"),
            Auth::Guest(name) => write!(f, "Guest({name:?})"),
            Auth::Transport => f.write_str("Transport"),
        }
    }
}

/// Where a token goes on a WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WsTokenPlacement {
    /// `Authorization: Bearer <token>` (transport-ws's first choice; not logged by proxies).
    #[default]
    Header,
    /// The `token` query parameter (what browsers must use; ends up in proxy logs).
    Query,
    /// In the `hello` frame, for servers with `AuthConfig::hello` that accept no handshake
    /// credential.
    Hello,
}

/// Bounded, capped, jittered reconnection.
///
/// Attempt *n* (from 1) waits a uniformly random time in `[d/2, d]`, where
/// `d = min(initial_delay · 2ⁿ⁻¹, max_delay)` ("equal jitter"), so a server restart does not
/// see every client come back in the same millisecond.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// The delay before the first attempt (before jitter). Default 250 ms.
    pub initial_delay: Duration,
    /// The cap on the delay. Default 30 s.
    pub max_delay: Duration,
    /// Attempts after one drop before giving up ([`CloseReason::GaveUp`]); `0` disables
    /// reconnecting. The count starts again after each successful reconnection. Default 30
    /// (with the defaults, roughly ten minutes of trying).
    ///
    /// [`CloseReason::GaveUp`]: crate::CloseReason::GaveUp
    pub max_attempts: u32,
    /// The least delay after the server closed the session for `policy_violation` (the client
    /// sent too fast): reconnecting at once would only repeat it. Default 5 s.
    pub policy_violation_delay: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_attempts: 30,
            policy_violation_delay: Duration::from_secs(5),
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: the first drop closes the client.
    pub fn never() -> ReconnectPolicy {
        ReconnectPolicy {
            max_attempts: 0,
            ..ReconnectPolicy::default()
        }
    }

    /// The delay before attempt `attempt` (from 1), given a random `unit` in `[0, 1)`.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self
            .initial_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        base / 2 + base.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// A client-side request budget, so that the client stays under the server's rate limit
/// (`Limits::requests_per_second` 20, burst 40 by default) instead of having requests refused
/// with `rate_limited`. Requests beyond it wait in the client's bounded queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests that may go at once.
    pub burst: u32,
}

impl Default for Pacing {
    /// 16 per second, burst 32: 80% of the server's defaults, leaving room for the keepalive
    /// pings and for clock differences.
    fn default() -> Self {
        Pacing {
            per_second: 16.0,
            burst: 32,
        }
    }
}

/// Everything [`Client::connect`](crate::Client::connect) needs. Build it with
/// [`ClientConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Where the server is.
    pub transport: Transport,
    /// Who to be.
    pub auth: Auth,
    /// The WebSocket codec: JSON text frames (default) or postcard binary frames. Chosen with
    /// the `chat.v1.json` / `chat.v1.postcard` subprotocol. Ignored over TCP, which always
    /// uses postcard.
    pub codec: Codec,
    /// Where a token goes on a WebSocket connection. Default: the `Authorization` header.
    pub ws_token: WsTokenPlacement,
    /// Longest wait for one request's reply, including time spent queued or reconnecting.
    /// Default 10 s.
    pub request_timeout: Duration,
    /// Longest time to establish a connection and get the `welcome` (TCP connect, WebSocket
    /// handshake, `hello`). Default 10 s.
    pub connect_timeout: Duration,
    /// How often the client pings when connected. A ping unanswered by the next tick means the
    /// connection is dead (a half-open socket, a vanished server) and the client reconnects,
    /// so a dead connection is noticed within two intervals. The pings also keep the server
    /// from closing an idle TCP client. Default 15 s (transport-ws reaps silent peers after
    /// 45 s, transport-tcp after 60 s).
    pub keepalive_interval: Duration,
    /// Reconnection after a drop.
    pub reconnect: ReconnectPolicy,
    /// Capacity of the event channel. A consumer that falls this far behind does not block
    /// the client: ephemeral events are dropped (and counted in
    /// [`Event::Lagged`](crate::Event::Lagged)), and a room's messages are re-read from the
    /// server once the consumer catches up, with no gap and no duplicate. Default 1024.
    pub event_capacity: usize,
    /// Most requests queued in the client (waiting to be written) plus written and awaiting
    /// their reply. Beyond it, callers wait. Default 256.
    pub max_in_flight: usize,
    /// Client-side rate limit. Default [`Pacing::default`]; `None` sends as fast as asked
    /// (for load tests that want to see the server's limiter at work).
    pub pacing: Option<Pacing>,
    /// Largest request the client will send, encoded. Default 64 KiB (the servers' limit on
    /// incoming frames and WebSocket messages).
    pub max_request_bytes: usize,
    /// Largest frame the client accepts from the server. Default 32 MiB: a full `history`
    /// page of maximum-size bodies is about 17 MiB.
    pub max_response_bytes: usize,
    /// How many times a request that is safe to repeat is re-sent after reconnections before
    /// it fails with [`ClientError::ConnectionLost`](crate::ClientError::ConnectionLost).
    /// Default 3.
    pub max_request_retries: u32,
}

impl ClientConfig {
    /// A configuration with every default.
    pub fn new(transport: Transport, auth: Auth) -> ClientConfig {
        ClientConfig {
            transport,
            auth,
            codec: Codec::Json,
            ws_token: WsTokenPlacement::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            reconnect: ReconnectPolicy::default(),
            event_capacity: 1024,
            max_in_flight: 256,
            pacing: Some(Pacing::default()),
            max_request_bytes: 64 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            max_request_retries: 3,
        }
    }

    /// Checks that the values make sense together.
    pub(crate) fn validate(&self) -> Result<(), crate::ClientError> {
        let bad = |m: &str| Err(crate::ClientError::Config(m.to_string()));
        if let Transport::Tcp(_) = self.transport {
            if matches!(self.auth, Auth::Transport) {
                return bad(
                    "TCP connections authenticate in the hello: give a token, a login or a guest name",
                );
            }
        }
        if self.event_capacity == 0 || self.max_in_flight == 0 {
            return bad("event_capacity and max_in_flight must be at least 1");
        }
        if self.request_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.keepalive_interval.is_zero()
        {
            return bad("timeouts and the keepalive interval must be positive");
        }
        // Deadlines are `now + duration`: far beyond any sensible value, that overflows.
        const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
        if self.request_timeout > DAY || self.connect_timeout > DAY || self.keepalive_interval > DAY
        {
            return bad("timeouts and the keepalive interval must be at most a day");
        }
        if let Some(p) = self.pacing {
            // At least one request a day, so that the wait for the next one stays finite.
            if !p.per_second.is_finite() || p.per_second < 1.0 / 86_400.0 || p.burst == 0 {
                return bad("pacing needs a rate of at least one a day and a burst of at least 1");
            }
        }
        Ok(())
    }

    /// The codec actually used on the wire.
    pub(crate) fn wire_codec(&self) -> Codec {
        match self.transport {
            Transport::Tcp(_) => Codec::Postcard,
            Transport::Ws(_) => self.codec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_whose_deadlines_would_overflow_are_refused() {
        let base = || {
            ClientConfig::new(
                Transport::Tcp("127.0.0.1:1".into()),
                Auth::Guest("g".into()),
            )
        };
        assert!(base().validate().is_ok());
        let mut c = base();
        c.keepalive_interval = Duration::MAX;
        assert!(c.validate().is_err(), "a keepalive that never comes");
        let mut c = base();
        c.request_timeout = Duration::MAX;
        assert!(c.validate().is_err());
        let mut c = base();
        c.pacing = Some(Pacing {
            per_second: 1e-300,
            burst: 1,
        });
        assert!(c.validate().is_err(), "a rate whose next slot is never");
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(125));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(250));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(1000));
        for attempt in [8, 20, 31, 1000, u32::MAX] {
            let d = p.delay(attempt, 0.999);
            assert!(d <= p.max_delay && d >= p.max_delay / 2, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let a = Auth::Login {
            username: "alice".into(),
            password: "hunter22".into(),
        };
        assert!(!format!("{a:?}").contains("hunter22"));
        assert!(!format!("{:?}", Auth::Token("sekrit".into())).contains("sekrit"));
    }
}
