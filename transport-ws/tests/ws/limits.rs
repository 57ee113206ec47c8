//! Limits and liveness: bad input closes only the offender, with the documented code, and the
//! server keeps serving everyone else.

use crate::common::*;
use chat_core::Limits;
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use transport_ws::WsConfig;

#[tokio::test]
async fn an_oversized_message_is_closed_with_1009_and_others_are_unaffected() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;
    let mut bystander = h.connect(&token).await;
    let mut c = h.connect(&token).await;
    let big = format!(
        r#"{{"type":"send","room":1,"body":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    c.send_raw(Message::text(big)).await;
    let frame = c.close_frame().await.expect("a close frame, not a reset");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1009, "message_too_big")
    );

    // A message in many small fragments is measured whole.
    let mut c = h.connect(&token).await;
    let chunk = vec![b'a'; 16 * 1024];
    c.send_raw(Message::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await;
    for _ in 0..5 {
        c.send_raw(Message::Frame(Frame::message(
            chunk.clone(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await;
    }
    assert_eq!(c.close_code().await, Some(1009));

    let pong = bystander.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    h.connect(&token).await;
    assert_eq!(h.server.stats().closed_too_big, 2);
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;
    let mut c = h.connect(&token).await;
    c.send_raw(Message::Frame(Frame::message(
        b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    )))
    .await;
    let frame = c.close_frame().await.expect("a close frame");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1007, "invalid_utf8")
    );
    let mut fresh = h.connect(&token).await;
    assert_eq!(fresh.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn garbage_json_unknown_types_and_wrong_fields_get_error_frames() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;
    let mut c = h.connect(&token).await;
    for bad in [
        "not json at all",
        "[1,2,3]",
        r#"{"no":"type"}"#,
        r#"{"type":"launch_missiles"}"#,
        r#"{"type":"send","room":"one","body":"x"}"#,
        r#"{"type":"subscribe","room":-4}"#,
        r#"{"type":"ping","id":"seven"}"#,
    ] {
        c.send_raw(Message::text(bad)).await;
        let e = c.next().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("bad_frame")),
            "{bad} → {e}"
        );
    }
    // (An undecodable frame's error carries no request id: the id is part of what failed to
    // decode.)
    c.send(json!({"type": "launch_missiles", "id": 3})).await;
    let e = c.next().await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown frame type"),
        "{e}"
    );
    // Still usable.
    assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
    let room = c.create_room("still-here", "group").await;
    c.subscribe(room).await;
    c.say(room, "fine").await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_sustained_abuse_is_closed_with_1008() {
    let limits = Limits {
        request_burst: 5.0,
        requests_per_second: 1.0,
        max_rate_violations: 1_000,
        ..Limits::default()
    };
    let h = Harness::start_with(WsConfig::default(), limits).await;
    let (_, token) = h.user("alice").await;
    let mut c = h.connect(&token).await;
    for _ in 0..20 {
        c.send(json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    loop {
        let f = c.next().await;
        match f["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                break;
            }
            _ => panic!("{f}"),
        }
    }
    assert!((5..=6).contains(&pongs), "{pongs} pongs before the limit");

    // A client that ignores `rate_limited` is cut off.
    let limits = Limits {
        request_burst: 5.0,
        requests_per_second: 1.0,
        max_rate_violations: 20,
        ..Limits::default()
    };
    let h = Harness::start_with(WsConfig::default(), limits).await;
    let (_, token) = h.user("mallory").await;
    let mut c = h.connect(&token).await;
    let mut bystander = h.connect(&token).await;
    for _ in 0..100 {
        if futures_util::SinkExt::send(&mut c.ws, Message::text(r#"{"type":"ping"}"#))
            .await
            .is_err()
        {
            break;
        }
    }
    let frame = c.close_frame().await.expect("a close frame");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1008, "policy_violation")
    );
    assert_eq!(
        bystander.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_everyone_else_gets_everything() {
    let limits = Limits {
        session_queue: 16,
        requests_per_second: 100_000.0,
        request_burst: 100_000.0,
        ..Limits::default()
    };
    let mut config = WsConfig::default();
    config.close_timeout = Duration::from_millis(300);
    // Small kernel send buffers on the server's sockets (inherited from the listener) and a
    // small receive window on the stalled client, so that a stalled reader shows up after
    // kilobytes, not megabytes.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(8 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(128).unwrap();
    let h = Harness::start_on(listener, config, limits).await;

    let (_, ta) = h.user("alice").await;
    let (_, tc) = h.user("carol").await;
    let (_, ts) = h.user("stalled").await;
    let mut alice = h.connect(&ta).await;
    let room = alice.create_room("busy", "public").await;
    let mut carol = h.connect(&tc).await;
    carol.subscribe(room).await;
    let mut stalled = h.connect_small_window(&ts).await;
    stalled.subscribe(room).await;
    // From here on, `stalled` is never read until the end of the test.

    // Carol reads everything, concurrently.
    let (total_tx, total_rx) = tokio::sync::oneshot::channel::<u64>();
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        let mut total_rx = total_rx;
        let mut total = None;
        loop {
            if let Some(t) = total {
                if seqs.len() as u64 == t {
                    break;
                }
            }
            tokio::select! {
                t = &mut total_rx, if total.is_none() => total = Some(t.unwrap()),
                m = carol.message() => seqs.push(m.0),
            }
        }
        seqs
    });

    // Publish until the server has cut the stalled client off (bounded).
    let body = "z".repeat(1024);
    let mut published = 0u64;
    while h.server.stats().closed_slow_consumer == 0 {
        assert!(published < 5_000, "the stalled client was never cut off");
        published = alice.say(room, &body).await;
    }
    // The server keeps serving: more messages, and a newcomer.
    for _ in 0..20 {
        published = alice.say(room, &body).await;
    }
    let mut newcomer = h.connect(&tc).await;
    assert_eq!(
        newcomer.request(json!({"type": "ping"})).await["type"],
        "pong"
    );

    total_tx.send(published).unwrap();
    let seqs = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("carol received everything")
        .unwrap();
    assert_eq!(seqs, (1..=published).collect::<Vec<_>>());

    // The stalled client, reading at last, finds an in-order prefix and then the end.
    let mut last = 0;
    loop {
        match tokio::time::timeout(PATIENCE, stalled.ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "message" {
                    let seq = v["seq"].as_u64().unwrap();
                    assert_eq!(seq, last + 1);
                    last = seq;
                }
            }
            Some(Ok(Message::Close(f))) => {
                assert_eq!(f.map(|f| u16::from(f.code)), Some(1013));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(last < published, "the stalled client got everything?");
    assert_eq!(h.server.stats().closed_slow_consumer, 1);
}

/// Performs the client handshake by hand and then never answers anything.
async fn mute_client(h: &Harness, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_closed_and_a_live_one_is_kept() {
    let mut config = WsConfig::default();
    config.ping_interval = Duration::from_millis(100);
    config.pong_timeout = Duration::from_millis(200);
    config.close_timeout = Duration::from_millis(200);
    let h = Harness::start_with(config, Limits::default()).await;
    let (_, token) = h.user("alice").await;

    let mut mute = mute_client(&h, &token).await;
    let mut bytes = Vec::new();
    tokio::time::timeout(PATIENCE, mute.read_to_end(&mut bytes))
        .await
        .expect("the server closed the mute peer")
        .unwrap();
    // Pings (0x89, empty) were sent, then a close frame with 1001 "idle_timeout".
    assert!(bytes.windows(2).any(|w| w == [0x89, 0x00]), "no ping seen");
    let close = [&[0x88u8, 2 + 12, 0x03, 0xE9][..], b"idle_timeout"].concat();
    assert!(
        bytes.windows(close.len()).any(|w| w == close),
        "no 1001 close in {bytes:?}"
    );
    assert_eq!(h.server.stats().closed_idle, 1);

    // A client that reads (tungstenite answers pings as it reads) outlives many intervals.
    let mut live = h.connect(&token).await;
    let mut pings = 0;
    while pings < 8 {
        match tokio::time::timeout(PATIENCE, live.ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(live.request(json!({"type": "ping"})).await["type"], "pong");
}
