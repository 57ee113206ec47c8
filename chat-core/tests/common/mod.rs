//! Test harness: an engine on the in-memory store and clients that are just sessions and
//! their outboxes — no sockets.
#![allow(dead_code, unreachable_pub)]

use chat_core::protocol::{ClientFrame, Response, ServerFrame};
use chat_core::{
    CloseReason, Engine, Identity, Limits, Outbound, Outbox, Request, RoomId, Session, Timestamp,
};
use chat_store::MemoryStore;
use std::sync::Arc;
use std::time::Duration;

pub fn engine() -> Engine {
    engine_with(Limits::default())
}

pub fn engine_with(limits: Limits) -> Engine {
    Engine::builder(Arc::new(MemoryStore::new()))
        .limits(limits)
        .build()
}

/// A user created directly in the store (no password hashing: tests stay fast).
pub async fn user(engine: &Engine, name: &str) -> Identity {
    let u = engine
        .store()
        .create_user(name, None, false, Timestamp::now())
        .await
        .expect("create user");
    Identity::of(&u)
}

pub struct Client {
    pub session: Session,
    pub outbox: Outbox,
    next_id: u64,
}

impl Client {
    pub fn open(engine: &Engine, who: &Identity) -> Client {
        let (session, outbox) = engine.open_session(who.clone());
        Client {
            session,
            outbox,
            next_id: 1,
        }
    }

    /// Sends a request with a fresh id and returns the reply to it, skipping (and returning)
    /// any events that were queued before it.
    pub async fn request(&mut self, frame: ClientFrame) -> ServerFrame {
        let id = self.next_id;
        self.next_id += 1;
        self.session
            .handle(Request {
                id: Some(id),
                frame,
            })
            .await;
        loop {
            let r = self.next().await;
            if r.id == Some(id) {
                return r.frame;
            }
        }
    }

    /// Like `request`, and fails the test unless the reply is not an error.
    pub async fn ok(&mut self, frame: ClientFrame) -> ServerFrame {
        let dbg = format!("{frame:?}");
        let reply = self.request(frame).await;
        if let ServerFrame::Error { code, message } = &reply {
            panic!("{dbg} failed: {code}: {message}");
        }
        reply
    }

    /// The error code of a request that must fail.
    pub async fn err(&mut self, frame: ClientFrame) -> chat_core::ErrorCode {
        match self.request(frame).await {
            ServerFrame::Error { code, .. } => code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// The next queued frame; fails the test if none arrives within 5 s (a safety net for a
    /// broken test, not a synchronisation: frames are queued before `handle` returns).
    pub async fn next(&mut self) -> Response {
        match tokio::time::timeout(Duration::from_secs(5), self.outbox.recv()).await {
            Ok(Outbound::Frame(f)) => f.response().clone(),
            Ok(Outbound::Close(r)) => panic!("session closed: {r:?}"),
            Err(_) => panic!("no frame arrived"),
        }
    }

    /// Everything queued right now.
    pub fn drain(&mut self) -> Vec<Response> {
        let mut out = Vec::new();
        while let Some(f) = self.outbox.try_recv() {
            out.push(f.response().clone());
        }
        out
    }

    /// The `message` frames queued right now, as (room, seq, body).
    pub fn messages(&mut self) -> Vec<(RoomId, u64, String)> {
        self.drain()
            .into_iter()
            .filter_map(|r| match r.frame {
                ServerFrame::Message(e) => Some((e.room, e.seq.0, e.body)),
                _ => None,
            })
            .collect()
    }

    /// Waits for the engine to close this session and returns why.
    pub async fn closed(&mut self) -> CloseReason {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.outbox.recv()).await {
                Ok(Outbound::Close(r)) => return r,
                Ok(Outbound::Frame(_)) => continue,
                Err(_) => panic!("session was not closed"),
            }
        }
    }

    pub async fn send(&mut self, room: RoomId, body: &str) -> u64 {
        match self
            .ok(ClientFrame::Send {
                room,
                body: body.into(),
                client_msg_id: None,
            })
            .await
        {
            ServerFrame::Sent { seq, .. } => seq.0,
            other => panic!("expected sent, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, room: RoomId) {
        self.ok(ClientFrame::Subscribe {
            room,
            since_seq: None,
        })
        .await;
    }
}

/// A group room owned by `owner` with `members` added.
pub async fn group(engine: &Engine, owner: &Identity, members: &[&Identity]) -> RoomId {
    let room = engine
        .create_room(owner, "room", chat_core::RoomKind::Group)
        .await
        .unwrap();
    for m in members {
        engine
            .add_member(owner, room.id, &m.username)
            .await
            .unwrap();
    }
    room.id
}
