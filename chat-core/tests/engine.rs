//! The engine's rules, one test per rule, driven through sessions without sockets.

mod common;

use chat_core::protocol::{
    ClientFrame, Hello, HelloAuth, MemberChange, SeqRange, ServerFrame, UnsubscribeReason,
};
use chat_core::{
    Author, CloseReason, Codec, ErrorCode, HistoryQuery, Limits, Request, Role, RoomId, RoomKind,
    Seq,
};
use common::*;
use std::time::Duration;

#[tokio::test]
async fn two_members_chat_and_the_sender_is_acked_before_the_message_arrives() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    a.subscribe(room).await;
    b.subscribe(room).await;
    a.drain();

    a.session
        .handle(Request {
            id: Some(99),
            frame: ClientFrame::Send {
                room,
                body: "hello bob".into(),
                client_msg_id: Some("c1".into()),
            },
        })
        .await;
    let frames = a.drain();
    assert!(
        matches!(
            frames[0].frame,
            ServerFrame::Sent {
                seq: Seq(1),
                duplicate: false,
                ..
            }
        ) && frames[0].id == Some(99),
        "{frames:?}"
    );
    assert!(matches!(&frames[1].frame, ServerFrame::Message(m) if m.body == "hello bob"));
    let got = b.drain();
    let ServerFrame::Message(m) = &got.last().unwrap().frame else {
        panic!("{got:?}")
    };
    assert_eq!(
        (
            m.seq,
            m.sender,
            m.sender_name.as_str(),
            m.client_msg_id.as_deref()
        ),
        (Seq(1), Some(alice.user), "alice", Some("c1"))
    );
}

#[tokio::test]
async fn bad_requests_get_specific_error_codes_and_the_session_stays_usable() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[]).await;
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    let send = |room, body: &str| ClientFrame::Send {
        room,
        body: body.into(),
        client_msg_id: None,
    };

    assert_eq!(a.err(send(RoomId(999), "x")).await, ErrorCode::RoomNotFound);
    assert_eq!(a.err(send(RoomId(0), "x")).await, ErrorCode::RoomNotFound);
    assert_eq!(b.err(send(room, "x")).await, ErrorCode::NotMember);
    assert_eq!(a.err(send(room, "")).await, ErrorCode::EmptyBody);
    assert_eq!(a.err(send(room, " \n ")).await, ErrorCode::EmptyBody);
    let big = "x".repeat(e.limits().max_body_bytes + 1);
    assert_eq!(a.err(send(room, &big)).await, ErrorCode::BodyTooLarge);
    let bad_id = ClientFrame::Send {
        room,
        body: "x".into(),
        client_msg_id: Some("has space".into()),
    };
    assert_eq!(a.err(bad_id).await, ErrorCode::InvalidField);
    let sub = |room| ClientFrame::Subscribe {
        room,
        since_seq: None,
    };
    assert_eq!(b.err(sub(room)).await, ErrorCode::NotMember);
    assert_eq!(b.err(sub(RoomId(u64::MAX))).await, ErrorCode::RoomNotFound);
    let hist = ClientFrame::History {
        room,
        before: None,
        after: None,
        limit: None,
    };
    assert_eq!(b.err(hist).await, ErrorCode::NotMember);
    let both = ClientFrame::History {
        room,
        before: Some(Seq(3)),
        after: Some(Seq(1)),
        limit: None,
    };
    assert_eq!(a.err(both).await, ErrorCode::InvalidField);

    // Undecodable input: an error frame, and the next good request still works.
    for garbage in [
        &b"{not json"[..],
        br#"{"type":"fly"}"#,
        br#"{"type":"send","room":"one","body":"x"}"#,
    ] {
        a.session.handle_bytes(Codec::Json, garbage).await;
        let r = a.next().await;
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
    a.session
        .handle_bytes(Codec::Postcard, b"\xff\xff\xff")
        .await;
    assert!(matches!(
        a.next().await.frame,
        ServerFrame::Error {
            code: ErrorCode::BadFrame,
            ..
        }
    ));
    assert_eq!(a.send(room, "still works").await, 1);
    // Nothing invalid was stored.
    assert_eq!(e.store().latest_seq(room).await.unwrap(), Seq(1));
}

#[tokio::test]
async fn a_retried_send_is_stored_and_delivered_once() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    b.subscribe(room).await;
    let send = ClientFrame::Send {
        room,
        body: "once".into(),
        client_msg_id: Some("retry-1".into()),
    };
    let first = a.ok(send.clone()).await;
    let second = a.ok(send).await;
    assert_eq!(
        first,
        ServerFrame::Sent {
            room,
            seq: Seq(1),
            duplicate: false
        }
    );
    assert_eq!(
        second,
        ServerFrame::Sent {
            room,
            seq: Seq(1),
            duplicate: true
        }
    );
    assert_eq!(b.messages(), vec![(room, 1, "once".to_string())]);
    assert_eq!(e.store().latest_seq(room).await.unwrap(), Seq(1));
}

#[tokio::test]
async fn resume_replays_what_was_missed_then_goes_live() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    for i in 1..=5 {
        a.send(room, &format!("m{i}")).await;
    }
    let mut b = Client::open(&e, &bob);
    let reply = b
        .ok(ClientFrame::Subscribe {
            room,
            since_seq: Some(Seq(2)),
        })
        .await;
    let ServerFrame::Subscribed {
        entries,
        latest_seq,
        gap,
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(
        entries.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!((latest_seq, gap), (Seq(5), None));
    a.send(room, "m6").await;
    assert_eq!(b.messages(), vec![(room, 6, "m6".to_string())]);

    // Resuming at the head replays nothing; ahead of it is an explicit error.
    let mut b2 = Client::open(&e, &bob);
    let ServerFrame::Subscribed { entries, .. } = b2
        .ok(ClientFrame::Subscribe {
            room,
            since_seq: Some(Seq(6)),
        })
        .await
    else {
        panic!()
    };
    assert!(entries.is_empty());
    let mut b3 = Client::open(&e, &bob);
    assert_eq!(
        b3.err(ClientFrame::Subscribe {
            room,
            since_seq: Some(Seq(7)),
        })
        .await,
        ErrorCode::SeqAhead
    );
}

#[tokio::test]
async fn resume_from_far_in_the_past_names_the_gap_instead_of_skipping_silently() {
    let e = engine_with(Limits {
        max_replay: 3,
        ..Limits::default()
    });
    let alice = user(&e, "alice").await;
    let room = group(&e, &alice, &[]).await;
    let mut a = Client::open(&e, &alice);
    for i in 1..=10 {
        a.send(room, &format!("m{i}")).await;
    }
    let mut a2 = Client::open(&e, &alice);
    let ServerFrame::Subscribed {
        entries,
        latest_seq,
        gap,
        ..
    } = a2
        .ok(ClientFrame::Subscribe {
            room,
            since_seq: Some(Seq(1)),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(
        entries.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    assert_eq!(latest_seq, Seq(10));
    assert_eq!(
        gap,
        Some(SeqRange {
            from: Seq(2),
            to: Seq(7)
        })
    );
    // The gap can be paged in with history.
    let ServerFrame::History { entries, .. } = a2
        .ok(ClientFrame::History {
            room,
            before: None,
            after: Some(Seq(1)),
            limit: Some(6),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(
        entries.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6, 7]
    );
}

#[tokio::test]
async fn history_pages_backwards_and_forwards() {
    let e = engine();
    let alice = user(&e, "alice").await;
    let room = group(&e, &alice, &[]).await;
    let mut a = Client::open(&e, &alice);
    for i in 1..=7 {
        a.send(room, &format!("m{i}")).await;
    }
    let page = |before, after, limit| ClientFrame::History {
        room,
        before,
        after,
        limit,
    };
    let seqs = |f: ServerFrame| match f {
        ServerFrame::History {
            entries, has_more, ..
        } => (
            entries.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            has_more,
        ),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        seqs(a.ok(page(None, None, Some(3))).await),
        (vec![5, 6, 7], true)
    );
    assert_eq!(
        seqs(a.ok(page(Some(Seq(5)), None, Some(3))).await),
        (vec![2, 3, 4], true)
    );
    assert_eq!(
        seqs(a.ok(page(Some(Seq(2)), None, Some(3))).await),
        (vec![1], false)
    );
    assert_eq!(
        seqs(a.ok(page(None, Some(Seq(4)), Some(10))).await),
        (vec![5, 6, 7], false)
    );
    assert_eq!(seqs(a.ok(page(None, None, Some(0))).await), (vec![], false));
    let empty = group(&e, &alice, &[]).await;
    let r = a
        .ok(ClientFrame::History {
            room: empty,
            before: None,
            after: None,
            limit: None,
        })
        .await;
    assert_eq!(seqs(r), (vec![], false));
}

#[tokio::test]
async fn direct_messages_use_one_stable_room_per_pair() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    let dm = |to: &str, body: &str| ClientFrame::SendDirect {
        to: to.into(),
        body: body.into(),
        client_msg_id: None,
    };
    let ServerFrame::Sent { room, seq, .. } = a.ok(dm("bob", "hi bob")).await else {
        panic!()
    };
    assert_eq!(seq, Seq(1));
    // Both users' sessions learn about the new conversation.
    let told = b.drain();
    assert!(
        told.iter()
            .any(|r| matches!(&r.frame, ServerFrame::Room { room: info } if info.id == room && info.kind == RoomKind::Direct)),
        "{told:?}"
    );
    let ServerFrame::Sent {
        room: back, seq, ..
    } = b.ok(dm("ALICE", "hi alice")).await
    else {
        panic!()
    };
    assert_eq!((back, seq), (room, Seq(2)));
    assert_eq!(a.err(dm("alice", "me")).await, ErrorCode::InvalidField);
    assert_eq!(a.err(dm("nobody", "x")).await, ErrorCode::UserNotFound);
    let carol = user(&e, "carol").await;
    let mut c = Client::open(&e, &carol);
    assert_eq!(
        c.err(ClientFrame::Subscribe {
            room,
            since_seq: None
        })
        .await,
        ErrorCode::NotMember
    );
    assert_eq!(
        a.err(ClientFrame::Leave { room }).await,
        ErrorCode::Forbidden
    );
}

#[tokio::test]
async fn public_rooms_can_be_watched_without_joining_but_posting_needs_a_join() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let mut a = Client::open(&e, &alice);
    let ServerFrame::Room { room } = a
        .ok(ClientFrame::CreateRoom {
            name: "Lobby".into(),
            kind: RoomKind::Public,
        })
        .await
    else {
        panic!()
    };
    let mut b = Client::open(&e, &bob);
    b.subscribe(room.id).await;
    a.send(room.id, "welcome").await;
    assert_eq!(b.messages(), vec![(room.id, 1, "welcome".into())]);
    assert_eq!(
        b.err(ClientFrame::Send {
            room: room.id,
            body: "hi".into(),
            client_msg_id: None
        })
        .await,
        ErrorCode::NotMember
    );
    let ServerFrame::Room { room: joined } = b
        .ok(ClientFrame::Join {
            room: None,
            name: Some("lobby".into()),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(joined.id, room.id);
    assert_eq!(b.send(room.id, "hi").await, 2);
    // Names of public rooms are unique; a group room can't be joined freely.
    assert_eq!(
        a.err(ClientFrame::CreateRoom {
            name: "LOBBY".into(),
            kind: RoomKind::Public
        })
        .await,
        ErrorCode::AlreadyExists
    );
    let g = group(&e, &alice, &[]).await;
    assert_eq!(
        b.err(ClientFrame::Join {
            room: Some(g),
            name: None
        })
        .await,
        ErrorCode::Forbidden
    );
}

#[tokio::test]
async fn nothing_is_delivered_after_a_leave_is_acknowledged() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    let mut b1 = Client::open(&e, &bob);
    let mut b2 = Client::open(&e, &bob);
    b1.subscribe(room).await;
    b2.subscribe(room).await;
    a.send(room, "before").await;
    b1.ok(ClientFrame::Leave { room }).await;
    let other = b2.drain();
    assert!(
        other.iter().any(|r| r.frame
            == ServerFrame::Unsubscribed {
                room,
                reason: UnsubscribeReason::Left
            }),
        "{other:?}"
    );
    a.send(room, "after").await;
    assert!(b1.messages().is_empty());
    assert!(b2.messages().is_empty());
    assert_eq!(
        b1.err(ClientFrame::Subscribe {
            room,
            since_seq: None
        })
        .await,
        ErrorCode::NotMember
    );
}

#[tokio::test]
async fn kicks_follow_roles_and_end_delivery() {
    let e = engine();
    let (owner, admin, m1, m2) = (
        user(&e, "owner").await,
        user(&e, "admin").await,
        user(&e, "m1").await,
        user(&e, "m2").await,
    );
    let room = group(&e, &owner, &[&admin, &m1, &m2]).await;
    let mut o = Client::open(&e, &owner);
    let mut ad = Client::open(&e, &admin);
    let mut c1 = Client::open(&e, &m1);
    let mut c2 = Client::open(&e, &m2);
    let kick = |name: &str| ClientFrame::Kick {
        room,
        username: name.into(),
    };
    // Members cannot kick or add; admins cannot kick admins or the owner.
    assert_eq!(c1.err(kick("m2")).await, ErrorCode::Forbidden);
    assert_eq!(
        c1.err(ClientFrame::AddMember {
            room,
            username: "x".into()
        })
        .await,
        ErrorCode::Forbidden
    );
    assert_eq!(
        ad.err(ClientFrame::SetRole {
            room,
            username: "m1".into(),
            role: Role::Admin
        })
        .await,
        ErrorCode::Forbidden
    );
    o.ok(ClientFrame::SetRole {
        room,
        username: "admin".into(),
        role: Role::Admin,
    })
    .await;
    assert_eq!(ad.err(kick("owner")).await, ErrorCode::Forbidden);
    c2.subscribe(room).await;
    c1.subscribe(room).await;
    ad.ok(kick("m2")).await;
    let frames = c2.drain();
    assert!(frames.iter().any(|r| r.frame
        == ServerFrame::Unsubscribed {
            room,
            reason: UnsubscribeReason::Kicked
        }));
    assert!(c1.drain().iter().any(|r| matches!(
        &r.frame,
        ServerFrame::MemberChanged { change: MemberChange::Kicked, user, .. } if user.username == "m2"
    )));
    o.send(room, "after the kick").await;
    assert!(c2.messages().is_empty());
    assert_eq!(c1.messages().len(), 1);
    assert_eq!(ad.err(kick("m2")).await, ErrorCode::NotMember);
}

#[tokio::test]
async fn presence_is_per_user_not_per_session() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    a.subscribe(room).await;
    let presence = |c: &mut Client| {
        c.drain()
            .into_iter()
            .filter_map(|r| match r.frame {
                ServerFrame::Presence { user, online, .. } => Some((user.username, online)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mut b1 = Client::open(&e, &bob);
    b1.subscribe(room).await;
    assert_eq!(presence(&mut a), vec![("bob".to_string(), true)]);
    let mut b2 = Client::open(&e, &bob);
    b2.subscribe(room).await;
    assert_eq!(presence(&mut a), vec![]);
    let ServerFrame::Members { members, .. } = a.ok(ClientFrame::Members { room }).await else {
        panic!()
    };
    assert!(members.iter().all(|m| m.online));
    drop(b1);
    assert_eq!(presence(&mut a), vec![]);
    drop(b2);
    assert_eq!(presence(&mut a), vec![("bob".to_string(), false)]);
    let stats = e.stats();
    assert_eq!((stats.sessions, stats.users, stats.rooms), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn typing_is_ephemeral_rate_limited_and_not_echoed() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    a.subscribe(room).await;
    b.subscribe(room).await;
    a.drain();
    let typing = |c: &mut Client| {
        c.drain()
            .into_iter()
            .filter(|r| matches!(r.frame, ServerFrame::Typing { .. }))
            .count()
    };
    for _ in 0..10 {
        a.session
            .handle(Request {
                id: None,
                frame: ClientFrame::Typing { room },
            })
            .await;
    }
    assert_eq!(typing(&mut b), 3, "the burst, then dropped");
    assert_eq!(typing(&mut a), 0, "not echoed to the typist");
    tokio::time::advance(Duration::from_secs(1)).await;
    a.session
        .handle(Request {
            id: None,
            frame: ClientFrame::Typing { room },
        })
        .await;
    assert_eq!(typing(&mut b), 1);
    assert_eq!(
        e.store().latest_seq(room).await.unwrap(),
        Seq(0),
        "never stored"
    );
}

#[tokio::test]
async fn read_markers_drive_unread_counts() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    for i in 0..4 {
        a.send(room, &format!("m{i}")).await;
    }
    b.send(room, "mine").await;
    let unread_of = |f: ServerFrame| match f {
        ServerFrame::Rooms { rooms } => rooms
            .iter()
            .map(|r| (r.room.id, r.unread))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(unread_of(b.ok(ClientFrame::Rooms).await), vec![(room, 4)]);
    let ServerFrame::Unread(u) = b.ok(ClientFrame::MarkRead { room, seq: Seq(3) }).await else {
        panic!()
    };
    assert_eq!((u.read_seq, u.latest_seq, u.unread), (Seq(3), Seq(5), 1));
    // Markers never move backwards.
    let ServerFrame::Unread(u) = b.ok(ClientFrame::MarkRead { room, seq: Seq(1) }).await else {
        panic!()
    };
    assert_eq!(u.read_seq, Seq(3));
    assert_eq!(
        b.err(ClientFrame::MarkRead { room, seq: Seq(6) }).await,
        ErrorCode::SeqAhead
    );
    assert_eq!(unread_of(a.ok(ClientFrame::Rooms).await), vec![(room, 1)]);
}

#[tokio::test]
async fn every_device_of_a_user_receives_every_message() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut devices: Vec<Client> = (0..3).map(|_| Client::open(&e, &bob)).collect();
    for d in devices.iter_mut() {
        d.subscribe(room).await;
    }
    let mut a = Client::open(&e, &alice);
    for i in 1..=5 {
        a.send(room, &format!("m{i}")).await;
    }
    for d in devices.iter_mut() {
        let seqs: Vec<u64> = d.messages().into_iter().map(|m| m.1).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
}

#[tokio::test]
async fn a_stalled_reader_is_cut_off_and_nobody_else_notices() {
    let e = engine_with(Limits {
        session_queue: 8,
        ..Limits::default()
    });
    let (alice, bob, carol) = (
        user(&e, "alice").await,
        user(&e, "bob").await,
        user(&e, "carol").await,
    );
    let room = group(&e, &alice, &[&bob, &carol]).await;
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    let mut c = Client::open(&e, &carol);
    b.subscribe(room).await;
    c.subscribe(room).await;
    a.drain();
    b.drain();
    let mut carol_seen = Vec::new();
    for i in 1..=30 {
        // Alice is never blocked: every send is acked at once.
        a.send(room, &format!("m{i}")).await;
        carol_seen.extend(c.messages().into_iter().map(|m| m.1));
    }
    assert_eq!(carol_seen, (1..=30).collect::<Vec<_>>());
    assert_eq!(b.closed().await, CloseReason::SlowConsumer);
    // Bob comes back and resumes without a gap.
    let mut b2 = Client::open(&e, &bob);
    let ServerFrame::Subscribed { entries, .. } = b2
        .ok(ClientFrame::Subscribe {
            room,
            since_seq: Some(Seq(0)),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(entries.len(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_flooding_client_is_rate_limited_then_disconnected() {
    let e = engine_with(Limits {
        requests_per_second: 2.0,
        request_burst: 5.0,
        max_rate_violations: 20,
        ..Limits::default()
    });
    let alice = user(&e, "alice").await;
    let mut a = Client::open(&e, &alice);
    for _ in 0..5 {
        assert_eq!(a.ok(ClientFrame::Ping).await, ServerFrame::Pong);
    }
    a.session
        .handle(Request {
            id: Some(1000),
            frame: ClientFrame::Ping,
        })
        .await;
    assert!(matches!(
        a.next().await.frame,
        ServerFrame::Error {
            code: ErrorCode::RateLimited,
            ..
        }
    ));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(a.ok(ClientFrame::Ping).await, ServerFrame::Pong);
    for _ in 0..100 {
        a.session
            .handle(Request {
                id: None,
                frame: ClientFrame::Ping,
            })
            .await;
    }
    assert_eq!(a.closed().await, CloseReason::PolicyViolation);
}

#[tokio::test]
async fn the_application_posts_as_the_system_and_notifies_single_users() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let other = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    let mut b1 = Client::open(&e, &bob);
    let mut b2 = Client::open(&e, &bob);
    a.subscribe(room).await;
    b1.subscribe(room).await;
    b2.subscribe(other).await;
    let appended = e
        .publish(Author::System, room, "maintenance at noon".into(), None)
        .await
        .unwrap();
    assert_eq!(appended.entry.seq, Seq(1));
    let got = b1.drain();
    assert!(got.iter().any(|r| matches!(&r.frame,
        ServerFrame::Message(m) if m.sender.is_none() && m.sender_name == "system")));
    a.drain();
    b2.drain();
    // To one user: all of bob's sessions, or only those subscribed to a room.
    assert_eq!(e.notify_user(bob.user, None, "hi bob").await, 2);
    assert_eq!(e.notify_user(bob.user, Some(room), "about room").await, 1);
    assert!(a.drain().is_empty());
    assert_eq!(b1.drain().len(), 2);
    assert_eq!(b2.drain().len(), 1);
    assert_eq!(
        e.publish(Author::System, RoomId(404), "x".into(), None)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::RoomNotFound
    );
}

#[tokio::test]
async fn invites_admit_once_and_fail_distinctly() {
    let e = engine();
    let (alice, bob, carol) = (
        user(&e, "alice").await,
        user(&e, "bob").await,
        user(&e, "carol").await,
    );
    let room = group(&e, &alice, &[]).await;
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    let mut c = Client::open(&e, &carol);
    let ServerFrame::Invite { code, .. } = a
        .ok(ClientFrame::CreateInvite {
            room,
            ttl_secs: None,
            max_uses: Some(1),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(code.len(), 22, "128 random bits, base64url");
    let ServerFrame::Room { room: info } =
        b.ok(ClientFrame::RedeemInvite { code: code.clone() }).await
    else {
        panic!()
    };
    assert_eq!(info.id, room);
    // Redeeming again as a member is idempotent and uses nothing.
    b.ok(ClientFrame::RedeemInvite { code: code.clone() }).await;
    assert_eq!(
        c.err(ClientFrame::RedeemInvite { code }).await,
        ErrorCode::InviteExhausted
    );
    assert_eq!(
        c.err(ClientFrame::RedeemInvite {
            code: "nope".into()
        })
        .await,
        ErrorCode::InviteUnknown
    );
    assert_eq!(
        c.err(ClientFrame::CreateInvite {
            room,
            ttl_secs: None,
            max_uses: None
        })
        .await,
        ErrorCode::NotMember
    );
    assert_eq!(b.send(room, "in").await, 1);
}

#[tokio::test]
async fn hello_negotiates_the_version_and_can_carry_credentials() {
    let e = engine_with(Limits {
        allow_guests: true,
        ..Limits::default()
    });
    let alice = user(&e, "alice").await;
    let mut a = Client::open(&e, &alice);
    let hello = |v| {
        ClientFrame::Hello(Hello {
            version: v,
            auth: None,
        })
    };
    assert!(matches!(
        a.ok(hello(1)).await,
        ServerFrame::Welcome { version: 1, .. }
    ));
    assert_eq!(a.err(hello(99)).await, ErrorCode::UnsupportedVersion);

    let err = e
        .open_with_hello(
            &Hello {
                version: 1,
                auth: None,
            },
            None,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
    let (session, mut outbox) = e
        .open_with_hello(
            &Hello {
                version: 1,
                auth: Some(HelloAuth::Guest("visitor".into())),
            },
            Some(1),
        )
        .await
        .unwrap();
    assert_eq!(session.identity().username, "visitor");
    let chat_core::Outbound::Frame(w) = outbox.recv().await else {
        panic!()
    };
    // A new guest's welcome carries the token it comes back with: its name is taken now.
    let ServerFrame::Welcome {
        token: Some(token), ..
    } = &w.response().frame
    else {
        panic!("a guest's welcome has a token: {:?}", w.response())
    };
    let logged = format!("{:?}", w.response());
    assert!(
        !logged.contains(token.expose()) && logged.contains("Secret(..)"),
        "Debug leaves the token out: {logged}"
    );
    let back = e
        .open_with_hello(
            &Hello {
                version: 1,
                auth: Some(HelloAuth::Token(token.expose().to_string())),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(back.0.identity().user, session.identity().user);
    let err = e
        .open_with_hello(
            &Hello {
                version: 1,
                auth: Some(HelloAuth::Guest("visitor".into())),
            },
            None,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    // Logging that token out closes the guest's first session too, as for any token.
    assert!(e.logout(token.expose()).await.unwrap());
    assert!(matches!(
        outbox.recv().await,
        chat_core::Outbound::Close(CloseReason::Revoked)
    ));
    // A guest cannot take a password account's name.
    e.accounts()
        .register("member1", "long enough pw")
        .await
        .unwrap();
    let err = e
        .open_with_hello(
            &Hello {
                version: 1,
                auth: Some(HelloAuth::Guest("MEMBER1".into())),
            },
            None,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
}

#[tokio::test]
async fn a_guest_name_is_not_a_key_to_that_guests_account() {
    let e = engine_with(Limits {
        allow_guests: true,
        ..Limits::default()
    });
    let accounts = e.accounts();
    let visitor = accounts.guest("visitor").await.unwrap();
    let token = accounts.issue_token(visitor.id).await.unwrap();
    // Someone else typing the same name (in any case) gets nothing of the first guest's.
    for name in ["visitor", "VISITOR"] {
        assert_eq!(
            accounts.guest(name).await.unwrap_err().code(),
            ErrorCode::AlreadyExists,
            "{name}"
        );
    }
    // The guest itself comes back with its token.
    let again = accounts.verify_token(token.as_str()).await.unwrap();
    assert_eq!(again.user, visitor.id);
}

#[tokio::test]
async fn passwords_tokens_and_logout() {
    let e = engine();
    let accounts = e.accounts();
    accounts.register("alice", "correct horse").await.unwrap();
    assert_eq!(
        accounts
            .register("ALICE", "another pw")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        accounts.register("bob", "short").await.unwrap_err().code(),
        ErrorCode::InvalidField
    );
    let wrong = accounts.login("alice", "wrong horse").await.unwrap_err();
    let unknown = accounts.login("nobody", "correct horse").await.unwrap_err();
    assert_eq!(wrong, unknown, "the same error for both");
    assert_eq!(wrong.code(), ErrorCode::InvalidCredentials);
    let huge = "x".repeat(e.limits().max_password_bytes + 1);
    assert_eq!(
        accounts.login("alice", &huge).await.unwrap_err().code(),
        ErrorCode::InvalidCredentials
    );

    let (user, token) = accounts.login("Alice", "correct horse").await.unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(token.as_str().len(), 43, "32 random bytes, base64url");
    let identity = accounts.verify_token(token.as_str()).await.unwrap();
    let (_s1, mut o1) = e.open_session(identity.clone());
    let other = accounts.issue_token(user.id).await.unwrap();
    let (_s2, mut o2) = e.open_session(accounts.verify_token(other.as_str()).await.unwrap());

    assert!(e.logout(token.as_str()).await.unwrap());
    assert!(matches!(
        o1.recv().await,
        chat_core::Outbound::Close(CloseReason::Revoked)
    ));
    assert!(o2.try_recv().is_none(), "other tokens are unaffected");
    assert_eq!(
        accounts
            .verify_token(token.as_str())
            .await
            .unwrap_err()
            .code(),
        ErrorCode::InvalidToken
    );
    assert_eq!(e.logout_everywhere(user.id).await.unwrap(), 1);
    assert!(matches!(
        o2.recv().await,
        chat_core::Outbound::Close(CloseReason::Revoked)
    ));
    assert!(accounts.verify_token("garbage").await.is_err());
}

#[tokio::test]
async fn history_and_store_agree_after_concurrent_sends() {
    let e = engine();
    let alice = user(&e, "alice").await;
    let room = group(&e, &alice, &[]).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let e = e.clone();
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            e.publish(Author::User(alice), room, format!("m{i}"), None)
                .await
                .unwrap()
                .entry
                .seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().0);
    }
    seqs.sort();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let page = e
        .history_unchecked(room, HistoryQuery::After(Seq(0)), 100)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 20);
}

#[tokio::test]
async fn a_failed_resubscribe_leaves_the_live_subscription_and_presence_alone() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    let mut b = Client::open(&e, &bob);
    a.subscribe(room).await;
    b.subscribe(room).await;
    a.drain();
    assert_eq!(
        b.err(ClientFrame::Subscribe {
            room,
            since_seq: Some(Seq(50)),
        })
        .await,
        ErrorCode::SeqAhead
    );
    // A good re-subscribe replaces the subscription without an offline/online flap.
    b.ok(ClientFrame::Subscribe {
        room,
        since_seq: Some(Seq(0)),
    })
    .await;
    assert!(
        !a.drain()
            .iter()
            .any(|r| matches!(r.frame, ServerFrame::Presence { .. })),
        "no presence flap"
    );
    a.send(room, "still there?").await;
    assert_eq!(b.messages(), vec![(room, 1, "still there?".into())]);
}

/// A subscribe whose reply cannot be queued (its connection is going away) was never counted
/// online, so dropping it must not count the user's other session out. (Found by review: the
/// drop took the user offline while their phone was still live.)
#[tokio::test]
async fn a_subscribe_whose_reply_cannot_be_queued_leaves_the_users_presence_alone() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut a = Client::open(&e, &alice);
    a.subscribe(room).await;
    let mut phone = Client::open(&e, &bob);
    phone.subscribe(room).await;
    a.drain();
    let (mut laptop, outbox) = e.open_session(bob.clone());
    drop(outbox);
    laptop
        .handle(Request {
            id: Some(1),
            frame: ClientFrame::Subscribe {
                room,
                since_seq: None,
            },
        })
        .await;
    let presence = |frames: Vec<chat_core::protocol::Response>| -> Vec<bool> {
        frames
            .into_iter()
            .filter_map(|r| match r.frame {
                ServerFrame::Presence { online, .. } => Some(online),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        presence(a.drain()),
        Vec::<bool>::new(),
        "bob is still online"
    );
    let ServerFrame::Members { members, .. } = a.ok(ClientFrame::Members { room }).await else {
        panic!()
    };
    assert!(members.iter().any(|m| m.user.id == bob.user && m.online));
    // The phone going takes bob offline, once.
    drop(laptop);
    drop(phone);
    assert_eq!(presence(a.drain()), [false]);
}

#[tokio::test]
async fn errors_name_the_right_thing_and_leak_nothing() {
    let e = engine_with(Limits {
        request_burst: 1.0,
        requests_per_second: 0.001,
        ..Limits::default()
    });
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[]).await;
    let mut a = Client::open(&e, &alice);
    a.send(room, "one").await;
    // Rate limited: the refusal answers the request's id.
    a.session
        .handle(Request {
            id: Some(77),
            frame: ClientFrame::Ping,
        })
        .await;
    let r = a.next().await;
    assert_eq!(r.id, Some(77));
    assert!(matches!(
        r.frame,
        ServerFrame::Error {
            code: ErrorCode::RateLimited,
            ..
        }
    ));

    let bob_session = Client::open(&e, &bob);
    drop(bob_session);
    let err = e.mark_read(&bob, room, Seq(99)).await.unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::NotMember,
        "membership is checked first"
    );
    assert_eq!(
        e.public_room_by_name("nowhere").await.unwrap_err().code(),
        ErrorCode::RoomNotFound
    );
    assert_eq!(
        e.set_role(&alice, RoomId(404), "bob", Role::Admin)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::RoomNotFound
    );
}

#[tokio::test]
async fn a_kicked_user_is_told_even_on_sessions_not_watching_the_room() {
    let e = engine();
    let (alice, bob) = (user(&e, "alice").await, user(&e, "bob").await);
    let room = group(&e, &alice, &[&bob]).await;
    let mut idle = Client::open(&e, &bob);
    e.kick(&alice, room, "bob").await.unwrap();
    assert!(idle.drain().iter().any(|r| matches!(
        &r.frame,
        ServerFrame::MemberChanged { room: r2, change: MemberChange::Kicked, .. } if *r2 == room
    )));
}

#[tokio::test]
async fn fan_out_shares_one_frame_and_one_encoding_among_recipients() {
    let e = engine();
    let (alice, bob, carol) = (
        user(&e, "alice").await,
        user(&e, "bob").await,
        user(&e, "carol").await,
    );
    let room = group(&e, &alice, &[&bob, &carol]).await;
    let mut b = Client::open(&e, &bob);
    let mut c = Client::open(&e, &carol);
    b.subscribe(room).await;
    c.subscribe(room).await;
    b.drain();
    e.publish(chat_core::Author::User(alice), room, "shared".into(), None)
        .await
        .unwrap();
    let fb = b.outbox.try_recv().expect("bob got it");
    let fc = c.outbox.try_recv().expect("carol got it");
    assert!(
        std::sync::Arc::ptr_eq(&fb, &fc),
        "one frame for every recipient"
    );
    let (jb, jc) = (fb.encoded(Codec::Json), fc.encoded(Codec::Json));
    assert_eq!(jb.as_ptr(), jc.as_ptr(), "encoded once, bytes shared");
    assert!(
        std::str::from_utf8(&jb)
            .unwrap()
            .contains(r#""body":"shared""#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sign_ups_all_complete_on_the_bounded_hashing_pool() {
    let e = engine();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let e = e.clone();
            tokio::spawn(async move {
                e.accounts()
                    .register(&format!("user{i}"), "correct horse")
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (user, _) = e.accounts().login("user7", "correct horse").await.unwrap();
    assert_eq!(user.username, "user7");
}
