//! Starting a server and talking to it.

use chat_server::{Config, Server};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen at once before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) struct TestServer {
    pub(crate) server: Server,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

/// Like [`start`], with the TCP transport on a free loopback port too.
pub(crate) async fn start_with_tcp(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "chat-server",
        "--http-addr",
        "127.0.0.1:0",
        "--tcp-addr",
        "127.0.0.1:0",
        "--memory",
    ];
    args.extend_from_slice(extra);
    start_with(&args).await
}

/// A server on a free loopback port, in memory, plus `extra` flags.
pub(crate) async fn start(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "chat-server",
        "--http-addr",
        "127.0.0.1:0",
        "--no-tcp",
        "--memory",
    ];
    args.extend_from_slice(extra);
    start_with(&args).await
}

pub(crate) async fn start_with(args: &[&str]) -> TestServer {
    let config = Config::try_from_args(args).expect("valid flags");
    let server = Server::start(config).await.expect("server starts");
    let base = format!("http://{}", server.http_addr());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestServer { server, base, http }
}

/// A signed-in user: the bearer token is also the session cookie's value.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: u64,
    pub(crate) token: String,
}

impl User {
    pub(crate) fn cookie(&self) -> String {
        format!("chat_token={}", self.token)
    }
}

impl TestServer {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.server.http_addr()
    }

    pub(crate) async fn register(&self, name: &str) -> User {
        let (status, body) = self
            .post(
                "/api/register",
                None,
                serde_json::json!({"username": name, "password": "correct horse"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        User {
            id: body["user"]["id"].as_u64().unwrap(),
            token: body["token"].as_str().unwrap().to_string(),
        }
    }

    /// POSTs JSON, authenticated by the session cookie when a user is given.
    pub(crate) async fn post(
        &self,
        path: &str,
        user: Option<&User>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(u) = user {
            req = req.header("Cookie", u.cookie());
        }
        decode(req.send().await.unwrap()).await
    }

    /// A group room created by `owner` through the API; its id.
    pub(crate) async fn create_room(&self, owner: &User, name: &str) -> u64 {
        let (status, room) = self
            .post("/api/rooms", Some(owner), serde_json::json!({"name": name}))
            .await;
        assert!(status.is_success(), "create_room {name}: {status} {room}");
        room["room"]["id"].as_u64().expect("a room id")
    }

    pub(crate) async fn get(&self, path: &str, user: Option<&User>) -> (StatusCode, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(u) = user {
            req = req.header("Cookie", u.cookie());
        }
        decode(req.send().await.unwrap()).await
    }

    /// A WebSocket on `path`, authenticated by the user's cookie, with a same-origin `Origin`
    /// as a browser would send.
    pub(crate) async fn ws(&self, path: &str, user: &User) -> Ws {
        self.ws_with(path, &[("Cookie", user.cookie())])
            .await
            .expect("upgrade")
    }

    pub(crate) async fn ws_with(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Ws, WsError> {
        let mut req = format!("ws://{}{path}", self.addr())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(&self.base).unwrap());
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Ws(ws))
    }

    pub(crate) async fn stop(self) {
        self.server.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.server.wait())
            .await
            .expect("the server stops");
    }
}

pub(crate) async fn decode(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Asserts a JSON error with this status and code, and a human-readable message.
#[track_caller]
pub(crate) fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}

pub(crate) struct Ws(pub(crate) WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Ws {
    pub(crate) async fn send(&mut self, frame: Value) {
        self.0.send(Message::text(frame.to_string())).await.unwrap();
    }

    /// The next protocol frame, failing after [`PATIENCE`].
    pub(crate) async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.0.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next frame of this type, skipping others (events interleave with replies).
    pub(crate) async fn next_of(&mut self, ty: &str) -> Value {
        loop {
            let f = self.next().await;
            if f["type"] == ty {
                return f;
            }
        }
    }

    /// Sends a request with an id and returns its reply.
    pub(crate) async fn request(&mut self, id: u64, mut frame: Value) -> Value {
        frame["id"] = id.into();
        self.send(frame).await;
        loop {
            let f = self.next().await;
            if f["id"] == id {
                return f;
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub(crate) async fn close_code(&mut self) -> Option<CloseCode> {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.0.next())
                .await
                .expect("the close in time");
            match msg {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}
