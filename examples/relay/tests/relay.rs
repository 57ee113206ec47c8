//! The README's session, over real sockets: health, register, topics, publish for everyone
//! and for one user, ping, unregister, unknown ids, CORS.

use futures_util::{SinkExt, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Safety net only: every wait below ends when the expected frame arrives.
const TIMEOUT: Duration = Duration::from_secs(10);

struct Relay {
    base: String,
    http: Client,
}

impl Relay {
    async fn start() -> Relay {
        let engine = chat_core::Engine::new(Arc::new(chat_store::MemoryStore::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(relay::run(listener, engine));
        Relay {
            base,
            http: Client::new(),
        }
    }

    /// `POST /register` with `{"user_id": n}`: the WebSocket URL.
    async fn register(&self, user_id: u64) -> String {
        let res = self.post("/register", json!({ "user_id": user_id })).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["url"].as_str().unwrap().to_string()
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        let url = format!("{}{path}", self.base);
        self.http.post(url).json(&body).send().await.unwrap()
    }

    async fn publish(&self, body: Value) {
        assert_eq!(self.post("/publish", body).await.status(), StatusCode::OK);
    }

    async fn delete(&self, id: &str) -> StatusCode {
        let url = format!("{}/register/{id}", self.base);
        self.http.delete(url).send().await.unwrap().status()
    }
}

async fn connect(url: &str) -> Ws {
    connect_async(url).await.unwrap().0
}

/// The next frame that is not a ping or pong.
async fn next(ws: &mut Ws) -> Option<Message> {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("nothing arrived in time")
}

async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Some(Message::Text(t)) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Sends a topic choice and waits for its confirmation.
async fn choose(ws: &mut Ws, topics: &[&str]) {
    let choice = json!({ "topics": topics });
    ws.send(Message::text(choice.to_string())).await.unwrap();
    let reply: Value = serde_json::from_str(&next_text(ws).await).unwrap();
    assert_eq!(reply, choice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health() {
    let relay = Relay::start().await;
    let res = relay
        .http
        .get(format!("{}/health", relay.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_gives_an_unguessable_url_on_the_requested_host() {
    let relay = Relay::start().await;
    let (a, b) = (relay.register(1).await, relay.register(1).await);
    let prefix = format!("{}/ws/", relay.base.replace("http://", "ws://"));
    let id = a.strip_prefix(&prefix).expect(&a);
    let url_safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    assert!(
        id.len() == 43 && id.chars().all(url_safe),
        "256 random bits: {id}"
    );
    assert_ne!(a, b, "one user may register several clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_session() {
    let relay = Relay::start().await;
    let url = relay.register(1).await;
    let mut ws = connect(&url).await;

    // Default topic: cats.
    relay
        .publish(json!({ "topic": "cats", "message": "are awesome" }))
        .await;
    assert_eq!(next_text(&mut ws).await, "are awesome");

    // `ping` is ignored: the next frame is the confirmation of the topic choice.
    ws.send(Message::text("ping")).await.unwrap();
    ws.send(Message::text(r#"{"topics": ["cats", "dogs"]}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, r#"{"topics":["cats","dogs"]}"#);
    relay
        .publish(json!({ "topic": "dogs", "user_id": 1, "message": "are loyal" }))
        .await;
    assert_eq!(next_text(&mut ws).await, "are loyal");
    relay
        .publish(json!({ "topic": "cats", "user_id": 1, "message": "are awesome" }))
        .await;
    assert_eq!(next_text(&mut ws).await, "are awesome");

    // Something that is neither a topic choice nor ping gets an error, and nothing else.
    ws.send(Message::text("hello?")).await.unwrap();
    assert!(next_text(&mut ws).await.contains("error"));

    // Unregistering closes the socket; the id is gone afterwards.
    let id = url.rsplit('/').next().unwrap();
    assert_eq!(relay.delete(id).await, StatusCode::OK);
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.reason, "revoked"),
        other => panic!("expected the socket to close, got {other:?}"),
    }
    assert_eq!(relay.delete(id).await, StatusCode::NOT_FOUND);
    match connect_async(&url).await {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_right_clients_receive() {
    let relay = Relay::start().await;
    let mut one_cats = connect(&relay.register(1).await).await; // user 1, default topic
    let mut one_dogs = connect(&relay.register(1).await).await; // user 1, second client
    choose(&mut one_dogs, &["dogs"]).await;
    let mut two = connect(&relay.register(2).await).await;
    choose(&mut two, &["cats", "dogs"]).await;

    // For user 1 only, on cats: only user 1's client that listens to cats.
    relay
        .publish(json!({ "topic": "cats", "user_id": 1, "message": "for one, cats" }))
        .await;
    // For user 1 only, on dogs: only user 1's other client.
    relay
        .publish(json!({ "topic": "dogs", "user_id": 1, "message": "for one, dogs" }))
        .await;
    // For a user with no client, and a topic nobody listens to: delivered to nobody.
    relay
        .publish(json!({ "topic": "cats", "user_id": 3, "message": "for three" }))
        .await;
    relay
        .publish(json!({ "topic": "birds", "message": "tweet" }))
        .await;
    // For everyone.
    relay
        .publish(json!({ "topic": "cats", "message": "cats for all" }))
        .await;
    relay
        .publish(json!({ "topic": "dogs", "message": "dogs for all" }))
        .await;

    // Each client's frames, in order: nothing it should not have got comes before the last.
    assert_eq!(next_text(&mut one_cats).await, "for one, cats");
    assert_eq!(next_text(&mut one_cats).await, "cats for all");
    assert_eq!(next_text(&mut one_dogs).await, "for one, dogs");
    assert_eq!(next_text(&mut one_dogs).await, "dogs for all");
    assert_eq!(next_text(&mut two).await, "cats for all");
    assert_eq!(next_text(&mut two).await, "dogs for all");

    // Switching topics drops the old ones.
    choose(&mut two, &["dogs"]).await;
    relay
        .publish(json!({ "topic": "cats", "message": "cats again" }))
        .await;
    relay
        .publish(json!({ "topic": "dogs", "message": "dogs again" }))
        .await;
    assert_eq!(next_text(&mut two).await, "dogs again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404() {
    let relay = Relay::start().await;
    assert_eq!(relay.delete("no-such-id").await, StatusCode::NOT_FOUND);
    let url = format!("{}/ws/no-such-id", relay.base.replace("http://", "ws://"));
    match connect_async(&url).await {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused() {
    let relay = Relay::start().await;
    let empty = relay
        .post("/publish", json!({ "topic": "cats", "message": " " }))
        .await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    let body: Value = empty.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error": "empty_body", "message": "message body is empty" })
    );
    let missing = relay.post("/publish", json!({ "topic": "cats" })).await;
    assert!(missing.status().is_client_error());
    let not_a_number = relay.post("/register", json!({ "user_id": "one" })).await;
    assert!(not_a_number.status().is_client_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_any_origin() {
    let relay = Relay::start().await;
    let res = relay
        .http
        .get(format!("{}/health", relay.base))
        .header("origin", "https://example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let preflight = relay
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/publish", relay.base))
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(
        preflight
            .headers()
            .contains_key("access-control-allow-methods")
    );
}
