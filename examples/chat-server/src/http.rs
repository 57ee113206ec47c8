//! The HTTP listener: hyper's HTTP/1 connection driver under this server's own limits.
//!
//! Why not `axum::serve`: it sets no timer, so hyper's header-read timeout never fires, and it
//! caps nothing. A client that sends half a request head (slowloris), or a body it never
//! finishes, held a connection — and a file descriptor — for as long as it liked, from as many
//! connections as it liked; and a graceful shutdown waited for it. Here:
//!
//! - every connection takes a permit of a [`ConnLimiter`] (the WebSocket caps' kind, with the
//!   same per-address grouping), so one address holds at most
//!   `--max-http-connections-per-ip` HTTP connections and the server at most
//!   `--max-connections`, counted apart from the WebSocket and TCP ones (an upgraded
//!   connection gives its HTTP permit back);
//! - a request head must arrive within `--http-header-timeout-secs`, which also closes a
//!   keep-alive connection idle that long;
//! - a request must be answered within `--http-request-timeout-secs`, its body read included
//!   ([`request_deadline`]);
//! - a graceful shutdown lets requests in progress finish for as long as a request may take,
//!   at most [`SHUTDOWN_GRACE`]. hyper counts a connection that has not sent its first
//!   request yet, or only part of its head, as in progress: one such connection makes a
//!   shutdown take that long.

use crate::error::ApiError;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_core::conn::ShutdownSignal;
use chat_core::conn::{ConnLimiter, Refused};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The longest a graceful shutdown waits for HTTP requests in progress (less if the request
/// timeout is shorter); connections still open after it are dropped.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts and serves connections until `stop` resolves, then shuts down gracefully (see the
/// module docs).
/// The listener's limits (see the module docs).
pub(crate) struct Limits {
    /// Plain HTTP connections, in all and per address.
    pub(crate) connections: ConnLimiter,
    /// For a request head, and for an idle keep-alive connection.
    pub(crate) header_timeout: Duration,
    /// For a whole request; it also bounds the graceful shutdown's wait.
    pub(crate) request_timeout: Duration,
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: ShutdownSignal,
) {
    let Limits {
        connections: limiter,
        header_timeout,
        request_timeout,
    } = limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // That one connection is gone before it was accepted: take the next.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, typically: the condition passes as connections
                    // close, and retrying at once would spin.
                    tracing::warn!(error = %e, "HTTP accept failed; pausing accepts for 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.triggered() => break,
        };
        // Finished connections, so that the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let permit = match limiter.try_acquire(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                refuse(&tcp, why);
                continue;
            }
        };
        // A WebSocket frame is a small write that must go now: with Nagle's algorithm it
        // could wait for the ACK of the previous one, which a delayed ACK holds back up to
        // 40 ms. (Measured: connect time p50 11 → 9 ms in the many-rooms load scenario.)
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let conn = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            // Held until the connection ends, or is handed over as an upgraded WebSocket.
            // Declared after it, so dropped before it: the place is free by the time the
            // client sees the connection close.
            let _permit = permit;
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = stop.triggered() => {
                    // Finish the request in progress, if any, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = request_timeout.min(SHUTDOWN_GRACE);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "HTTP requests still in progress after {grace:?}: dropping them"
        );
    }
    connections.shutdown().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Answers a connection over the caps with a short `503`/`429` (the WebSocket caps' codes),
/// written without waiting: the socket's send buffer is empty, and a refusal must not cost a
/// task. The request bytes that have already arrived are read first, since closing a socket
/// with unread data sends a reset, which can make the client drop the answer unread. Best
/// effort: the connection is closed either way.
fn refuse(tcp: &TcpStream, why: Refused) {
    let mut request = [0u8; 4096];
    let _ = tcp.try_read(&mut request);
    let (status, code) = match why {
        Refused::Full => ("503 Service Unavailable", "server_busy"),
        Refused::PerIp => ("429 Too Many Requests", "too_many_connections"),
    };
    let body = serde_json::json!({"error": {"code": code, "message": why.to_string()}}).to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 5\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(response.as_bytes());
    tracing::debug!(code, "HTTP connection refused");
}

/// Answers `408 request_timeout` to a request not answered within `timeout`.
pub(crate) async fn request_deadline(
    timeout: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request was not complete within {timeout:?}"),
        )
        .into_response(),
    }
}
