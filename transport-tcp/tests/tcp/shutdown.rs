//! Graceful shutdown: stop accepting, write what is queued, say so, close, within a deadline.

use crate::common::*;
use chat_core::protocol::{ClientFrame, HelloAuth, ServerFrame};
use chat_core::{Author, ErrorCode};
use tokio::net::TcpStream;

#[tokio::test]
async fn shutdown_drains_what_is_queued_then_says_so_in_each_mode() {
    let mut h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let mut alice = h.binary(&ta).await;
    let room = alice.create_room("lobby").await;
    alice.subscribe(room).await;
    let mut bob = h.line("bob").await;
    bob.send("/join lobby").await;
    bob.expect("* joined lobby; you are now talking in lobby")
        .await;
    // Not yet signed in, in each mode.
    let mut pending_line = LineClient::connect(h.addr).await;
    pending_line.send("/help").await;
    pending_line.expect_prefix("*   /quit").await;
    let mut pending_binary = BinClient::connect(h.addr).await;
    pending_binary.send_raw(&[0x00]).await;
    h.until("all four are accepted", |h| h.server.limiter().open() == 4)
        .await;

    // Queue a burst, then shut down at once: `publish` returns after the frames are in every
    // subscriber's queue, so all of them must still arrive before the goodbye.
    for i in 1..=200 {
        h.engine
            .publish(Author::System, room, format!("n{i}"), None)
            .await
            .unwrap();
    }
    let stop = tokio::spawn(async move {
        h.stop().await;
        h
    });

    let frames = alice.until_closed().await;
    let bodies: Vec<String> = frames
        .iter()
        .filter_map(|r| match &r.frame {
            ServerFrame::Message(e) => Some(e.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        bodies,
        (1..=200).map(|i| format!("n{i}")).collect::<Vec<_>>()
    );
    match &frames.last().unwrap().frame {
        ServerFrame::Error { code, message } => {
            assert_eq!(*code, ErrorCode::Internal);
            assert_eq!(message, "shutdown: the server is shutting down");
        }
        other => panic!("{other:?}"),
    }

    let lines = bob.until_closed().await;
    let said: Vec<&String> = lines.iter().filter(|l| l.starts_with("[lobby]")).collect();
    assert_eq!(said.len(), 200);
    assert_eq!(said[199], "[lobby] system: n200");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("! server shutting down")
    );

    assert_eq!(
        pending_line.until_closed().await.last().map(String::as_str),
        Some("! server shutting down")
    );
    // Not yet authenticated, the binary connection is closed too (with nothing to drain).
    let _ = pending_binary.until_closed().await;

    let h = tokio::time::timeout(PATIENCE, stop)
        .await
        .expect("serve returned")
        .unwrap();
    let stats = h.server.stats();
    assert_eq!(stats.open_binary + stats.open_line, 0);
    assert_eq!(h.engine.stats().sessions, 0);
    assert_eq!(h.server.limiter().open(), 0);
    // The listener is gone.
    assert!(TcpStream::connect(h.addr).await.is_err());
}

#[tokio::test]
async fn engine_shutdown_closes_tcp_sessions_too() {
    let mut h = Harness::start().await;
    let mut c = BinClient::connect(h.addr).await;
    c.hello(HelloAuth::Guest("g".into())).await;
    assert_eq!(c.ok(ClientFrame::Ping).await, ServerFrame::Pong);
    let mut l = h.line("l").await;
    h.engine.shutdown();
    let (_, _, message) = c.closed_with_error().await;
    assert!(message.starts_with("shutdown: "), "{message}");
    assert_eq!(
        l.until_closed().await.last().map(String::as_str),
        Some("! server shutting down")
    );
    tokio::time::timeout(PATIENCE, h.stop()).await.unwrap();
}
