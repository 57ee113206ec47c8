//! # chat-core
//!
//! The transport-agnostic heart of the chat engine: rooms, members and roles, per-room
//! sequenced logs, a fan-out hub (one bounded ring per room, read by per-session cursors),
//! gapless resume, presence,
//! typing, read markers, authentication, and the wire protocol with its JSON and postcard
//! codecs.
//!
//! This crate knows nothing of sockets, HTTP or SQL. Storage plugs in through [`Store`]
//! (implementations in `chat-store`), other nodes through [`Backplane`], and transports
//! (`transport-ws`, `transport-tcp`) move the frames of a [`Session`] to and from the network.
//!
//! ```text
//!            ┌──────────── Engine ─────────────┐
//! transport ─▶ Session ─▶ rules ─▶ Store::append │
//!            │              │                   │
//!            │              ▼                   │
//! transport ◀─ Outbox ◀── Hub (per-room sequencer, rings, queues) ◀─ Backplane
//!            └─────────────────────────────────┘
//! ```
//!
//! A minimal embedding, with the in-memory store from `chat-store`: a user opens a session,
//! creates a room, subscribes and posts; the message comes back out of the session's outbox.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use chat_core::{Codec, Engine, Identity, Outbound, protocol::ServerFrame};
//! use std::sync::Arc;
//!
//! let engine = Engine::new(Arc::new(chat_store::MemoryStore::new()));
//! let alice = engine.accounts().register("alice", "correct horse").await?;
//! let (mut session, mut outbox) = engine.open_session(Identity::of(&alice));
//! session.handle_bytes(Codec::Json, br#"{"type":"create_room","name":"lobby","kind":"public"}"#).await;
//! session.handle_bytes(Codec::Json, br#"{"type":"subscribe","room":1}"#).await;
//! session.handle_bytes(Codec::Json, br#"{"type":"send","id":7,"room":1,"body":"hello"}"#).await;
//!
//! let mut bodies = Vec::new();
//! while let Some(frame) = outbox.try_recv() {
//!     if let ServerFrame::Message(m) = &frame.response().frame {
//!         bodies.push(m.body.clone());
//!     }
//! }
//! assert_eq!(bodies, ["hello"]);
//! # Ok::<(), chat_core::Error>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod backplane;
pub mod config;
pub mod conn;
pub mod engine;
pub mod error;
mod hub;
pub mod ids;
pub mod model;
pub mod protocol;
mod queue;
pub mod ratelimit;
pub mod session;
pub mod store;
pub mod validate;

pub use auth::{Accounts, Authenticator, Credentials, Identity, Token, TrustedAuthenticator};
pub use backplane::{Backplane, NoBackplane, NodeId, RemoteEvent, RemoteEventKind};
pub use config::Limits;
pub use engine::{Author, Engine, EngineBuilder, HistoryPage};
pub use error::{Error, ErrorCode, Result, StorageErrorKind};
pub use hub::{CloseReason, HubStats};
pub use ids::{RoomId, Seq, SessionId, Timestamp, UserId};
pub use model::{
    Appended, AuthSession, EntryKind, HistoryQuery, Invite, LogEntry, Member, Membership, Message,
    NewEntry, Role, Room, RoomKind, Unread, User,
};
pub use protocol::{ClientFrame, Codec, Outgoing, Request, Response, ServerFrame};
pub use session::{Outbound, Outbox, Session};
pub use store::{NewRoom, Store};
