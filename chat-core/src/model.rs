//! The domain: users, rooms, members, log entries, invites.
//!
//! These are plain data. Rules about them (who may do what) live in [`crate::Engine`];
//! persistence lives behind [`crate::Store`].

use crate::ids::{RoomId, Seq, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Store-assigned id.
    pub id: UserId,
    /// Unique, case-insensitively (see [`crate::validate::username`]). Never changes.
    pub username: String,
    /// A guest has no password. Its name stays taken, like any username: a guest comes back
    /// with its token (see [`crate::Accounts::guest`]).
    pub guest: bool,
    /// When the account was created.
    pub created_at: Timestamp,
}

/// The three kinds of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Exactly two users; one stable room per pair, created on the first message.
    Direct,
    /// Created by a user; owner and admins manage membership; joined by invite or by an admin.
    Group,
    /// Any authenticated user may join, or only subscribe without joining. Also serves as a
    /// "topic". Public room names are unique (case-insensitively).
    Public,
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Store-assigned id.
    pub id: RoomId,
    /// Direct, group or public.
    pub kind: RoomKind,
    /// Display name. For direct rooms, the two usernames joined by `" & "`.
    pub name: String,
    /// Who created it (`None` for rooms created by the system).
    pub created_by: Option<UserId>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A member's role in a room. Ordered: `Member < Admin < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May read, post, invite (group rooms: see [`crate::Engine::create_invite`]).
    Member,
    /// May also add and kick members with a lower role.
    Admin,
    /// The creator. May also change roles. A room has at most one owner.
    Owner,
}

/// A user's membership in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The room.
    pub room: RoomId,
    /// The user.
    pub user: UserId,
    /// The user's name, denormalised for display (usernames never change).
    pub username: String,
    /// Owner, admin or member.
    pub role: Role,
    /// When the user joined.
    pub joined_at: Timestamp,
}

/// One entry of a room's log.
///
/// Every kind of entry shares the room's seq space, so a client that resumes from a seq sees
/// every kind of change in order. Today the only kind is a message; edits, deletions and
/// membership changes will be new [`EntryKind`] variants, not a new log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The room whose log this is.
    pub room: RoomId,
    /// Position in the room's log (gap-free, from 1).
    pub seq: Seq,
    /// Server time of the append.
    pub at: Timestamp,
    /// What happened.
    pub kind: EntryKind,
}

/// What a log entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A chat message.
    Message(Message),
}

/// A chat message as stored in a log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The author; `None` for messages posted by the system (the embedding application).
    pub sender: Option<UserId>,
    /// The author's username, or `"system"`. Denormalised so that history and fan-out need no
    /// user look-up.
    pub sender_name: String,
    /// UTF-8 text, non-empty, at most [`crate::Limits::max_body_bytes`].
    pub body: String,
    /// The id the client chose for idempotent retries, if any.
    pub client_msg_id: Option<String>,
}

/// What the engine asks the store to append. The store assigns `seq` atomically with the
/// insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The room to append to.
    pub room: RoomId,
    /// Server time of the append.
    pub at: Timestamp,
    /// What to append.
    pub kind: EntryKind,
}

impl NewEntry {
    /// The user the entry is posted as, if any: the store appends it only while that user
    /// is a member of the room (see [`crate::Store`]'s authorship contract). `None` for
    /// entries of the system.
    pub fn author(&self) -> Option<UserId> {
        match &self.kind {
            EntryKind::Message(m) => m.sender,
        }
    }

    /// The `(sender, client message id)` pair that makes an append idempotent, if any.
    pub fn idempotency_key(&self) -> Option<(UserId, &str)> {
        match &self.kind {
            EntryKind::Message(m) => match (m.sender, &m.client_msg_id) {
                (Some(u), Some(id)) => Some((u, id.as_str())),
                _ => None,
            },
        }
    }
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored entry: the new one, or for a duplicate the original.
    pub entry: LogEntry,
    /// True when `(sender, client_msg_id)` had been appended before; nothing was stored.
    pub duplicate: bool,
}

/// An invite code for a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Random, unguessable (128 bits, URL-safe base64).
    pub code: String,
    /// The room it admits to.
    pub room: RoomId,
    /// Who created it.
    pub created_by: UserId,
    /// When it was created.
    pub created_at: Timestamp,
    /// After this instant it is refused as expired.
    pub expires_at: Timestamp,
    /// How many redemptions it allows (`None`: unlimited).
    pub max_uses: Option<u32>,
    /// How many times it has admitted a new member.
    pub uses: u32,
}

/// A login session (an issued token), as the store keeps it: only the token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSession {
    /// SHA-256 of the token. The token itself is never stored.
    pub token_hash: [u8; 32],
    /// Whose session it is.
    pub user: UserId,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When it stops being accepted.
    pub expires_at: Timestamp,
}

/// Which part of a room's log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The newest entries with `seq < before`, returned in ascending seq order.
    /// `Before(Seq(u64::MAX))` reads the latest page.
    Before(Seq),
    /// The oldest entries with `seq > after`, returned in ascending seq order.
    After(Seq),
}

/// A room as one of its members sees it in a room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The room.
    pub room: Room,
    /// The user's role in it.
    pub role: Role,
}

/// Unread state of one room for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    /// The room.
    pub room: RoomId,
    /// The seq the user has read up to.
    pub read_seq: Seq,
    /// The room's latest seq.
    pub latest_seq: Seq,
    /// Messages from other users after `read_seq`.
    pub unread: u64,
}
