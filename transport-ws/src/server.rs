//! The standalone server and the embedding entry points.

use crate::Error;
use crate::config::WsConfig;
use crate::connection::{CloseCause, WsReader, WsWriter, goodbye};
use crate::handshake::{self, Admission, ReadError, Rejection};
use crate::stats::{Counters, WsStats};
use chat_core::conn::{
    CodecChoice, ConnLimiter, ConnPermit, FrameReader, FrameWriter, Inbound, PumpConfig, PumpEnd,
    Refused, ShutdownSignal, pump,
};
use chat_core::protocol::{ClientFrame, ServerFrame};
use chat_core::{Engine, Error as CoreError, Identity, Outbox, Outgoing, Request, Session};
use futures_util::StreamExt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::{HeaderMap, Uri};
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::Instrument;

/// How many refusals (503/429 answers) may be in flight at once. Refusing costs a task and a
/// socket until the client's request is read; past this budget, excess connections are
/// dropped without an answer, so a connection flood cannot turn refusals into the resource
/// it exhausts.
const MAX_PENDING_REFUSALS: usize = 256;

/// Slack given to connection tasks beyond their own deadlines before shutdown aborts them.
const SHUTDOWN_SLACK: Duration = Duration::from_millis(250);

/// A WebSocket front end for an [`Engine`].
///
/// Cheap to clone (an `Arc`); every clone is the same server, with the same connection caps,
/// counters and shutdown signal. Use it three ways:
///
/// - [`WsServer::serve`]: accept on a `TcpListener` until a shutdown future resolves.
/// - [`WsServer::handle_stream`]: hand over a connection you accepted yourself, before the
///   HTTP request (e.g. after TLS termination); the server does the handshake.
/// - [`WsServer::authorize`] + [`WsServer::run_admitted`] (or [`WsServer::run_upgraded`] with
///   an identity you established yourself): your HTTP server (hyper, axum, …) upgrades, this
///   crate runs the session.
#[derive(Clone)]
pub struct WsServer {
    inner: Arc<Inner>,
}

/// An opened session, its outbox and the codec it writes.
type Opened = (Session, Outbox, CodecChoice);

struct Inner {
    engine: Engine,
    config: WsConfig,
    /// Made from `config` once; every session's pump borrows it.
    pump_config: PumpConfig,
    limiter: ConnLimiter,
    shutdown: ShutdownSignal,
    counters: Counters,
    refusals: Arc<Semaphore>,
}

impl std::fmt::Debug for WsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsServer")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Serves WebSocket connections on `listener` until `shutdown` resolves, then shuts down
/// gracefully. Shorthand for [`WsServer::new`] and [`WsServer::serve`].
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    config: WsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    WsServer::new(engine, config)?
        .serve(listener, shutdown)
        .await
}

impl WsServer {
    /// A server for `engine`. Fails if the configuration is inconsistent.
    pub fn new(engine: Engine, config: WsConfig) -> Result<WsServer, Error> {
        config.validate()?;
        if let Some(param) = &config.auth.insecure_dev_user_param {
            tracing::warn!(
                %param,
                "INSECURE development identity is enabled: anyone can connect as anyone"
            );
        }
        Ok(WsServer {
            inner: Arc::new(Inner {
                limiter: ConnLimiter::new(config.max_connections, config.max_connections_per_ip),
                engine,
                pump_config: config.pump_config(),
                config,
                shutdown: ShutdownSignal::new(),
                counters: Counters::default(),
                refusals: Arc::new(Semaphore::new(MAX_PENDING_REFUSALS)),
            }),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration in force.
    pub fn config(&self) -> &WsConfig {
        &self.inner.config
    }

    /// The connection caps, for embedders who want to count their own connections too.
    pub fn limiter(&self) -> &ConnLimiter {
        &self.inner.limiter
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WsStats {
        self.inner.counters.snapshot()
    }

    /// Asks every connection of this server to finish: handshakes in progress are dropped,
    /// sessions write what is queued and close with 1001. [`WsServer::serve`] calls it when
    /// its shutdown future resolves; embedders call it themselves. Other transports on the
    /// same engine are unaffected (`Engine::shutdown` closes every session of the engine).
    /// Irreversible: a server that was shut down refuses every later connection.
    pub fn shutdown(&self) {
        self.inner.shutdown.trigger();
    }

    /// Accepts connections until `shutdown` resolves; then stops accepting, closes every
    /// connection gracefully (queued frames written, then 1001) and returns once all are
    /// gone, or after `write_timeout + shutdown_timeout + close_timeout`, when the stragglers
    /// are dropped.
    ///
    /// Accept errors never end the server: a per-connection error is skipped, and running out
    /// of file descriptors or memory backs off (10 ms doubling to 1 s) instead of spinning.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let local = listener.local_addr()?;
        tracing::info!(%local, "websocket server listening");
        let c = &self.inner.config;
        let deadline = c.shutdown_timeout + c.write_timeout + c.close_timeout + SHUTDOWN_SLACK;
        chat_core::conn::serve_accepted(
            "websocket",
            || listener.accept(),
            |tasks, tcp, peer| self.admit(tasks, tcp, peer),
            shutdown,
            || self.shutdown(),
            deadline,
        )
        .await;
        Ok(())
    }

    fn admit(&self, tasks: &mut JoinSet<()>, tcp: TcpStream, peer: SocketAddr) {
        // We write whole batches and flush once; Nagle would only add latency.
        let _ = tcp.set_nodelay(true);
        let (serving, refusing) = (self.clone(), self.clone());
        let admitted = chat_core::conn::admit(
            tasks,
            &self.inner.limiter,
            &self.inner.refusals,
            tcp,
            peer,
            move |tcp, permit| {
                async move {
                    serving.connection(tcp, permit).await;
                }
                .instrument(tracing::debug_span!("ws", %peer))
            },
            move |tcp, why| async move {
                refusing.refuse(tcp, why).await;
            },
        );
        if !admitted {
            Counters::bump(&self.inner.counters.rejected_busy);
        }
    }

    /// Runs the handshake on a connection accepted elsewhere (e.g. a TLS stream) and then the
    /// session, counting it against the connection caps. Returns how the connection ended
    /// (`None`: refused or abandoned during the handshake).
    pub async fn handle_stream<S>(&self, io: S, peer: SocketAddr) -> Option<CloseCause>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match self.inner.limiter.try_acquire(peer.ip()) {
            Ok(permit) => self.connection(io, permit).await,
            Err(why) => {
                self.refuse(io, why).await;
                None
            }
        }
    }

    async fn connection<S>(&self, mut io: S, permit: ConnPermit) -> Option<CloseCause>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let handshake =
            tokio::time::timeout(self.inner.config.handshake_timeout, self.handshake(&mut io));
        let admitted = tokio::select! {
            biased;
            () = self.inner.shutdown.triggered() => return None,
            r = handshake => r,
        };
        let (admission, leftover) = match admitted {
            Ok(Some(a)) => a,
            Ok(None) => return None,
            Err(_elapsed) => {
                tracing::debug!("handshake timed out");
                Counters::bump(&self.inner.counters.handshake_abandoned);
                return None;
            }
        };
        let ws = WebSocketStream::from_partially_read(
            io,
            leftover,
            Role::Server,
            Some(self.inner.config.websocket_config()),
        )
        .await;
        // Boxed: `run` keeps its arguments in its future for the connection's whole life
        // (async fn arguments get their own room), and the stream is 300-odd bytes.
        let cause = self
            .run(Box::new(ws), admission.identity, admission.codec)
            .await;
        drop(permit);
        Some(cause)
    }

    /// Reads, decides and answers one upgrade request. `Some` once the `101` is written.
    async fn handshake<S>(&self, io: &mut S) -> Option<(Admission, Vec<u8>)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let c = &self.inner.counters;
        let (req, leftover) = match handshake::read_request(io, &self.inner.config).await {
            Ok(r) => r,
            Err(ReadError::Gone) => {
                Counters::bump(&c.handshake_abandoned);
                return None;
            }
            Err(ReadError::Reject(r)) => {
                self.count_rejection(&r);
                handshake::reject(io, &r).await;
                return None;
            }
        };
        let decided = match handshake::check_upgrade(&self.inner.config, &req) {
            Ok(accept) => self
                .authorize(req.uri(), req.headers())
                .await
                .map(|a| (accept, a)),
            Err(r) => Err(r),
        };
        match decided {
            Ok((accept, admission)) => {
                let response = handshake::switching_protocols(&accept, admission.protocol);
                if io.write_all(&response).await.is_err() || io.flush().await.is_err() {
                    Counters::bump(&c.handshake_abandoned);
                    return None;
                }
                let user = admission.identity.as_ref().map(|i| i.username.as_str());
                tracing::debug!(user, "upgraded");
                Some((admission, leftover))
            }
            Err(r) => {
                tracing::debug!(rejection = %r, "handshake refused");
                self.count_rejection(&r);
                handshake::reject(io, &r).await;
                None
            }
        }
    }

    /// Answers a connection over the caps with 503 or 429 once its request is in (a response
    /// written before the request is read can be lost to a reset).
    async fn refuse<S>(&self, mut io: S, why: Refused)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let rejection = Rejection::refused(why);
        self.count_rejection(&rejection);
        let read = tokio::time::timeout(
            self.inner.config.handshake_timeout,
            handshake::read_request(&mut io, &self.inner.config),
        );
        tokio::select! {
            () = self.inner.shutdown.triggered() => {}
            r = read => {
                if let Ok(Ok(_)) = r {
                    handshake::reject(&mut io, &rejection).await;
                }
            }
        }
    }

    fn count_rejection(&self, r: &Rejection) {
        let c = &self.inner.counters;
        Counters::bump(match r.status() {
            401 => &c.rejected_unauthorized,
            403 => &c.rejected_forbidden,
            429 => &c.rejected_per_ip,
            503 => &c.rejected_busy,
            _ => &c.rejected_bad_request,
        });
    }

    /// Decides an upgrade request your own HTTP server received: checks the `Origin` against
    /// [`crate::OriginPolicy`], authenticates the credentials [`crate::AuthConfig`] accepts
    /// through the engine's authenticator, and picks the codec. On `Err`, send the
    /// [`Rejection`] as the HTTP response and do not upgrade. On `Ok`, upgrade — echoing
    /// [`Admission::protocol`] in `Sec-WebSocket-Protocol` — and pass the stream and the
    /// admission to [`WsServer::run_admitted`].
    ///
    /// The WebSocket mechanics (method, `Upgrade`, `Sec-WebSocket-Key`) are your HTTP
    /// server's business here; the standalone server checks them itself.
    pub async fn authorize(&self, uri: &Uri, headers: &HeaderMap) -> Result<Admission, Rejection> {
        handshake::authorize(&self.inner.engine, &self.inner.config, uri, headers).await
    }

    /// Runs a session for `identity` over an already-upgraded WebSocket until it ends, then
    /// closes it with the code [`CloseCause`] documents.
    ///
    /// The stream should have been built with [`WsConfig::websocket_config`] so that the
    /// message and frame limits apply. This does not take a connection-cap permit: count
    /// connections with [`WsServer::limiter`] if your server does not already.
    pub async fn run_upgraded<S>(
        &self,
        ws: WebSocketStream<S>,
        identity: Identity,
        codec: CodecChoice,
    ) -> CloseCause
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.run(Box::new(ws), Some(identity), codec).await
    }

    /// Runs the connection [`WsServer::authorize`] admitted: with its identity, or — when it
    /// presented none and [`crate::AuthConfig::hello`] is on — after the client authenticates
    /// with a `hello` as its first frame. Otherwise as [`WsServer::run_upgraded`].
    pub async fn run_admitted<S>(&self, ws: WebSocketStream<S>, admission: Admission) -> CloseCause
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.run(Box::new(ws), admission.identity, admission.codec)
            .await
    }

    async fn run<S>(
        &self,
        ws: Box<WebSocketStream<S>>,
        identity: Option<Identity>,
        codec: CodecChoice,
    ) -> CloseCause
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (sink, stream) = (*ws).split();
        let mut reader = WsReader { inner: stream };
        let mut writer = WsWriter { inner: sink };
        let cause = self
            .session(
                &mut reader,
                &mut writer,
                identity,
                codec,
                Vec::new(),
                CloseCause::of_read_error,
            )
            .await;
        // The halves come from one split, so reuniting cannot fail.
        if let Ok(ws) = reader.inner.reunite(writer.inner) {
            goodbye(ws, cause, self.inner.config.close_timeout).await;
        }
        cause
    }

    /// Runs one session over any pair of halves, counting it; the caller says goodbye.
    pub(crate) async fn session<R, W>(
        &self,
        reader: &mut R,
        writer: &mut W,
        identity: Option<Identity>,
        codec: CodecChoice,
        initial: Vec<chat_core::Request>,
        read_error: impl Fn(&R::Error) -> CloseCause,
    ) -> CloseCause
    where
        R: FrameReader,
        W: FrameWriter<Error = R::Error>,
        R::Error: std::fmt::Debug,
    {
        let c = &self.inner.counters;
        Counters::bump(&c.upgraded);
        c.open.fetch_add(1, Ordering::Relaxed);
        // The opening runs in a boxed future of its own and hands the session over boxed,
        // and the pump's future is made by a plain function: a value moved out of a local
        // that is still in scope across an `.await` keeps its room in this future — so in
        // every connection's task, for the connection's whole life.
        let opening = Box::pin(self.open(reader, writer, identity, codec, initial, &read_error));
        let cause = match opening.await {
            Ok(opened) => {
                let session_id = opened.0.id();
                let running = self.pump_opened(opened, reader, writer);
                let end = running.await;
                let cause = CloseCause::of(&end, &read_error);
                tracing::debug!(session = %session_id, cause = cause.as_str(), ?end, "connection ended");
                cause
            }
            Err(cause) => {
                tracing::debug!(cause = cause.as_str(), "connection ended before its hello");
                cause
            }
        };
        c.open.fetch_sub(1, Ordering::Relaxed);
        Counters::bump(match cause {
            CloseCause::Shutdown => &c.closed_shutdown,
            CloseCause::SlowConsumer => &c.closed_slow_consumer,
            CloseCause::PolicyViolation => &c.closed_policy_violation,
            CloseCause::Revoked => &c.closed_revoked,
            CloseCause::Unauthenticated => &c.closed_unauthenticated,
            CloseCause::IdleTimeout => &c.closed_idle,
            CloseCause::MessageTooBig => &c.closed_too_big,
            CloseCause::InvalidUtf8 => &c.closed_invalid_utf8,
            CloseCause::ProtocolError => &c.closed_protocol_error,
            CloseCause::PeerClosed => &c.closed_by_peer,
            CloseCause::Io => &c.closed_io,
        });
        cause
    }

    /// Opens the session (from the identity, or with an in-band `hello`) and answers the
    /// `initial` requests on it.
    async fn open<R, W>(
        &self,
        reader: &mut R,
        writer: &mut W,
        identity: Option<Identity>,
        codec: CodecChoice,
        initial: Vec<chat_core::Request>,
        read_error: &impl Fn(&R::Error) -> CloseCause,
    ) -> Result<Box<Opened>, CloseCause>
    where
        R: FrameReader,
        W: FrameWriter<Error = R::Error>,
    {
        let ((mut session, outbox), codec) = match identity {
            Some(identity) => (self.inner.engine.open_session(identity), codec),
            None => {
                self.open_with_hello(reader, writer, codec, read_error)
                    .await?
            }
        };
        // Requests the application queues for the session (e.g. a subscription), answered
        // before anything the client sends.
        for req in initial {
            session.handle(req).await;
        }
        Ok(Box::new((session, outbox, codec)))
    }

    /// The pump's future for an opened session; a plain function, so that the session moves
    /// straight into the pump's future without a copy left in the caller's.
    #[allow(
        clippy::boxed_local,
        reason = "the box is what `open` returns: the caller keeps 8 bytes across its await"
    )]
    fn pump_opened<'a, R, W>(
        &'a self,
        opened: Box<Opened>,
        reader: &'a mut R,
        writer: &'a mut W,
    ) -> impl Future<Output = PumpEnd<R::Error>> + Send + 'a
    where
        R: FrameReader,
        W: FrameWriter<Error = R::Error>,
    {
        let (session, outbox, codec) = *opened;
        pump(
            session,
            outbox,
            reader,
            writer,
            codec,
            &self.inner.pump_config,
            &self.inner.shutdown,
        )
    }

    /// The in-band opening of a connection admitted without credentials: its first data frame
    /// must be a `hello` with `auth`, within the handshake timeout. On failure the client gets
    /// the `error` frame (with the hello's id) before the close.
    async fn open_with_hello<R, W>(
        &self,
        reader: &mut R,
        writer: &mut W,
        codec: CodecChoice,
        read_error: &impl Fn(&R::Error) -> CloseCause,
    ) -> Result<((Session, Outbox), CodecChoice), CloseCause>
    where
        R: FrameReader,
        W: FrameWriter<Error = R::Error>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.config.handshake_timeout;
        let (frame_codec, bytes) = loop {
            let next = tokio::select! {
                biased;
                () = self.inner.shutdown.triggered() => return Err(CloseCause::Shutdown),
                next = tokio::time::timeout_at(deadline, reader.read()) => next,
            };
            match next {
                Err(_elapsed) => return Err(CloseCause::Unauthenticated),
                Ok(Err(e)) => return Err(read_error(&e)),
                Ok(Ok(None)) => return Err(CloseCause::PeerClosed),
                Ok(Ok(Some(Inbound::Alive))) => continue,
                Ok(Ok(Some(Inbound::Frame { codec, bytes }))) => break (codec, bytes),
            }
        };
        let reply_codec = match codec {
            CodecChoice::Fixed(c) => c,
            CodecChoice::FirstFrame { .. } => frame_codec,
        };
        let (id, opened) = match frame_codec.decode_request(&bytes) {
            Ok(Request {
                id,
                frame: ClientFrame::Hello(hello),
            }) => (id, self.inner.engine.open_with_hello(&hello, id).await),
            Ok(Request { id, .. }) => (id, Err(CoreError::Unauthenticated)),
            Err(e) => (None, Err(e)),
        };
        match opened {
            Ok(opened) => Ok((opened, CodecChoice::Fixed(reply_codec))),
            Err(e) => {
                let frame = Outgoing::new(
                    id,
                    ServerFrame::Error {
                        code: e.code(),
                        message: e.public_message(),
                    },
                );
                let answer = async {
                    writer.feed(reply_codec, frame.encoded(reply_codec)).await?;
                    writer.flush().await
                };
                let _ = tokio::time::timeout(self.inner.config.write_timeout, answer).await;
                Err(CloseCause::Unauthenticated)
            }
        }
    }
}
