//! The persistence boundary.
//!
//! The engine never touches SQL or files; everything durable goes through [`Store`]. The
//! in-memory and SQLite implementations live in the `chat-store` crate and share one
//! conformance suite there, which is the executable form of the contracts written below.

use crate::error::Result;
use crate::ids::{RoomId, Seq, Timestamp, UserId};
use crate::model::{
    Appended, AuthSession, HistoryQuery, Invite, LogEntry, Member, Membership, NewEntry, Role,
    Room, RoomKind, Unread, User,
};
use async_trait::async_trait;

/// The largest page [`Store::history`] returns; larger limits are clamped to it.
pub const MAX_HISTORY_PAGE: usize = 1000;

/// A new room, before the store gives it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// Group or public ([`Store::direct_room`] makes direct rooms).
    pub kind: RoomKind,
    /// Display name, already validated.
    pub name: String,
    /// The creator, who becomes its owner. `None` for rooms the system creates.
    pub created_by: Option<UserId>,
    /// Creation time.
    pub at: Timestamp,
}

/// Where a user/credentials pair lives. Kept apart from [`User`] so that a password hash
/// never travels with a user value by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account.
    pub user: User,
    /// Its argon2id PHC string; `None` for guests.
    pub password_hash: Option<String>,
}

/// Durable state of the chat engine.
///
/// Contracts every implementation keeps (the conformance suite in `chat-store` checks them):
///
/// - **Seqs**: [`Store::append`] assigns the room's next seq atomically with the insert: per
///   room, from 1, gap-free, unique, also under many concurrent appenders. A seq is visible to
///   readers only once it is durable, and `append` returns only then.
/// - **Idempotency**: an entry whose `(sender, client_msg_id)` was appended before (to any
///   room) is not stored again; `append` returns the original with `duplicate: true`.
/// - **Authorship**: an entry with an author ([`NewEntry::author`]) is appended only if the
///   author is a member of the room, decided atomically with the insert, so a user removed
///   from a room can never post into it afterwards — not even with a post whose check raced
///   the removal. Otherwise `Error::NotMember`, and nothing is stored (no seq is used).
///   Entries of the system need no membership.
/// - **Names**: usernames are unique case-insensitively (stored as given, compared in
///   lowercase); so are the names of public rooms.
/// - **Direct rooms**: [`Store::direct_room`] returns the same room for `(a, b)` and `(b, a)`,
///   creating it (with both as members) exactly once even under concurrent calls.
/// - **Errors**: failures come back as [`crate::Error::Storage`]; "not found" is `Ok(None)` or
///   `Ok(false)` where the signature allows it, otherwise the specific error named below.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ----- users and credentials -----

    /// Creates a user. `Error::AlreadyExists("username")` if the name is taken.
    async fn create_user(
        &self,
        username: &str,
        password_hash: Option<String>,
        guest: bool,
        at: Timestamp,
    ) -> Result<User>;

    /// The user with this id.
    async fn user(&self, id: UserId) -> Result<Option<User>>;

    /// The user with this name (case-insensitive), with their password hash.
    async fn credentials(&self, username: &str) -> Result<Option<Credentials>>;

    // ----- login sessions (tokens) -----

    /// Stores a login session. Only the token's hash is ever stored.
    async fn create_auth_session(&self, session: AuthSession) -> Result<()>;

    /// The login session with this token hash, if it exists and `expires_at > now`.
    async fn auth_session(
        &self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<AuthSession>>;

    /// Revokes one login session; `false` if there was none.
    async fn revoke_auth_session(&self, token_hash: &[u8; 32]) -> Result<bool>;

    /// Revokes all of a user's login sessions; returns how many there were.
    async fn revoke_user_auth_sessions(&self, user: UserId) -> Result<u64>;

    // ----- rooms and memberships -----

    /// Creates a group or public room; its creator (if any) becomes a member with
    /// [`Role::Owner`] in the same transaction. `Error::AlreadyExists("room name")` if a
    /// public room with that name exists. `Error::Invalid` for `RoomKind::Direct`.
    async fn create_room(&self, room: NewRoom) -> Result<Room>;

    /// The direct room of `a` and `b`, created with both as members if it does not exist.
    /// `name` is used only when creating. `Error::Invalid` if `a == b`.
    async fn direct_room(&self, a: UserId, b: UserId, name: &str, at: Timestamp) -> Result<Room>;

    /// The room with this id.
    async fn room(&self, id: RoomId) -> Result<Option<Room>>;

    /// The public room with this name (case-insensitive).
    async fn public_room_by_name(&self, name: &str) -> Result<Option<Room>>;

    /// Public rooms ordered by id, those with `id > after`, at most `limit`.
    async fn public_rooms(&self, after: RoomId, limit: usize) -> Result<Vec<Room>>;

    /// Deletes a room with its members, log, read markers and invites.
    /// `false` if it did not exist.
    async fn delete_room(&self, id: RoomId) -> Result<bool>;

    /// Adds `user` to `room` with `role`. Returns `false` (and changes nothing, not even
    /// the role) if the user was already a member. `Error::RoomNotFound` or
    /// `Error::UserNotFound` if either does not exist.
    async fn add_member(
        &self,
        room: RoomId,
        user: UserId,
        role: Role,
        at: Timestamp,
    ) -> Result<bool>;

    /// Removes `user` from `room`; `false` if not a member.
    async fn remove_member(&self, room: RoomId, user: UserId) -> Result<bool>;

    /// Removes `user` from `room` only if their role is below `below`, in one step; `false`
    /// if nothing was removed (not a member, or no longer below). A kick checks roles before
    /// it removes: a promotion that lands in between must win, or an admin could kick a
    /// fellow admin.
    async fn remove_member_below(&self, room: RoomId, user: UserId, below: Role) -> Result<bool>;

    /// Changes a member's role; `Error::NotMember` if not a member.
    async fn set_role(&self, room: RoomId, user: UserId, role: Role) -> Result<()>;

    /// The membership of `user` in `room`.
    async fn member(&self, room: RoomId, user: UserId) -> Result<Option<Member>>;

    /// All members of `room`, ordered by user id.
    async fn members(&self, room: RoomId) -> Result<Vec<Member>>;

    /// The rooms `user` is a member of, ordered by room id.
    async fn rooms_of(&self, user: UserId) -> Result<Vec<Membership>>;

    // ----- the log -----

    /// Appends an entry, assigning the room's next seq (see the trait docs for the seq,
    /// idempotency and authorship contracts). `Error::RoomNotFound` if the room does not
    /// exist, `Error::NotMember` if the entry's author is not a member of it.
    async fn append(&self, entry: NewEntry) -> Result<Appended>;

    /// A page of the room's log, at most `limit` entries (clamped to [`MAX_HISTORY_PAGE`]),
    /// always in ascending seq order. `limit == 0` returns an empty page.
    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<Vec<LogEntry>>;

    /// The room's latest seq (`Seq::ZERO` for an empty or unknown room).
    async fn latest_seq(&self, room: RoomId) -> Result<Seq>;

    // ----- read markers -----

    /// Moves `user`'s read marker in `room` forward to `seq` (never backwards; a smaller seq
    /// is ignored). Returns the marker after the call. `Error::NotMember` if not a member.
    async fn mark_read(&self, room: RoomId, user: UserId, seq: Seq) -> Result<Seq>;

    /// Unread state of every room `user` is a member of, ordered by room id. Counting may
    /// read the unread part of each log, never a whole log.
    async fn unread(&self, user: UserId) -> Result<Vec<Unread>>;

    // ----- invites -----

    /// Stores a new invite (`uses` is stored as given, normally 0).
    async fn create_invite(&self, invite: Invite) -> Result<()>;

    /// The invite with this code.
    async fn invite(&self, code: &str) -> Result<Option<Invite>>;

    /// Redeems an invite for `user` at `now`, atomically: adds the member (role
    /// [`Role::Member`]) and counts a use. A user who is already a member gets `Ok` and uses
    /// nothing (idempotent). Errors: `InviteUnknown`, `InviteExpired`, `InviteExhausted`.
    async fn redeem_invite(&self, code: &str, user: UserId, now: Timestamp) -> Result<Room>;
}
