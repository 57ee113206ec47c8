//! Chatting over real sockets: the engine's features, end to end.

use crate::common::*;
use chat_core::Limits;
use serde_json::json;
use std::collections::BTreeSet;
use transport_ws::WsConfig;

#[tokio::test]
async fn two_users_chat_in_a_room() {
    let h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut alice = h.connect(&ta).await;
    let mut bob = h.connect(&tb).await;

    let welcome = alice.ok(json!({"type": "hello", "version": 1})).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["user"]["username"], "alice");

    let room = alice.create_room("lobby", "group").await;
    alice
        .ok(json!({"type": "add_member", "room": room, "username": "bob"}))
        .await;
    alice.subscribe(room).await;
    bob.subscribe(room).await;

    let seq = alice.say(room, "hello bob").await;
    assert_eq!(seq, 1);
    assert_eq!(bob.message().await, (1, "hello bob".to_string()));
    assert_eq!(alice.message().await, (1, "hello bob".to_string()));

    bob.say(room, "hi alice ✓").await;
    let m = alice.expect("message").await;
    assert_eq!(
        (
            m["seq"].as_u64(),
            m["body"].as_str(),
            m["sender_name"].as_str()
        ),
        (Some(2), Some("hi alice ✓"), Some("bob"))
    );
}

#[tokio::test]
async fn a_direct_message_creates_the_conversation_and_reaches_the_recipient() {
    let h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut alice = h.connect(&ta).await;
    let mut bob = h.connect(&tb).await;

    let sent = alice
        .ok(json!({"type": "send_direct", "to": "bob", "body": "psst"}))
        .await;
    assert_eq!(sent["type"], "sent");
    let room = sent["room"].as_u64().unwrap();

    // Bob's session is told about the new conversation, then reads it.
    let told = bob.expect("room").await;
    assert_eq!(told["room"]["id"].as_u64(), Some(room));
    assert_eq!(told["room"]["kind"], "direct");
    let sub = bob
        .ok(json!({"type": "subscribe", "room": room, "since_seq": 0}))
        .await;
    assert_eq!(sub["entries"][0]["body"], "psst");
    assert_eq!(sub["entries"][0]["sender_name"], "alice");

    // Live from now on.
    alice
        .ok(json!({"type": "send_direct", "to": "bob", "body": "still there?"}))
        .await;
    assert_eq!(bob.message().await, (2, "still there?".to_string()));
}

#[tokio::test]
async fn join_and_leave_are_announced_and_leaving_stops_delivery() {
    let h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut alice = h.connect(&ta).await;
    let mut bob = h.connect(&tb).await;
    let room = alice.create_room("town-square", "public").await;
    alice.subscribe(room).await;

    let joined = bob.ok(json!({"type": "join", "name": "town-square"})).await;
    assert_eq!(joined["room"]["id"].as_u64(), Some(room));
    let change = alice.expect("member_changed").await;
    assert_eq!(
        (change["user"]["username"].as_str(), &change["change"]),
        (Some("bob"), &json!("joined"))
    );
    bob.subscribe(room).await;
    bob.say(room, "hello all").await;
    assert_eq!(alice.message().await, (1, "hello all".to_string()));

    bob.ok(json!({"type": "leave", "room": room})).await;
    let change = alice.expect("member_changed").await;
    assert_eq!(change["change"], "left");
    let refused = bob
        .request(json!({"type": "send", "room": room, "body": "x"}))
        .await;
    assert_eq!(refused["code"], "not_member");

    // Bob no longer receives the room: alice's message is queued (if at all) before alice's
    // `say` returns, so it would sit before bob's pong.
    alice.say(room, "bye bob").await;
    let pong = bob.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let before = bob.take_backlog();
    assert!(before.iter().all(|f| f["body"] != "bye bob"), "{before:?}");
}

#[tokio::test]
async fn presence_follows_subscriptions_and_disconnects() {
    let h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut alice = h.connect(&ta).await;
    let room = alice.create_room("lobby", "public").await;
    alice.subscribe(room).await;

    let mut bob = h.connect(&tb).await;
    bob.subscribe(room).await;
    let p = alice.expect("presence").await;
    assert_eq!(
        (p["user"]["username"].as_str(), p["online"].as_bool()),
        (Some("bob"), Some(true))
    );
    let members = alice.ok(json!({"type": "members", "room": room})).await;
    assert_eq!(members["type"], "members");

    // Bob's socket goes away: his session is dropped and the room hears he is offline.
    bob.ws.close(None).await.unwrap();
    drop(bob);
    let p = alice.expect("presence").await;
    assert_eq!(
        (p["user"]["username"].as_str(), p["online"].as_bool()),
        (Some("bob"), Some(false))
    );
}

#[tokio::test]
async fn typing_reaches_the_others_but_not_the_typist() {
    let h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut alice = h.connect(&ta).await;
    let mut bob = h.connect(&tb).await;
    let room = alice.create_room("lobby", "public").await;
    bob.ok(json!({"type": "join", "room": room})).await;
    alice.subscribe(room).await;
    bob.subscribe(room).await;

    bob.send(json!({"type": "typing", "room": room})).await;
    let t = alice.expect("typing").await;
    assert_eq!(
        (t["room"].as_u64(), t["user"]["username"].as_str()),
        (Some(room), Some("bob"))
    );
    // Typing has no reply and is not echoed to the typist.
    let pong = bob.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let before = bob.take_backlog();
    assert!(before.iter().all(|f| f["type"] != "typing"), "{before:?}");
}

#[tokio::test]
async fn read_markers_track_unread_counts() {
    let h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut alice = h.connect(&ta).await;
    let mut bob = h.connect(&tb).await;
    let room = alice.create_room("lobby", "group").await;
    alice
        .ok(json!({"type": "add_member", "room": room, "username": "bob"}))
        .await;
    for body in ["one", "two", "three"] {
        alice.say(room, body).await;
    }
    let unread = bob
        .ok(json!({"type": "mark_read", "room": room, "seq": 2}))
        .await;
    assert_eq!(unread["type"], "unread");
    assert_eq!(
        (
            unread["read_seq"].as_u64(),
            unread["latest_seq"].as_u64(),
            unread["unread"].as_u64()
        ),
        (Some(2), Some(3), Some(1))
    );
    let rooms = bob.ok(json!({"type": "rooms"})).await;
    assert_eq!(rooms["rooms"][0]["unread"].as_u64(), Some(1));
}

#[tokio::test]
async fn resume_after_reconnect_while_others_publish_has_no_gap_and_no_duplicate() {
    // The publisher sends as fast as acks come back; the rate limit is not under test here.
    let limits = Limits {
        requests_per_second: 100_000.0,
        request_burst: 100_000.0,
        ..Limits::default()
    };
    let h = Harness::start_with(WsConfig::default(), limits).await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut alice = h.connect(&ta).await;
    let room = alice.create_room("busy", "public").await;
    let mut bob = h.connect(&tb).await;
    bob.ok(json!({"type": "join", "room": room})).await;
    bob.subscribe(room).await;

    // Phase 1: bob is live.
    for i in 1..=100 {
        alice.say(room, &format!("m{i}")).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 60 {
        seen.push(bob.message().await.0);
    }
    // Bob drops mid-stream (without reading the rest).
    drop(bob);
    // Phase 2: more while bob is away.
    for i in 101..=200 {
        alice.say(room, &format!("m{i}")).await;
    }
    // Phase 3: alice keeps publishing *while* bob reconnects and resubscribes.
    let publisher = tokio::spawn(async move {
        for i in 201..=300 {
            alice.say(room, &format!("m{i}")).await;
        }
        alice
    });
    let mut bob = h.connect(&tb).await;
    let since = *seen.last().unwrap();
    let sub = bob
        .ok(json!({"type": "subscribe", "room": room, "since_seq": since}))
        .await;
    assert!(sub["gap"].is_null(), "{sub}");
    for e in sub["entries"].as_array().unwrap() {
        seen.push(e["seq"].as_u64().unwrap());
    }
    while *seen.last().unwrap() < 300 {
        seen.push(bob.message().await.0);
    }
    publisher.await.unwrap();
    assert_eq!(seen, (1..=300).collect::<Vec<u64>>());
}

#[tokio::test]
async fn every_device_of_a_user_receives_everything() {
    let h = Harness::start().await;
    let (_, ta) = h.user("alice").await;
    let (_, tb) = h.user("bob").await;
    let mut bob = h.connect(&tb).await;
    let room = bob.create_room("family", "group").await;
    bob.ok(json!({"type": "add_member", "room": room, "username": "alice"}))
        .await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        let mut d = h.connect(&ta).await;
        d.subscribe(room).await;
        devices.push(d);
    }
    bob.say(room, "dinner!").await;
    for d in &mut devices {
        assert_eq!(d.message().await, (1, "dinner!".to_string()));
    }
    // What one device sends, the others (and bob) see too.
    devices[0].say(room, "coming").await;
    let mut bodies = BTreeSet::new();
    for d in &mut devices[1..] {
        bodies.insert(d.message().await);
    }
    assert_eq!(bodies, BTreeSet::from([(2, "coming".to_string())]));
    assert_eq!(h.engine.stats().users, 2);
}

#[tokio::test]
async fn logout_closes_the_sockets_opened_with_that_token() {
    let h = Harness::start().await;
    let (alice_id, ta) = h.user("alice").await;
    let other = h
        .engine
        .accounts()
        .issue_token(alice_id.user)
        .await
        .unwrap();
    let mut laptop = h.connect(&ta).await;
    let mut phone = h.connect(other.as_str()).await;

    assert!(h.engine.logout(&ta).await.unwrap());
    let frame = laptop.close_frame().await.expect("a close frame");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4401, "revoked")
    );
    // The other token's socket is unaffected...
    let pong = phone.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    // ...until the user logs out everywhere.
    h.engine.logout_everywhere(alice_id.user).await.unwrap();
    assert_eq!(phone.close_code().await, Some(4401));
    // And the revoked token no longer opens a socket.
    let e = h
        .try_connect(h.request(&format!("?token={ta}")))
        .await
        .err()
        .unwrap();
    assert_eq!(refusal(e).0, 401);
    assert_eq!(h.server.stats().closed_revoked, 2);
}
