//! The engine: rules of who may do what, the publish path, and the API embedders call.

use crate::auth::{Accounts, Authenticator, Identity};
use crate::backplane::{Backplane, NoBackplane, NodeId, RemoteEvent, RemoteEventKind};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::hub::{CloseReason, Hub, HubStats, entry_frame};
use crate::ids::{RoomId, Seq, Timestamp, UserId};
use crate::model::{
    Appended, EntryKind, HistoryQuery, Invite, LogEntry, Message, NewEntry, Role, Room, RoomKind,
};
use crate::protocol::{
    MemberChange, MemberInfo, Outgoing, RoomInfo, RoomSummary, ServerFrame, UnreadInfo,
    UnsubscribeReason, UserInfo,
};
use crate::store::{MAX_HISTORY_PAGE, NewRoom, Store};
use crate::validate;
use std::sync::Arc;
use std::time::Duration;

/// Who posts a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// The embedding application itself; shown as `"system"`. Needs no membership.
    System,
    /// A user, who must be a member of the room.
    User(Identity),
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Ascending by seq.
    pub entries: Vec<LogEntry>,
    /// Whether there is more in the direction read.
    pub has_more: bool,
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    backplane: Arc<dyn Backplane>,
    limits: Limits,
    authenticator: Option<Arc<dyn Authenticator>>,
    node: NodeId,
}

impl EngineBuilder {
    /// Replaces the single-node [`NoBackplane`].
    pub fn backplane(mut self, backplane: Arc<dyn Backplane>) -> Self {
        self.backplane = backplane;
        self
    }

    /// Replaces the default [`Limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the built-in [`Accounts`] as the authenticator transports use.
    pub fn authenticator(mut self, auth: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(auth);
        self
    }

    /// This node's id on the backplane (default: random).
    pub fn node(mut self, node: NodeId) -> Self {
        self.node = node;
        self
    }

    /// Builds the engine. Must be called inside a Tokio runtime only when it is used.
    pub fn build(self) -> Engine {
        let mut limits = self.limits;
        limits.max_replay = limits.max_replay.min(MAX_HISTORY_PAGE);
        let limits = Arc::new(limits);
        let accounts = Accounts::new(self.store.clone(), limits.clone());
        let authenticator = self
            .authenticator
            .unwrap_or_else(|| Arc::new(accounts.clone()));
        Engine {
            inner: Arc::new(Inner {
                hub: Hub::new(limits.clone()),
                store: self.store,
                backplane: self.backplane,
                limits,
                accounts,
                authenticator,
                node: self.node,
            }),
        }
    }
}

/// The chat engine. Cheap to clone (an `Arc`); share one per process.
///
/// Transports open [`crate::Session`]s on it; the embedding application calls the methods
/// below directly (server-side publish, room management, notices).
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) hub: Hub,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) backplane: Arc<dyn Backplane>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) accounts: Accounts,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) node: NodeId,
}

impl Engine {
    /// Starts building an engine on `store`.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        let mut node = [0u8; 8];
        let _ = getrandom::fill(&mut node);
        EngineBuilder {
            store,
            backplane: Arc::new(NoBackplane),
            limits: Limits::default(),
            authenticator: None,
            node: NodeId(u64::from_le_bytes(node)),
        }
    }

    /// An engine with default limits and no backplane.
    pub fn new(store: Arc<dyn Store>) -> Engine {
        Engine::builder(store).build()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Built-in password accounts and tokens.
    pub fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }

    /// The authenticator transports should use.
    pub fn authenticator(&self) -> &Arc<dyn Authenticator> {
        &self.inner.authenticator
    }

    /// Live sessions, users and rooms on this node.
    pub fn stats(&self) -> HubStats {
        self.inner.hub.stats()
    }

    fn st(&self) -> &dyn Store {
        &*self.inner.store
    }

    // ----- access rules -----

    async fn room_or_404(&self, room: RoomId) -> Result<Room> {
        self.st().room(room).await?.ok_or(Error::RoomNotFound(room))
    }

    /// Whether `user` is a member of `room`.
    pub async fn is_member(&self, room: RoomId, user: UserId) -> Result<bool> {
        Ok(self.role_of(room, user).await?.is_some())
    }

    async fn role_of(&self, room: RoomId, user: UserId) -> Result<Option<Role>> {
        Ok(self.st().member(room, user).await?.map(|m| m.role))
    }

    /// Members read every room they belong to; anyone authenticated reads public rooms.
    pub(crate) async fn check_read(&self, room: RoomId, user: UserId) -> Result<Room> {
        let r = self.room_or_404(room).await?;
        if r.kind == RoomKind::Public || self.role_of(room, user).await?.is_some() {
            Ok(r)
        } else {
            Err(Error::NotMember(room))
        }
    }

    async fn require_role(&self, room: RoomId, user: UserId, at_least: Role) -> Result<Role> {
        match self.role_of(room, user).await? {
            Some(r) if r >= at_least => Ok(r),
            Some(_) => Err(Error::Forbidden(
                "your role in this room does not allow that",
            )),
            None => Err(Error::NotMember(room)),
        }
    }

    async fn user_by_name(&self, username: &str) -> Result<crate::model::User> {
        self.st()
            .credentials(username)
            .await?
            .map(|c| c.user)
            .ok_or_else(|| Error::UserNotFound(username.to_string()))
    }

    // ----- rooms and members -----

    /// Creates a group or public room owned by `owner`.
    pub async fn create_room(&self, owner: &Identity, name: &str, kind: RoomKind) -> Result<Room> {
        if kind == RoomKind::Direct {
            return Err(Error::invalid(
                "kind",
                "direct rooms are created by sending a direct message",
            ));
        }
        let name = validate::room_name(name, &self.inner.limits)?;
        let room = self
            .store()
            .create_room(NewRoom {
                kind,
                name,
                created_by: Some(owner.user),
                at: Timestamp::now(),
            })
            .await?;
        self.tell_user_about_room(owner.user, &room).await;
        Ok(room)
    }

    /// Creates a room owned by the system (no owner), e.g. a server's default lobby.
    pub async fn create_system_room(&self, name: &str, kind: RoomKind) -> Result<Room> {
        let name = validate::room_name(name, &self.inner.limits)?;
        self.st()
            .create_room(NewRoom {
                kind,
                name,
                created_by: None,
                at: Timestamp::now(),
            })
            .await
    }

    /// The direct room between `me` and the user named `other`, created on first use.
    pub async fn direct_room(&self, me: &Identity, other: &str) -> Result<Room> {
        let other = self.user_by_name(other).await?;
        if other.id == me.user {
            return Err(Error::invalid(
                "to",
                "cannot send a direct message to yourself",
            ));
        }
        let (a, b) = if me.username.to_lowercase() <= other.username.to_lowercase() {
            (&me.username, &other.username)
        } else {
            (&other.username, &me.username)
        };
        let name = format!("{a} & {b}");
        self.st()
            .direct_room(me.user, other.id, &name, Timestamp::now())
            .await
    }

    /// Joins a public room.
    pub async fn join(&self, who: &Identity, room: RoomId) -> Result<Room> {
        let r = self.room_or_404(room).await?;
        if r.kind != RoomKind::Public {
            return Err(Error::Forbidden(
                "only public rooms can be joined freely; ask for an invite",
            ));
        }
        if self
            .store()
            .add_member(room, who.user, Role::Member, Timestamp::now())
            .await?
        {
            self.member_changed(room, who.user, &who.username, MemberChange::Joined)
                .await;
            self.tell_user_about_room(who.user, &r).await;
        }
        Ok(r)
    }

    /// The public room with that name.
    pub async fn public_room_by_name(&self, name: &str) -> Result<Room> {
        self.st()
            .public_room_by_name(name.trim())
            .await?
            .ok_or_else(|| Error::RoomNameNotFound(name.trim().to_string()))
    }

    /// Leaves a room. When this returns, none of the user's sessions receives the room any
    /// more.
    pub async fn leave(&self, who: &Identity, room: RoomId) -> Result<()> {
        let r = self.room_or_404(room).await?;
        if r.kind == RoomKind::Direct {
            return Err(Error::Forbidden("direct rooms cannot be left"));
        }
        let (this, who) = (self.clone(), who.clone());
        self.to_completion(async move {
            if !this.st().remove_member(room, who.user).await? {
                return Err(Error::NotMember(room));
            }
            this.removed(room, who.user, false).await;
            this.member_changed(room, who.user, &who.username, MemberChange::Left)
                .await;
            Ok(())
        })
        .await
    }

    /// An owner or admin adds a user to a group or public room.
    pub async fn add_member(&self, actor: &Identity, room: RoomId, username: &str) -> Result<()> {
        let r = self.room_or_404(room).await?;
        if r.kind == RoomKind::Direct {
            return Err(Error::Forbidden("direct rooms have exactly two members"));
        }
        self.require_role(room, actor.user, Role::Admin).await?;
        let user = self.user_by_name(username).await?;
        if self
            .store()
            .add_member(room, user.id, Role::Member, Timestamp::now())
            .await?
        {
            self.member_changed(room, user.id, &user.username, MemberChange::Joined)
                .await;
            self.tell_user_about_room(user.id, &r).await;
        }
        Ok(())
    }

    /// An owner or admin removes a member whose role is lower than theirs. When this returns,
    /// none of the kicked user's sessions receives the room any more.
    pub async fn kick(&self, actor: &Identity, room: RoomId, username: &str) -> Result<()> {
        let r = self.room_or_404(room).await?;
        if r.kind == RoomKind::Direct {
            return Err(Error::Forbidden("nobody can be kicked from a direct room"));
        }
        let actor_role = self.require_role(room, actor.user, Role::Admin).await?;
        let user = self.user_by_name(username).await?;
        let target = self
            .role_of(room, user.id)
            .await?
            .ok_or(Error::NotMember(room))?;
        if target >= actor_role {
            return Err(Error::Forbidden(
                "you can only kick members with a lower role",
            ));
        }
        let this = self.clone();
        self.to_completion(async move {
            // Only if still below the actor: a promotion since the check above wins.
            if !this
                .st()
                .remove_member_below(room, user.id, actor_role)
                .await?
            {
                return Err(match this.role_of(room, user.id).await? {
                    Some(_) => Error::Forbidden("you can only kick members with a lower role"),
                    // They left, or another admin was quicker: nothing to tell.
                    None => Error::NotMember(room),
                });
            }
            this.removed(room, user.id, true).await;
            this.member_changed(room, user.id, &user.username, MemberChange::Kicked)
                .await;
            Ok(())
        })
        .await
    }

    /// The owner makes a member an admin or back. Ownership is not transferable this way.
    pub async fn set_role(
        &self,
        actor: &Identity,
        room: RoomId,
        username: &str,
        role: Role,
    ) -> Result<()> {
        if role == Role::Owner {
            return Err(Error::invalid("role", "a room has exactly one owner"));
        }
        self.room_or_404(room).await?;
        self.require_role(room, actor.user, Role::Owner).await?;
        let user = self.user_by_name(username).await?;
        if user.id == actor.user {
            return Err(Error::invalid("username", "the owner's role cannot change"));
        }
        self.st().set_role(room, user.id, role).await?;
        self.member_changed(room, user.id, &user.username, MemberChange::Role(role))
            .await;
        Ok(())
    }

    /// Deletes a room (owner only; `None` for the system). Subscribers are told.
    pub async fn delete_room(&self, actor: Option<&Identity>, room: RoomId) -> Result<()> {
        if let Some(actor) = actor {
            self.require_role(room, actor.user, Role::Owner).await?;
        }
        let this = self.clone();
        self.to_completion(async move {
            if !this.st().delete_room(room).await? {
                return Err(Error::RoomNotFound(room));
            }
            // Everyone subscribed, members or watchers of a public room, on every node.
            this.inner.hub.remove_room(room, UnsubscribeReason::Deleted);
            this.to_backplane(RemoteEventKind::RoomDeleted { room })
                .await;
            Ok(())
        })
        .await
    }

    /// Members with their presence on this node.
    pub async fn members(&self, who: &Identity, room: RoomId) -> Result<Vec<MemberInfo>> {
        self.check_read(room, who.user).await?;
        let online = self.inner.hub.online_in(room);
        Ok(self
            .store()
            .members(room)
            .await?
            .into_iter()
            .map(|m| MemberInfo {
                online: online.contains(&m.user),
                user: UserInfo {
                    id: m.user,
                    username: m.username,
                },
                role: m.role,
            })
            .collect())
    }

    /// The user's rooms with unread counts.
    pub async fn rooms(&self, who: &Identity) -> Result<Vec<RoomSummary>> {
        let rooms = self.st().rooms_of(who.user).await?;
        // Keyed once, not searched per room: a user may be in hundreds of rooms.
        let unread: std::collections::HashMap<RoomId, crate::model::Unread> = self
            .st()
            .unread(who.user)
            .await?
            .into_iter()
            .map(|u| (u.room, u))
            .collect();
        Ok(rooms
            .into_iter()
            .map(|m| {
                let u = unread.get(&m.room.id);
                RoomSummary {
                    room: RoomInfo::from(&m.room),
                    role: Some(m.role),
                    latest_seq: u.map(|u| u.latest_seq).unwrap_or_default(),
                    unread: u.map(|u| u.unread).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Public rooms (the first 1000 by id).
    pub async fn public_rooms(&self) -> Result<Vec<RoomSummary>> {
        let rooms = self
            .store()
            .public_rooms(RoomId(0), MAX_HISTORY_PAGE)
            .await?;
        let mut out = Vec::with_capacity(rooms.len());
        for r in rooms {
            out.push(RoomSummary {
                latest_seq: self.st().latest_seq(r.id).await?,
                room: RoomInfo::from(&r),
                role: None,
                unread: 0,
            });
        }
        Ok(out)
    }

    // ----- invites -----

    /// Creates an invite code (any member may invite to a group or public room).
    pub async fn create_invite(
        &self,
        who: &Identity,
        room: RoomId,
        ttl: Option<Duration>,
        max_uses: Option<u32>,
    ) -> Result<Invite> {
        let r = self.room_or_404(room).await?;
        if r.kind == RoomKind::Direct {
            return Err(Error::Forbidden("direct rooms have exactly two members"));
        }
        self.require_role(room, who.user, Role::Member).await?;
        if max_uses == Some(0) {
            return Err(Error::invalid("max_uses", "must be at least 1"));
        }
        let ttl = ttl.unwrap_or(self.inner.limits.invite_ttl);
        if ttl.is_zero() || ttl > Duration::from_secs(365 * 24 * 3600) {
            return Err(Error::invalid("ttl_secs", "must be between 1 s and 1 year"));
        }
        let now = Timestamp::now();
        let invite = Invite {
            code: crate::auth::random_code(16)?,
            room,
            created_by: who.user,
            created_at: now,
            expires_at: now.plus(ttl),
            max_uses,
            uses: 0,
        };
        self.st().create_invite(invite.clone()).await?;
        Ok(invite)
    }

    /// Joins the room an invite is for.
    pub async fn redeem_invite(&self, who: &Identity, code: &str) -> Result<Room> {
        let was_member = match self.st().invite(code).await? {
            Some(inv) => self.st().member(inv.room, who.user).await?.is_some(),
            None => return Err(Error::InviteUnknown),
        };
        let room = self
            .store()
            .redeem_invite(code, who.user, Timestamp::now())
            .await?;
        if !was_member {
            self.member_changed(room.id, who.user, &who.username, MemberChange::Joined)
                .await;
            self.tell_user_about_room(who.user, &room).await;
        }
        Ok(room)
    }

    // ----- the log -----

    /// Posts a message. For a user, checks membership and limits; then appends (the store
    /// assigns the seq) and delivers to every live subscriber, locally and through the
    /// backplane. Returns once the message is durably stored.
    pub async fn publish(
        &self,
        author: Author,
        room: RoomId,
        body: String,
        client_msg_id: Option<String>,
    ) -> Result<Appended> {
        self.publish_with(author, room, body, client_msg_id, |_| {})
            .await
    }

    /// [`Engine::publish`], calling `on_commit` after the append and before delivery (the
    /// session uses it to queue the sender's ack ahead of the message itself).
    pub(crate) async fn publish_with(
        &self,
        author: Author,
        room: RoomId,
        body: String,
        client_msg_id: Option<String>,
        on_commit: impl FnOnce(&Appended) + Send + 'static,
    ) -> Result<Appended> {
        let limits = &self.inner.limits;
        validate::body(&body, limits)?;
        if let Some(id) = &client_msg_id {
            validate::client_msg_id(id, limits)?;
        }
        // No membership read here: the store checks the author's membership atomically with
        // the append (the `Store` authorship contract), which also closes the race with a
        // concurrent kick, and answers `RoomNotFound` / `NotMember` itself. That is one store
        // round trip per message fewer.
        let (sender, sender_name) = match &author {
            Author::System => (None, "system".to_string()),
            Author::User(who) => (Some(who.user), who.username.clone()),
        };
        let entry = NewEntry {
            room,
            at: Timestamp::now(),
            kind: EntryKind::Message(Message {
                sender,
                sender_name,
                body,
                client_msg_id,
            }),
        };
        // The append and the hand-off to the hub run to completion even if the caller gives
        // up (a dropped connection): a stored message is always delivered.
        let this = self.clone();
        self.to_completion(async move {
            let appended = this.inner.store.append(entry).await?;
            on_commit(&appended);
            if !appended.duplicate {
                this.deliver_local(&appended.entry);
                this.to_backplane(RemoteEventKind::Entry(appended.entry.clone()))
                    .await;
            }
            Ok(appended)
        })
        .await
    }

    /// Runs a store change together with what must follow it (hub removals, events to other
    /// nodes) in a task of its own. A request future can be dropped at any `.await` — its
    /// connection died, an HTTP client hung up — and the store commits regardless; without
    /// this, a kick could be stored while the hub was never told, and the kicked user would
    /// go on receiving the room.
    async fn to_completion<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        tokio::spawn(work)
            .await
            .map_err(|e| Error::Internal(format!("task failed: {e}")))?
    }

    /// Sends a direct message, creating the direct room on first use.
    pub async fn send_direct(
        &self,
        from: &Identity,
        to: &str,
        body: String,
        client_msg_id: Option<String>,
    ) -> Result<Appended> {
        self.send_direct_with(from, to, body, client_msg_id, |_| {})
            .await
    }

    pub(crate) async fn send_direct_with(
        &self,
        from: &Identity,
        to: &str,
        body: String,
        client_msg_id: Option<String>,
        on_commit: impl FnOnce(&Appended) + Send + 'static,
    ) -> Result<Appended> {
        // Everything the client can get wrong is refused before the room is created.
        validate::body(&body, &self.inner.limits)?;
        if let Some(id) = &client_msg_id {
            validate::client_msg_id(id, &self.inner.limits)?;
        }
        let room = self.direct_room(from, to).await?;
        let appended = self
            .publish_with(
                Author::User(from.clone()),
                room.id,
                body,
                client_msg_id,
                on_commit,
            )
            .await?;
        if appended.entry.seq == Seq(1) && !appended.duplicate {
            // A new conversation: tell both users' sessions it exists.
            for m in self.st().members(room.id).await? {
                self.tell_user_about_room(m.user, &room).await;
            }
        }
        Ok(appended)
    }

    /// A page of a room's log for a reader.
    pub async fn history(
        &self,
        who: &Identity,
        room: RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.check_read(room, who.user).await?;
        self.history_unchecked(room, query, limit).await
    }

    /// A page of a room's log, without an access check (for the embedding application).
    pub async fn history_unchecked(
        &self,
        room: RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage> {
        let limit = limit.min(MAX_HISTORY_PAGE);
        if limit == 0 {
            return Ok(HistoryPage {
                entries: Vec::new(),
                has_more: false,
            });
        }
        let entries = self.st().history(room, query, limit).await?;
        // Seqs are gap-free from 1, so whether more exist follows from the seqs themselves;
        // no need to over-read (which the store's page cap would defeat for full pages).
        let has_more = match query {
            HistoryQuery::Before(_) => entries.first().is_some_and(|e| e.seq > Seq(1)),
            HistoryQuery::After(_) => match entries.last() {
                Some(last) if entries.len() == limit => {
                    self.st().latest_seq(room).await? > last.seq
                }
                _ => false,
            },
        };
        Ok(HistoryPage { entries, has_more })
    }

    /// Moves a member's read marker forward (to at most the room's latest seq).
    pub async fn mark_read(&self, who: &Identity, room: RoomId, seq: Seq) -> Result<UnreadInfo> {
        // Membership first: a non-member must not learn a private room's latest seq.
        if self.role_of(room, who.user).await?.is_none() {
            self.room_or_404(room).await?;
            return Err(Error::NotMember(room));
        }
        let latest = self.st().latest_seq(room).await?;
        if seq > latest {
            return Err(Error::SeqAhead {
                room,
                requested: seq,
                latest,
            });
        }
        self.st().mark_read(room, who.user, seq).await?;
        let unread = self.st().unread(who.user).await?;
        let u = unread
            .into_iter()
            .find(|u| u.room == room)
            .ok_or(Error::NotMember(room))?;
        Ok(UnreadInfo {
            room,
            read_seq: u.read_seq,
            latest_seq: u.latest_seq,
            unread: u.unread,
        })
    }

    // ----- server-side delivery -----

    /// Sends a notice (not stored) to every live session of `user`, on every node; with
    /// `room`, only to the sessions subscribed to it. Returns how many sessions on this node
    /// it was queued for.
    pub async fn notify_user(
        &self,
        user: UserId,
        room: Option<RoomId>,
        body: impl Into<String>,
    ) -> usize {
        let frame = ServerFrame::Notice {
            room,
            body: body.into(),
        };
        self.user_event(user, room, frame).await
    }

    /// Closes every live session of `user` on this node and the others.
    pub async fn close_user_sessions(&self, user: UserId) -> usize {
        let n = self.inner.hub.close_user(user, CloseReason::Revoked);
        self.to_backplane(RemoteEventKind::CloseUser { user }).await;
        n
    }

    /// Revokes a login token and closes the sessions opened with it.
    pub async fn logout(&self, token: &str) -> Result<bool> {
        let hash = crate::auth::hash_token(token);
        let existed = self.st().revoke_auth_session(&hash).await?;
        self.inner.hub.close_token(&hash, CloseReason::Revoked);
        self.to_backplane(RemoteEventKind::CloseToken { token_hash: hash })
            .await;
        Ok(existed)
    }

    /// Revokes every token of a user and closes all their sessions.
    pub async fn logout_everywhere(&self, user: UserId) -> Result<u64> {
        let n = self.st().revoke_user_auth_sessions(user).await?;
        self.close_user_sessions(user).await;
        Ok(n)
    }

    /// Asks every live session to close with [`CloseReason::Shutdown`]; transports drain
    /// what is queued and close with "going away".
    pub fn shutdown(&self) {
        self.inner.hub.close_all(CloseReason::Shutdown);
    }

    /// Applies an event another node published on the backplane.
    pub fn apply_remote(&self, event: RemoteEvent) {
        if event.origin == self.inner.node {
            return;
        }
        match event.kind {
            RemoteEventKind::Entry(entry) => self.deliver_local(&entry),
            RemoteEventKind::Removed { room, user, kicked } => {
                let reason = if kicked {
                    UnsubscribeReason::Kicked
                } else {
                    UnsubscribeReason::Left
                };
                self.inner.hub.remove_user(room, user, reason);
            }
            RemoteEventKind::RoomDeleted { room } => {
                self.inner.hub.remove_room(room, UnsubscribeReason::Deleted)
            }
            RemoteEventKind::RoomEvent {
                room,
                frame,
                except,
            } => {
                self.inner
                    .hub
                    .broadcast(room, Outgoing::event(frame), except);
            }
            RemoteEventKind::UserEvent { user, room, frame } => {
                self.inner
                    .hub
                    .send_to_user(user, room, Outgoing::event(frame));
            }
            RemoteEventKind::CloseUser { user } => {
                self.inner.hub.close_user(user, CloseReason::Revoked);
            }
            RemoteEventKind::CloseToken { token_hash } => {
                self.inner
                    .hub
                    .close_token(&token_hash, CloseReason::Revoked);
            }
        }
    }

    // ----- internals -----

    fn deliver_local(&self, entry: &LogEntry) {
        if let Some(fill) = self
            .inner
            .hub
            .deliver(entry.room, entry.seq, entry_frame(entry))
        {
            self.spawn_gap_fill(fill.room);
        }
    }

    /// Repairs a gap in a room's delivery from the store (see `hub.rs`).
    pub(crate) fn spawn_gap_fill(&self, room: RoomId) {
        let this = self.clone();
        tokio::spawn(async move {
            let wait = this.inner.limits.gap_fill_after;
            tokio::time::sleep(wait).await;
            while let Some((last, highest)) = this.inner.hub.gap(room) {
                let want = ((highest.0 - last.0) as usize).min(MAX_HISTORY_PAGE);
                match this
                    .inner
                    .store
                    .history(room, HistoryQuery::After(last), want)
                    .await
                {
                    Ok(entries) if entries.first().map(|e| e.seq) == Some(last.next()) => {
                        for e in &entries {
                            this.inner.hub.deliver(room, e.seq, entry_frame(e));
                        }
                    }
                    Ok(_) => this.inner.hub.skip_gap(room, last),
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "gap fill failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        });
    }

    async fn removed(&self, room: RoomId, user: UserId, kicked: bool) {
        let reason = if kicked {
            UnsubscribeReason::Kicked
        } else {
            UnsubscribeReason::Left
        };
        self.inner.hub.remove_user(room, user, reason);
        self.to_backplane(RemoteEventKind::Removed { room, user, kicked })
            .await;
    }

    /// Tells the room's live subscribers, and every session of the member concerned (who may
    /// not be subscribed, e.g. after a kick), on every node.
    async fn member_changed(
        &self,
        room: RoomId,
        user: UserId,
        username: &str,
        change: MemberChange,
    ) {
        let frame = ServerFrame::MemberChanged {
            room,
            user: UserInfo {
                id: user,
                username: username.to_string(),
            },
            change,
        };
        self.room_event(room, frame.clone(), None).await;
        if matches!(change, MemberChange::Kicked | MemberChange::Left) {
            self.user_event(user, None, frame).await;
        }
    }

    async fn tell_user_about_room(&self, user: UserId, room: &Room) {
        let frame = ServerFrame::Room {
            room: RoomInfo::from(room),
        };
        self.user_event(user, None, frame).await;
    }

    /// An ephemeral frame for a room's live subscribers on every node.
    pub(crate) async fn room_event(
        &self,
        room: RoomId,
        frame: ServerFrame,
        except: Option<UserId>,
    ) {
        self.inner
            .hub
            .broadcast(room, Outgoing::event(frame.clone()), except);
        self.to_backplane(RemoteEventKind::RoomEvent {
            room,
            frame,
            except,
        })
        .await;
    }

    /// An ephemeral frame for one user's sessions on every node; returns how many sessions
    /// on this node it was queued for.
    async fn user_event(&self, user: UserId, room: Option<RoomId>, frame: ServerFrame) -> usize {
        let n = self
            .inner
            .hub
            .send_to_user(user, room, Outgoing::event(frame.clone()));
        self.to_backplane(RemoteEventKind::UserEvent { user, room, frame })
            .await;
        n
    }

    pub(crate) async fn to_backplane(&self, kind: RemoteEventKind) {
        let event = RemoteEvent {
            origin: self.inner.node,
            kind,
        };
        if let Err(e) = self.inner.backplane.publish(event).await {
            tracing::warn!(error = %e, "backplane publish failed");
        }
    }
}
