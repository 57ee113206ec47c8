//! The TCP transport next to HTTP: a person at `nc` (line mode) and a web user chat in one
//! room of one server.

use crate::common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// Reads lines until one contains `needle`; fails after 10 s (a safety net, not a wait).
async fn line_with(lines: &mut Lines<BufReader<OwnedReadHalf>>, needle: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read")
                .expect("the server closed the connection");
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line containing {needle:?}"))
}

#[tokio::test]
async fn a_line_mode_user_and_a_web_user_chat_in_one_room() {
    let s = start_with_tcp(&[]).await;
    let alice = s.register("alice").await;
    s.register("bob").await;
    let (_, room) = s
        .post(
            "/api/rooms",
            Some(&alice),
            json!({"name": "lobby", "kind": "public"}),
        )
        .await;
    let room = room["room"]["id"].as_u64().unwrap();

    let tcp = TcpStream::connect(s.server.tcp_addr().expect("tcp is on"))
        .await
        .unwrap();
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read).lines();
    write
        .write_all(b"/login bob correct horse\n/join lobby\n")
        .await
        .unwrap();
    line_with(&mut lines, "lobby").await;

    // Web -> terminal.
    let (status, _) = s
        .post(
            &format!("/api/rooms/{room}/messages"),
            Some(&alice),
            json!({"body": "hi from the browser"}),
        )
        .await;
    assert!(status.is_success(), "{status}");
    let got = line_with(&mut lines, "hi from the browser").await;
    assert_eq!(got, "[lobby] alice: hi from the browser");

    // Terminal -> web: the line is stored in the room the web user reads.
    write.write_all(b"hello from nc\n").await.unwrap();
    line_with(&mut lines, "bob: hello from nc").await;
    let (_, history) = s
        .get(&format!("/api/rooms/{room}/history"), Some(&alice))
        .await;
    let bodies: Vec<&str> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["hi from the browser", "hello from nc"]);
    s.stop().await;
}

#[tokio::test]
async fn tcp_and_http_sign_ins_share_one_budget_per_address() {
    let s = start_with_tcp(&["--auth-attempts-per-minute", "3"]).await;
    // Attempts 1 and 2, over HTTP: a registration and a wrong password.
    s.register("bob").await;
    let login = |password: &str| json!({"username": "bob", "password": password});
    let wrong = s.post("/api/login", None, login("wrong horse")).await;
    assert_error(&wrong, 401, "invalid_credentials");

    // Attempt 3, over TCP line mode; then the budget is spent, and the right password is
    // refused without being tried, and the connection closed.
    let tcp = TcpStream::connect(s.server.tcp_addr().expect("tcp is on"))
        .await
        .unwrap();
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"/login bob wrong horse\n").await.unwrap();
    line_with(&mut lines, "! invalid username or password").await;
    write
        .write_all(b"/login bob correct horse\n")
        .await
        .unwrap();
    let rest = tokio::time::timeout(PATIENCE, async {
        let mut rest = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read") {
            rest.push(line);
        }
        rest
    })
    .await
    .expect("the server closes the connection");
    assert_eq!(
        rest,
        ["! too many sign-in attempts from your address; try again later"]
    );

    // HTTP sees the same spent budget.
    let refused = s.post("/api/login", None, login("correct horse")).await;
    assert_error(&refused, 429, "rate_limited");
    s.stop().await;
}
