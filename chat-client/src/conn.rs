//! One connection: establishing it (TCP or WebSocket, then `hello` → `welcome`), and moving
//! encoded frames over it. No chat logic; the driver decides what a frame or a drop means.

use crate::config::{Auth, ClientConfig, Transport, WsTokenPlacement};
use crate::error::ClientError;
use bytes::Bytes;
use chat_core::protocol::{
    ClientFrame, Hello, HelloAuth, PROTOCOL_VERSION, Request, Response, ServerFrame, UserInfo,
    WireLimits,
};
use chat_core::{Codec, SessionId};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The request id of the `hello`; the driver numbers its requests from 1.
pub(crate) const HELLO_ID: u64 = 0;

/// The subprotocols transport-ws recognises (`transport_ws::PROTOCOL_JSON` / `_POSTCARD`).
const SUBPROTOCOL_JSON: &str = "chat.v1.json";
const SUBPROTOCOL_POSTCARD: &str = "chat.v1.postcard";

/// WebSocket close codes with a meaning for the client (transport-ws README, "Close codes").
pub(crate) const CLOSE_REVOKED: u16 = 4401;
pub(crate) const CLOSE_POLICY: u16 = 1008;

/// What the `welcome` said. (`Debug` by hand: the token is a credential.)
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Welcome {
    pub(crate) session: SessionId,
    pub(crate) user: UserInfo,
    pub(crate) limits: WireLimits,
    /// A new guest's token, to sign in with from now on (its name is taken).
    pub(crate) token: Option<String>,
}

impl std::fmt::Debug for Welcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Welcome")
            .field("session", &self.session)
            .field("user", &self.user)
            .field("limits", &self.limits)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Welcome {
    /// Switches a guest's credentials to the token the server gave it, so that reconnecting
    /// signs in as the same guest rather than trying to claim the (now taken) name again.
    pub(crate) fn adopt_token(&mut self, cfg: &mut crate::ClientConfig) {
        if let (Some(token), crate::Auth::Guest(_)) = (self.token.take(), &cfg.auth) {
            cfg.auth = crate::Auth::Token(token);
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    /// The WebSocket close code, when the server sent a close frame.
    pub(crate) code: Option<u16>,
    /// The close reason text, or a description of the failure.
    pub(crate) reason: String,
}

impl Ended {
    fn new(reason: impl Into<String>) -> Ended {
        Ended {
            code: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self.code {
            Some(code) if self.reason.is_empty() => format!("closed by the server ({code})"),
            Some(_) => format!("closed by the server: {}", self.reason),
            None => self.reason.clone(),
        }
    }

    /// TCP has no close frame: before closing for a reason the client should know,
    /// transport-tcp sends an `error` frame without an id whose message starts with the
    /// reason and a colon (`revoked: the session was revoked`). This maps such a farewell to
    /// the WebSocket close code of the same reason, so both transports are handled alike.
    pub(crate) fn from_farewell(message: &str) -> Option<Ended> {
        let (reason, _) = message.split_once(':')?;
        let code = match reason {
            "revoked" => CLOSE_REVOKED,
            "policy_violation" => CLOSE_POLICY,
            "slow_consumer" => 1013,
            "shutdown" | "idle_timeout" => 1001,
            "server_full" | "too_many_connections" => 1013,
            "frame_too_large" => 1009,
            _ => return None,
        };
        Some(Ended {
            code: Some(code),
            reason: message.to_string(),
        })
    }
}

/// What one read produced.
#[derive(Debug)]
pub(crate) enum Incoming {
    Response(Response),
    /// A frame this build cannot decode (a newer server's frame type, or garbage). The id is
    /// recovered when possible so a waiting request can be failed rather than timed out.
    Undecodable {
        id: Option<u64>,
        error: String,
    },
    /// Transport-level traffic with no frame (WebSocket ping/pong, an empty TCP frame).
    Nothing,
    Ended(Ended),
}

/// Why a write failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// This request is too large; the connection is fine.
    TooLarge { size: usize, max: usize },
    /// The connection is broken.
    Broken(Ended),
}

enum Inner {
    Tcp(Framed<TcpStream, LengthDelimitedCodec>),
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// An open, authenticated connection.
pub(crate) struct Conn {
    inner: Inner,
    codec: Codec,
    max_request: usize,
}

impl Conn {
    /// Connects and authenticates: TCP connect or WebSocket handshake, then `hello` →
    /// `welcome`, all within `connect_timeout`.
    pub(crate) async fn open(cfg: &ClientConfig) -> Result<(Conn, Welcome), ClientError> {
        cfg.validate()?;
        match tokio::time::timeout(cfg.connect_timeout, Conn::open_inner(cfg)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Transport(format!(
                "no welcome within {:?}",
                cfg.connect_timeout
            ))),
        }
    }

    async fn open_inner(cfg: &ClientConfig) -> Result<(Conn, Welcome), ClientError> {
        let codec = cfg.wire_codec();
        let (inner, hello_auth) = match &cfg.transport {
            Transport::Tcp(addr) => {
                let tcp = TcpStream::connect(addr.as_str())
                    .await
                    .map_err(ClientError::Connect)?;
                let _ = tcp.set_nodelay(true);
                let framing = LengthDelimitedCodec::builder()
                    .length_field_length(4)
                    .big_endian()
                    .max_frame_length(cfg.max_response_bytes.max(cfg.max_request_bytes))
                    .new_codec();
                (Inner::Tcp(Framed::new(tcp, framing)), hello_auth(&cfg.auth))
            }
            Transport::Ws(url) => {
                let (ws, token_in_hello) = ws_connect(cfg, url).await?;
                let auth = match (&cfg.auth, token_in_hello) {
                    (Auth::Token(_), false) | (Auth::Transport, _) => None,
                    (auth, _) => hello_auth(auth),
                };
                (Inner::Ws(Box::new(ws)), auth)
            }
        };
        let mut conn = Conn {
            inner,
            codec,
            max_request: cfg.max_request_bytes,
        };
        let hello = Request {
            id: Some(HELLO_ID),
            frame: ClientFrame::Hello(Hello {
                version: PROTOCOL_VERSION,
                auth: hello_auth,
            }),
        };
        conn.feed(&hello).await.map_err(|e| match e {
            WriteError::TooLarge { size, max } => ClientError::RequestTooLarge { size, max },
            WriteError::Broken(end) => ClientError::Transport(end.describe()),
        })?;
        conn.flush()
            .await
            .map_err(|end| ClientError::Transport(end.describe()))?;
        // Anything before the reply to the hello is skipped, except a TCP server's farewell
        // (`server_full: ...`), which explains the close that follows. The whole exchange is
        // bounded by the caller's timeout.
        let mut farewell = None;
        loop {
            match conn.recv().await {
                Incoming::Response(Response {
                    id: Some(HELLO_ID),
                    frame,
                }) => {
                    return match frame {
                        ServerFrame::Welcome {
                            session,
                            user,
                            limits,
                            token,
                            ..
                        } => Ok((
                            conn,
                            Welcome {
                                session,
                                user,
                                limits,
                                token: token.map(chat_core::protocol::Secret::into_string),
                            },
                        )),
                        ServerFrame::Error { code, message } => {
                            Err(ClientError::Server { code, message })
                        }
                        other => Err(ClientError::Protocol(format!(
                            "expected welcome, got {other:?}"
                        ))),
                    };
                }
                Incoming::Ended(end) if end.code == Some(CLOSE_REVOKED) => {
                    return Err(ClientError::Closed(crate::CloseReason::AuthFailed {
                        code: chat_core::ErrorCode::Unauthenticated,
                        message: end.describe(),
                    }));
                }
                Incoming::Response(Response {
                    id: None,
                    frame: ServerFrame::Error { message, .. },
                }) => farewell = Some(message),
                Incoming::Ended(end) => {
                    let why = farewell.unwrap_or_else(|| end.describe());
                    return Err(ClientError::Transport(format!("{why} (during the hello)")));
                }
                Incoming::Undecodable {
                    id: Some(HELLO_ID),
                    error,
                } => {
                    return Err(ClientError::Protocol(format!(
                        "undecodable reply to hello: {error}"
                    )));
                }
                _ => {}
            }
        }
    }

    /// Buffers one request. Does not flush.
    pub(crate) async fn feed(&mut self, req: &Request) -> Result<(), WriteError> {
        let bytes = self.codec.encode_request(req);
        if bytes.len() > self.max_request {
            return Err(WriteError::TooLarge {
                size: bytes.len(),
                max: self.max_request,
            });
        }
        let res = match &mut self.inner {
            Inner::Tcp(framed) => framed.feed(bytes).await.map_err(|e| e.to_string()),
            Inner::Ws(ws) => {
                let msg = match self.codec {
                    Codec::Json => match Utf8Bytes::try_from(bytes) {
                        Ok(text) => Message::Text(text),
                        // The JSON codec only produces UTF-8; this cannot happen.
                        Err(e) => return Err(WriteError::Broken(Ended::new(e.to_string()))),
                    },
                    Codec::Postcard => Message::Binary(bytes),
                };
                ws.feed(msg).await.map_err(|e| e.to_string())
            }
        };
        res.map_err(|e| WriteError::Broken(Ended::new(format!("write failed: {e}"))))
    }

    /// Writes everything buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), Ended> {
        let res = match &mut self.inner {
            Inner::Tcp(framed) => SinkExt::<Bytes>::flush(framed)
                .await
                .map_err(|e| e.to_string()),
            Inner::Ws(ws) => SinkExt::<Message>::flush(ws)
                .await
                .map_err(|e| e.to_string()),
        };
        res.map_err(|e| Ended::new(format!("write failed: {e}")))
    }

    /// The next thing the server sent. Cancel-safe (it is a `Stream::next`).
    pub(crate) async fn recv(&mut self) -> Incoming {
        match &mut self.inner {
            Inner::Tcp(framed) => match framed.next().await {
                None => Incoming::Ended(Ended::new("the server closed the connection")),
                Some(Err(e)) => Incoming::Ended(Ended::new(format!("read failed: {e}"))),
                Some(Ok(frame)) if frame.is_empty() => Incoming::Nothing,
                Some(Ok(frame)) => decode(Codec::Postcard, &frame.freeze()),
            },
            Inner::Ws(ws) => match ws.next().await {
                None => Incoming::Ended(Ended::new("the server closed the connection")),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    Incoming::Ended(Ended::new("the server closed the connection"))
                }
                Some(Err(e)) => Incoming::Ended(Ended::new(format!("read failed: {e}"))),
                Some(Ok(Message::Text(text))) => decode(Codec::Json, text.as_ref()),
                Some(Ok(Message::Binary(bytes))) => decode(Codec::Postcard, &bytes),
                Some(Ok(Message::Close(frame))) => Incoming::Ended(match frame {
                    Some(f) => Ended {
                        code: Some(u16::from(f.code)),
                        reason: f.reason.to_string(),
                    },
                    None => Ended::new("the server closed the connection"),
                }),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    Incoming::Nothing
                }
            },
        }
    }

    /// Says goodbye (WebSocket close frame, TCP shutdown), within a short deadline.
    pub(crate) async fn close(mut self) {
        let bye = async {
            match &mut self.inner {
                Inner::Tcp(framed) => {
                    let _ = SinkExt::<Bytes>::flush(framed).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(framed.get_mut()).await;
                }
                Inner::Ws(ws) => {
                    let _ = WebSocketStream::close(ws, None).await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }
}

fn decode(codec: Codec, bytes: &[u8]) -> Incoming {
    match codec.decode_response(bytes) {
        Ok(resp) => Incoming::Response(resp),
        Err(e) => Incoming::Undecodable {
            id: codec.request_id_hint(bytes),
            error: e.to_string(),
        },
    }
}

fn hello_auth(auth: &Auth) -> Option<HelloAuth> {
    match auth {
        Auth::Token(t) => Some(HelloAuth::Token(t.clone())),
        Auth::Login { username, password } => Some(HelloAuth::Login {
            username: username.clone(),
            password: password.clone(),
        }),
        Auth::Guest(name) => Some(HelloAuth::Guest(name.clone())),
        Auth::Transport => None,
    }
}

/// The WebSocket handshake. Returns the stream, and whether a token must go in the `hello`.
async fn ws_connect(
    cfg: &ClientConfig,
    url: &str,
) -> Result<(WebSocketStream<TcpStream>, bool), ClientError> {
    // Errors name the URL as given: after the next step it may carry the token.
    let shown = url;
    let mut url = url.to_string();
    let mut token_in_hello = false;
    let mut bearer = None;
    if let Auth::Token(token) = &cfg.auth {
        match cfg.ws_token {
            WsTokenPlacement::Header => bearer = Some(token.clone()),
            WsTokenPlacement::Query => {
                let sep = if url.contains('?') { '&' } else { '?' };
                url = format!("{url}{sep}token={}", percent_encode(token));
            }
            WsTokenPlacement::Hello => token_in_hello = true,
        }
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Config(format!("bad WebSocket URL {shown:?}: {e}")))?;
    match request.uri().scheme_str() {
        Some("ws") => {}
        Some("wss") => {
            return Err(ClientError::Config(
                "wss:// is not supported by this build: connect to a plain ws:// endpoint \
                 (or a local TLS tunnel)"
                    .into(),
            ));
        }
        _ => return Err(ClientError::Config(format!("not a ws:// URL: {shown:?}"))),
    }
    let host = request
        .uri()
        .host()
        .ok_or_else(|| ClientError::Config(format!("no host in {shown:?}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = request.uri().port_u16().unwrap_or(80);
    let subprotocol = match cfg.codec {
        Codec::Json => SUBPROTOCOL_JSON,
        Codec::Postcard => SUBPROTOCOL_POSTCARD,
    };
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(subprotocol),
    );
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::Config("the token is not a valid header value".into()))?;
        headers.insert("authorization", value);
    }

    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(ClientError::Connect)?;
    let _ = tcp.set_nodelay(true);
    // tungstenite zero-fills `read_buffer_size` bytes of its buffer before every read of the
    // socket. Its default (128 KiB, sized for bulk transfer) made that memset a fifth of
    // chat-load's CPU time when receiving small chat frames; 8 KiB holds dozens of them per
    // read, and a larger frame still arrives whole (the buffer grows for it).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(cfg.max_response_bytes))
        .max_frame_size(Some(cfg.max_response_bytes));
    match tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config)).await {
        Ok((ws, _response)) => Ok((ws, token_in_hello)),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(ClientError::Refused {
                status,
                message: refusal_message(&body),
            })
        }
        Err(e) => Err(ClientError::Transport(format!("WebSocket handshake: {e}"))),
    }
}

/// transport-ws refuses with `{"error":"<code>","message":"<text>"}`; show the text.
fn refusal_message(body: &str) -> String {
    let body = body.trim();
    if let Some(start) = body.find("\"message\":\"") {
        let rest = &body[start + 11..];
        if let Some(end) = rest.find('"') {
            return rest[..end].to_string();
        }
    }
    body.chars().take(200).collect()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_bodies_are_reduced_to_their_message() {
        assert_eq!(
            refusal_message(r#"{"error":"unauthorized","message":"invalid token"}"#),
            "invalid token"
        );
        assert_eq!(refusal_message("  plain  "), "plain");
    }

    #[test]
    fn tokens_are_percent_encoded_in_queries() {
        assert_eq!(percent_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn requests_encode_in_the_wire_codec() {
        let req = Request {
            id: Some(7),
            frame: ClientFrame::Ping,
        };
        // The postcard bytes PROTOCOL.md documents for a ping with id 7.
        assert_eq!(&Codec::Postcard.encode_request(&req)[..], &[1, 7, 19]);
    }
}
