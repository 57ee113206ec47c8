//! Shared by the SQLite integration tests: a [`SqliteStore`] on a fresh file in its own
//! temporary directory, which it owns, so the directory lives exactly as long as the store.

#![allow(dead_code, unreachable_pub)]

use async_trait::async_trait;
use chat_core::store::{Credentials, NewRoom, Store};
use chat_core::{
    Appended, AuthSession, HistoryQuery, Invite, LogEntry, Member, Membership, NewEntry, Result,
    Role, Room, RoomId, Seq, Timestamp, Unread, User, UserId,
};
use chat_store::{SqliteConfig, SqliteStore};
use std::sync::Arc;
use tempfile::TempDir;

/// A store on `<tempdir>/chat.db`. Fields drop in order: the store (closing the file) first,
/// then the directory.
pub struct TempStore {
    pub store: SqliteStore,
    pub dir: TempDir,
}

impl TempStore {
    pub async fn new() -> TempStore {
        TempStore::with_config(SqliteConfig::default()).await
    }

    pub async fn with_config(config: SqliteConfig) -> TempStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("chat.db"), config)
            .await
            .expect("open store");
        TempStore { store, dir }
    }

    /// A fresh store as the conformance suite and the model test want it.
    pub async fn shared() -> Arc<dyn Store> {
        Arc::new(TempStore::new().await)
    }
}

#[async_trait]
impl Store for TempStore {
    async fn create_user(
        &self,
        username: &str,
        password_hash: Option<String>,
        guest: bool,
        at: Timestamp,
    ) -> Result<User> {
        self.store
            .create_user(username, password_hash, guest, at)
            .await
    }
    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.store.user(id).await
    }
    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        self.store.credentials(username).await
    }
    async fn create_auth_session(&self, session: AuthSession) -> Result<()> {
        self.store.create_auth_session(session).await
    }
    async fn auth_session(
        &self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<AuthSession>> {
        self.store.auth_session(token_hash, now).await
    }
    async fn revoke_auth_session(&self, token_hash: &[u8; 32]) -> Result<bool> {
        self.store.revoke_auth_session(token_hash).await
    }
    async fn revoke_user_auth_sessions(&self, user: UserId) -> Result<u64> {
        self.store.revoke_user_auth_sessions(user).await
    }
    async fn create_room(&self, room: NewRoom) -> Result<Room> {
        self.store.create_room(room).await
    }
    async fn direct_room(&self, a: UserId, b: UserId, name: &str, at: Timestamp) -> Result<Room> {
        self.store.direct_room(a, b, name, at).await
    }
    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        self.store.room(id).await
    }
    async fn public_room_by_name(&self, name: &str) -> Result<Option<Room>> {
        self.store.public_room_by_name(name).await
    }
    async fn public_rooms(&self, after: RoomId, limit: usize) -> Result<Vec<Room>> {
        self.store.public_rooms(after, limit).await
    }
    async fn delete_room(&self, id: RoomId) -> Result<bool> {
        self.store.delete_room(id).await
    }
    async fn add_member(
        &self,
        room: RoomId,
        user: UserId,
        role: Role,
        at: Timestamp,
    ) -> Result<bool> {
        self.store.add_member(room, user, role, at).await
    }
    async fn remove_member(&self, room: RoomId, user: UserId) -> Result<bool> {
        self.store.remove_member(room, user).await
    }
    async fn remove_member_below(&self, room: RoomId, user: UserId, below: Role) -> Result<bool> {
        self.store.remove_member_below(room, user, below).await
    }
    async fn set_role(&self, room: RoomId, user: UserId, role: Role) -> Result<()> {
        self.store.set_role(room, user, role).await
    }
    async fn member(&self, room: RoomId, user: UserId) -> Result<Option<Member>> {
        self.store.member(room, user).await
    }
    async fn members(&self, room: RoomId) -> Result<Vec<Member>> {
        self.store.members(room).await
    }
    async fn rooms_of(&self, user: UserId) -> Result<Vec<Membership>> {
        self.store.rooms_of(user).await
    }
    async fn append(&self, entry: NewEntry) -> Result<Appended> {
        self.store.append(entry).await
    }
    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        self.store.history(room, query, limit).await
    }
    async fn latest_seq(&self, room: RoomId) -> Result<Seq> {
        self.store.latest_seq(room).await
    }
    async fn mark_read(&self, room: RoomId, user: UserId, seq: Seq) -> Result<Seq> {
        self.store.mark_read(room, user, seq).await
    }
    async fn unread(&self, user: UserId) -> Result<Vec<Unread>> {
        self.store.unread(user).await
    }
    async fn create_invite(&self, invite: Invite) -> Result<()> {
        self.store.create_invite(invite).await
    }
    async fn invite(&self, code: &str) -> Result<Option<Invite>> {
        self.store.invite(code).await
    }
    async fn redeem_invite(&self, code: &str, user: UserId, now: Timestamp) -> Result<Room> {
        self.store.redeem_invite(code, user, now).await
    }
}
