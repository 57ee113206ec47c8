//! Test harness: the real TCP and WebSocket servers on 127.0.0.1:0, sharing one engine over
//! the in-memory store; a TCP proxy that can cut connections or swallow what the server
//! sends; and helpers to wait for events. Every wait has a timeout, a safety net for a broken
//! test, never a way to let something happen.
#![allow(dead_code, unreachable_pub)]

use chat_client::{Auth, Client, ClientConfig, Event, Events, ReconnectPolicy, Transport};
use chat_core::protocol::Entry;
use chat_core::{Engine, Limits, Timestamp, UserId};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use transport_tcp::{TcpConfig, TcpServer};
use transport_ws::{WsConfig, WsServer};

/// The safety net for any single wait. Generous: the machine is shared.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Which wire a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Tcp,
    WsJson,
    WsPostcard,
}

pub const ALL_WIRES: [Wire; 3] = [Wire::Tcp, Wire::WsJson, Wire::WsPostcard];

pub struct Servers {
    pub engine: Engine,
    pub tcp: TcpServer,
    pub ws: WsServer,
    pub tcp_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Servers {
    /// Both servers, guests allowed, WebSocket in "hello" mode (a connection without
    /// credentials may log in with its first frame) so that logins work over both wires.
    pub async fn start() -> Servers {
        Servers::start_with(Limits::default()).await
    }

    pub async fn start_with(mut limits: Limits) -> Servers {
        limits.allow_guests = true;
        let engine = Engine::builder(Arc::new(chat_store::MemoryStore::new()))
            .limits(limits)
            .build();
        let tcp = TcpServer::new(engine.clone(), TcpConfig::default()).unwrap();
        let mut ws_config = WsConfig::default();
        ws_config.auth.hello = true;
        let ws = WsServer::new(engine.clone(), ws_config).unwrap();

        let tcp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = tcp_listener.local_addr().unwrap();
        let ws_addr = ws_listener.local_addr().unwrap();
        let t = tcp.clone();
        let w = ws.clone();
        let tasks = vec![
            tokio::spawn(async move {
                let _ = t.serve(tcp_listener, std::future::pending::<()>()).await;
            }),
            tokio::spawn(async move {
                let _ = w.serve(ws_listener, std::future::pending::<()>()).await;
            }),
        ];
        Servers {
            engine,
            tcp,
            ws,
            tcp_addr,
            ws_addr,
            tasks,
        }
    }

    pub fn addr(&self, wire: Wire) -> SocketAddr {
        match wire {
            Wire::Tcp => self.tcp_addr,
            Wire::WsJson | Wire::WsPostcard => self.ws_addr,
        }
    }

    /// A user without a password (no hashing, fast) and a token for it.
    pub async fn user(&self, name: &str) -> (UserId, String) {
        let u = self
            .engine
            .store()
            .create_user(name, None, false, Timestamp::now())
            .await
            .unwrap();
        let token = self.engine.accounts().issue_token(u.id).await.unwrap();
        (u.id, token.as_str().to_string())
    }
}

/// A client configuration for `wire` to `addr` (the server's, or a proxy's), with quick
/// reconnection so that tests do not wait out production backoffs.
pub fn config(wire: Wire, addr: SocketAddr, auth: Auth) -> ClientConfig {
    let transport = match wire {
        Wire::Tcp => Transport::Tcp(addr.to_string()),
        Wire::WsJson | Wire::WsPostcard => Transport::Ws(format!("ws://{addr}/ws")),
    };
    let mut c = ClientConfig::new(transport, auth);
    if wire == Wire::WsPostcard {
        c.codec = chat_core::Codec::Postcard;
    }
    let mut r = ReconnectPolicy::default();
    r.initial_delay = Duration::from_millis(20);
    r.max_delay = Duration::from_millis(200);
    r.max_attempts = 50;
    c.reconnect = r;
    c
}

pub async fn connect(wire: Wire, addr: SocketAddr, auth: Auth) -> (Client, Events) {
    connect_with(config(wire, addr, auth)).await
}

pub async fn connect_with(config: ClientConfig) -> (Client, Events) {
    tokio::time::timeout(PATIENCE, Client::connect(config))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect failed: {e}"))
}

/// The next event matching `pred`; others are skipped (and returned, for inspection).
pub async fn wait_for(events: &mut Events, mut pred: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(Event::Closed(r)) => panic!("client closed while waiting: {r}"),
                Some(_) => {}
                None => panic!("event stream ended while waiting"),
            }
        }
    })
    .await
    .expect("the awaited event in time")
}

/// The next message, skipping other events.
pub async fn next_message(events: &mut Events) -> Entry {
    match wait_for(events, |e| matches!(e, Event::Message(_))).await {
        Event::Message(m) => m,
        _ => unreachable!(),
    }
}

/// Every event until the stream ends (bounded by [`PATIENCE`]).
pub async fn drain_to_end(events: &mut Events) -> Vec<Event> {
    tokio::time::timeout(PATIENCE, async {
        let mut all = Vec::new();
        while let Some(e) = events.recv().await {
            all.push(e);
        }
        all
    })
    .await
    .expect("the event stream ends in time")
}

/// A TCP proxy in front of a server. `cut()` kills every proxied connection (both sockets
/// are dropped, as if the network had failed); `swallow(true)` silently discards what the
/// server sends, so the client's requests are processed but their replies never arrive.
pub struct Proxy {
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    swallow: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let swallow = Arc::new(AtomicBool::new(false));
        let (l, s) = (links.clone(), swallow.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let s = s.clone();
                let link = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = [0u8; 8192];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async {
                        let mut buf = [0u8; 8192];
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if s.load(Ordering::SeqCst) {
                                continue;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    // Either side ending ends the link: both sockets are dropped.
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                    }
                });
                l.lock().unwrap().push(link);
            }
        });
        Proxy {
            addr,
            links,
            swallow,
            accept,
        }
    }

    /// Kills every connection open through the proxy. New connections are still accepted.
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn swallow(&self, on: bool) {
        self.swallow.store(on, Ordering::SeqCst);
    }

    /// Connections currently open through the proxy (finished ones are pruned).
    pub fn open_links(&self) -> usize {
        let mut links = self.links.lock().unwrap();
        links.retain(|l| !l.is_finished());
        links.len()
    }
}
