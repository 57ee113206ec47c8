//! The README's session, over real sockets: Alice and Bob chat, a reconnect gets the
//! history, `/` serves the page.

use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Safety net only: every wait below ends when the expected frame arrives.
const TIMEOUT: Duration = Duration::from_secs(10);

async fn start() -> String {
    let store = Arc::new(chat_store::MemoryStore::new());
    let engine = chat_core::Engine::new(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(dm::run(listener, engine));
    addr.to_string()
}

async fn connect(addr: &str, me: &str, to: &str) -> Ws {
    let url = format!("ws://{addr}/ws?user_id={me}&recipient_id={to}");
    connect_async(url).await.unwrap().0
}

/// The next text frame (pings and pongs skipped).
async fn next_text(ws: &mut Ws) -> String {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.next().await.expect("socket ended").unwrap() {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    })
    .await
    .expect("no text frame in time")
}

async fn say(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_and_bob_chat_and_a_reconnect_gets_the_history() {
    let addr = start().await;
    let mut alice = connect(&addr, "alice", "bob").await;
    let mut bob = connect(&addr, "bob", "alice").await;

    say(&mut alice, "Hello, Bob!").await;
    assert_eq!(next_text(&mut bob).await, "alice: Hello, Bob!");

    // Alice's own line is not echoed to her: the next thing she sees is Bob's reply.
    say(&mut bob, "Hi Alice!").await;
    assert_eq!(next_text(&mut alice).await, "bob: Hi Alice!");

    // Bob reconnects: the history comes first, both sides, in order; then live messages.
    bob.close(None).await.unwrap();
    let mut bob = connect(&addr, "bob", "alice").await;
    assert_eq!(next_text(&mut bob).await, "alice: Hello, Bob!");
    assert_eq!(next_text(&mut bob).await, "bob: Hi Alice!");
    say(&mut alice, "Welcome back").await;
    assert_eq!(next_text(&mut bob).await, "alice: Welcome back");

    // A second connection of Alice's sees what her first one sends (only the sender skips it).
    let mut alice2 = connect(&addr, "alice", "bob").await;
    for _ in 0..3 {
        next_text(&mut alice2).await; // the history
    }
    say(&mut alice, "from my laptop").await;
    assert_eq!(next_text(&mut alice2).await, "alice: from my laptop");
    assert_eq!(next_text(&mut bob).await, "alice: from my laptop");

    // An empty line is refused, in plain text.
    say(&mut bob, "").await;
    assert_eq!(next_text(&mut bob).await, "error: message body is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_are_private_to_their_pair() {
    let addr = start().await;
    let mut alice = connect(&addr, "alice", "bob").await;
    let mut carol = connect(&addr, "carol", "bob").await;
    let mut bob = connect(&addr, "bob", "alice").await;
    // To Bob, in the carol & bob room, which this socket of Bob's is not on. The error for the
    // empty line that follows says that "psst" has been handled.
    say(&mut carol, "psst").await;
    say(&mut carol, " ").await;
    assert!(next_text(&mut carol).await.starts_with("error: "));
    say(&mut alice, "one").await;
    assert_eq!(next_text(&mut bob).await, "alice: one");
    say(&mut bob, "two").await;
    assert_eq!(next_text(&mut alice).await, "bob: two"); // nothing of Carol's reached Alice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_before_the_upgrade() {
    let addr = start().await;
    for query in [
        "user_id=alice&recipient_id=alice",
        "user_id=alice",
        "user_id=a%20b&recipient_id=bob",
    ] {
        let url = format!("ws://{addr}/ws?{query}");
        let err = connect_async(url).await.expect_err(query);
        match err {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                assert_eq!(r.status(), 400, "{query}")
            }
            other => panic!("{query}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_at_the_root() {
    let addr = start().await;
    let res = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = res.text().await.unwrap();
    assert!(
        body.contains("<title>dm</title>") && body.contains("/ws?"),
        "{body}"
    );
}
