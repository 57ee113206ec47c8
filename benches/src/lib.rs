//! Shared set-up for the criterion benchmarks in `benches/benches/`.
//!
//! Run them with `cargo bench -p chat-benches`; figures and the machine they were measured
//! on are recorded in `docs/BENCHMARKS.md`.

use chat_core::protocol::{ClientFrame, ServerFrame};
use chat_core::{
    Engine, EntryKind, Identity, LogEntry, Message, NodeId, Outbox, RemoteEvent, RemoteEventKind,
    Request, RoomId, RoomKind, Seq, Session, Timestamp,
};
use chat_store::MemoryStore;
use std::sync::Arc;

/// An engine with `n` live sessions subscribed to one public room.
pub struct FanoutRig {
    /// The engine.
    pub engine: Engine,
    /// The room.
    pub room: RoomId,
    /// The subscribers' sessions (kept alive: dropping a session unsubscribes it).
    pub sessions: Vec<Session>,
    /// Their outboxes, in a vector of their own: a transport's writer holds only its outbox,
    /// and the receive loop should not stride over session state (the broadcast baseline's
    /// receivers are a compact vector too).
    pub outboxes: Vec<Outbox>,
    next_seq: u64,
    body: String,
}

impl FanoutRig {
    /// Builds the rig: `n` users, one session each, all subscribed to one public room.
    pub async fn new(n: usize, body_bytes: usize) -> FanoutRig {
        let engine = Engine::new(Arc::new(MemoryStore::new()));
        let owner = engine
            .store()
            .create_user("owner", None, false, Timestamp::now())
            .await
            .expect("owner");
        let room = engine
            .create_room(&Identity::of(&owner), "bench", RoomKind::Public)
            .await
            .expect("room");
        let mut sessions = Vec::with_capacity(n);
        let mut outboxes = Vec::with_capacity(n);
        for i in 0..n {
            let u = engine
                .store()
                .create_user(&format!("u{i}"), None, false, Timestamp::now())
                .await
                .expect("user");
            let (mut s, mut o) = engine.open_session(Identity::of(&u));
            s.handle(Request {
                id: None,
                frame: ClientFrame::Subscribe {
                    room: room.id,
                    since_seq: None,
                },
            })
            .await;
            // Drop the `subscribed` reply and any presence events.
            while o.try_recv().is_some() {}
            sessions.push(s);
            outboxes.push(o);
        }
        // Presence events of later subscribers reached earlier ones; clear them all.
        for o in outboxes.iter_mut() {
            while o.try_recv().is_some() {}
        }
        FanoutRig {
            engine,
            room: room.id,
            sessions,
            outboxes,
            next_seq: 0,
            body: "x".repeat(body_bytes),
        }
    }

    /// Delivers one already-sequenced entry to every subscriber through the hub (the path a
    /// backplane event takes: no store, no sockets), then has every subscriber read it
    /// through its `Outbox`. Returns how many deliveries were received.
    pub fn publish_and_drain(&mut self) -> usize {
        self.next_seq += 1;
        let entry = LogEntry {
            room: self.room,
            seq: Seq(self.next_seq),
            at: Timestamp(0),
            kind: EntryKind::Message(Message {
                sender: None,
                sender_name: "system".into(),
                body: self.body.clone(),
                client_msg_id: None,
            }),
        };
        self.engine.apply_remote(RemoteEvent {
            origin: NodeId(u64::MAX),
            kind: RemoteEventKind::Entry(entry),
        });
        let mut received = 0;
        for o in self.outboxes.iter_mut() {
            if let Some(f) = o.try_recv() {
                if matches!(f.response().frame, ServerFrame::Message(_)) {
                    received += 1;
                }
            }
        }
        received
    }
}
