//! Configuration: every flag has an environment variable, and `--help` explains each one.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the server is configured. Flags win over environment variables, which win over the
/// defaults. The defaults are safe: everything listens on loopback only, guests and
/// auto-registration are off, and the admin API is disabled until a token is set.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-server",
    version,
    about = "A complete chat service: web UI, JSON API and WebSocket on one HTTP port.",
    long_about = "A complete chat service built on chat-core: a web UI, a JSON API under /api/ and \
                  WebSocket endpoints (/ws and /chatsocket/{id}) on one HTTP port, with the \
                  data in an embedded SQLite database (or in memory).\n\n\
                  Every option can also be set through the environment variable shown with it. \
                  By default everything listens on 127.0.0.1 only: to accept connections from \
                  other machines, bind 0.0.0.0 (ideally behind a TLS-terminating proxy, with \
                  --secure-cookies and --allowed-origin set to the public address).\n\n\
                  Stop with Ctrl-C or SIGTERM: connections are closed gracefully."
)]
#[non_exhaustive]
pub struct Config {
    /// Address of the HTTP server (web UI, JSON API, WebSocket). Use 0.0.0.0:8080 to accept
    /// connections from other machines; port 0 picks a free port.
    #[arg(long, env = "CHAT_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Address of the TCP transport: length-prefixed binary frames, and a line mode for
    /// terminals (`nc host port`), where users sign in with a password or as a guest. Use
    /// --no-tcp to turn it off.
    #[arg(long, env = "CHAT_TCP_ADDR", default_value = "127.0.0.1:9090")]
    pub tcp_addr: SocketAddr,

    /// Do not start the TCP transport.
    #[arg(long, env = "CHAT_NO_TCP")]
    pub no_tcp: bool,

    /// SQLite database file; created and migrated automatically on first start.
    #[arg(long, env = "CHAT_DB", default_value = "./chat.db")]
    pub db: PathBuf,

    /// What an acknowledged message survives. `process`: a crash or kill of the server (the
    /// database is written before acknowledging, without waiting for the disk; fast). `power`:
    /// also a power cut or OS crash (each commit is flushed to disk first; slower per
    /// message). Either way the database file is never corrupted.
    #[arg(long, env = "CHAT_DURABILITY", value_enum, default_value_t = Durability::Process)]
    pub durability: Durability,

    /// Keep everything in memory instead of a database file: all data is lost when the server
    /// stops. For trying things out and for tests.
    #[arg(long, env = "CHAT_MEMORY")]
    pub memory: bool,

    /// A browser origin, besides this server's own, allowed to open WebSockets and POST with
    /// the session cookie, written as browsers send it: `scheme://host[:port]`, e.g.
    /// `https://chat.example.com` (repeat the flag, or separate with commas in the environment
    /// variable). Needed when the server is reached under another name than its Host header,
    /// e.g. behind some proxies.
    #[arg(
        long = "allowed-origin",
        value_name = "ORIGIN",
        env = "CHAT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Let people sign in as guests: a name, no password. Guest accounts cannot take the name
    /// of a password account.
    #[arg(long, env = "CHAT_GUESTS")]
    pub guests: bool,

    /// Create the account when someone signs in with a username that does not exist yet
    /// (otherwise people register explicitly).
    #[arg(long, env = "CHAT_AUTO_REGISTER")]
    pub auto_register: bool,

    /// Token for the admin API (`POST /api/admin/publish`, sent as `Authorization: Bearer
    /// <token>`). Without it the admin API is disabled. Prefer the environment variable: flags
    /// are visible to other users of the machine in the process list.
    #[arg(long, env = "CHAT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<chat_core::protocol::Secret>,

    /// Mark the session cookie `Secure` (sent over HTTPS only). Turn on when the server is
    /// reached through HTTPS, e.g. behind a TLS-terminating proxy.
    #[arg(long, env = "CHAT_SECURE_COOKIES")]
    pub secure_cookies: bool,

    /// Largest chat message, in bytes of UTF-8.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024)]
    pub max_message_bytes: usize,

    /// Largest HTTP request body, in bytes; larger requests get 413.
    #[arg(long, env = "CHAT_MAX_REQUEST_BYTES", default_value_t = 64 * 1024)]
    pub max_request_bytes: usize,

    /// Requests per second one WebSocket session may sustain; also the HTTP writes per
    /// second one user may sustain (posting, creating rooms and invites, joining, …; more
    /// get 429).
    #[arg(long, env = "CHAT_REQUESTS_PER_SECOND", default_value_t = 20.0)]
    pub requests_per_second: f64,

    /// Requests one WebSocket session may send in a burst above the sustained rate; also
    /// the burst of one user's HTTP writes.
    #[arg(long, env = "CHAT_REQUEST_BURST", default_value_t = 40.0)]
    pub request_burst: f64,

    /// Most connections in all, for each transport (WebSocket and TCP are counted apart).
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most connections from one client address (an IPv4 address or an IPv6 /64), for each
    /// transport. Behind a reverse proxy every client has the proxy's address: raise it.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub max_connections_per_ip: usize,

    /// Most plain HTTP connections from one client address (an IPv4 address or an IPv6
    /// /64), idle keep-alive ones included; in all, at most --max-connections, counted apart
    /// from WebSocket and TCP. Higher than the socket cap because a browser keeps several
    /// HTTP connections open besides its WebSocket. Behind a reverse proxy every client has
    /// the proxy's address: raise it.
    #[arg(long, env = "CHAT_MAX_HTTP_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_http_connections_per_ip: usize,

    /// Seconds an HTTP client has to send a request's head, from connecting or from the end
    /// of the previous response; so also how long an idle keep-alive connection stays open.
    /// Bounds a client that opens connections and sends nothing (or a byte at a time).
    #[arg(long, env = "CHAT_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 30.0)]
    pub http_header_timeout_secs: f64,

    /// Seconds an HTTP request may take from its head to its response, reading its body
    /// included; longer gets 408 `request_timeout`.
    #[arg(long, env = "CHAT_HTTP_REQUEST_TIMEOUT_SECS", default_value_t = 30.0)]
    pub http_request_timeout_secs: f64,

    /// Least milliseconds between two writes to one WebSocket or binary TCP connection; what
    /// is queued meanwhile goes out together. 0 writes at once. Under heavy fan-out a few
    /// milliseconds mean fewer, larger writes (less CPU on both ends) for at most that much
    /// added latency; a quiet connection's next frame still goes out at once.
    #[arg(long, env = "CHAT_FLUSH_INTERVAL_MS", default_value_t = 0)]
    pub flush_interval_ms: u64,

    /// Sign-in, registration and guest attempts per minute from one client address (an IPv4
    /// address or an IPv6 /64), over HTTP and TCP together (a TCP `/login`, `/nick` or
    /// `hello` with a login or guest name counts too); more get 429 (HTTP) or `rate_limited`
    /// and the close (TCP). Each attempt costs a deliberately slow password hash.
    #[arg(long, env = "CHAT_AUTH_ATTEMPTS_PER_MINUTE", default_value_t = 30)]
    pub auth_attempts_per_minute: u32,

    /// What to log, as a tracing filter: a level (error, warn, info, debug, trace) or
    /// per-module directives such as "info,chat_server=debug".
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

/// What an acknowledged message survives; see `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum Durability {
    /// A crash or kill of the server process (SQLite `synchronous = NORMAL` in WAL mode).
    Process,
    /// Also a power cut or an OS crash (SQLite `synchronous = FULL`).
    Power,
}

impl Config {
    /// The configuration the flags and environment give (exits with a message on bad input).
    pub fn from_env_and_args() -> Config {
        Config::parse()
    }

    /// The configuration these arguments (the first being the program name) and the
    /// environment give; for tests and embedders.
    pub fn try_from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::try_parse_from(args)
    }

    /// How long a sign-in lasts: the session cookie's `Max-Age` and the token's lifetime.
    pub(crate) const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Checks what clap cannot express.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_message_bytes == 0 {
            return Err("--max-message-bytes must be positive".into());
        }
        // A message travels in a JSON body, where escaping can double it.
        if self.max_request_bytes < 2 * self.max_message_bytes + 1024 {
            return Err(format!(
                "--max-request-bytes must be at least twice --max-message-bytes plus 1024 \
                 (here {})",
                2 * self.max_message_bytes + 1024
            ));
        }
        if !(self.requests_per_second > 0.0 && self.request_burst >= 1.0) {
            return Err(
                "--requests-per-second must be positive and --request-burst at least 1".into(),
            );
        }
        for (flag, secs) in [
            ("--http-header-timeout-secs", self.http_header_timeout_secs),
            (
                "--http-request-timeout-secs",
                self.http_request_timeout_secs,
            ),
        ] {
            // At most a day: a longer "timeout" is a mistake, and Duration must not overflow.
            if !(secs > 0.0 && secs <= 86_400.0) {
                return Err(format!("{flag} must be above 0 and at most 86400"));
            }
        }
        if self.auth_attempts_per_minute == 0 {
            return Err("--auth-attempts-per-minute must be at least 1".into());
        }
        if let Some(t) = &self.admin_token {
            if t.expose().len() < 16 {
                return Err("--admin-token must be at least 16 characters".into());
            }
        }
        for o in &self.allowed_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(format!(
                    "--allowed-origin {o:?} must look like https://host[:port]"
                ));
            }
            if o == "*" {
                return Err(
                    "--allowed-origin * would let any site use a signed-in user's cookie".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_loopback_sqlite_and_closed() {
        let c = Config::try_from_args(["chat-server"]).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.tcp_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(c.db, PathBuf::from("./chat.db"));
        assert!(!c.memory && !c.guests && !c.auto_register && c.admin_token.is_none());
        assert_eq!(c.durability, Durability::Process);
        c.validate().unwrap();
    }

    #[test]
    fn the_admin_token_stays_out_of_debug_output() {
        let c = Config::try_from_args(["chat-server", "--admin-token", "0123456789abcdef-sekrit"])
            .unwrap();
        assert_eq!(
            c.admin_token.as_ref().map(|t| t.expose()),
            Some("0123456789abcdef-sekrit")
        );
        assert!(!format!("{c:?}").contains("sekrit"));
    }

    #[test]
    fn contradictions_are_refused() {
        let parse = |args: &[&str]| {
            let mut all = vec!["chat-server"];
            all.extend_from_slice(args);
            Config::try_from_args(all)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate())
        };
        assert!(parse(&["--admin-token", "short"]).is_err());
        assert!(parse(&["--allowed-origin", "*"]).is_err());
        assert!(parse(&["--allowed-origin", "evil.example"]).is_err());
        assert!(parse(&["--max-message-bytes", "100000"]).is_err());
        assert!(
            parse(&[
                "--max-message-bytes",
                "100000",
                "--max-request-bytes",
                "300000"
            ])
            .is_ok()
        );
        assert!(parse(&["--allowed-origin", "https://a.example,https://b.example"]).is_ok());
    }
}
