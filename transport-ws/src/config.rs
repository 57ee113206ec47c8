//! Every limit and policy of the WebSocket transport, with its default and the reason for it.

use crate::Error;
use chat_core::conn::PumpConfig;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The transport's configuration. `WsConfig::default()` is meant to be safe on the public
/// internet; every field says what it guards against.
///
/// Engine-level limits (message body size, per-session queue, request rate) live in
/// [`chat_core::Limits`]; this struct holds what only a WebSocket server knows about.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WsConfig {
    /// The request path the standalone server upgrades on, e.g. `"/ws"`; other paths get
    /// HTTP 404. Default `None`: any path (the server speaks nothing but WebSocket).
    pub path: Option<String>,
    /// Which credentials the handshake accepts. See [`AuthConfig`].
    pub auth: AuthConfig,
    /// Which browser origins may connect. See [`OriginPolicy`].
    pub origins: OriginPolicy,

    /// Longest time from accepting a TCP connection to sending the `101` (reading the
    /// request, authenticating, answering). Default 10 s. A slowloris client that dribbles
    /// its request a byte at a time is dropped when it runs out, holding one connection slot
    /// at most this long.
    pub handshake_timeout: Duration,
    /// Largest HTTP request head (request line and headers), in bytes. Default 8 KiB (nginx's
    /// default for one header buffer): enough for a bearer token and a few cookies. Larger
    /// requests get HTTP 431 before anything is parsed or looked up.
    pub max_request_bytes: usize,
    /// Most request headers. Default 64. More get HTTP 431.
    pub max_headers: usize,

    /// Most open connections (including those still handshaking). Default 10 000. Beyond it,
    /// new connections get HTTP 503 with `Retry-After`, so a load balancer can try another
    /// node.
    pub max_connections: usize,
    /// Most open connections from one client address (an IPv4 address or an IPv6 /64).
    /// Default 64: several tabs and devices behind one NAT fit; one host cannot take the
    /// whole server. Beyond it: HTTP 429. Behind a reverse proxy every client has the
    /// proxy's address — raise this or enforce the cap at the proxy.
    pub max_connections_per_ip: usize,

    /// Largest incoming message (after reassembling fragments), in bytes. Default 64 KiB:
    /// four times the largest message body `Limits` allows by default, with room for JSON
    /// escaping. Larger messages close the connection with 1009 (message too big) before they
    /// are buffered in full.
    pub max_message_bytes: usize,
    /// Largest incoming frame payload, in bytes. Default 64 KiB (= the message limit: the
    /// protocol has no use for fragments larger than a message).
    pub max_frame_bytes: usize,
    /// tungstenite's read buffer, allocated up front for every connection. Default 512 bytes
    /// (tungstenite's own default is 128 KiB, sized for bulk transfer): what clients send is
    /// small (a `send` with a 100-byte body is about 150 bytes of JSON) and idle connections
    /// are the common case, so this is a large share of a connection's memory. A larger frame
    /// still arrives whole: the buffer grows to hold it (up to `max_frame_bytes`), it only
    /// takes more reads.
    pub read_buffer_bytes: usize,
    /// How much the writer buffers before writing to the socket mid-batch. Default 8 KiB.
    /// Every batch is flushed at its end anyway; this only bounds the buffer while a large
    /// batch is being written.
    pub write_buffer_bytes: usize,
    /// Hard cap on tungstenite's write buffer, in bytes. Default 32 MiB. This is a cap, not an
    /// allocation: the writer waits for the socket between frames, so the buffer holds at
    /// most `write_buffer_bytes` plus one frame. It must exceed the largest frame the engine
    /// can send — a full `history` page of maximum-size bodies is about 17 MiB with default
    /// `Limits` — or such a reply would fail the connection.
    pub max_write_buffer_bytes: usize,

    /// After how long a silence of the peer the server pings it (and again after each
    /// further interval of silence; anything the peer sends resets it). Default 25 s
    /// (Socket.IO's choice): short enough to keep NAT and proxy mappings alive, rare enough
    /// to cost nothing.
    pub ping_interval: Duration,
    /// How long after a ping a peer may stay silent before it is considered dead and closed
    /// (1001, `idle_timeout`). Default 20 s. Any frame from the peer counts as a sign of life.
    /// Half-open connections (a peer that vanished without a FIN) are reaped after at most
    /// `ping_interval + pong_timeout`.
    pub pong_timeout: Duration,
    /// Longest one batch of outgoing frames may take to reach the socket. Default 10 s (NATS's
    /// write deadline). A peer that stops reading is normally cut off sooner, when it falls
    /// more than `Limits::session_queue` entries behind a busy room; this catches the one in
    /// a quiet room.
    pub write_timeout: Duration,
    /// Most frames written per flush. Default 64.
    pub max_batch_frames: usize,
    /// Least time between two flushes to one connection; frames queued meanwhile go out
    /// together. Default 0 (write at once). Trades up to this much latency for fewer, larger
    /// writes under load; see [`chat_core::conn::PumpConfig::flush_interval`].
    pub flush_interval: Duration,
    /// How long to wait for the peer's close frame after sending ours (and for our close frame
    /// to be written), before dropping the TCP connection. Default 2 s.
    pub close_timeout: Duration,
    /// On graceful shutdown, how long each connection may spend writing what is still queued
    /// before its 1001 close. Default 5 s. The whole shutdown takes at most
    /// `write_timeout + shutdown_timeout + close_timeout` (a batch already being written, the
    /// drain, the close handshake); stragglers are then dropped.
    pub shutdown_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            path: None,
            auth: AuthConfig::default(),
            origins: OriginPolicy::default(),
            handshake_timeout: Duration::from_secs(10),
            max_request_bytes: 8 * 1024,
            max_headers: 64,
            max_connections: 10_000,
            max_connections_per_ip: 64,
            max_message_bytes: 64 * 1024,
            max_frame_bytes: 64 * 1024,
            read_buffer_bytes: 512,
            write_buffer_bytes: 8 * 1024,
            max_write_buffer_bytes: 32 * 1024 * 1024,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
            max_batch_frames: 64,
            flush_interval: Duration::ZERO,
            close_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl WsConfig {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_string()));
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return bad("connection caps must be at least 1");
        }
        if self.max_request_bytes < 256 || self.max_headers < 8 {
            return bad("max_request_bytes must be at least 256 and max_headers at least 8");
        }
        if self.max_message_bytes == 0 || self.max_frame_bytes == 0 {
            return bad("message and frame limits must be positive");
        }
        if self.read_buffer_bytes == 0 {
            return bad("read_buffer_bytes must be positive");
        }
        if self.max_write_buffer_bytes <= self.write_buffer_bytes {
            return bad("max_write_buffer_bytes must exceed write_buffer_bytes");
        }
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return bad("ping_interval and pong_timeout must be positive");
        }
        if self.handshake_timeout.is_zero() || self.write_timeout.is_zero() {
            return bad("handshake_timeout and write_timeout must be positive");
        }
        if self.auth.cookie.as_deref() == Some("") {
            return bad("the auth cookie name must not be empty");
        }
        Ok(())
    }

    /// The tungstenite configuration these limits imply. Embedders that upgrade connections
    /// themselves should build their `WebSocketStream` with it.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            .write_buffer_size(self.write_buffer_bytes)
            .max_write_buffer_size(self.max_write_buffer_bytes)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
            // RFC 6455 requires clients to mask; an unmasked frame closes the connection.
            .accept_unmasked_frames(false)
    }

    /// The session pump's deadlines.
    pub(crate) fn pump_config(&self) -> PumpConfig {
        PumpConfig {
            probe_interval: self.ping_interval,
            idle_timeout: self.ping_interval + self.pong_timeout,
            write_timeout: self.write_timeout,
            max_batch: self.max_batch_frames.max(1),
            drain_timeout: self.shutdown_timeout,
            flush_interval: self.flush_interval,
        }
    }
}

/// Which credentials the handshake accepts, checked in this order: the `Authorization`
/// header, the query parameter, the cookie, then (only if enabled) the development identity.
/// The first credential present decides: an invalid header token is a 401 even if a valid
/// cookie is also sent. With none present, the handshake is refused with 401 — unless
/// [`AuthConfig::hello`] lets the client authenticate in its first frame instead.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Accept `Authorization: Bearer <token>`. Default true. The best choice for native
    /// clients; browsers cannot set headers on a WebSocket.
    pub bearer_header: bool,
    /// Accept `?token=<token>` (the parameter name is in `query_param`). Default true: the one
    /// way a browser can present a token. Query strings end up in proxy logs — prefer
    /// short-lived tokens or the cookie where that matters.
    pub query_token: bool,
    /// The query parameter carrying the token. Default `"token"`.
    pub query_param: String,
    /// Accept a session cookie of this name. Default `Some("chat_token")`. Cookies are sent by
    /// the browser on cross-site requests too — this is what makes the [`OriginPolicy`] check
    /// essential.
    pub cookie: Option<String>,
    /// Upgrade a connection that presents no credential at all, and require its first frame to
    /// be a `hello` carrying `auth` (a token, a login or a guest name — the "not authenticated
    /// by the transport" opening of `docs/PROTOCOL.md` §2). Default false: no credential is a
    /// 401. Turn it on for browser clients that should not put a token in the URL; a failed
    /// or missing `hello` gets an `error` frame and close 4401 within `handshake_timeout`.
    /// Note that password logins then cost an argon2 hash per attempt: keep
    /// `max_connections_per_ip` modest.
    pub hello: bool,
    /// **Development only — never enable on a reachable server.** Take the identity from this
    /// query parameter (`?user=alice`) without any credential, creating the user on first use
    /// (chat-core's `TrustedAuthenticator`). Default `None` (off). The server logs a warning
    /// at start-up while it is on.
    pub insecure_dev_user_param: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            bearer_header: true,
            query_token: true,
            query_param: "token".to_string(),
            cookie: Some("chat_token".to_string()),
            hello: false,
            insecure_dev_user_param: None,
        }
    }
}

/// Which browser origins may open a connection: protection against cross-site WebSocket
/// hijacking (a page on another site opening a socket that the browser authenticates with the
/// user's cookie). A refused origin gets HTTP 403 before any credential is looked at.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OriginPolicy {
    /// Origins allowed in addition to the same-host rule, exactly as browsers send them:
    /// `scheme://host[:port]`, e.g. `"https://chat.example.com"` (compared case-insensitively,
    /// no trailing slash). `"*"` allows every origin — only sensible when no cookie
    /// authentication is enabled. Default: empty.
    pub allowed: Vec<String>,
    /// Allow an `Origin` whose `host[:port]` equals the request's `Host` header, i.e. a page
    /// served by this same server. Default true (the rule gorilla/websocket applies by
    /// default).
    pub same_host: bool,
    /// Allow requests with no `Origin` header. Browsers always send one on WebSocket
    /// handshakes, so a missing header means a non-browser client (CLI, mobile app, server),
    /// which CSWSH does not concern. Default true.
    pub allow_missing: bool,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        OriginPolicy {
            allowed: Vec::new(),
            same_host: true,
            allow_missing: true,
        }
    }
}

impl OriginPolicy {
    /// Whether a request with this `Origin` (or none) and this `Host` may connect.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin.map(str::trim) else {
            return self.allow_missing;
        };
        if self
            .allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        if self.same_host {
            if let (Some(host), Some((_, rest))) = (host, origin.split_once("://")) {
                return !rest.is_empty() && rest.eq_ignore_ascii_case(host.trim());
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_policy() {
        let p = OriginPolicy::default();
        assert!(p.allows(None, Some("chat.example.com")));
        assert!(p.allows(Some("https://chat.example.com"), Some("chat.example.com")));
        assert!(p.allows(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(!p.allows(Some("https://evil.example"), Some("chat.example.com")));
        assert!(!p.allows(Some("null"), Some("chat.example.com")));
        assert!(!p.allows(Some("https://chat.example.com"), None));
        let p = OriginPolicy {
            allowed: vec!["https://app.example.com/".into()],
            same_host: false,
            allow_missing: false,
        };
        assert!(p.allows(Some("HTTPS://app.example.com"), Some("x")));
        assert!(!p.allows(Some("https://x"), Some("x")));
        assert!(!p.allows(None, Some("x")));
        let any = OriginPolicy {
            allowed: vec!["*".into()],
            ..OriginPolicy::default()
        };
        assert!(any.allows(Some("https://anything"), None));
    }

    #[test]
    fn defaults_are_valid() {
        WsConfig::default().validate().unwrap();
        let c = WsConfig::default().websocket_config();
        assert_eq!(c.max_message_size, Some(64 * 1024));
        assert_eq!(c.read_buffer_size, 512);
    }
}
