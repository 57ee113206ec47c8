//! The command line: every knob of a run, each explained in `--help`.

use crate::LoadError;
use clap::{Parser, ValueEnum};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Which wire the load connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wire {
    /// WebSocket with JSON text frames (`chat.v1.json`), what browsers use.
    Ws,
    /// WebSocket with postcard binary frames (`chat.v1.postcard`).
    WsPostcard,
    /// TCP with length-delimited postcard frames.
    Tcp,
}

/// How the tool gets accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accounts {
    /// `POST /api/register` with a password (each costs the server an argon2 hash).
    Register,
    /// `POST /api/guest` (no hash; needs a server started with `--guests`).
    Guest,
}

/// A load run against a running chat server.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-load",
    version,
    about = "Load generator for a running chat server (WebSocket or TCP).",
    long_about = "Drives a running chat-server over WebSocket (JSON or postcard) or TCP with \
        chat-client, the project's own client, and reports what an operator sizing a \
        deployment needs: deliveries expected and received (loss), deliveries per second, \
        send-to-receive latency percentiles (HDR histogram), connect time, and — given \
        --server-pid — the server's resident memory and CPU time.\n\n\
        Setup: it registers --users accounts through the HTTP API (bounded concurrency), \
        creates --rooms public rooms and joins them, then opens --connections receiving \
        connections (connection i uses account i mod --users and subscribes to room \
        i mod --rooms) plus --senders sending connections (sender j sends to room j mod \
        --rooms and is not subscribed). One account holds many sessions, so thousands of \
        connections need only a few dozen password hashes.\n\n\
        Traffic: with --rate R the senders together send R messages per second on a fixed \
        schedule (open loop), their sends interleaved evenly (sender j starts j/R seconds \
        after the first); with --rate 0 each sender sends as fast as the server \
        acknowledges, with at most --in-flight unacknowledged sends. Each body carries its \
        send time, so the receiving side measures latency. After --duration the senders \
        stop, and the tool waits at most --drain for the last deliveries. With --idle it \
        sends nothing and holds the connections for --duration (memory per connection).\n\n\
        Server settings that matter (chat-server flags): --max-connections-per-ip and \
        --max-connections (all load comes from one address), --auth-attempts-per-minute \
        (registrations), --requests-per-second and --request-burst (one sender session \
        sends far more than a person). Setup spreads room creation over the accounts \
        (room r is created by account r mod --users) and waits out a 429 that comes \
        with a Retry-After of at most 60 s (up to 5 minutes per request, within \
        --setup-timeout), so default limits make a large setup slower rather than \
        failing it (at 30 sign-ins a minute, 100 registrations need 30 at once, then \
        one every 2 s: about 140 s; raise --setup-timeout, or the server's limit). The TCP transport's per-address cap \
        (64) has no chat-server flag.\n\n\
        Output: a progress line on stderr once a second; at the end a table on stdout \
        followed by one JSON line (the last line). Every phase is bounded in time; the tool \
        stops by itself. Exit status 0 when the run completed (even with loss: read the \
        report), 1 when it could not be carried out."
)]
#[non_exhaustive]
pub struct Args {
    /// Base URL of the server's HTTP API (accounts, rooms).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub http: String,

    /// WebSocket URL. Default: the HTTP address with path /ws.
    #[arg(long)]
    pub ws_url: Option<String>,

    /// TCP transport address (host:port).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub tcp_addr: String,

    /// Wire of the load connections.
    #[arg(long, value_enum, default_value_t = Wire::Ws)]
    pub wire: Wire,

    /// Receiving connections (each subscribes to one room).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub connections: usize,

    /// Rooms (public, created for the run); receivers and senders spread round-robin.
    #[arg(long, short = 'k', default_value_t = 1)]
    pub rooms: usize,

    /// Sending connections, in addition to --connections (not subscribed).
    #[arg(long, short = 's', default_value_t = 1)]
    pub senders: usize,

    /// Total messages per second over all senders, on a fixed schedule; 0 = as fast as the
    /// server acknowledges (bounded by --in-flight per sender).
    #[arg(long, short = 'r', default_value_t = 100.0)]
    pub rate: f64,

    /// Most unacknowledged sends per sender.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,

    /// Message body size in bytes (at least the ~50-byte header that carries the send time).
    #[arg(long, default_value_t = 100)]
    pub size: usize,

    /// Seconds of sending (or, with --idle, of holding the connections).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,

    /// Send nothing: hold the connections open for --duration, to measure memory per
    /// connection. --senders is ignored.
    #[arg(long)]
    pub idle: bool,

    /// Accounts to create; connections share them round-robin. Default: min(connections +
    /// senders, 100).
    #[arg(long)]
    pub users: Option<usize>,

    /// How accounts are made.
    #[arg(long, value_enum, default_value_t = Accounts::Register)]
    pub accounts: Accounts,

    /// Prefix of the account and room names. Default: `ld` and a random suffix, so runs
    /// against the same database never collide.
    #[arg(long)]
    pub prefix: Option<String>,

    /// HTTP requests (registrations, joins) at once. The server hashes at most 4 passwords
    /// at a time, so more than that only queues there.
    #[arg(long, default_value_t = 4)]
    pub http_concurrency: usize,

    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Upper bound in seconds on the setup (accounts, rooms, connections).
    #[arg(long, default_value_t = 180.0)]
    pub setup_timeout: f64,

    /// Longest wait in seconds, after the senders stop, for outstanding deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,

    /// Longest wait for one request's reply (a send's acknowledgement), seconds.
    #[arg(long, default_value_t = 10.0)]
    pub request_timeout: f64,

    /// The server's process id: report its resident memory (VmRSS) before, when connected
    /// and after, and its CPU time during the traffic (Linux /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Allow targets that are not loopback addresses. Without it the tool refuses them:
    /// a load test aimed at the wrong host is an outage.
    #[arg(long)]
    pub allow_remote: bool,

    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl Args {
    /// Checks the numbers, and that every target is loopback (unless `--allow-remote`).
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Config(m));
        if self.connections == 0 && !self.idle {
            return bad("--connections must be at least 1".into());
        }
        if self.rooms == 0 {
            return bad("--rooms must be at least 1".into());
        }
        if !self.idle && self.senders == 0 {
            return bad("--senders must be at least 1 (or use --idle)".into());
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return bad("--rate must be 0 (as fast as possible) or positive".into());
        }
        if self.in_flight == 0 || self.http_concurrency == 0 || self.connect_concurrency == 0 {
            return bad("--in-flight and the concurrencies must be at least 1".into());
        }
        for (name, v) in [
            ("--duration", self.duration),
            ("--setup-timeout", self.setup_timeout),
            ("--drain", self.drain),
            ("--request-timeout", self.request_timeout),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return bad(format!("{name} must be between 0 and 86400 seconds"));
            }
        }
        if self.users == Some(0) {
            return bad("--users must be at least 1".into());
        }
        if let Some(p) = &self.prefix {
            if p.is_empty() || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return bad("--prefix must be 1 to 16 ASCII letters or digits".into());
            }
        }
        if !self.allow_remote {
            check_loopback(&host_port_of_url(&self.http)?)?;
            match self.wire {
                Wire::Tcp => check_loopback(&self.tcp_addr)?,
                Wire::Ws | Wire::WsPostcard => check_loopback(&host_port_of_url(&self.ws())?)?,
            }
        }
        Ok(())
    }

    /// The WebSocket URL: `--ws-url`, or `--http` with `ws://` and path `/ws`.
    pub fn ws(&self) -> String {
        if let Some(u) = &self.ws_url {
            return u.clone();
        }
        let rest = self
            .http
            .trim_end_matches('/')
            .trim_start_matches("http://");
        format!("ws://{rest}/ws")
    }

    /// Accounts to create.
    pub fn user_count(&self) -> usize {
        let conns = self.connections + if self.idle { 0 } else { self.senders };
        self.users.unwrap_or(conns.min(100)).clamp(1, conns.max(1))
    }

    /// `--duration` as a `Duration`.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }
}

/// `scheme://host[:port]/...` → `host:port` (port defaulting to 80).
pub fn host_port_of_url(url: &str) -> Result<String, LoadError> {
    let rest = url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "ws"))
        .ok_or_else(|| {
            LoadError::Config(format!(
                "{url}: only http:// and ws:// URLs are supported (no TLS in this tool)"
            ))
        })?
        .1;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(LoadError::Config(format!("{url}: no host")));
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

/// Resolves `host:port` and refuses it unless every address it resolves to is loopback.
pub fn check_loopback(host_port: &str) -> Result<(), LoadError> {
    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|e| LoadError::Config(format!("cannot resolve {host_port}: {e}")))?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|a| is_loopback(a.ip())) {
        return Err(LoadError::Remote(host_port.to_string()));
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Args {
        let mut v = vec!["chat-load"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn loopback_by_default_and_remote_only_when_asked() {
        assert!(parse(&[]).validate().is_ok());
        assert!(
            parse(&["--http", "http://localhost:8080"])
                .validate()
                .is_ok()
        );
        assert!(parse(&["--http", "http://[::1]:8080/"]).validate().is_ok());
        let remote = parse(&["--http", "http://10.1.2.3:8080"]);
        assert!(matches!(remote.validate(), Err(LoadError::Remote(_))));
        let remote_tcp = parse(&["--wire", "tcp", "--tcp-addr", "192.0.2.7:9090"]);
        assert!(matches!(remote_tcp.validate(), Err(LoadError::Remote(_))));
        let allowed = parse(&["--http", "http://10.1.2.3:8080", "--allow-remote"]);
        assert!(allowed.validate().is_ok());
        assert!(parse(&["--http", "https://127.0.0.1"]).validate().is_err());
    }

    #[test]
    fn urls_and_defaults() {
        let a = parse(&["--http", "http://127.0.0.1:18080/"]);
        assert_eq!(a.ws(), "ws://127.0.0.1:18080/ws");
        assert_eq!(host_port_of_url("ws://h/ws?x=1").unwrap(), "h:80");
        assert_eq!(host_port_of_url("http://[::1]:9/").unwrap(), "[::1]:9");
        assert_eq!(parse(&["-n", "1000", "-s", "10"]).user_count(), 100);
        assert_eq!(parse(&["-n", "3", "-s", "1"]).user_count(), 4);
        assert_eq!(parse(&["-n", "10", "--idle"]).user_count(), 10);
        assert_eq!(parse(&["-n", "10", "--users", "50"]).user_count(), 11);
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(parse(&["--rooms", "0"]).validate().is_err());
        assert!(parse(&["--rate=-1"]).validate().is_err());
        assert!(parse(&["--duration", "0"]).validate().is_err());
        assert!(parse(&["--senders", "0"]).validate().is_err());
        assert!(parse(&["--senders", "0", "--idle"]).validate().is_ok());
        assert!(parse(&["--prefix", "a b"]).validate().is_err());
    }
}
