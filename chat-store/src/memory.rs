//! [`MemoryStore`]: a [`Store`] that keeps everything in process memory.

use async_trait::async_trait;
use chat_core::store::{Credentials, MAX_HISTORY_PAGE, NewRoom, Store};
use chat_core::validate::fold;
use chat_core::{
    Appended, AuthSession, EntryKind, Error, HistoryQuery, Invite, LogEntry, Member, Membership,
    NewEntry, Result, Role, Room, RoomId, RoomKind, Seq, StorageErrorKind, Timestamp, Unread, User,
    UserId,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

/// A [`Store`] that keeps all state in memory and loses it when dropped.
///
/// Meant for tests, examples and ephemeral single-node servers. It keeps every contract of
/// [`Store`] and is checked by the same conformance suite as the durable stores.
///
/// # One mutex
///
/// All state sits behind a single [`std::sync::Mutex`], and every method takes it exactly
/// once, does its work and releases it before returning. The methods are `async` only because
/// the trait is: none of them awaits anything, so the lock is never held across an `.await`
/// and never blocks an executor thread for longer than one small in-memory update. This makes
/// every method trivially atomic — seq assignment and insert, the direct-room check-and-create,
/// invite redemption, cascading deletes — without a lock hierarchy to get wrong. The price is
/// that unrelated rooms contend on the same lock, which does not matter at the scale of a test
/// or an ephemeral store (the critical sections are a few map operations); a store that must
/// scale across cores is the SQLite one, or a sharded design, not this.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Removes a member if `removable` says so of their role, under one lock.
    fn remove_member_where(
        &self,
        room: RoomId,
        user: UserId,
        removable: impl FnOnce(Role) -> bool,
    ) -> Result<bool> {
        let mut s = self.lock()?;
        let removed = s
            .rooms
            .get_mut(&room)
            .is_some_and(|r| match r.members.get(&user) {
                Some(m) if removable(m.role) => r.members.remove(&user).is_some(),
                _ => false,
            });
        if removed {
            if let Some(set) = s.rooms_of.get_mut(&user) {
                set.remove(&room);
                if set.is_empty() {
                    s.rooms_of.remove(&user);
                }
            }
        }
        Ok(removed)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        // A poisoned lock means a panic in the middle of an update; the state may be
        // half-changed, so refuse to serve it rather than hand out inconsistent data.
        self.state.lock().map_err(|_| Error::Storage {
            kind: StorageErrorKind::Corrupt,
            message: "in-memory store poisoned by a panic".into(),
        })
    }
}

#[derive(Debug, Default)]
struct State {
    /// The last id handed out; ids start at 1 and are never reused.
    last_user_id: u64,
    /// The last id handed out; ids start at 1 and are never reused.
    last_room_id: u64,
    users: HashMap<UserId, UserRow>,
    /// Folded username -> user.
    usernames: HashMap<String, UserId>,
    sessions: HashMap<[u8; 32], AuthSession>,
    rooms: BTreeMap<RoomId, RoomState>,
    /// Folded public room name -> room.
    public_names: HashMap<String, RoomId>,
    /// The public rooms, ordered by id, for [`Store::public_rooms`].
    public_ids: BTreeSet<RoomId>,
    /// `(smaller id, larger id)` -> their direct room.
    direct_rooms: HashMap<(UserId, UserId), RoomId>,
    /// Each user's rooms, ordered by id (the reverse index of `RoomState::members`).
    rooms_of: HashMap<UserId, BTreeSet<RoomId>>,
    /// `(sender, client_msg_id)` -> where that message was stored.
    idempotency: HashMap<(UserId, String), (RoomId, Seq)>,
    invites: HashMap<String, Invite>,
}

#[derive(Debug)]
struct UserRow {
    user: User,
    password_hash: Option<String>,
}

#[derive(Debug)]
struct RoomState {
    room: Room,
    members: BTreeMap<UserId, MemberRow>,
    /// The log; the entry with seq `n` is at index `n - 1` (seqs are gap-free from 1).
    log: Vec<LogEntry>,
    /// Codes of this room's invites, to delete them with the room.
    invites: BTreeSet<String>,
}

#[derive(Debug)]
struct MemberRow {
    username: String,
    role: Role,
    joined_at: Timestamp,
    /// The read marker. It lives and dies with the membership.
    read: Seq,
}

impl RoomState {
    fn latest_seq(&self) -> Seq {
        Seq(self.log.len() as u64)
    }

    fn member(&self, user: UserId) -> Option<Member> {
        self.members.get(&user).map(|m| Member {
            room: self.room.id,
            user,
            username: m.username.clone(),
            role: m.role,
            joined_at: m.joined_at,
        })
    }
}

/// A seq as an index bound into a log, saturating (a log never holds `usize::MAX` entries).
fn index(seq: Seq) -> usize {
    usize::try_from(seq.0).unwrap_or(usize::MAX)
}

impl State {
    fn new_room(
        &mut self,
        kind: RoomKind,
        name: String,
        created_by: Option<UserId>,
        at: Timestamp,
    ) -> Room {
        self.last_room_id += 1;
        let room = Room {
            id: RoomId(self.last_room_id),
            kind,
            name,
            created_by,
            created_at: at,
        };
        self.rooms.insert(
            room.id,
            RoomState {
                room: room.clone(),
                members: BTreeMap::new(),
                log: Vec::new(),
                invites: BTreeSet::new(),
            },
        );
        room
    }

    /// Adds a member; the caller has checked that the room and user exist.
    fn insert_member(&mut self, room: RoomId, user: UserId, role: Role, at: Timestamp) -> bool {
        let Some(username) = self.users.get(&user).map(|u| u.user.username.clone()) else {
            return false;
        };
        let Some(r) = self.rooms.get_mut(&room) else {
            return false;
        };
        if r.members.contains_key(&user) {
            return false;
        }
        r.members.insert(
            user,
            MemberRow {
                username,
                role,
                joined_at: at,
                read: Seq::ZERO,
            },
        );
        self.rooms_of.entry(user).or_default().insert(room);
        true
    }

    fn user_exists(&self, user: UserId) -> Result<()> {
        if self.users.contains_key(&user) {
            Ok(())
        } else {
            Err(Error::UserNotFound(user.to_string()))
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_user(
        &self,
        username: &str,
        password_hash: Option<String>,
        guest: bool,
        at: Timestamp,
    ) -> Result<User> {
        let mut s = self.lock()?;
        let key = fold(username);
        if s.usernames.contains_key(&key) {
            return Err(Error::AlreadyExists("username"));
        }
        s.last_user_id += 1;
        let user = User {
            id: UserId(s.last_user_id),
            username: username.to_string(),
            guest,
            created_at: at,
        };
        s.usernames.insert(key, user.id);
        s.users.insert(
            user.id,
            UserRow {
                user: user.clone(),
                password_hash,
            },
        );
        Ok(user)
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let s = self.lock()?;
        Ok(s.users.get(&id).map(|u| u.user.clone()))
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let s = self.lock()?;
        Ok(s.usernames
            .get(&fold(username))
            .and_then(|id| s.users.get(id))
            .map(|u| Credentials {
                user: u.user.clone(),
                password_hash: u.password_hash.clone(),
            }))
    }

    async fn create_auth_session(&self, session: AuthSession) -> Result<()> {
        let mut s = self.lock()?;
        s.user_exists(session.user)?;
        if s.sessions.contains_key(&session.token_hash) {
            return Err(Error::AlreadyExists("session token"));
        }
        s.sessions.insert(session.token_hash, session);
        Ok(())
    }

    async fn auth_session(
        &self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<AuthSession>> {
        let s = self.lock()?;
        Ok(s.sessions
            .get(token_hash)
            .filter(|a| a.expires_at > now)
            .cloned())
    }

    async fn revoke_auth_session(&self, token_hash: &[u8; 32]) -> Result<bool> {
        let mut s = self.lock()?;
        Ok(s.sessions.remove(token_hash).is_some())
    }

    async fn revoke_user_auth_sessions(&self, user: UserId) -> Result<u64> {
        let mut s = self.lock()?;
        let before = s.sessions.len();
        s.sessions.retain(|_, a| a.user != user);
        Ok((before - s.sessions.len()) as u64)
    }

    async fn create_room(&self, room: NewRoom) -> Result<Room> {
        let mut s = self.lock()?;
        if room.kind == RoomKind::Direct {
            return Err(Error::invalid(
                "kind",
                "direct rooms are created with direct_room",
            ));
        }
        if let Some(owner) = room.created_by {
            s.user_exists(owner)?;
        }
        let public_key = (room.kind == RoomKind::Public).then(|| fold(&room.name));
        if let Some(key) = &public_key {
            if s.public_names.contains_key(key) {
                return Err(Error::AlreadyExists("room name"));
            }
        }
        let created = s.new_room(room.kind, room.name, room.created_by, room.at);
        if let Some(key) = public_key {
            s.public_names.insert(key, created.id);
            s.public_ids.insert(created.id);
        }
        if let Some(owner) = room.created_by {
            s.insert_member(created.id, owner, Role::Owner, room.at);
        }
        Ok(created)
    }

    async fn direct_room(&self, a: UserId, b: UserId, name: &str, at: Timestamp) -> Result<Room> {
        let mut s = self.lock()?;
        if a == b {
            return Err(Error::invalid(
                "user",
                "a direct room needs two different users",
            ));
        }
        s.user_exists(a)?;
        s.user_exists(b)?;
        let key = (a.min(b), a.max(b));
        if let Some(existing) = s.direct_rooms.get(&key).and_then(|id| s.rooms.get(id)) {
            return Ok(existing.room.clone());
        }
        let room = s.new_room(RoomKind::Direct, name.to_string(), Some(a), at);
        s.direct_rooms.insert(key, room.id);
        s.insert_member(room.id, a, Role::Member, at);
        s.insert_member(room.id, b, Role::Member, at);
        Ok(room)
    }

    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        let s = self.lock()?;
        Ok(s.rooms.get(&id).map(|r| r.room.clone()))
    }

    async fn public_room_by_name(&self, name: &str) -> Result<Option<Room>> {
        let s = self.lock()?;
        Ok(s.public_names
            .get(&fold(name))
            .and_then(|id| s.rooms.get(id))
            .map(|r| r.room.clone()))
    }

    async fn public_rooms(&self, after: RoomId, limit: usize) -> Result<Vec<Room>> {
        let s = self.lock()?;
        Ok(s.public_ids
            .range((Bound::Excluded(after), Bound::Unbounded))
            .take(limit)
            .filter_map(|id| s.rooms.get(id))
            .map(|r| r.room.clone())
            .collect())
    }

    async fn delete_room(&self, id: RoomId) -> Result<bool> {
        let mut s = self.lock()?;
        let Some(room) = s.rooms.remove(&id) else {
            return Ok(false);
        };
        for user in room.members.keys() {
            if let Some(set) = s.rooms_of.get_mut(user) {
                set.remove(&id);
                if set.is_empty() {
                    s.rooms_of.remove(user);
                }
            }
        }
        for entry in &room.log {
            let EntryKind::Message(m) = &entry.kind;
            if let (Some(sender), Some(cmid)) = (m.sender, &m.client_msg_id) {
                s.idempotency.remove(&(sender, cmid.clone()));
            }
        }
        for code in &room.invites {
            s.invites.remove(code);
        }
        match room.room.kind {
            RoomKind::Public => {
                s.public_names.remove(&fold(&room.room.name));
                s.public_ids.remove(&id);
            }
            RoomKind::Direct => s.direct_rooms.retain(|_, r| *r != id),
            RoomKind::Group => {}
        }
        Ok(true)
    }

    async fn add_member(
        &self,
        room: RoomId,
        user: UserId,
        role: Role,
        at: Timestamp,
    ) -> Result<bool> {
        let mut s = self.lock()?;
        if !s.rooms.contains_key(&room) {
            return Err(Error::RoomNotFound(room));
        }
        s.user_exists(user)?;
        Ok(s.insert_member(room, user, role, at))
    }

    async fn remove_member(&self, room: RoomId, user: UserId) -> Result<bool> {
        self.remove_member_where(room, user, |_| true)
    }

    async fn remove_member_below(&self, room: RoomId, user: UserId, below: Role) -> Result<bool> {
        self.remove_member_where(room, user, |role| role < below)
    }

    async fn set_role(&self, room: RoomId, user: UserId, role: Role) -> Result<()> {
        let mut s = self.lock()?;
        let m = s
            .rooms
            .get_mut(&room)
            .and_then(|r| r.members.get_mut(&user))
            .ok_or(Error::NotMember(room))?;
        m.role = role;
        Ok(())
    }

    async fn member(&self, room: RoomId, user: UserId) -> Result<Option<Member>> {
        let s = self.lock()?;
        Ok(s.rooms.get(&room).and_then(|r| r.member(user)))
    }

    async fn members(&self, room: RoomId) -> Result<Vec<Member>> {
        let s = self.lock()?;
        Ok(s.rooms
            .get(&room)
            .map(|r| r.members.keys().filter_map(|u| r.member(*u)).collect())
            .unwrap_or_default())
    }

    async fn rooms_of(&self, user: UserId) -> Result<Vec<Membership>> {
        let s = self.lock()?;
        let Some(ids) = s.rooms_of.get(&user) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .iter()
            .filter_map(|id| s.rooms.get(id))
            .filter_map(|r| {
                r.members.get(&user).map(|m| Membership {
                    room: r.room.clone(),
                    role: m.role,
                })
            })
            .collect())
    }

    async fn append(&self, entry: NewEntry) -> Result<Appended> {
        let mut s = self.lock()?;
        let Some(r) = s.rooms.get(&entry.room) else {
            return Err(Error::RoomNotFound(entry.room));
        };
        // Authorship is decided under the same lock as the insert (see the `Store` contract).
        if let Some(sender) = entry.author() {
            if !r.members.contains_key(&sender) {
                return Err(Error::NotMember(entry.room));
            }
        }
        let key = entry
            .idempotency_key()
            .map(|(user, cmid)| (user, cmid.to_string()));
        if let Some(key) = &key {
            if let Some(&(room, seq)) = s.idempotency.get(key) {
                let original = s
                    .rooms
                    .get(&room)
                    .and_then(|r| r.log.get(index(seq).checked_sub(1)?))
                    .cloned()
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "idempotency key points at missing entry {room}/{seq}"
                        ))
                    })?;
                return Ok(Appended {
                    entry: original,
                    duplicate: true,
                });
            }
        }
        let Some(r) = s.rooms.get_mut(&entry.room) else {
            return Err(Error::RoomNotFound(entry.room));
        };
        let stored = LogEntry {
            room: entry.room,
            seq: r.latest_seq().next(),
            at: entry.at,
            kind: entry.kind,
        };
        r.log.push(stored.clone());
        if let Some(key) = key {
            s.idempotency.insert(key, (stored.room, stored.seq));
        }
        Ok(Appended {
            entry: stored,
            duplicate: false,
        })
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let s = self.lock()?;
        let Some(r) = s.rooms.get(&room) else {
            return Ok(Vec::new());
        };
        let limit = limit.min(MAX_HISTORY_PAGE);
        let len = r.log.len();
        // Index `i` holds seq `i + 1`.
        let range = match query {
            HistoryQuery::Before(before) => {
                // seq < before  <=>  index < before - 1
                let end = index(before).saturating_sub(1).min(len);
                end.saturating_sub(limit)..end
            }
            HistoryQuery::After(after) => {
                // seq > after  <=>  index >= after
                let start = index(after).min(len);
                start..start.saturating_add(limit).min(len)
            }
        };
        Ok(r.log[range].to_vec())
    }

    async fn latest_seq(&self, room: RoomId) -> Result<Seq> {
        let s = self.lock()?;
        Ok(s.rooms
            .get(&room)
            .map(RoomState::latest_seq)
            .unwrap_or(Seq::ZERO))
    }

    async fn mark_read(&self, room: RoomId, user: UserId, seq: Seq) -> Result<Seq> {
        let mut s = self.lock()?;
        let m = s
            .rooms
            .get_mut(&room)
            .and_then(|r| r.members.get_mut(&user))
            .ok_or(Error::NotMember(room))?;
        m.read = m.read.max(seq);
        Ok(m.read)
    }

    async fn unread(&self, user: UserId) -> Result<Vec<Unread>> {
        let s = self.lock()?;
        let Some(ids) = s.rooms_of.get(&user) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(ids.len());
        for r in ids.iter().filter_map(|id| s.rooms.get(id)) {
            let Some(m) = r.members.get(&user) else {
                continue;
            };
            // Only the unread tail of the log is read: entries with seq > read.
            let tail = r.log.get(index(m.read)..).unwrap_or_default();
            let unread = tail
                .iter()
                .filter(|e| match &e.kind {
                    EntryKind::Message(msg) => msg.sender != Some(user),
                })
                .count() as u64;
            out.push(Unread {
                room: r.room.id,
                read_seq: m.read,
                latest_seq: r.latest_seq(),
                unread,
            });
        }
        Ok(out)
    }

    async fn create_invite(&self, invite: Invite) -> Result<()> {
        let mut s = self.lock()?;
        if s.invites.contains_key(&invite.code) {
            return Err(Error::AlreadyExists("invite code"));
        }
        let Some(r) = s.rooms.get_mut(&invite.room) else {
            return Err(Error::RoomNotFound(invite.room));
        };
        r.invites.insert(invite.code.clone());
        s.invites.insert(invite.code.clone(), invite);
        Ok(())
    }

    async fn invite(&self, code: &str) -> Result<Option<Invite>> {
        let s = self.lock()?;
        Ok(s.invites.get(code).cloned())
    }

    async fn redeem_invite(&self, code: &str, user: UserId, now: Timestamp) -> Result<Room> {
        let mut s = self.lock()?;
        let invite = s.invites.get(code).cloned().ok_or(Error::InviteUnknown)?;
        let room = s.rooms.get(&invite.room).ok_or(Error::InviteUnknown)?;
        let room_value = room.room.clone();
        // Checked before expiry and uses: a member retrying a redemption (perhaps of the
        // invite's last use, which they took themselves) gets the same answer again.
        if room.members.contains_key(&user) {
            return Ok(room_value);
        }
        s.user_exists(user)?;
        if now >= invite.expires_at {
            return Err(Error::InviteExpired);
        }
        if invite.max_uses.is_some_and(|max| invite.uses >= max) {
            return Err(Error::InviteExhausted);
        }
        s.insert_member(invite.room, user, Role::Member, now);
        if let Some(i) = s.invites.get_mut(code) {
            i.uses = i.uses.saturating_add(1);
        }
        Ok(room_value)
    }
}
