//! Reconnection: resume without gap or duplicate, in-flight sends retried once, and the cases
//! where the client must not come back.

use crate::common::*;
use chat_client::{Auth, ClientError, CloseReason, Event, HistoryFrom};
use chat_core::{ErrorCode, Limits, RoomKind, Seq};
use std::time::Duration;

/// Alice reads through a proxy that is cut twice while bob keeps posting: she receives every
/// message exactly once, in order, and is told she reconnected.
async fn resume_while_another_user_publishes(wire: Wire) {
    let s = Servers::start().await;
    let (_, ta) = s.user("alice").await;
    let (_, tb) = s.user("bob").await;
    let proxy = Proxy::start(s.addr(wire)).await;
    let (alice, mut events) = connect(wire, proxy.addr, Auth::Token(ta)).await;
    let (bob, _) = connect(wire, s.addr(wire), Auth::Token(tb)).await;
    let room = bob.create_room("busy", RoomKind::Public).await.unwrap();
    let other = bob.create_room("quiet", RoomKind::Public).await.unwrap();
    alice.join_id(room.id).await.unwrap();
    alice.join_id(other.id).await.unwrap();
    alice.subscribe(room.id, None).await.unwrap();
    alice.subscribe(other.id, None).await.unwrap();
    let first_session = alice.session();

    const N: u64 = 60;
    let publisher = {
        let bob = bob.clone();
        tokio::spawn(async move {
            for i in 1..=N {
                bob.send(room.id, format!("m{i}")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };

    let mut seqs = Vec::new();
    let mut reconnects = 0;
    let mut disconnects = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seqs.len() < N as usize {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("every message in time")
            .expect("the stream stays open");
        match ev {
            Event::Message(m) => {
                assert_eq!(m.room, room.id);
                assert_eq!(m.body, format!("m{}", m.seq.0));
                seqs.push(m.seq.0);
                if seqs.len() == 15 || seqs.len() == 35 {
                    proxy.cut();
                }
            }
            Event::Disconnected { .. } => disconnects += 1,
            Event::Reconnected {
                resumed, failed, ..
            } => {
                assert_eq!((resumed, failed), (2, 0), "both rooms resumed");
                reconnects += 1;
            }
            Event::Closed(r) => panic!("closed: {r}"),
            _ => {}
        }
    }
    publisher.await.unwrap();
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "{wire:?}: no gap, no duplicate"
    );
    assert_eq!(reconnects, 2, "{wire:?}");
    assert!(disconnects >= 2);
    assert_ne!(alice.session(), first_session, "a new session");
    // Still live after all that.
    bob.send(other.id, "still there?").await.unwrap();
    assert_eq!(next_message(&mut events).await.body, "still there?");
}

#[tokio::test]
async fn resume_over_tcp() {
    resume_while_another_user_publishes(Wire::Tcp).await;
}

#[tokio::test]
async fn resume_over_websocket_json() {
    resume_while_another_user_publishes(Wire::WsJson).await;
}

#[tokio::test]
async fn resume_over_websocket_postcard() {
    resume_while_another_user_publishes(Wire::WsPostcard).await;
}

/// The server stores alice's message but its `sent` reply is lost with the connection: the
/// client re-sends it with the same `client_msg_id`, the server says "duplicate", and the
/// message exists — and reaches alice — once.
#[tokio::test]
async fn a_send_in_flight_when_the_connection_drops_is_stored_once() {
    for wire in ALL_WIRES {
        let s = Servers::start().await;
        let (_, ta) = s.user("alice").await;
        let (_, tb) = s.user("bob").await;
        let proxy = Proxy::start(s.addr(wire)).await;
        let (alice, mut events) = connect(wire, proxy.addr, Auth::Token(ta)).await;
        let (bob, mut bob_events) = connect(wire, s.addr(wire), Auth::Token(tb)).await;
        let room = alice.create_room("r", RoomKind::Public).await.unwrap();
        bob.join_id(room.id).await.unwrap();
        bob.subscribe(room.id, None).await.unwrap();
        alice.subscribe(room.id, None).await.unwrap();

        proxy.swallow(true);
        let send = {
            let alice = alice.clone();
            tokio::spawn(async move { alice.send(room.id, "exactly once").await })
        };
        // Bob seeing it proves it is stored; alice has seen nothing, not even the ack.
        let stored = next_message(&mut bob_events).await;
        assert_eq!(stored.body, "exactly once");
        proxy.cut();
        proxy.swallow(false);

        let sent = tokio::time::timeout(PATIENCE, send)
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|e| panic!("{wire:?}: {e}"));
        assert_eq!(sent.seq, stored.seq, "{wire:?}");
        assert!(
            sent.duplicate,
            "{wire:?}: the retry found the stored message"
        );

        let m = next_message(&mut events).await;
        assert_eq!((m.seq, m.body.as_str()), (stored.seq, "exactly once"));
        wait_for(&mut events, |e| matches!(e, Event::Reconnected { .. })).await;
        bob.send(room.id, "next").await.unwrap();
        assert_eq!(next_message(&mut events).await.body, "next", "{wire:?}");
        let page = bob
            .history(room.id, HistoryFrom::Latest, None)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 2, "{wire:?}: stored once");
    }
}

/// A request that is not safe to repeat fails with `ConnectionLost` instead of being re-sent.
#[tokio::test]
async fn a_create_room_in_flight_is_not_repeated() {
    let s = Servers::start().await;
    let (_, ta) = s.user("alice").await;
    let proxy = Proxy::start(s.tcp_addr).await;
    let (alice, mut events) = connect(Wire::Tcp, proxy.addr, Auth::Token(ta)).await;
    proxy.swallow(true);
    let create = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.create_room("once", RoomKind::Public).await })
    };
    // Wait until the room exists server-side, then drop the connection.
    tokio::time::timeout(PATIENCE, async {
        while s.engine.public_rooms().await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    proxy.cut();
    proxy.swallow(false);
    let err = create.await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost), "{err}");
    wait_for(&mut events, |e| matches!(e, Event::Reconnected { .. })).await;
    assert_eq!(s.engine.public_rooms().await.unwrap().len(), 1);
}

/// Revocation (logout, or the application closing the user's sessions) ends the client: no
/// reconnection, even with a password that would still work.
#[tokio::test]
async fn no_reconnect_after_revocation() {
    for wire in ALL_WIRES {
        let s = Servers::start().await;
        s.engine
            .accounts()
            .register("alice", "correct horse")
            .await
            .unwrap();
        let (bob_id, tb) = s.user("bob").await;

        // A token, revoked by logout.
        let (bob, mut events) = connect(wire, s.addr(wire), Auth::Token(tb.clone())).await;
        assert!(s.engine.logout(&tb).await.unwrap());
        let all = drain_to_end(&mut events).await;
        assert_eq!(
            all.last(),
            Some(&Event::Closed(CloseReason::Revoked)),
            "{wire:?}: {all:?}"
        );
        assert!(
            !all.iter().any(|e| matches!(e, Event::Disconnected { .. })),
            "{wire:?}: {all:?}"
        );
        let err = bob.ping().await.unwrap_err();
        assert!(err.is_auth(), "{err}");
        let _ = bob_id;

        // A password login, whose sessions the application closes.
        let login = Auth::Login {
            username: "alice".into(),
            password: "correct horse".into(),
        };
        let (alice, mut events) = connect(wire, s.addr(wire), login).await;
        let alice_id = chat_core::UserId(alice.user().id.0);
        assert_eq!(s.engine.close_user_sessions(alice_id).await, 1);
        let all = drain_to_end(&mut events).await;
        assert_eq!(
            all.last(),
            Some(&Event::Closed(CloseReason::Revoked)),
            "{wire:?}"
        );
        assert!(!all.iter().any(|e| matches!(e, Event::Disconnected { .. })));
        // Nobody comes back: the event stream has ended, so the client's driver — the only
        // part that reconnects — is gone, and requests fail at once.
        assert!(alice.ping().await.is_err(), "{wire:?}");
        // And the server lets go of the closed session (bounded wait, no fixed sleep).
        tokio::time::timeout(PATIENCE, async {
            while s.engine.stats().sessions > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{wire:?}: a session is still registered"));
    }
}

/// The connection drops, and meanwhile the token was revoked: the one reconnection attempt
/// is refused, and the client stops instead of retrying.
#[tokio::test]
async fn no_retry_after_the_credentials_are_refused() {
    for wire in ALL_WIRES {
        let s = Servers::start().await;
        let (_, tb) = s.user("bob").await;
        let proxy = Proxy::start(s.addr(wire)).await;
        let (bob, mut events) = connect(wire, proxy.addr, Auth::Token(tb.clone())).await;
        proxy.cut();
        // The server-side session is gone once the proxy's upstream socket closed.
        tokio::time::timeout(PATIENCE, async {
            while s.engine.stats().sessions > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        s.engine.logout(&tb).await.unwrap();
        let all = drain_to_end(&mut events).await;
        let attempts = all
            .iter()
            .filter(|e| matches!(e, Event::Disconnected { .. }))
            .count();
        assert!(attempts >= 1, "{wire:?}: {all:?}");
        match all.last() {
            Some(Event::Closed(CloseReason::AuthFailed { code, .. })) => {
                assert_eq!(*code, ErrorCode::InvalidToken, "{wire:?}")
            }
            other => panic!("{wire:?}: {other:?}"),
        }
        assert!(bob.is_closed());
    }
}

/// A server-wide close ("shutdown", WebSocket 1001) is a drop to recover from.
#[tokio::test]
async fn a_shutdown_close_is_followed_by_a_reconnection() {
    for wire in ALL_WIRES {
        let s = Servers::start().await;
        let (_, ta) = s.user("alice").await;
        let (alice, mut events) = connect(wire, s.addr(wire), Auth::Token(ta)).await;
        let room = alice.create_room("r", RoomKind::Public).await.unwrap();
        alice.subscribe(room.id, None).await.unwrap();
        s.engine.shutdown();
        let ev = wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
        let Event::Disconnected { reason, .. } = ev else {
            unreachable!()
        };
        assert!(reason.contains("shutdown"), "{wire:?}: {reason}");
        let ev = wait_for(&mut events, |e| matches!(e, Event::Reconnected { .. })).await;
        assert!(
            matches!(ev, Event::Reconnected { resumed: 1, .. }),
            "{ev:?}"
        );
        alice.send(room.id, "back").await.unwrap();
        assert_eq!(next_message(&mut events).await.body, "back");
    }
}

/// More missed entries than the server replays: the hole is announced, never hidden.
#[tokio::test]
async fn a_resume_beyond_max_replay_announces_the_gap() {
    let s = Servers::start_with(Limits {
        max_replay: 3,
        ..Limits::default()
    })
    .await;
    let (_, ta) = s.user("alice").await;
    let (_, tb) = s.user("bob").await;
    let proxy = Proxy::start(s.tcp_addr).await;
    let mut c = config(Wire::Tcp, proxy.addr, Auth::Token(ta));
    c.reconnect.initial_delay = Duration::from_millis(300);
    c.reconnect.max_delay = Duration::from_millis(300);
    let (alice, mut events) = connect_with(c).await;
    let (bob, _) = connect(Wire::Tcp, s.tcp_addr, Auth::Token(tb)).await;
    let room = bob.create_room("r", RoomKind::Public).await.unwrap();
    alice.subscribe(room.id, None).await.unwrap();
    bob.send(room.id, "m1").await.unwrap();
    assert_eq!(next_message(&mut events).await.seq, Seq(1));
    proxy.cut();
    wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    for i in 2..=10 {
        bob.send(room.id, format!("m{i}")).await.unwrap();
    }
    let ev = wait_for(&mut events, |e| matches!(e, Event::Gap { .. })).await;
    let Event::Gap { range, .. } = ev else {
        unreachable!()
    };
    assert_eq!((range.from, range.to), (Seq(2), Seq(7)));
    for want in 8..=10 {
        assert_eq!(next_message(&mut events).await.seq, Seq(want));
    }
}

/// A request waits for the reconnection, within its timeout.
#[tokio::test]
async fn a_request_times_out_when_no_reply_comes() {
    let s = Servers::start().await;
    let (_, ta) = s.user("alice").await;
    let proxy = Proxy::start(s.tcp_addr).await;
    let mut c = config(Wire::Tcp, proxy.addr, Auth::Token(ta));
    c.request_timeout = Duration::from_millis(300);
    let (alice, _events) = connect_with(c).await;
    proxy.swallow(true);
    let err = alice.ping().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    proxy.swallow(false);
    alice.ping().await.unwrap();
}

/// A connection that silently stops delivering (a half-open socket, a vanished server) is
/// noticed by the keepalive ping, and replaced.
#[tokio::test]
async fn a_silent_connection_is_detected_by_the_keepalive_and_replaced() {
    for wire in [Wire::Tcp, Wire::WsJson] {
        let s = Servers::start().await;
        let (_, ta) = s.user("alice").await;
        let proxy = Proxy::start(s.addr(wire)).await;
        let mut c = config(wire, proxy.addr, Auth::Token(ta));
        c.keepalive_interval = Duration::from_millis(150);
        c.connect_timeout = Duration::from_millis(500);
        let (alice, mut events) = connect_with(c).await;
        let room = alice.create_room("r", RoomKind::Public).await.unwrap();
        alice.subscribe(room.id, None).await.unwrap();
        proxy.swallow(true);
        let ev = wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
        let Event::Disconnected { reason, .. } = ev else {
            unreachable!()
        };
        assert!(reason.contains("no reply to a ping"), "{wire:?}: {reason}");
        proxy.swallow(false);
        let ev = wait_for(&mut events, |e| matches!(e, Event::Reconnected { .. })).await;
        assert!(
            matches!(ev, Event::Reconnected { resumed: 1, .. }),
            "{ev:?}"
        );
        alice.send(room.id, "alive").await.unwrap();
        assert_eq!(next_message(&mut events).await.body, "alive");
    }
}

/// A guest's name is taken once used, so a guest comes back with the token its `welcome`
/// carried: a dropped connection reconnects as the same guest, and resumes.
#[tokio::test]
async fn a_guest_reconnects_as_itself_after_a_drop() {
    for wire in ALL_WIRES {
        let s = Servers::start().await;
        let proxy = Proxy::start(s.addr(wire)).await;
        let name = format!("visitor{}", wire as u8);
        let (guest, mut events) = connect(wire, proxy.addr, Auth::Guest(name.clone())).await;
        let me = guest.user();
        assert!(
            guest.guest_token().is_some(),
            "{wire:?}: a new guest has a token"
        );
        let room = guest.create_room("guests", RoomKind::Public).await.unwrap();
        guest.subscribe(room.id, None).await.unwrap();
        proxy.cut();
        wait_for(&mut events, |e| matches!(e, Event::Reconnected { .. })).await;
        assert_eq!(guest.user(), me, "{wire:?}: the same guest");
        guest.send(room.id, "back").await.unwrap();
        assert_eq!(next_message(&mut events).await.body, "back", "{wire:?}");
        // Somebody else typing the name gets nothing of the guest's.
        let other =
            chat_client::Client::connect(config(wire, s.addr(wire), Auth::Guest(name))).await;
        assert!(
            matches!(
                &other,
                Err(ClientError::Server {
                    code: ErrorCode::AlreadyExists,
                    ..
                }) | Err(ClientError::Closed(CloseReason::AuthFailed {
                    code: ErrorCode::AlreadyExists,
                    ..
                }))
            ),
            "{wire:?}: {:?}",
            other.err()
        );
    }
}
