//! One upgraded connection: the WebSocket halves the session pump drives, and the goodbye.

use chat_core::conn::{FrameReader, FrameWriter, Inbound, PumpEnd};
use chat_core::{CloseReason, Codec};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

/// Why a connection ended, and the close code the server sent for it.
///
/// | cause              | code | reason text         |
/// |--------------------|------|---------------------|
/// | `Shutdown`         | 1001 | `shutdown`          |
/// | `IdleTimeout`      | 1001 | `idle_timeout`      |
/// | `ProtocolError`    | 1002 | `protocol_error`    |
/// | `InvalidUtf8`      | 1007 | `invalid_utf8`      |
/// | `PolicyViolation`  | 1008 | `policy_violation`  |
/// | `MessageTooBig`    | 1009 | `message_too_big`   |
/// | `SlowConsumer`     | 1013 | `slow_consumer`     |
/// | `Revoked`          | 4401 | `revoked`           |
/// | `Unauthenticated`  | 4401 | `unauthenticated`   |
/// | `PeerClosed`       | (the peer's own code, echoed) | |
/// | `Io`               | none: the connection is gone | |
///
/// Why these codes: 1013 ("try again later") is the registered code that tells a generic
/// client to reconnect, which is exactly right for a slow consumer — it may resume with
/// `since_seq`. A revoked token must *not* be retried, and 1008 cannot say that apart from
/// abuse, so revocation uses 4401 from the private range, mirroring HTTP 401 as graphql-ws
/// does. A peer that stopped answering pings is most likely gone; it gets 1001 on the off
/// chance it is still listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// The server shut down, or the engine asked every session to close.
    Shutdown,
    /// The peer answered no ping within the pong timeout.
    IdleTimeout,
    /// The peer broke the WebSocket protocol.
    ProtocolError,
    /// A text frame was not valid UTF-8.
    InvalidUtf8,
    /// The session kept sending after being rate limited.
    PolicyViolation,
    /// A message or frame exceeded the configured maximum.
    MessageTooBig,
    /// The peer read too slowly: it fell too far behind a room, its queue overflowed, or a
    /// write stalled.
    SlowConsumer,
    /// The user logged out or the token was revoked.
    Revoked,
    /// A connection admitted without credentials ([`crate::AuthConfig::hello`]) did not
    /// authenticate with a `hello` in time.
    Unauthenticated,
    /// The peer closed the connection.
    PeerClosed,
    /// The connection failed (reset, I/O error) without a close handshake.
    Io,
}

impl CloseCause {
    /// The close code sent to the peer, if the server sends one.
    pub fn code(self) -> Option<u16> {
        Some(match self {
            CloseCause::Shutdown | CloseCause::IdleTimeout => 1001,
            CloseCause::ProtocolError => 1002,
            CloseCause::InvalidUtf8 => 1007,
            CloseCause::PolicyViolation => 1008,
            CloseCause::MessageTooBig => 1009,
            CloseCause::SlowConsumer => 1013,
            CloseCause::Revoked | CloseCause::Unauthenticated => 4401,
            CloseCause::PeerClosed | CloseCause::Io => return None,
        })
    }

    /// A stable name, also sent as the close frame's reason text.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Shutdown => "shutdown",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::ProtocolError => "protocol_error",
            CloseCause::InvalidUtf8 => "invalid_utf8",
            CloseCause::PolicyViolation => "policy_violation",
            CloseCause::MessageTooBig => "message_too_big",
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::Revoked => "revoked",
            CloseCause::Unauthenticated => "unauthenticated",
            CloseCause::PeerClosed => "peer_closed",
            CloseCause::Io => "io",
        }
    }

    /// The cause of a pump's end; `read_error` classifies the transport's read errors.
    pub(crate) fn of<E>(end: &PumpEnd<E>, read_error: impl Fn(&E) -> CloseCause) -> CloseCause {
        match end {
            PumpEnd::Closed(reason) => match reason {
                CloseReason::Shutdown => CloseCause::Shutdown,
                CloseReason::SlowConsumer => CloseCause::SlowConsumer,
                CloseReason::Revoked => CloseCause::Revoked,
                // `CloseReason` may grow; anything the engine objects to is a policy matter.
                _ => CloseCause::PolicyViolation,
            },
            PumpEnd::PeerClosed => CloseCause::PeerClosed,
            PumpEnd::IdleTimeout => CloseCause::IdleTimeout,
            PumpEnd::ReadError(e) => read_error(e),
            PumpEnd::WriteError(_) => CloseCause::Io,
        }
    }

    /// What a tungstenite read error means for the peer.
    pub(crate) fn of_read_error(e: &WsError) -> CloseCause {
        use tokio_tungstenite::tungstenite::error::ProtocolError;
        match e {
            WsError::Capacity(_) => CloseCause::MessageTooBig,
            WsError::Utf8(_) => CloseCause::InvalidUtf8,
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => CloseCause::Io,
            WsError::Protocol(_) | WsError::AttackAttempt => CloseCause::ProtocolError,
            _ => CloseCause::Io,
        }
    }
}

/// The read half, as the pump sees it: text is JSON, binary is postcard.
pub(crate) struct WsReader<S> {
    pub(crate) inner: SplitStream<WebSocketStream<S>>,
}

impl<S> FrameReader for WsReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    type Error = WsError;

    async fn read(&mut self) -> Result<Option<Inbound>, WsError> {
        // `StreamExt::next` on a WebSocketStream is cancel-safe, as the pump requires.
        {
            match self.inner.next().await {
                None => Ok(None),
                Some(Err(e)) => Err(e),
                Some(Ok(msg)) => Ok(match msg {
                    Message::Text(t) => Some(Inbound::Frame {
                        codec: Codec::Json,
                        bytes: Bytes::from(t),
                    }),
                    Message::Binary(b) => Some(Inbound::Frame {
                        codec: Codec::Postcard,
                        bytes: b,
                    }),
                    // tungstenite has already queued the reply to a close.
                    Message::Close(_) => None,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Some(Inbound::Alive),
                }),
            }
        }
    }
}

/// The write half.
pub(crate) struct WsWriter<S> {
    pub(crate) inner: SplitSink<WebSocketStream<S>, Message>,
}

impl<S> FrameWriter for WsWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    type Error = WsError;

    async fn feed(&mut self, codec: Codec, bytes: Bytes) -> Result<(), WsError> {
        {
            let msg = match codec {
                // The JSON codec only produces UTF-8; the check is a scan, not a copy, and
                // the bytes stay shared with every other recipient of the frame.
                Codec::Json => Message::Text(
                    Utf8Bytes::try_from(bytes).map_err(|e| WsError::Utf8(e.to_string()))?,
                ),
                Codec::Postcard => Message::Binary(bytes),
            };
            // `feed`, not `send`: no flush per frame; the pump flushes once per batch.
            self.inner.feed(msg).await
        }
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), WsError>> + Send {
        self.inner.flush()
    }

    fn probe(&mut self) -> impl Future<Output = Result<(), WsError>> + Send {
        self.inner.feed(Message::Ping(Bytes::new()))
    }
}

/// Says goodbye: sends our close frame (or flushes tungstenite's reply to the peer's), then
/// half-closes and reads until the peer's end of stream, all within `timeout`.
///
/// Why read until EOF: closing a TCP socket with unread input makes the kernel send a reset,
/// and a reset can destroy our close frame in the peer's receive buffer before the peer reads
/// it — a client that sent an oversized message would then see "connection reset" instead of
/// 1009. Draining first (a lingering close) lets the frame arrive. Sending our FIN first also
/// leaves TIME_WAIT on the server's side, as RFC 6455 §7.1.1 asks.
pub(crate) async fn goodbye<S>(ws: WebSocketStream<S>, cause: CloseCause, timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ws = ws;
    let _ = tokio::time::timeout(timeout, async move {
        match cause.code() {
            Some(code) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: Utf8Bytes::from_static(cause.as_str()),
                };
                let _ = ws.close(Some(frame)).await;
            }
            None if cause == CloseCause::PeerClosed => {
                // Writes the close reply tungstenite queued when the peer's close arrived.
                let _ = ws.close(None).await;
            }
            None => return,
        }
        let mut io = ws.into_inner();
        let _ = io.shutdown().await;
        let mut sink = [0u8; 512];
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
