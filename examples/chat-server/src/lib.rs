//! # chat-server
//!
//! Run with: `cargo run --release -p chat-server`, then open <http://127.0.0.1:8080/>.
//!
//! The complete chat service built on `chat-core`: one HTTP port carries the web UI
//! (server-rendered pages and one small script), a JSON API under `/api/` (documented with
//! curl examples in `docs/API.md`) and the WebSocket endpoints, where browsers and other
//! clients speak the protocol of `docs/PROTOCOL.md`. Data lives in an embedded SQLite file
//! (`./chat.db` by default) or, with `--memory`, in memory. `--help` lists every option.
//!
//! ```text
//!  browser ──HTTP──▶ axum router ──▶ pages (askama) / JSON API ──▶ Engine ──▶ Store
//!          ──WS────▶ /ws, /chatsocket/{id} ──▶ transport-ws ──▶ Session ──┘
//! ```
//!
//! ## Why these crates
//! - **axum** for HTTP: it is maintained by the Tokio team on hyper and tower, so it shares
//!   the runtime, the `http` types and the tungstenite version with `transport-ws` (whose
//!   `axum` feature runs engine sessions on axum's WebSocket upgrade). Routing, extractors and
//!   graceful shutdown come with it; nothing here depends on a framework macro.
//! - **askama** for pages: templates are compiled into the binary and type-checked at build
//!   time, and HTML escaping is on by default — user content cannot become markup.
//! - **clap** (with `env`) for configuration: every flag is also an environment variable, and
//!   `--help` is generated from the same doc comments as this code.
//! - **tracing** with `tracing-subscriber`'s `EnvFilter`: the engine and transports already log
//!   through `tracing`; `RUST_LOG` / `--log` picks what to see.
//!
//! The assets (CSS, the room script, the icon) are embedded with `include_str!`: the binary
//! serves everything itself, works offline and needs no CDN.
//!
//! ## Layout
//! - `config.rs` — every option, with its flag, variable and default.
//! - `security.rs` — the session cookie, bearer tokens, the CSRF guard, sign-in rate limits.
//! - `api.rs` — the JSON API; `pages.rs` — the HTML pages; `legacy.rs` — the routes of the
//!   web chat this replaces, kept working.
//! - `sockets.rs` — the WebSocket endpoints; `assets.rs` — embedded static files.
//! - `error.rs` — the one JSON error shape and the engine-code → HTTP-status mapping.
//! - `tcp.rs` — the TCP transport (binary and line mode) on `--tcp-addr`.
//!
//! ## Embedding and tests
//! [`Server::start`] binds and serves in the background and returns the bound address (bind
//! port 0 in tests); [`Server::shutdown`] and [`Server::wait`] stop it gracefully. The binary
//! is `Server::start`, then `shutdown` on Ctrl-C or SIGTERM.

#![warn(missing_docs)]

mod api;
mod assets;
mod config;
mod error;
mod http;
mod legacy;
mod pages;
mod security;
mod sockets;
mod tcp;

pub use config::{Config, Durability};
pub use error::Error;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chat_core::conn::ShutdownSignal;
use chat_core::{Engine, Limits, Store};
use security::{AuthLimiter, WriteLimiter};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use transport_ws::{OriginPolicy, WsConfig, WsServer};

/// Most argon2 hashes (sign-ins, registrations) computed at once. Each takes 19 MiB and tens
/// of milliseconds of a core by design; without a cap, a burst of sign-ins would queue
/// hundreds of them on the blocking pool at once.
const MAX_CONCURRENT_HASHES: usize = 4;

/// Everything a request handler needs. Cheap to clone: every field is an `Arc` inside.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) ws: WsServer,
    pub(crate) settings: Arc<Settings>,
    /// Upgraded WebSocket connections; shutdown waits for them to say goodbye.
    pub(crate) sockets: TaskTracker,
    /// Stops the sockets this crate pumps itself (`/chatsocket/{id}`).
    pub(crate) shutdown: ShutdownSignal,
    pub(crate) auth_limiter: Arc<AuthLimiter>,
    /// HTTP writes per user, at the engine's per-session request rate.
    pub(crate) write_limiter: Arc<WriteLimiter>,
    pub(crate) hashing: Arc<Semaphore>,
    pub(crate) started: Instant,
}

/// The parts of the configuration handlers consult.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) origins: OriginPolicy,
    pub(crate) secure_cookies: bool,
    pub(crate) auto_register: bool,
    pub(crate) guests: bool,
    /// SHA-256 of the admin token: compared hash to hash, so the comparison's timing says
    /// nothing about the token.
    pub(crate) admin_token_hash: Option<[u8; 32]>,
    pub(crate) store_kind: &'static str,
    /// Largest HTTP request body; larger ones get 413.
    pub(crate) max_request_bytes: usize,
    /// How long an HTTP request may take, its body included; longer gets 408.
    pub(crate) request_timeout: Duration,
}

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    engine: Engine,
    stop: ShutdownSignal,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("http_addr", &self.http_addr)
            .field("tcp_addr", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store, binds the listeners and starts serving in the background. Returns
    /// once the server accepts connections.
    pub async fn start(config: Config) -> Result<Server, Error> {
        config.validate().map_err(Error::Config)?;
        let (store, store_kind) = open_store(&config).await?;
        Server::start_with_store(config, store, store_kind).await
    }

    async fn start_with_store(
        config: Config,
        store: Arc<dyn Store>,
        store_kind: &'static str,
    ) -> Result<Server, Error> {
        let limits = Limits {
            max_body_bytes: config.max_message_bytes,
            requests_per_second: config.requests_per_second,
            request_burst: config.request_burst,
            token_ttl: Config::SESSION_TTL,
            invite_ttl: Duration::from_secs(7 * 24 * 3600),
            allow_guests: config.guests,
            ..Limits::default()
        };
        let engine = Engine::builder(store).limits(limits).build();

        let mut origins = OriginPolicy::default();
        origins.allowed = config.allowed_origins.clone();
        let mut ws_config = WsConfig::default();
        ws_config.origins = origins.clone();
        ws_config.max_connections = config.max_connections;
        ws_config.max_connections_per_ip = config.max_connections_per_ip;
        ws_config.flush_interval = Duration::from_millis(config.flush_interval_ms);
        // Room for the largest message body as JSON (escaping can double it), and the rest.
        ws_config.max_message_bytes = ws_config
            .max_message_bytes
            .max(config.max_message_bytes * 4);
        ws_config.max_frame_bytes = ws_config.max_message_bytes;
        let ws = WsServer::new(engine.clone(), ws_config)?;

        let app = AppState {
            engine: engine.clone(),
            ws: ws.clone(),
            settings: Arc::new(Settings {
                origins,
                secure_cookies: config.secure_cookies,
                auto_register: config.auto_register,
                guests: config.guests,
                admin_token_hash: config
                    .admin_token
                    .as_ref()
                    .map(|t| chat_core::auth::hash_token(t.expose())),
                store_kind,
                max_request_bytes: config.max_request_bytes,
                request_timeout: Duration::from_secs_f64(config.http_request_timeout_secs),
            }),
            sockets: TaskTracker::new(),
            shutdown: ShutdownSignal::new(),
            auth_limiter: Arc::new(AuthLimiter::new(config.auth_attempts_per_minute)),
            write_limiter: Arc::new(WriteLimiter::new(engine.limits())),
            hashing: Arc::new(Semaphore::new(MAX_CONCURRENT_HASHES)),
            started: Instant::now(),
        };

        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.http_addr,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.http_addr,
            source,
        })?;
        let stop = ShutdownSignal::new();

        // TCP (binary and line mode) on the same engine; see `tcp.rs`.
        let (tcp, tcp_addr) = if config.no_tcp {
            (None, None)
        } else {
            let mut tcp_config = transport_tcp::TcpConfig::default();
            tcp_config.max_connections = config.max_connections;
            tcp_config.max_connections_per_ip = config.max_connections_per_ip;
            tcp_config.flush_interval = Duration::from_millis(config.flush_interval_ms);
            // TCP sign-ins spend the same per-address budget as HTTP ones.
            tcp_config.sign_in_gate = Some(app.auth_limiter.clone());
            let (task, addr) =
                tcp::serve_tcp(engine.clone(), config.tcp_addr, tcp_config, stop.clone()).await?;
            tracing::info!(%addr, "chat server listening on tcp://{addr} (binary and line mode)");
            (Some(task), Some(addr))
        };

        tracing::info!(
            %http_addr,
            store = store_kind,
            guests = config.guests,
            auto_register = config.auto_register,
            admin_api = config.admin_token.is_some(),
            "chat server listening on http://{http_addr}/"
        );
        let http = http::Limits {
            connections: chat_core::conn::ConnLimiter::new(
                config.max_connections,
                config.max_http_connections_per_ip,
            ),
            header_timeout: Duration::from_secs_f64(config.http_header_timeout_secs),
            request_timeout: app.settings.request_timeout,
        };
        let task = tokio::spawn(serve(listener, http, app, stop.clone(), tcp));
        Ok(Server {
            http_addr,
            tcp_addr,
            engine,
            stop,
            task,
        })
    }

    /// The address the HTTP server is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address the TCP transport is bound to (`None` with `--no-tcp`).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The engine, for embedding applications (server-side publishing, notices).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Starts a graceful shutdown: no new connections; WebSockets write what is queued and
    /// close with 1001 ("going away"); HTTP requests in progress finish (within the request
    /// timeout, at most 10 s).
    pub fn shutdown(&self) {
        self.stop.trigger();
    }

    /// Waits until the server has stopped (after [`Server::shutdown`], or if serving failed).
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the server task failed");
        }
    }
}

/// Opens the store the configuration asks for: SQLite at `--db` (created and migrated on
/// first use), or memory with `--memory`.
async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, &'static str), Error> {
    if config.memory {
        tracing::warn!("--memory: nothing is saved; all data is lost when the server stops");
        return Ok((Arc::new(chat_store::MemoryStore::new()), "memory"));
    }
    let sqlite = chat_store::SqliteConfig {
        synchronous: match config.durability {
            Durability::Process => chat_store::Synchronous::Normal,
            Durability::Power => chat_store::Synchronous::Full,
        },
        ..chat_store::SqliteConfig::default()
    };
    let store = chat_store::SqliteStore::open(&config.db, sqlite)
        .await
        .map_err(Error::Store)?;
    tracing::info!(path = %store.path().display(), "database open");
    Ok((Arc::new(store), "sqlite"))
}

/// Serves HTTP until `stop` fires, then shuts everything down in order.
async fn serve(
    listener: TcpListener,
    http_limits: http::Limits,
    app: AppState,
    stop: ShutdownSignal,
    tcp: Option<JoinHandle<()>>,
) {
    let router = router(app.clone());
    let served = http::serve(listener, router, http_limits, stop.clone());

    // The sockets must be told before axum's graceful shutdown can finish: an upgraded
    // connection lives outside axum's request tracking.
    let closer = {
        let app = app.clone();
        let stop = stop.clone();
        async move {
            stop.triggered().await;
            tracing::info!("shutting down: closing connections");
            app.ws.shutdown();
            app.shutdown.trigger();
            // Every session of the engine, whichever transport carries it.
            app.engine.shutdown();
        }
    };
    tokio::join!(served, closer);

    // Each socket drains its queue and says goodbye within its own deadlines; this bound
    // is a backstop for a peer that never answers.
    app.sockets.close();
    let c = app.ws.config();
    let deadline = c.write_timeout + c.shutdown_timeout + c.close_timeout + Duration::from_secs(1);
    if tokio::time::timeout(deadline, app.sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = app.sockets.len(),
            "some WebSockets did not close in time"
        );
    }
    if let Some(tcp) = tcp {
        let _ = tcp.await;
    }
    tracing::info!("server stopped");
}

/// Every route. The legacy routes of the web chat this server replaces are kept with their
/// old paths and shapes (see `legacy.rs`).
fn router(app: AppState) -> Router {
    let api = Router::new()
        .route("/register", post(api::register))
        .route("/login", post(api::login))
        .route("/guest", post(api::guest))
        .route("/logout", post(api::logout))
        .route("/me", get(api::me))
        .route("/rooms", get(api::rooms).post(api::create_room))
        .route("/rooms/public", get(api::public_rooms))
        .route("/rooms/{id}", get(api::room))
        .route("/rooms/{id}/join", post(api::join))
        .route("/rooms/{id}/leave", post(api::leave))
        .route("/rooms/{id}/history", get(api::history))
        .route("/rooms/{id}/members", get(api::members))
        .route("/rooms/{id}/messages", post(api::send))
        .route("/rooms/{id}/read", post(api::mark_read))
        .route("/rooms/{id}/invites", post(api::create_invite))
        .route("/invites/{code}", get(api::invite))
        .route("/invites/{code}/redeem", post(api::redeem_invite))
        .route("/direct", post(api::direct))
        .route("/admin/publish", post(api::admin_publish))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed);

    Router::new()
        .route("/", get(pages::home))
        .route("/auth", get(pages::auth).post(legacy::auth))
        .route("/logout", post(legacy::logout))
        .route("/newchat", post(legacy::newchat))
        .route("/chat/{id}", get(pages::room))
        .route("/create_invite/{chat_id}", post(legacy::create_invite))
        .route("/invite/{code}", get(pages::invite))
        .route("/chatsocket/{id}", get(sockets::chatsocket))
        .route("/ws", get(sockets::ws))
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/assets/{file}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .nest("/api", api)
        .fallback(pages::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            security::csrf_guard,
        ))
        .layer(DefaultBodyLimit::max(app.settings.max_request_bytes))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn({
            let timeout = app.settings.request_timeout;
            move |req, next| http::request_deadline(timeout, req, next)
        }))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

/// One log line per request (`RUST_LOG=chat_server=debug` to see them). The path only: query
/// strings can carry tokens.
async fn log_request(req: axum::extract::Request, next: middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    if response.status().is_server_error() {
        tracing::warn!(%method, path, status, ms, "request failed");
    } else {
        tracing::debug!(%method, path, status, ms, "request");
    }
    response
}

/// Headers every response carries: a strict content security policy (the pages load only
/// their own script and stylesheet, and cannot be framed), no MIME sniffing, and referrers
/// for this site only (invite codes travel in URLs). Not `no-referrer`: under it browsers send
/// `Origin: null` on form posts, which the CSRF guard must refuse.
async fn security_headers(req: axum::extract::Request, next: middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /status`: live counters, for dashboards. `connected_clients` is kept under the name
/// the old web chat used.
async fn status(State(app): State<AppState>) -> Response {
    let hub = app.engine.stats();
    let ws = app.ws.stats();
    let body = serde_json::json!({
        "connected_clients": hub.sessions,
        "sessions": hub.sessions,
        "users_online": hub.users,
        "rooms": hub.rooms,
        "websocket_connections": ws.open,
        "store": app.settings.store_kind,
        "uptime_secs": app.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    no_store(axum::Json(body).into_response())
}

/// `GET /health`: 200 when the store answers, 503 otherwise, for load balancers.
async fn health(State(app): State<AppState>) -> Response {
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        app.engine.store().room(chat_core::RoomId(0)),
    )
    .await;
    let (status, text) = match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ok"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: store failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    no_store((status, axum::Json(serde_json::json!({ "status": text }))).into_response())
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
