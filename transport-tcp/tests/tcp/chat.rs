//! People on every transport in one room: a binary client, a line client and a WebSocket
//! client (transport-ws on the same engine) talk to each other.

use crate::common::*;
use chat_core::RoomId;
use chat_core::protocol::{ClientFrame, HelloAuth, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_request(ws: &mut Ws, v: Value) -> Value {
    let id = v["id"].clone();
    ws.send(Message::text(v.to_string())).await.unwrap();
    loop {
        let f = ws_next(ws).await;
        if f["id"] == id {
            return f;
        }
    }
}

async fn ws_next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("nothing arrived over WebSocket")
            .expect("the WebSocket ended")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn ws_message(ws: &mut Ws) -> (String, String) {
    loop {
        let f = ws_next(ws).await;
        if f["type"] == "message" {
            return (
                f["sender_name"].as_str().unwrap().to_string(),
                f["body"].as_str().unwrap().to_string(),
            );
        }
    }
}

#[tokio::test]
async fn binary_line_and_websocket_clients_chat_in_one_room() {
    let mut h = Harness::start().await;
    let ws_addr = h.start_ws().await;
    let (_, alice_token) = h.user("alice").await;
    let (_, carol_token) = h.user("carol").await;

    // Alice: binary mode, with a token. She creates the room.
    let mut alice = h.binary(&alice_token).await;
    let room = alice.create_room("lobby").await;
    alice.subscribe(room).await;

    // Bob: line mode, a guest.
    let mut bob = h.line("bob").await;
    bob.send("/join lobby").await;
    bob.expect("* joined lobby; you are now talking in lobby")
        .await;

    // Carol: WebSocket, JSON.
    let (mut carol, _) =
        tokio_tungstenite::connect_async(format!("ws://{ws_addr}/?token={carol_token}"))
            .await
            .unwrap();
    let r = ws_request(
        &mut carol,
        json!({"type": "join", "name": "lobby", "id": 1}),
    )
    .await;
    assert_eq!(r["type"], "room", "{r}");
    let r = ws_request(
        &mut carol,
        json!({"type": "subscribe", "room": room.0, "id": 2}),
    )
    .await;
    assert_eq!(r["type"], "subscribed", "{r}");

    // Binary → everyone.
    alice.say(room, "hello from binary").await;
    bob.expect("[lobby] alice: hello from binary").await;
    assert_eq!(
        ws_message(&mut carol).await,
        ("alice".into(), "hello from binary".into())
    );

    // Line → everyone.
    bob.send("hello from a terminal").await;
    bob.expect("[lobby] bob: hello from a terminal").await;
    assert_eq!(
        alice.message().await,
        ("alice".into(), "hello from binary".into())
    );
    assert_eq!(
        alice.message().await,
        ("bob".into(), "hello from a terminal".into())
    );
    assert_eq!(
        ws_message(&mut carol).await,
        ("bob".into(), "hello from a terminal".into())
    );

    // WebSocket → everyone.
    let r = ws_request(
        &mut carol,
        json!({"type": "send", "room": room.0, "body": "hello from a browser", "id": 3}),
    )
    .await;
    assert_eq!(r["type"], "sent", "{r}");
    assert_eq!(
        alice.message().await,
        ("carol".into(), "hello from a browser".into())
    );
    bob.expect("[lobby] carol: hello from a browser").await;

    // Who is there, seen from the terminal.
    bob.send("/who").await;
    bob.expect("* members of lobby:").await;
    let mut members = vec![bob.line().await, bob.line().await, bob.line().await];
    members.sort();
    assert_eq!(
        members,
        [
            "*   alice (owner, online)",
            "*   bob (member, online)",
            "*   carol (member, online)"
        ]
    );

    // History, from the terminal.
    bob.send("/history 2").await;
    bob.expect("* the last 2 messages in lobby:").await;
    assert_eq!(bob.line().await, "[lobby] bob: hello from a terminal");
    assert_eq!(bob.line().await, "[lobby] carol: hello from a browser");
    assert_eq!(h.latest(room).await, 3);
}

#[tokio::test]
async fn binary_clients_sign_in_with_a_login_or_as_guests() {
    let h = Harness::start().await;
    h.engine
        .accounts()
        .register("dora", "correct horse battery")
        .await
        .unwrap();
    let mut c = BinClient::connect(h.addr).await;
    let w = c
        .hello(HelloAuth::Login {
            username: "dora".into(),
            password: "correct horse battery".into(),
        })
        .await;
    match w.frame {
        ServerFrame::Welcome { user, .. } => assert_eq!(user.username, "dora"),
        other => panic!("{other:?}"),
    }
    let mut g = BinClient::connect(h.addr).await;
    let w = g.hello(HelloAuth::Guest("visitor".into())).await;
    assert!(matches!(w.frame, ServerFrame::Welcome { .. }), "{w:?}");
    assert_eq!(g.ok(ClientFrame::Ping).await, ServerFrame::Pong);
}

#[tokio::test]
async fn line_users_send_direct_messages_and_switch_rooms() {
    let h = Harness::start().await;
    let mut alice = h.line("alice").await;
    let mut bob = h.line("bob").await;

    alice.send("/create lobby").await;
    alice
        .expect("* created public room lobby; you are now talking in lobby")
        .await;
    alice.send("/create games").await;
    alice
        .expect("* created public room games; you are now talking in games")
        .await;

    // A direct message opens a conversation both sides see, without any /join.
    bob.send("/msg alice psst").await;
    bob.expect("[alice & bob] bob: psst").await;
    alice.expect("[alice & bob] bob: psst").await;
    alice.send("/msg bob hi bob").await;
    alice.expect("[alice & bob] alice: hi bob").await;
    bob.expect("[alice & bob] alice: hi bob").await;

    // Switching between one's own rooms, by name, says so.
    alice.send("/join lobby").await;
    alice.expect("* you are now talking in lobby").await;
    alice.send("said in lobby").await;
    alice.expect("[lobby] alice: said in lobby").await;

    bob.send("/join lobby").await;
    bob.expect("* joined lobby; you are now talking in lobby")
        .await;
    alice.expect("* [lobby] bob joined").await;
    bob.send("/rooms").await;
    bob.expect("* your rooms:").await;
    let mine = vec![bob.line().await, bob.line().await];
    assert!(
        mine.iter()
            .any(|l| l.starts_with("*   lobby (public") && l.ends_with("<- you are here")),
        "{mine:?}"
    );
    assert!(
        mine.iter()
            .any(|l| l.starts_with("*   alice & bob (direct")),
        "{mine:?}"
    );
    bob.expect("* public rooms you can /join: games").await;

    bob.send("/leave").await;
    bob.expect("* you left lobby").await;
    alice.expect("* [lobby] bob left").await;
    bob.send("still here?").await;
    bob.expect("! you are not in a room: /join <room> or /create <room> first")
        .await;

    // By id works too.
    let lobby = h.engine.public_room_by_name("lobby").await.unwrap().id;
    bob.send(&format!("/join {}", lobby.0)).await;
    bob.expect("* joined lobby; you are now talking in lobby")
        .await;
    assert_ne!(lobby, RoomId(0));

    // A guest name is not a password: once bob has gone, a new connection cannot take his.
    bob.send("/quit").await;
    bob.expect("* bye").await;
    let mut imposter = LineClient::connect(h.addr).await;
    imposter.send("/nick BOB").await;
    imposter.expect("! username is already taken").await;

    // A guest comes back with the token it was shown.
    let mut zed = LineClient::connect(h.addr).await;
    zed.send("/nick zed").await;
    zed.expect("* signed in as zed").await;
    let shown = zed.line().await;
    let token = shown
        .split_once("/token ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no token in {shown:?}"))
        .to_string();
    zed.send("/quit").await;
    zed.expect("* bye").await;
    let mut zed = LineClient::connect(h.addr).await;
    zed.send(&format!("/token {token}")).await;
    zed.expect("* signed in as zed").await;

    // Signing in again to an account: the rooms are listed, and direct conversations are
    // followed at once, without a /join.
    h.engine
        .accounts()
        .register("dora", "correct horse battery")
        .await
        .unwrap();
    let login = async || {
        let mut dora = LineClient::connect(h.addr).await;
        dora.send("/login dora correct horse battery").await;
        dora.expect("* signed in as dora").await;
        dora
    };
    let mut dora = login().await;
    dora.expect_prefix("* you are in no rooms yet").await;
    dora.send("/msg alice hello").await;
    dora.expect("[alice & dora] dora: hello").await;
    alice.expect("[alice & dora] dora: hello").await;
    dora.send("/quit").await;
    dora.expect("* bye").await;
    let mut dora = login().await;
    let rooms = dora.line().await;
    assert!(
        rooms.starts_with("* your rooms: ") && rooms.contains("alice & dora"),
        "{rooms}"
    );
    // (Any command's reply comes after the sign-in's own requests: they are done.)
    dora.send("/history").await;
    dora.expect("! you are not in a room: /join <room> first")
        .await;
    alice.send("/msg dora welcome back").await;
    alice.expect("[alice & dora] alice: welcome back").await;
    dora.expect("[alice & dora] alice: welcome back").await;
}

#[tokio::test]
async fn line_mode_helps_and_refuses_what_it_does_not_know() {
    let h = Harness::start().await;
    let mut c = LineClient::connect(h.addr).await;
    // The banner comes with the first line; before signing in, only a few commands work.
    c.send("/join lobby").await;
    assert_eq!(c.line().await, "* Welcome to chat.");
    c.expect("! sign in first: /login <user> <password> or /nick <name>")
        .await;
    c.send("/help").await;
    assert_eq!(c.line().await, "* Commands:");
    c.send("/nick bad name").await;
    c.expect("! usage: /nick <name> (one word)").await;
    c.send("/nick ok").await;
    c.expect("* signed in as ok").await;
    c.expect_prefix("* you are in no rooms yet").await;
    c.send("/frobnicate").await;
    c.expect("! unknown command /frobnicate; /help lists the commands")
        .await;
    c.send("/nick again").await;
    c.expect("! you are already signed in as ok").await;
    c.send("/join nowhere").await;
    c.expect("! no public room is named \"nowhere\"").await;
    c.send("/history").await;
    c.expect("! you are not in a room: /join <room> first")
        .await;
    c.send("/quit").await;
    assert_eq!(c.until_closed().await, ["* bye"]);
    h.until("the quit is counted", |h| h.server.stats().closed_quit == 1)
        .await;
}

#[tokio::test]
async fn line_sign_in_with_a_password_allows_a_few_attempts() {
    let mut config = transport_tcp::TcpConfig::default();
    config.line_max_login_attempts = 2;
    let h = Harness::start_with(config, chat_core::Limits::default()).await;
    h.engine
        .accounts()
        .register("erin", "correct horse battery")
        .await
        .unwrap();

    let mut c = LineClient::connect(h.addr).await;
    c.send("/nick guest").await;
    c.expect("! forbidden: guest access is disabled on this server")
        .await;
    c.send("/login erin correct horse battery").await;
    c.expect("* signed in as erin").await;

    let mut c = LineClient::connect(h.addr).await;
    c.send("/login erin wrong").await;
    c.expect("! invalid username or password").await;
    c.send("/login erin wrong again").await;
    let rest = c.until_closed().await;
    assert_eq!(
        rest,
        [
            "! invalid username or password",
            "! too many failed sign-in attempts"
        ]
    );
    assert_eq!(h.server.stats().auth_failed, 1);
    // The binary side of the same server still works.
    let (_, token) = h.user("frank").await;
    let mut b = h.binary(&token).await;
    assert_eq!(b.ok(ClientFrame::Ping).await, ServerFrame::Pong);
}
