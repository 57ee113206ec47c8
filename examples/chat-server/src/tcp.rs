//! The TCP transport on `--tcp-addr` (127.0.0.1:9090 by default): binary frames for native
//! clients and `chat-cli`, and a line mode for people at `nc` (the first byte decides; see
//! `docs/PROTOCOL.md`). It shares the engine with the HTTP side, so a user on TCP and a user
//! in a browser chat in the same rooms.

use crate::Error;
use chat_core::Engine;
use chat_core::conn::ShutdownSignal;
use std::net::SocketAddr;
use tokio::task::JoinHandle;

/// Binds `addr` and runs the TCP transport on `engine` until `stop` fires; returns the task,
/// which the server awaits (it drains and closes its connections) before it exits, and the
/// bound address.
pub(crate) async fn serve_tcp(
    engine: Engine,
    addr: SocketAddr,
    config: transport_tcp::TcpConfig,
    stop: ShutdownSignal,
) -> Result<(JoinHandle<()>, SocketAddr), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let server = transport_tcp::TcpServer::new(engine, config)?;
    let task = tokio::spawn(async move {
        if let Err(e) = server
            .serve(listener, async move { stop.triggered().await })
            .await
        {
            tracing::error!(error = %e, "TCP transport failed");
        }
    });
    Ok((task, bound))
}
