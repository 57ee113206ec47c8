//! Test harness: a real server on 127.0.0.1:0 over the in-memory store, and a JSON client on
//! tokio-tungstenite. Every wait has a timeout, and the timeouts are safety nets for a broken
//! test, never a way to let something happen.
#![allow(unreachable_pub, dead_code)]

use chat_core::{Engine, Identity, Limits, Timestamp};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use transport_ws::{WsConfig, WsServer};

/// The safety net for any single wait.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct Harness {
    pub engine: Engine,
    pub server: WsServer,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), transport_ws::Error>>>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(WsConfig::default(), Limits::default()).await
    }

    pub async fn start_with(config: WsConfig, limits: Limits) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Harness::start_on(listener, config, limits).await
    }

    pub async fn start_on(listener: TcpListener, config: WsConfig, limits: Limits) -> Harness {
        let engine = Engine::builder(Arc::new(chat_store::MemoryStore::new()))
            .limits(limits)
            .build();
        let server = WsServer::new(engine.clone(), config).unwrap();
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
        }
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

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    pub fn request(&self, query: &str) -> Request {
        self.url(query).into_client_request().unwrap()
    }

    /// Connects with `?token=`.
    pub async fn connect(&self, token: &str) -> Client {
        self.try_connect(self.request(&format!("?token={token}")))
            .await
            .unwrap_or_else(|e| panic!("connect failed: {e}"))
    }

    pub async fn try_connect(&self, req: Request) -> Result<Client, WsError> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        Client::handshake(req, tcp).await
    }

    /// A connection whose client-side receive buffer is tiny, so that a client that stops
    /// reading is noticed after kilobytes rather than megabytes.
    pub async fn connect_small_window(&self, token: &str) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        Client::handshake(self.request(&format!("?token={token}")), tcp)
            .await
            .unwrap()
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

    /// Waits until `cond` holds, checking after every scheduling round. For conditions only
    /// the server can observe (a counter), bounded by the safety net.
    pub async fn until(&self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never happened: {what}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
    pub response: Response,
    next_id: u64,
    backlog: VecDeque<Value>,
}

impl Client {
    pub async fn handshake(req: Request, tcp: TcpStream) -> Result<Client, WsError> {
        let (ws, response) = tokio_tungstenite::client_async(req, tcp).await?;
        Ok(Client {
            ws,
            response,
            next_id: 1,
            backlog: VecDeque::new(),
        })
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next message of any kind except pings and pongs.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            let m = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("nothing arrived");
            match m {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next JSON frame (queued ones first).
    pub async fn next(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        match self.next_message().await {
            Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Sends a request with a fresh id; returns its reply and keeps other frames for `next`.
    pub async fn request(&mut self, mut v: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        v["id"] = json!(id);
        self.send(v).await;
        let mut skipped = Vec::new();
        let reply = loop {
            let f = match self.next_message().await {
                Some(Message::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
                other => panic!("expected a text frame, got {other:?}"),
            };
            if f["id"] == json!(id) {
                break f;
            }
            skipped.push(f);
        };
        self.backlog.extend(skipped);
        reply
    }

    /// The frames `request` skipped and nobody has read yet.
    pub fn take_backlog(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }

    /// `request`, failing the test on an error reply.
    pub async fn ok(&mut self, v: Value) -> Value {
        let what = v.to_string();
        let reply = self.request(v).await;
        assert_ne!(reply["type"], "error", "{what} failed: {reply}");
        reply
    }

    /// Reads (queued frames first) until a frame of this type arrives; drops the others.
    pub async fn expect(&mut self, ty: &str) -> Value {
        loop {
            let f = self.next().await;
            if f["type"] == ty {
                return f;
            }
        }
    }

    /// Reads until the server's close frame; `None` if the stream ends without one.
    pub async fn close_frame(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("the connection was not closed")
            {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The close code the server ended the connection with.
    pub async fn close_code(&mut self) -> Option<u16> {
        self.close_frame().await.map(|f| u16::from(f.code))
    }

    pub async fn create_room(&mut self, name: &str, kind: &str) -> u64 {
        let r = self
            .ok(json!({"type": "create_room", "name": name, "kind": kind}))
            .await;
        r["room"]["id"].as_u64().unwrap()
    }

    pub async fn subscribe(&mut self, room: u64) -> Value {
        self.ok(json!({"type": "subscribe", "room": room})).await
    }

    pub async fn say(&mut self, room: u64, body: &str) -> u64 {
        let r = self
            .ok(json!({"type": "send", "room": room, "body": body}))
            .await;
        assert_eq!(r["type"], "sent", "{r}");
        r["seq"].as_u64().unwrap()
    }

    /// Reads (queued frames first) until a `message` arrives; returns (seq, body).
    pub async fn message(&mut self) -> (u64, String) {
        let m = self.expect("message").await;
        (
            m["seq"].as_u64().unwrap(),
            m["body"].as_str().unwrap().to_string(),
        )
    }
}

/// The HTTP status and JSON body of a refused handshake.
pub fn refusal(e: WsError) -> (u16, Value, Response) {
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap())
                .unwrap_or(Value::Null);
            let (parts, _) = resp.into_parts();
            (status, body, Response::from_parts(parts, None))
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

pub fn binary(bytes: impl Into<Bytes>) -> Message {
    Message::Binary(bytes.into())
}
