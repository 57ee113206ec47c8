//! Fan-out between nodes.
//!
//! A single node needs no backplane ([`NoBackplane`]). Several nodes behind a load balancer
//! share one store and a backplane: each node publishes the events it produced, and feeds the
//! events of the others into its own hub with [`crate::Engine::apply_remote`]. Room log
//! entries carry their store-assigned seq, so a node orders them and fills any gap from the
//! store (see `hub.rs`): for entries, a backplane may be at-most-once (like Redis pub/sub).
//!
//! The other events are not repaired. A lost [`RemoteEventKind::Removed`] or
//! [`RemoteEventKind::RoomDeleted`] leaves the removed user's sessions on that node subscribed
//! (receiving the room) until they reconnect, and a lost close leaves a revoked session open.
//! A backplane for production must therefore deliver those reliably and in order (a Redis
//! stream rather than pub/sub, for instance), or the application must accept that window.

use crate::error::Result;
use crate::ids::{RoomId, UserId};
use crate::model::LogEntry;
use crate::protocol::ServerFrame;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Identifies a node, so it can ignore its own events coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

/// What nodes tell each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteEvent {
    /// The node that produced it.
    pub origin: NodeId,
    /// What happened.
    pub kind: RemoteEventKind,
}

/// The kinds of event that cross nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteEventKind {
    /// A sequenced log entry was appended.
    Entry(LogEntry),
    /// A user stopped being a member of a room: drop their subscriptions.
    Removed {
        /// The room.
        room: RoomId,
        /// The user.
        user: UserId,
        /// True for a kick, false for a leave.
        kicked: bool,
    },
    /// A room was deleted: drop every subscription to it (members' and watchers').
    RoomDeleted {
        /// The room.
        room: RoomId,
    },
    /// An ephemeral frame for a room's live subscribers (typing, member changes).
    RoomEvent {
        /// The room.
        room: RoomId,
        /// The frame.
        frame: ServerFrame,
        /// Sessions of this user are skipped (e.g. the typist).
        except: Option<UserId>,
    },
    /// An ephemeral frame for one user's sessions (a room they were added to, a notice).
    UserEvent {
        /// The user.
        user: UserId,
        /// Only their sessions subscribed to this room, if given.
        room: Option<RoomId>,
        /// The frame.
        frame: ServerFrame,
    },
    /// Close every live session of a user (logout everywhere, revocation).
    CloseUser {
        /// The user.
        user: UserId,
    },
    /// Close the live sessions opened with one token (logout).
    CloseToken {
        /// SHA-256 of the token.
        token_hash: [u8; 32],
    },
}

/// Carries events between nodes.
#[async_trait]
pub trait Backplane: Send + Sync + 'static {
    /// Sends an event to the other nodes. Failure is logged by the engine and does not fail
    /// the local operation (remote nodes repair log gaps from the store).
    async fn publish(&self, event: RemoteEvent) -> Result<()>;
}

/// The single-node backplane: publishes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBackplane;

#[async_trait]
impl Backplane for NoBackplane {
    async fn publish(&self, _event: RemoteEvent) -> Result<()> {
        Ok(())
    }
}
