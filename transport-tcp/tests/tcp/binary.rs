//! Binary mode: bad input of every kind gets its documented outcome, and the server keeps
//! serving everyone else throughout.

use crate::common::*;
use chat_core::protocol::{ClientFrame, HelloAuth, ServerFrame};
use chat_core::{Codec, ErrorCode, Limits};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transport_tcp::TcpConfig;

/// A signed-in bystander that must keep working.
async fn bystander(h: &Harness) -> BinClient {
    let (_, token) = h.user("bystander").await;
    h.binary(&token).await
}

async fn still_serving(h: &Harness, b: &mut BinClient) {
    assert_eq!(b.ok(ClientFrame::Ping).await, ServerFrame::Pong);
    let mut fresh = BinClient::connect(h.addr).await;
    let w = fresh.hello(HelloAuth::Guest("newcomer".into())).await;
    assert!(matches!(w.frame, ServerFrame::Welcome { .. }), "{w:?}");
}

#[tokio::test]
async fn an_oversized_length_prefix_gets_bad_frame_and_a_close_without_the_payload() {
    let h = Harness::start().await;
    let mut b = bystander(&h).await;

    // Before authenticating: a 4 GiB - 1 frame is announced and never sent. The server answers
    // from the prefix alone (it does not wait for, or make room for, the payload).
    let mut c = BinClient::connect(h.addr).await;
    c.send_raw(&[0x00, 0xff, 0xff, 0xff]).await;
    let (id, code, message) = c.closed_with_error().await;
    assert_eq!((id, code), (None, ErrorCode::BadFrame));
    assert_eq!(
        message,
        "frame_too_large: a frame of 16777215 bytes exceeds the maximum of 65536 bytes"
    );

    // After authenticating, the same; one byte over the maximum is enough.
    let (_, token) = h.user("alice").await;
    let mut c = h.binary(&token).await;
    c.send_raw(&(64 * 1024 + 1u32).to_be_bytes()).await;
    let (_, code, message) = c.closed_with_error().await;
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("65537 bytes"), "{message}");

    assert_eq!(h.server.stats().closed_frame_too_large, 2);
    still_serving(&h, &mut b).await;
}

#[tokio::test]
async fn a_frame_cut_short_by_the_end_of_the_stream_is_never_applied() {
    let h = Harness::start().await;
    let mut b = bystander(&h).await;
    let (_, token) = h.user("alice").await;
    let mut c = h.binary(&token).await;
    let room = c.create_room("lobby").await;
    c.subscribe(room).await;

    // A complete `send` frame minus its last byte, then end of stream.
    let whole = frame(
        Some(9),
        ClientFrame::Send {
            room,
            body: "must not be stored".into(),
            client_msg_id: None,
        },
    );
    c.send_raw(&whole[..whole.len() - 1]).await;
    c.io.get_mut().shutdown().await.unwrap();
    // A clean close: the server says nothing (nobody would read it) and ends the stream.
    let rest = c.until_closed().await;
    assert!(
        rest.iter().all(|r| r.id != Some(9)),
        "the partial frame was answered: {rest:?}"
    );
    h.until("the truncation is counted", |h| {
        h.server.stats().closed_truncated == 1
    })
    .await;
    assert_eq!(h.latest(room).await, 0, "the partial send was applied");

    // The same before authenticating: half a hello, then end of stream.
    let mut raw = TcpStream::connect(h.addr).await.unwrap();
    let hello = frame(Some(1), hello(HelloAuth::Guest("half".into())));
    raw.write_all(&hello[..6]).await.unwrap();
    raw.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, raw.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    h.until("the second truncation is counted", |h| {
        h.server.stats().closed_truncated == 2
    })
    .await;
    assert!(
        h.engine
            .store()
            .credentials("half")
            .await
            .unwrap()
            .is_none(),
        "the partial hello created a guest"
    );
    still_serving(&h, &mut b).await;
}

#[tokio::test]
async fn frames_before_authentication_get_an_error_and_a_close() {
    let h = Harness::start_with(TcpConfig::default(), Limits::default()).await;
    let mut b = bystander(&h).await;

    // Anything but a hello: `unauthenticated`, with the request's id.
    let mut c = BinClient::connect(h.addr).await;
    c.send(Some(5), ClientFrame::Ping).await;
    let (id, code, _) = c.closed_with_error().await;
    assert_eq!((id, code), (Some(5), ErrorCode::Unauthenticated));

    // A hello without credentials.
    let mut c = BinClient::connect(h.addr).await;
    c.send(
        Some(6),
        ClientFrame::Hello(chat_core::protocol::Hello {
            version: 1,
            auth: None,
        }),
    )
    .await;
    let (id, code, message) = c.closed_with_error().await;
    assert_eq!((id, code), (Some(6), ErrorCode::Unauthenticated));
    assert!(message.contains("hello"), "{message}");

    // Bad credentials of each kind.
    for (auth, want) in [
        (HelloAuth::Token("nope".into()), ErrorCode::InvalidToken),
        (
            HelloAuth::Login {
                username: "nobody".into(),
                password: "whatever".into(),
            },
            ErrorCode::InvalidCredentials,
        ),
        // Guests are off on this server.
        (HelloAuth::Guest("visitor".into()), ErrorCode::Forbidden),
    ] {
        let mut c = BinClient::connect(h.addr).await;
        c.send(Some(7), hello(auth)).await;
        let (id, code, _) = c.closed_with_error().await;
        assert_eq!((id, code), (Some(7), want));
    }

    // A wrong protocol version.
    let mut c = BinClient::connect(h.addr).await;
    c.send(
        Some(8),
        ClientFrame::Hello(chat_core::protocol::Hello {
            version: 99,
            auth: Some(HelloAuth::Token("x".into())),
        }),
    )
    .await;
    let (_, code, _) = c.closed_with_error().await;
    assert_eq!(code, ErrorCode::UnsupportedVersion);

    // Undecodable bytes as the first frame: `bad_frame`.
    let mut c = BinClient::connect(h.addr).await;
    c.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    let (_, code, _) = c.closed_with_error().await;
    assert_eq!(code, ErrorCode::BadFrame);

    assert_eq!(h.server.stats().auth_failed, 7);
    assert_eq!(b.ok(ClientFrame::Ping).await, ServerFrame::Pong);
}

#[tokio::test]
async fn a_connection_that_does_not_authenticate_in_time_is_closed() {
    let mut config = TcpConfig::default();
    config.auth_timeout = Duration::from_millis(200);
    let h = Harness::start_with(config, guest_limits()).await;
    let mut b = bystander(&h).await;

    // It said it was binary (a 0x00 first byte), then dribbled a prefix and stopped.
    let started = tokio::time::Instant::now();
    let mut c = BinClient::connect(h.addr).await;
    c.send_raw(&[0x00, 0x00]).await;
    let (id, code, message) = c.closed_with_error().await;
    assert_eq!((id, code), (None, ErrorCode::Unauthenticated));
    assert!(message.contains("timed out"), "{message}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(h.server.stats().auth_timeout, 1);
    assert_eq!(b.ok(ClientFrame::Ping).await, ServerFrame::Pong);
}

#[tokio::test]
async fn undecodable_frames_after_authentication_get_bad_frame_and_the_session_stays() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;
    let mut c = h.binary(&token).await;
    let mut rng = Rng(0x5eed);
    // Fewer than the request burst (40), so that none is refused by the rate limiter.
    for _ in 0..30 {
        let n = (rng.next() % 40) as usize;
        let payload = rng.bytes(n);
        if Codec::Postcard.decode_request(&payload).is_ok() {
            continue;
        }
        let mut raw = (payload.len() as u32).to_be_bytes().to_vec();
        raw.extend_from_slice(&payload);
        c.send_raw(&raw).await;
        let r = c.next().await;
        assert!(
            matches!(
                r.frame,
                ServerFrame::Error {
                    code: ErrorCode::BadFrame,
                    ..
                }
            ),
            "{r:?}"
        );
    }
    assert_eq!(c.ok(ClientFrame::Ping).await, ServerFrame::Pong);
    let room = c.create_room("still-here").await;
    c.subscribe(room).await;
    c.say(room, "fine").await;
}

#[tokio::test]
async fn random_bytes_in_either_mode_never_panic_the_server() {
    let h = Harness::start().await;
    let mut b = bystander(&h).await;
    let mut rng = Rng(0xdead_beef);
    for round in 0..60 {
        let n = 1 + (rng.next() % 3000) as usize;
        let mut junk = rng.bytes(n);
        // Half binary-looking, half line-looking.
        if round % 2 == 0 {
            junk[0] = 0;
        }
        let mut tcp = TcpStream::connect(h.addr).await.unwrap();
        let _ = tcp.write_all(&junk).await;
        let _ = tcp.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut sink))
            .await
            .expect("the server closes or answers every junk connection");
    }
    // Junk from signed-in line clients (control characters, bad UTF-8, stray commands).
    for round in 0..20 {
        let mut c = h.line(&format!("junk{round}")).await;
        let n = 1 + (rng.next() % 600) as usize;
        let mut junk = rng.bytes(n);
        junk.extend_from_slice(b"\n/quit\n");
        c.send_raw(&junk).await;
        let lines = c.until_closed().await;
        assert_eq!(lines.last().map(String::as_str), Some("* bye"), "{lines:?}");
    }
    still_serving(&h, &mut b).await;
    h.until("every junk connection is gone", |h| {
        h.server.limiter().open() == 2
    })
    .await;
}

#[tokio::test]
async fn frames_pipelined_behind_the_hello_are_served() {
    let h = Harness::start().await;
    let mut all = frame(Some(1), hello(HelloAuth::Guest("eager".into())));
    all.extend(frame(Some(2), ClientFrame::Ping));
    all.extend(frame(
        Some(3),
        ClientFrame::CreateRoom {
            name: "fast".into(),
            kind: chat_core::RoomKind::Public,
        },
    ));
    let mut c = BinClient::connect(h.addr).await;
    c.send_raw(&all).await;
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let r = c.next().await;
        if r.id.is_some() {
            ids.push((r.id, std::mem::discriminant(&r.frame)));
        }
    }
    assert_eq!(ids[0].0, Some(1));
    assert_eq!(ids[1].0, Some(2));
    assert_eq!(ids[2].0, Some(3));
}
