//! The server: accept loop, connection caps, mode detection, shutdown.

use crate::Error;
use crate::close::{CloseCause, linger};
use crate::config::TcpConfig;
use crate::stats::{Counters, TcpStats};
use crate::{binary, line};
use chat_core::conn::{ConnLimiter, ConnPermit, Refused, ShutdownSignal};
use chat_core::protocol::ServerFrame;
use chat_core::{Codec, Engine, Outgoing};
use std::future::Future;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

/// How many refusals ("server full", "too many connections") may be in flight at once.
/// Refusing costs a task and a socket until the client's first byte tells its mode; past this
/// budget, excess connections are dropped without an answer, so a connection flood cannot turn
/// refusals into the resource it exhausts.
const MAX_PENDING_REFUSALS: usize = 256;

/// Slack given to connection tasks beyond their own deadlines before shutdown aborts them.
const SHUTDOWN_SLACK: Duration = Duration::from_millis(250);

/// The mode a connection's first byte chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Length-prefixed postcard frames: the first byte was `0x00`.
    Binary,
    /// Lines of text: any other first byte.
    Line,
}

impl Mode {
    /// The mode a connection whose first byte is `byte` speaks.
    pub fn detect(byte: u8) -> Mode {
        if byte == 0 { Mode::Binary } else { Mode::Line }
    }
}

/// A TCP front end for an [`Engine`], serving binary clients and people at a terminal on one
/// port.
///
/// Cheap to clone (an `Arc`); every clone is the same server, with the same connection caps,
/// counters and shutdown signal. Use [`TcpServer::serve`] to accept on a `TcpListener` until a
/// shutdown future resolves, or [`TcpServer::handle_stream`] for a connection you accepted
/// yourself (e.g. after TLS termination).
#[derive(Clone)]
pub struct TcpServer {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) config: TcpConfig,
    pub(crate) limiter: ConnLimiter,
    pub(crate) shutdown: ShutdownSignal,
    pub(crate) counters: Counters,
    refusals: Arc<Semaphore>,
}

impl std::fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Serves TCP connections (both modes) on `listener` until `shutdown` resolves, then shuts
/// down gracefully. Shorthand for [`TcpServer::new`] and [`TcpServer::serve`].
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    config: TcpConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    TcpServer::new(engine, config)?
        .serve(listener, shutdown)
        .await
}

impl TcpServer {
    /// A server for `engine`. Fails if the configuration is inconsistent.
    pub fn new(engine: Engine, config: TcpConfig) -> Result<TcpServer, Error> {
        config.validate()?;
        Ok(TcpServer {
            inner: Arc::new(Inner {
                limiter: ConnLimiter::new(config.max_connections, config.max_connections_per_ip),
                engine,
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
    pub fn config(&self) -> &TcpConfig {
        &self.inner.config
    }

    /// The connection caps. Its counts include connections not yet authenticated.
    pub fn limiter(&self) -> &ConnLimiter {
        &self.inner.limiter
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TcpStats {
        self.inner.counters.snapshot()
    }

    /// Asks every connection of this server to finish: connections not yet authenticated are
    /// told "server shutting down" and closed; sessions write what is queued, then get the
    /// same last error frame or line, and close. [`TcpServer::serve`] calls it when its
    /// shutdown future resolves. Other transports on the same engine are unaffected
    /// (`Engine::shutdown` closes every session of the engine). Irreversible.
    pub fn shutdown(&self) {
        self.inner.shutdown.trigger();
    }

    /// Accepts connections until `shutdown` resolves; then stops accepting, closes every
    /// connection gracefully and returns once all are gone, or after `write_timeout +
    /// shutdown_timeout + 2 × close_timeout`, when the stragglers are dropped.
    ///
    /// Accept errors never end the server: a per-connection error is skipped, and running out
    /// of file descriptors or memory backs off (10 ms doubling to 1 s) instead of spinning.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let local = listener.local_addr()?;
        tracing::info!(%local, "tcp server listening");
        let c = &self.inner.config;
        // A batch already being written, the drain, the last frame and the lingering close.
        let deadline = c.write_timeout + c.shutdown_timeout + 2 * c.close_timeout + SHUTDOWN_SLACK;
        chat_core::conn::serve_accepted(
            "tcp",
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
                    serving.connection(tcp, permit, peer.ip()).await;
                }
                .instrument(tracing::debug_span!("tcp", %peer))
            },
            move |tcp, why| async move {
                refusing.refuse(tcp, why).await;
            },
        );
        if !admitted {
            Counters::bump(&self.inner.counters.refused_full);
        }
    }

    /// Serves one connection accepted elsewhere (e.g. a TLS stream), counting it against the
    /// connection caps, and returns how it ended.
    pub async fn handle_stream<S>(&self, io: S, peer: SocketAddr) -> CloseCause
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match self.inner.limiter.try_acquire(peer.ip()) {
            Ok(permit) => self.connection(io, permit, peer.ip()).await,
            Err(why) => self.refuse(io, why).await,
        }
    }

    /// Waits for the first byte, then runs the connection from `peer` in the mode it chose.
    async fn connection<S>(&self, io: S, permit: ConnPermit, peer: IpAddr) -> CloseCause
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let inner = &*self.inner;
        let accepted = Instant::now();
        let (mut read, write) = tokio::io::split(io);
        let mut first = [0u8; 1];
        // A person may take a while to type; a binary client speaks at once. Until the first
        // byte nothing can be said to the peer (the mode decides how), so a silent connection
        // is closed without a word.
        let waited = tokio::select! {
            biased;
            () = inner.shutdown.triggered() => return CloseCause::Shutdown,
            r = tokio::time::timeout(inner.config.line_auth_timeout, read.read(&mut first)) => r,
        };
        let cause = match waited {
            Err(_elapsed) => {
                Counters::bump(&inner.counters.auth_timeout);
                CloseCause::Unauthenticated
            }
            Ok(Ok(0)) => inner.count(CloseCause::PeerClosed),
            Ok(Err(_)) => inner.count(CloseCause::Io),
            Ok(Ok(_)) => {
                // The byte is read again by the mode's framing, ahead of the rest.
                let read = Cursor::new(first).chain(read);
                match Mode::detect(first[0]) {
                    Mode::Binary => binary::run(inner, read, write, accepted, peer).await,
                    Mode::Line => line::run(inner, read, write, accepted, peer).await,
                }
            }
        };
        drop(permit);
        cause
    }

    /// Refuses a connection over the caps: with an error frame or an error line, chosen by
    /// its first byte (waited for up to `auth_timeout`: long enough for a person to press
    /// Enter, short enough that refusals do not pile up), then closes it.
    async fn refuse<S>(&self, io: S, why: Refused) -> CloseCause
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let inner = &*self.inner;
        let cause = match why {
            Refused::Full => {
                Counters::bump(&inner.counters.refused_full);
                CloseCause::ServerFull
            }
            Refused::PerIp => {
                Counters::bump(&inner.counters.refused_per_ip);
                CloseCause::TooManyConnections
            }
        };
        let (mut read, mut write) = tokio::io::split(io);
        let mut first = [0u8; 1];
        let waited = tokio::select! {
            biased;
            () = inner.shutdown.triggered() => return cause,
            r = tokio::time::timeout(inner.config.auth_timeout, read.read(&mut first)) => r,
        };
        let Ok(Ok(1)) = waited else { return cause };
        let bytes = match Mode::detect(first[0]) {
            Mode::Binary => {
                let Some((code, text)) = cause.binary_farewell() else {
                    return cause;
                };
                let frame = Outgoing::event(ServerFrame::Error {
                    code,
                    message: format!("{}: {text}", cause.as_str()),
                })
                .encoded(Codec::Postcard);
                let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(&frame);
                framed
            }
            Mode::Line => match cause.line_farewell() {
                Some(line) => format!("{line}\r\n").into_bytes(),
                None => return cause,
            },
        };
        let answer = async {
            write.write_all(&bytes).await?;
            write.shutdown().await
        };
        if let Ok(Ok(())) = tokio::time::timeout(inner.config.close_timeout, answer).await {
            linger(&mut read, inner.config.close_timeout).await;
        }
        cause
    }
}

impl Inner {
    /// Counts a connection's end under its cause, as soon as the cause is known (before the
    /// goodbye, which may linger).
    pub(crate) fn count(&self, cause: CloseCause) -> CloseCause {
        if let Some(counter) = cause.counter(&self.counters) {
            Counters::bump(counter);
        }
        cause
    }
}
