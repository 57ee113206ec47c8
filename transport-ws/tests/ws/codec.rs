//! Text frames are JSON, binary frames are postcard; the connection's reply codec follows the
//! documented rule.

use crate::common::*;
use chat_core::protocol::{ClientFrame, ServerFrame};
use chat_core::{Codec, ErrorCode, Request, Response};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use transport_ws::PROTOCOL_POSTCARD;

fn postcard(id: u64, frame: ClientFrame) -> Message {
    binary(Codec::Postcard.encode_request(&Request {
        id: Some(id),
        frame,
    }))
}

async fn postcard_reply(c: &mut Client) -> Response {
    match c.next_message().await {
        Some(Message::Binary(b)) => Codec::Postcard.decode_response(&b).unwrap(),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_postcard_subprotocol_is_echoed_and_replies_are_binary() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;
    let mut req = h.request(&format!("?token={token}"));
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("unknown, {PROTOCOL_POSTCARD}").parse().unwrap(),
    );
    let mut c = h.try_connect(req).await.unwrap();
    assert_eq!(
        c.response.headers()["sec-websocket-protocol"],
        PROTOCOL_POSTCARD
    );
    c.send_raw(postcard(5, ClientFrame::Ping)).await;
    let r = postcard_reply(&mut c).await;
    assert_eq!((r.id, r.frame), (Some(5), ServerFrame::Pong));
    // A JSON text frame is still understood, and answered in the connection's codec.
    c.send(json!({"type": "ping", "id": 6})).await;
    let r = postcard_reply(&mut c).await;
    assert_eq!((r.id, r.frame), (Some(6), ServerFrame::Pong));
}

#[tokio::test]
async fn the_codec_query_parameter_and_the_first_frame_choose_too() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;

    let mut c = h.connect(&format!("{token}&codec=postcard")).await;
    c.send(json!({"type": "ping", "id": 1})).await;
    assert_eq!(postcard_reply(&mut c).await.frame, ServerFrame::Pong);

    // No choice made: the first data frame is binary, so replies are binary.
    let mut c = h.connect(&token).await;
    c.send_raw(postcard(1, ClientFrame::Ping)).await;
    assert_eq!(postcard_reply(&mut c).await.frame, ServerFrame::Pong);

    // No choice made, first frame text: JSON.
    let mut c = h.connect(&token).await;
    let pong = c.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn binary_garbage_gets_an_error_frame_and_the_connection_stays_usable() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;
    let mut c = h.connect(&format!("{token}&codec=postcard")).await;
    for garbage in [&b"\xff\xff\xff\xff\xff\xff"[..], b"\x00\x63", b""] {
        c.send_raw(binary(garbage.to_vec())).await;
        let r = postcard_reply(&mut c).await;
        match r.frame {
            ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::BadFrame),
            other => panic!("{other:?}"),
        }
    }
    c.send_raw(postcard(9, ClientFrame::Ping)).await;
    let r = postcard_reply(&mut c).await;
    assert_eq!((r.id, r.frame), (Some(9), ServerFrame::Pong));
}
