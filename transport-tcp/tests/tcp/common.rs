//! Test harness: a real server on 127.0.0.1:0 over the in-memory store (optionally with the
//! WebSocket transport on the same engine), a binary client and a line client. Every wait has
//! a timeout, and the timeouts are safety nets for a broken test, never a way to let something
//! happen.
#![allow(unreachable_pub, dead_code)]

use bytes::Bytes;
use chat_core::protocol::{ClientFrame, Hello, HelloAuth, PROTOCOL_VERSION, ServerFrame};
use chat_core::{Codec, Engine, Identity, Limits, Request, Response, RoomId, RoomKind, Timestamp};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use transport_tcp::{TcpConfig, TcpServer};

/// The safety net for any single wait.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Guests enabled, as on the development server.
pub fn guest_limits() -> Limits {
    Limits {
        allow_guests: true,
        ..Limits::default()
    }
}

pub struct Harness {
    pub engine: Engine,
    pub server: TcpServer,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), transport_tcp::Error>>>,
    ws: Option<(oneshot::Sender<()>, SocketAddr)>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(TcpConfig::default(), guest_limits()).await
    }

    pub async fn start_with(config: TcpConfig, limits: Limits) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Harness::start_on(listener, config, limits).await
    }

    pub async fn start_on(listener: TcpListener, config: TcpConfig, limits: Limits) -> Harness {
        let engine = Engine::builder(Arc::new(chat_store::MemoryStore::new()))
            .limits(limits)
            .build();
        Harness::serve(engine, listener, config)
    }

    pub fn serve(engine: Engine, listener: TcpListener, config: TcpConfig) -> Harness {
        let server = TcpServer::new(engine.clone(), config).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let s = server.clone();
        let task = tokio::spawn(async move {
            s.serve(listener, async {
                let _ = stopped.await;
            })
            .await
        });
        Harness {
            engine,
            server,
            addr,
            stop: Some(stop),
            task: Some(task),
            ws: None,
        }
    }

    /// Starts transport-ws's server on the same engine; returns its address.
    pub async fn start_ws(&mut self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let ws =
            transport_ws::WsServer::new(self.engine.clone(), transport_ws::WsConfig::default())
                .unwrap();
        tokio::spawn(async move {
            ws.serve(listener, async {
                let _ = stopped.await;
            })
            .await
        });
        self.ws = Some((stop, addr));
        addr
    }

    /// A user created in the store (no password hashing) and a fresh token for it.
    pub async fn user(&self, name: &str) -> (Identity, String) {
        let u = self
            .engine
            .store()
            .create_user(name, None, false, Timestamp::now())
            .await
            .unwrap();
        let token = self.engine.accounts().issue_token(u.id).await.unwrap();
        (Identity::of(&u), token.as_str().to_string())
    }

    /// A binary client signed in with a token.
    pub async fn binary(&self, token: &str) -> BinClient {
        let mut c = BinClient::connect(self.addr).await;
        let w = c.hello(HelloAuth::Token(token.to_string())).await;
        assert!(matches!(w.frame, ServerFrame::Welcome { .. }), "{w:?}");
        c
    }

    /// A line client signed in as a guest; the sign-in output has been read.
    pub async fn line(&self, nick: &str) -> LineClient {
        let mut c = LineClient::connect(self.addr).await;
        c.send(&format!("/nick {nick}")).await;
        c.expect(&format!("* signed in as {nick}")).await;
        // The rooms summary that follows sign-in.
        c.expect_prefix("* you are in no rooms yet").await;
        c
    }

    /// Resolves the shutdown future and waits for `serve` to return.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("serve returns after shutdown")
                .unwrap()
                .unwrap();
        }
    }

    /// Waits until `cond` holds, for conditions only the server can observe (a counter).
    pub async fn until(&self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never happened: {what}; {:?}",
                self.server.stats()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A room's latest seq, from the store.
    pub async fn latest(&self, room: RoomId) -> u64 {
        self.engine.store().latest_seq(room).await.unwrap().0
    }
}

/// Encodes a request as one binary frame: length prefix and postcard.
pub fn frame(id: Option<u64>, frame: ClientFrame) -> Vec<u8> {
    let payload = Codec::Postcard.encode_request(&Request { id, frame });
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

pub fn hello(auth: HelloAuth) -> ClientFrame {
    ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        auth: Some(auth),
    })
}

/// A binary-mode client: postcard in 4-byte length-prefixed frames.
pub struct BinClient {
    pub io: Framed<TcpStream, LengthDelimitedCodec>,
    next_id: u64,
    backlog: VecDeque<Response>,
}

pub fn client_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(32 * 1024 * 1024)
        .new_codec()
}

impl BinClient {
    pub async fn connect(addr: SocketAddr) -> BinClient {
        BinClient::over(TcpStream::connect(addr).await.unwrap())
    }

    pub fn over(tcp: TcpStream) -> BinClient {
        BinClient {
            io: Framed::new(tcp, client_codec()),
            next_id: 1,
            backlog: VecDeque::new(),
        }
    }

    /// A connection whose receive buffer is tiny, so that a client that stops reading is
    /// noticed after kilobytes rather than megabytes.
    pub async fn connect_small_window(addr: SocketAddr) -> BinClient {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        BinClient::over(socket.connect(addr).await.unwrap())
    }

    pub async fn hello(&mut self, auth: HelloAuth) -> Response {
        self.request(hello(auth)).await
    }

    pub async fn send(&mut self, id: Option<u64>, f: ClientFrame) {
        let bytes = Codec::Postcard.encode_request(&Request { id, frame: f });
        self.io.send(bytes).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io
            .get_mut()
            .write_all(bytes)
            .await
            .expect("the server is reading");
    }

    /// The next frame (queued ones first); `None` at the end of the stream.
    pub async fn try_next(&mut self) -> Option<Response> {
        if let Some(r) = self.backlog.pop_front() {
            return Some(r);
        }
        let got = tokio::time::timeout(PATIENCE, self.io.next())
            .await
            .expect("nothing arrived");
        match got {
            Some(Ok(bytes)) => Some(Codec::Postcard.decode_response(&bytes).unwrap()),
            Some(Err(_)) | None => None,
        }
    }

    /// The next frame that is not a keepalive `pong` without an id.
    pub async fn next(&mut self) -> Response {
        loop {
            let r = self.try_next().await.expect("the connection ended");
            if !(r.id.is_none() && r.frame == ServerFrame::Pong) {
                return r;
            }
        }
    }

    /// Sends a request with a fresh id; returns its reply and keeps other frames for `next`.
    pub async fn request(&mut self, f: ClientFrame) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        self.send(Some(id), f).await;
        let mut skipped = Vec::new();
        let reply = loop {
            let got = tokio::time::timeout(PATIENCE, self.io.next())
                .await
                .expect("no reply arrived")
                .expect("the connection ended")
                .unwrap();
            let r = Codec::Postcard.decode_response(&got).unwrap();
            if r.id == Some(id) {
                break r;
            }
            skipped.push(r);
        };
        self.backlog.extend(skipped);
        reply
    }

    /// `request`, failing the test on an error reply.
    pub async fn ok(&mut self, f: ClientFrame) -> ServerFrame {
        let what = format!("{f:?}");
        let r = self.request(f).await;
        assert!(
            !matches!(r.frame, ServerFrame::Error { .. }),
            "{what} failed: {r:?}"
        );
        r.frame
    }

    pub async fn create_room(&mut self, name: &str) -> RoomId {
        match self
            .ok(ClientFrame::CreateRoom {
                name: name.into(),
                kind: RoomKind::Public,
            })
            .await
        {
            ServerFrame::Room { room } => room.id,
            other => panic!("{other:?}"),
        }
    }

    pub async fn subscribe(&mut self, room: RoomId) {
        self.ok(ClientFrame::Subscribe {
            room,
            since_seq: None,
        })
        .await;
    }

    pub async fn say(&mut self, room: RoomId, body: &str) -> u64 {
        match self
            .ok(ClientFrame::Send {
                room,
                body: body.into(),
                client_msg_id: None,
            })
            .await
        {
            ServerFrame::Sent { seq, .. } => seq.0,
            other => panic!("{other:?}"),
        }
    }

    /// Reads until a `message` arrives; returns (sender, body).
    pub async fn message(&mut self) -> (String, String) {
        loop {
            if let ServerFrame::Message(e) = self.next().await.frame {
                return (e.sender_name, e.body);
            }
        }
    }

    /// Reads until the end of the stream; returns every frame.
    pub async fn until_closed(&mut self) -> Vec<Response> {
        let mut out: Vec<Response> = self.backlog.drain(..).collect();
        loop {
            let got = tokio::time::timeout(PATIENCE, self.io.next())
                .await
                .expect("the connection was not closed");
            match got {
                Some(Ok(bytes)) => out.push(Codec::Postcard.decode_response(&bytes).unwrap()),
                Some(Err(_)) | None => return out,
            }
        }
    }

    /// Expects an error frame (the last one before the close) and the end of the stream.
    pub async fn closed_with_error(&mut self) -> (Option<u64>, chat_core::ErrorCode, String) {
        let frames = self.until_closed().await;
        let last = frames
            .iter()
            .rev()
            .find(|r| !(r.id.is_none() && r.frame == ServerFrame::Pong))
            .unwrap_or_else(|| panic!("no frame before the close: {frames:?}"));
        match &last.frame {
            ServerFrame::Error { code, message } => (last.id, *code, message.clone()),
            other => panic!("expected an error frame last, got {other:?}"),
        }
    }
}

/// A line-mode client, as `nc` would be.
pub struct LineClient {
    pub read: BufReader<OwnedReadHalf>,
    pub write: OwnedWriteHalf,
    /// Every line received so far, for failure messages.
    pub seen: Vec<String>,
}

impl LineClient {
    pub async fn connect(addr: SocketAddr) -> LineClient {
        LineClient::over(TcpStream::connect(addr).await.unwrap())
    }

    pub fn over(tcp: TcpStream) -> LineClient {
        let (read, write) = tcp.into_split();
        LineClient {
            read: BufReader::new(read),
            write,
            seen: Vec::new(),
        }
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    /// The next line without its `\r\n`; `None` at the end of the stream.
    pub async fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(PATIENCE, self.read.read_until(b'\n', &mut buf))
            .await
            .unwrap_or_else(|_| panic!("no line arrived; seen so far: {:#?}", self.seen))
            .ok()?;
        if n == 0 {
            return None;
        }
        let text = String::from_utf8(buf).expect("the server writes UTF-8");
        let line = text
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("a line without \\r\\n: {text:?}"))
            .to_string();
        self.seen.push(line.clone());
        Some(line)
    }

    pub async fn line(&mut self) -> String {
        let seen = self.seen.clone();
        self.try_line()
            .await
            .unwrap_or_else(|| panic!("the connection ended; seen: {seen:#?}"))
    }

    /// Reads until this exact line; returns the lines skipped.
    pub async fn expect(&mut self, want: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let line = self.line().await;
            if line == want {
                return skipped;
            }
            skipped.push(line);
        }
    }

    /// Reads until a line starting with `prefix`; returns it.
    pub async fn expect_prefix(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line().await;
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Every line until the server closes the connection.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = self.try_line().await {
            out.push(line);
        }
        out
    }

    /// The raw bytes until the server closes the connection.
    pub async fn raw_until_closed(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(PATIENCE, self.read.read_to_end(&mut out))
            .await
            .expect("the connection was not closed")
            .ok();
        out
    }
}

/// A tiny deterministic PRNG (xorshift64*), so that "random" inputs are reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub fn bytes(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

/// A line with the token a new guest is shown ("… sign in with /token T …") replaced by
/// `<token>`: tokens are random, the rest of a transcript is not.
pub fn mask_token(line: &str) -> String {
    const AT: &str = "sign in with /token ";
    match line.split_once(AT) {
        Some((before, rest)) => {
            let after = rest.split_once(' ').map_or("", |(_, after)| after);
            format!("{before}{AT}<token> {after}")
        }
        None => line.to_string(),
    }
}
