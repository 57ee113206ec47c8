//! The WebSocket endpoints: live messages, the pre-subscribed legacy socket, logout closing
//! sockets, and graceful shutdown.

use crate::common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The HTTP status of a refused WebSocket handshake.
fn refused(r: Result<Ws, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got an upgrade"),
    }
}

#[tokio::test]
async fn two_users_chat_live_over_the_cookie_authenticated_socket() {
    let s = start(&[]).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (_, room) = s
        .post(
            "/api/rooms",
            Some(&alice),
            json!({"name": "lobby", "kind": "public"}),
        )
        .await;
    let room = room["room"]["id"].as_u64().unwrap();

    let mut a = s.ws("/ws", &alice).await;
    let welcome = a.request(1, json!({"type": "hello", "version": 1})).await;
    assert_eq!(welcome["user"]["username"], "alice");
    let sub = a
        .request(
            2,
            json!({"type": "subscribe", "room": room, "since_seq": 0}),
        )
        .await;
    assert_eq!(sub["type"], "subscribed");

    let mut b = s.ws("/ws", &bob).await;
    b.request(1, json!({"type": "join", "room": room})).await;
    b.request(
        2,
        json!({"type": "subscribe", "room": room, "since_seq": 0}),
    )
    .await;
    let presence = a.next_of("presence").await;
    assert_eq!(
        (
            presence["user"]["username"].as_str(),
            presence["online"].as_bool()
        ),
        (Some("bob"), Some(true))
    );

    let sent = a
        .request(
            3,
            json!({"type": "send", "room": room, "body": "hi bob", "client_msg_id": "c-1"}),
        )
        .await;
    assert_eq!(
        (sent["type"].as_str(), sent["seq"].as_u64()),
        (Some("sent"), Some(1))
    );
    let msg = b.next_of("message").await;
    assert_eq!(
        (msg["body"].as_str(), msg["sender_name"].as_str()),
        (Some("hi bob"), Some("alice"))
    );

    b.send(json!({"type": "typing", "room": room})).await;
    let typing = a.next_of("typing").await;
    assert_eq!(typing["user"]["username"], "bob");

    // A message posted through the JSON API arrives live too.
    s.post(
        &format!("/api/rooms/{room}/messages"),
        Some(&bob),
        json!({"body": "via http"}),
    )
    .await;
    assert_eq!(a.next_of("message").await["body"], "via http");

    // Read markers over the socket, reflected in the API's unread counts.
    let unread = b
        .request(9, json!({"type": "mark_read", "room": room, "seq": 1}))
        .await;
    assert_eq!(unread["type"], "unread");
    let (_, rooms) = s.get("/api/rooms", Some(&bob)).await;
    assert_eq!(rooms["rooms"][0]["unread"], 0);
    s.stop().await;
}

#[tokio::test]
async fn the_legacy_chatsocket_is_subscribed_to_its_room() {
    let s = start(&[]).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (_, chat) = s
        .post("/newchat", Some(&alice), json!({"chat_name": "team"}))
        .await;
    let room = chat["chat_id"].as_u64().unwrap();
    s.post(
        &format!("/api/rooms/{room}/messages"),
        Some(&alice),
        json!({"body": "before"}),
    )
    .await;

    let mut ws = s
        .ws(&format!("/chatsocket/{room}?since_seq=0"), &alice)
        .await;
    let first = ws.next().await;
    assert_eq!(first["type"], "subscribed", "{first}");
    assert_eq!(first["room"], room);
    assert_eq!(first["entries"][0]["body"], "before");

    // Live, both ways, in the JSON protocol.
    s.post(
        &format!("/api/rooms/{room}/messages"),
        Some(&alice),
        json!({"body": "after"}),
    )
    .await;
    assert_eq!(ws.next_of("message").await["body"], "after");
    let sent = ws
        .request(
            5,
            json!({"type": "send", "room": room, "body": "from the socket"}),
        )
        .await;
    assert_eq!(sent["seq"], 3);

    // Refusals happen before the upgrade, as HTTP.
    let cookie = |u: &User| vec![("Cookie", u.cookie())];
    assert_eq!(
        refused(s.ws_with("/chatsocket/999", &cookie(&alice)).await),
        404
    );
    assert_eq!(
        refused(
            s.ws_with(&format!("/chatsocket/{room}"), &cookie(&bob))
                .await
        ),
        403
    );
    assert_eq!(
        refused(s.ws_with(&format!("/chatsocket/{room}"), &[]).await),
        401
    );
    assert_eq!(refused(s.ws_with("/ws", &[]).await), 401);
    let evil = vec![
        ("Cookie", alice.cookie()),
        ("Origin", "https://evil.example".to_string()),
    ];
    assert_eq!(
        refused(s.ws_with(&format!("/chatsocket/{room}"), &evil).await),
        403
    );
    assert_eq!(refused(s.ws_with("/ws", &evil).await), 403);
    s.stop().await;
}

/// A WebSocket handshake sent as a plain HTTP request, so that a refusal's headers and body
/// can be read.
async fn handshake(
    s: &TestServer,
    path: &str,
    headers: &[(&str, String)],
) -> (
    (reqwest::StatusCode, serde_json::Value),
    reqwest::header::HeaderMap,
) {
    let mut req = s
        .http
        .get(s.url(path))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    let h = r.headers().clone();
    (decode(r).await, h)
}

#[tokio::test]
async fn refused_handshakes_answer_with_the_api_error_shape() {
    let s = start(&[]).await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, "r").await;
    let origin = ("Origin", s.base.clone());
    for path in ["/ws".to_string(), format!("/chatsocket/{room}")] {
        // No credentials.
        let (got, h) = handshake(&s, &path, std::slice::from_ref(&origin)).await;
        assert_error(&got, 401, "unauthenticated");
        assert!(
            h.get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer")),
            "{h:?}"
        );
        assert_eq!(h.get("cache-control").unwrap(), "no-store");
        // A token that is not one.
        let (got, h) = handshake(
            &s,
            &path,
            &[origin.clone(), ("Authorization", "Bearer nope".into())],
        )
        .await;
        assert_error(&got, 401, "unauthenticated");
        assert!(
            h.get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("invalid_token")),
            "{h:?}"
        );
        // A page on another site, with a valid cookie.
        let (got, _) = handshake(
            &s,
            &path,
            &[
                ("Origin", "https://evil.example".into()),
                ("Cookie", alice.cookie()),
            ],
        )
        .await;
        assert_error(&got, 403, "forbidden_origin");
        // A codec this server does not speak.
        let bad_codec = format!("{path}?codec=xml");
        let (got, _) = handshake(
            &s,
            &bad_codec,
            &[origin.clone(), ("Cookie", alice.cookie())],
        )
        .await;
        assert_error(&got, 400, "invalid_request");
    }
    s.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_session_and_closes_its_sockets() {
    let s = start(&[]).await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, "r").await;
    let mut plain = s.ws("/ws", &alice).await;
    plain.request(1, json!({"type": "ping"})).await;
    let mut legacy = s.ws(&format!("/chatsocket/{room}"), &alice).await;
    assert_eq!(legacy.next().await["type"], "subscribed");

    // A second sign-in of the same user is a separate session and stays.
    let (_, other) = s
        .post(
            "/api/login",
            None,
            json!({"username": "alice", "password": "correct horse"}),
        )
        .await;
    let other = User {
        token: other["token"].as_str().unwrap().to_string(),
        ..alice.clone()
    };
    let mut other_ws = s.ws("/ws", &other).await;

    let r = s
        .http
        .post(s.url("/logout"))
        .header("Cookie", alice.cookie())
        .header("Origin", &s.base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);

    assert_eq!(plain.close_code().await, Some(CloseCode::Library(4401)));
    assert_eq!(legacy.close_code().await, Some(CloseCode::Library(4401)));
    assert_error(
        &s.get("/api/me", Some(&alice)).await,
        401,
        "unauthenticated",
    );
    assert_eq!(
        refused(s.ws_with("/ws", &[("Cookie", alice.cookie())]).await),
        401
    );

    let pong = other_ws.request(2, json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away_and_keeps_what_was_acknowledged() {
    let s = start(&[]).await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, "r").await;
    let mut ws = s.ws("/ws", &alice).await;
    let mut legacy = s.ws(&format!("/chatsocket/{room}"), &alice).await;
    assert_eq!(legacy.next().await["type"], "subscribed");
    let sent = ws
        .request(
            1,
            json!({"type": "send", "room": room, "body": "keep me", "client_msg_id": "k-1"}),
        )
        .await;
    assert_eq!(sent["type"], "sent");

    let engine = s.server.engine().clone();
    s.server.shutdown();
    assert_eq!(ws.close_code().await, Some(CloseCode::Away));
    assert_eq!(legacy.close_code().await, Some(CloseCode::Away));
    let addr = s.addr();
    s.stop().await;

    let page = engine
        .history_unchecked(
            chat_core::RoomId(room),
            chat_core::HistoryQuery::After(chat_core::Seq(0)),
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1, "the acknowledged message is stored");
    // And the listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
