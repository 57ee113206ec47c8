//! Several engines ("nodes") sharing one store, wired by an in-process backplane — the shape a
//! Redis backplane will have — including a lossy, reordering one, to exercise the sequencer
//! and its gap fill from the store.

mod common;

use async_trait::async_trait;
use chat_core::protocol::{ClientFrame, ServerFrame, UnsubscribeReason};
use chat_core::{
    Author, Backplane, Engine, ErrorCode, Limits, NodeId, RemoteEvent, RemoteEventKind, Result,
    RoomKind, Seq, Store,
};
use chat_store::MemoryStore;
use common::Client;
use std::sync::{Arc, Mutex};

/// Delivers every published event to every other node, synchronously, unless told to hold
/// entries back (to simulate loss and reordering).
#[derive(Default)]
struct Bus {
    nodes: Mutex<Vec<Engine>>,
    /// Seqs whose entry event is held back instead of delivered.
    hold: Mutex<Vec<u64>>,
    held: Mutex<Vec<RemoteEvent>>,
}

impl Bus {
    fn release_held(&self) {
        let held: Vec<RemoteEvent> = std::mem::take(&mut *self.held.lock().unwrap());
        let nodes = self.nodes.lock().unwrap().clone();
        for ev in held {
            for n in &nodes {
                n.apply_remote(ev.clone());
            }
        }
    }
}

struct BusPort(Arc<Bus>);

#[async_trait]
impl Backplane for BusPort {
    async fn publish(&self, event: RemoteEvent) -> Result<()> {
        if let RemoteEventKind::Entry(e) = &event.kind {
            if self.0.hold.lock().unwrap().contains(&e.seq.0) {
                self.0.held.lock().unwrap().push(event);
                return Ok(());
            }
        }
        let nodes = self.0.nodes.lock().unwrap().clone();
        for n in nodes {
            n.apply_remote(event.clone());
        }
        Ok(())
    }
}

fn cluster(n: u64) -> (Vec<Engine>, Arc<Bus>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let bus = Arc::new(Bus::default());
    let nodes: Vec<Engine> = (1..=n)
        .map(|i| {
            Engine::builder(store.clone())
                .node(NodeId(i))
                .backplane(Arc::new(BusPort(bus.clone())))
                .limits(Limits::default())
                .build()
        })
        .collect();
    *bus.nodes.lock().unwrap() = nodes.clone();
    (nodes, bus)
}

#[tokio::test]
async fn a_message_published_on_one_node_reaches_subscribers_on_another() {
    let (nodes, _bus) = cluster(2);
    let alice = common::user(&nodes[0], "alice").await;
    let bob = common::user(&nodes[0], "bob").await;
    let room = common::group(&nodes[0], &alice, &[&bob]).await;
    let mut a = Client::open(&nodes[0], &alice);
    let mut b = Client::open(&nodes[1], &bob);
    a.subscribe(room).await;
    b.subscribe(room).await;
    for i in 1..=3 {
        a.send(room, &format!("m{i}")).await;
    }
    let seqs: Vec<u64> = b.messages().into_iter().map(|m| m.1).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // And the other way round.
    b.send(room, "from b").await;
    assert_eq!(a.messages().last().map(|m| m.1), Some(4));
}

#[tokio::test]
async fn a_kick_on_one_node_ends_delivery_on_the_others() {
    let (nodes, _bus) = cluster(2);
    let alice = common::user(&nodes[0], "alice").await;
    let bob = common::user(&nodes[0], "bob").await;
    let room = common::group(&nodes[0], &alice, &[&bob]).await;
    let mut b = Client::open(&nodes[1], &bob);
    b.subscribe(room).await;
    nodes[0].kick(&alice, room, "bob").await.unwrap();
    assert!(b.drain().iter().any(|r| r.frame
        == ServerFrame::Unsubscribed {
            room,
            reason: UnsubscribeReason::Kicked
        }));
    nodes[0]
        .publish(Author::User(alice.clone()), room, "secret".into(), None)
        .await
        .unwrap();
    assert!(b.messages().is_empty());
}

/// Members and watchers (subscribed to a public room without joining it), on the node where
/// the room is deleted and on another: every subscription ends with `unsubscribed: deleted`.
#[tokio::test]
async fn deleting_a_room_ends_every_subscription_on_every_node() {
    let (nodes, _bus) = cluster(2);
    let alice = common::user(&nodes[0], "alice").await;
    let bob = common::user(&nodes[0], "bob").await;
    let carol = common::user(&nodes[0], "carol").await;
    let room = nodes[0]
        .create_room(&alice, "Lobby", RoomKind::Public)
        .await
        .unwrap()
        .id;
    nodes[0].join(&bob, room).await.unwrap();
    let mut clients = vec![
        ("bob, member, here", Client::open(&nodes[0], &bob)),
        ("carol, watcher, here", Client::open(&nodes[0], &carol)),
        ("bob, member, elsewhere", Client::open(&nodes[1], &bob)),
        ("carol, watcher, elsewhere", Client::open(&nodes[1], &carol)),
    ];
    for (_, c) in &mut clients {
        c.subscribe(room).await;
    }
    nodes[0].delete_room(Some(&alice), room).await.unwrap();
    for (who, c) in &mut clients {
        let frames: Vec<ServerFrame> = c.drain().into_iter().map(|r| r.frame).collect();
        assert!(
            frames.contains(&ServerFrame::Unsubscribed {
                room,
                reason: UnsubscribeReason::Deleted
            }),
            "{who}: {frames:?}"
        );
        let again = ClientFrame::Subscribe {
            room,
            since_seq: None,
        };
        assert_eq!(c.err(again).await, ErrorCode::RoomNotFound, "{who}");
    }
}

#[tokio::test]
async fn entries_arriving_out_of_order_are_released_in_seq_order() {
    let (nodes, bus) = cluster(2);
    let alice = common::user(&nodes[0], "alice").await;
    let bob = common::user(&nodes[0], "bob").await;
    let room = common::group(&nodes[0], &alice, &[&bob]).await;
    let mut b = Client::open(&nodes[1], &bob);
    b.subscribe(room).await;
    bus.hold.lock().unwrap().push(2);
    for i in 1..=4 {
        nodes[0]
            .publish(Author::User(alice.clone()), room, format!("m{i}"), None)
            .await
            .unwrap();
    }
    // 3 and 4 arrived but wait for 2.
    assert_eq!(
        b.messages().into_iter().map(|m| m.1).collect::<Vec<_>>(),
        vec![1]
    );
    bus.release_held();
    assert_eq!(
        b.messages().into_iter().map(|m| m.1).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
}

#[tokio::test(start_paused = true)]
async fn an_entry_the_backplane_lost_is_read_back_from_the_store() {
    let (nodes, bus) = cluster(2);
    let alice = common::user(&nodes[0], "alice").await;
    let bob = common::user(&nodes[0], "bob").await;
    let room = common::group(&nodes[0], &alice, &[&bob]).await;
    let mut b = Client::open(&nodes[1], &bob);
    b.subscribe(room).await;
    bus.hold.lock().unwrap().push(2); // and never released: lost
    for i in 1..=3 {
        nodes[0]
            .publish(Author::User(alice.clone()), room, format!("m{i}"), None)
            .await
            .unwrap();
    }
    assert_eq!(
        b.messages().into_iter().map(|m| m.1).collect::<Vec<_>>(),
        vec![1]
    );
    // With the clock paused, the runtime jumps to the gap-fill deadline as soon as everything
    // is idle; the fill reads seq 2 from the store and releases 2 and 3 in order.
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        if let ServerFrame::Message(m) = b.next().await.frame {
            seqs.push(m.seq.0);
        }
    }
    assert_eq!(seqs, vec![2, 3]);
}

#[tokio::test]
async fn a_subscriber_on_a_quiet_node_resumes_from_the_shared_store() {
    let (nodes, _bus) = cluster(2);
    let alice = common::user(&nodes[0], "alice").await;
    let room = nodes[0]
        .create_room(&alice, "news", RoomKind::Public)
        .await
        .unwrap()
        .id;
    for i in 1..=5 {
        nodes[0]
            .publish(Author::User(alice.clone()), room, format!("m{i}"), None)
            .await
            .unwrap();
    }
    let reader = common::user(&nodes[0], "reader").await;
    let mut r = Client::open(&nodes[1], &reader);
    let ServerFrame::Subscribed { entries, .. } = r
        .ok(ClientFrame::Subscribe {
            room,
            since_seq: Some(Seq(2)),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(
        entries.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    nodes[0]
        .publish(Author::User(alice.clone()), room, "m6".into(), None)
        .await
        .unwrap();
    assert_eq!(
        r.messages().into_iter().map(|m| m.1).collect::<Vec<_>>(),
        vec![6]
    );
}

#[tokio::test]
async fn ephemeral_events_and_notices_cross_nodes() {
    let (nodes, _bus) = cluster(2);
    let alice = common::user(&nodes[0], "alice").await;
    let bob = common::user(&nodes[0], "bob").await;
    let carol = common::user(&nodes[0], "carol").await;
    let room = common::group(&nodes[0], &alice, &[&bob]).await;
    let mut b = Client::open(&nodes[1], &bob);
    b.subscribe(room).await;
    b.drain();
    // Carol is added on node 0; bob (node 1) sees the member change, and carol's session on
    // node 1 learns about the room.
    let mut c = Client::open(&nodes[1], &carol);
    nodes[0].add_member(&alice, room, "carol").await.unwrap();
    assert!(b.drain().iter().any(
        |r| matches!(&r.frame, ServerFrame::MemberChanged { user, .. } if user.username == "carol")
    ));
    assert!(
        c.drain()
            .iter()
            .any(|r| matches!(&r.frame, ServerFrame::Room { room: info } if info.id == room))
    );
    nodes[0].notify_user(bob.user, None, "psst").await;
    assert!(
        b.drain()
            .iter()
            .any(|r| matches!(&r.frame, ServerFrame::Notice { body, .. } if body == "psst"))
    );
}

#[tokio::test]
async fn logging_out_a_token_closes_its_sessions_on_every_node() {
    let (nodes, _bus) = cluster(2);
    let alice = common::user(&nodes[0], "alice").await;
    let token = nodes[0].accounts().issue_token(alice.user).await.unwrap();
    let identity = nodes[1]
        .accounts()
        .verify_token(token.as_str())
        .await
        .unwrap();
    let mut remote = Client::open(&nodes[1], &identity);
    assert!(nodes[0].logout(token.as_str()).await.unwrap());
    assert_eq!(remote.closed().await, chat_core::CloseReason::Revoked);
}
