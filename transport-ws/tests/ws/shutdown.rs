//! Graceful shutdown: stop accepting, write what is queued, close with 1001, within a deadline.

use crate::common::*;
use chat_core::{Author, Limits, RoomId};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use transport_ws::WsConfig;

#[tokio::test]
async fn shutdown_drains_what_is_queued_then_closes_with_1001() {
    let mut h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut alice = h.connect(&ta).await;
    let room = alice.create_room("lobby", "public").await;
    alice.subscribe(room).await;
    let mut bob = h.connect(&tb).await;
    bob.ok(json!({"type": "join", "room": room})).await;
    bob.subscribe(room).await;

    // Queue a burst, then shut down at once: `publish` returns after the frames are in every
    // subscriber's queue, so all of them must still arrive before the close.
    for i in 1..=200 {
        h.engine
            .publish(Author::System, RoomId(room), format!("n{i}"), None)
            .await
            .unwrap();
    }
    // A connection still in its handshake is dropped, not upgraded.
    let mut half = TcpStream::connect(h.addr).await.unwrap();
    half.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
    h.until("the half-open handshake is accepted", |h| {
        h.server.limiter().open() == 3
    })
    .await;

    let stop = tokio::spawn(async move {
        h.stop().await;
        h
    });
    for c in [&mut alice, &mut bob] {
        let mut seqs = Vec::new();
        let close = loop {
            match tokio::time::timeout(PATIENCE, c.ws.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "message" {
                        seqs.push(v["seq"].as_u64().unwrap());
                    }
                }
                Some(Ok(Message::Close(f))) => break f.expect("a close frame"),
                Some(Ok(_)) => {}
                other => panic!("ended without a close frame: {other:?}"),
            }
        };
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (1001, "shutdown")
        );
    }
    // Clients that got their close go away, which ends the servers' closing handshakes.
    drop((alice, bob));
    let h = tokio::time::timeout(PATIENCE, stop)
        .await
        .expect("serve returned")
        .unwrap();
    assert_eq!(h.server.stats().closed_shutdown, 2);
    assert_eq!(h.server.stats().open, 0);
    assert_eq!(h.engine.stats().sessions, 0);
    assert_eq!(h.server.limiter().open(), 0);
    // The listener is gone.
    assert!(TcpStream::connect(h.addr).await.is_err());
}

#[tokio::test]
async fn engine_shutdown_also_closes_with_1001_and_serve_returns_when_idle() {
    let mut h = Harness::start_with(WsConfig::default(), Limits::default()).await;
    let (_, ta) = h.user("alice").await;
    let mut alice = h.connect(&ta).await;
    assert_eq!(alice.request(json!({"type": "ping"})).await["type"], "pong");
    h.engine.shutdown();
    assert_eq!(alice.close_code().await, Some(1001));
    drop(alice);
    // With nothing left open, stopping is immediate.
    tokio::time::timeout(PATIENCE, h.stop()).await.unwrap();
}
