//! Model-based test: random operation sequences run against every store and against a small
//! reference model must give the same observable results, step by step.
//!
//! Stores plug in through [`factories`] (today `MemoryStore` and `SqliteStore`); a new store
//! is one more entry there. Every store is compared against the model, so all stores also
//! agree with one another.
//!
//! Ids differ between stores and the model, so observations are normalised: a user or room
//! id becomes its *handle*, the index of the operation result that created it. This assumes
//! stores hand out ids in increasing order of creation (which is what makes "ordered by id"
//! equal to "ordered by handle").

mod support;

use chat_core::store::{MAX_HISTORY_PAGE, NewRoom};
use chat_core::validate::fold;
use chat_core::{
    EntryKind, ErrorCode, HistoryQuery, LogEntry, Member, Message, NewEntry, Role, Room, RoomId,
    RoomKind, Seq, Store, Timestamp, UserId,
};
use chat_store::MemoryStore;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Makes a fresh, empty store.
type Factory = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>>>;

/// The stores under test. The SQLite store runs on a fresh file in its own temporary
/// directory per case (no fsync per commit at the default `synchronous = NORMAL`, so a case
/// costs milliseconds).
fn factories() -> Vec<(&'static str, Factory)> {
    vec![
        (
            "memory",
            Box::new(|| Box::pin(async { Arc::new(MemoryStore::new()) as Arc<dyn Store> })),
        ),
        (
            "sqlite",
            Box::new(|| Box::pin(support::TempStore::shared())),
        ),
    ]
}

const USER_NAMES: [&str; 5] = ["ann", "bob", "cy", "dee", "eve"];
const ROOM_NAMES: [&str; 4] = ["lobby", "dev", "ops", "fun"];
const CLIENT_IDS: [&str; 3] = ["c1", "c2", "c3"];

/// The handle standing for an id no store ever hands out.
const GHOST: usize = usize::MAX;
const GHOST_USER: UserId = UserId(u64::MAX);
const GHOST_ROOM: RoomId = RoomId(u64::MAX);

/// A reference to a user or room: below [`GHOST_PICKS`] one that does not exist, otherwise
/// the `(pick - GHOST_PICKS) % count`-th one created so far.
type Pick = u8;

/// How many of the 256 picks refer to a user or room that does not exist (1 in 16).
const GHOST_PICKS: u8 = 16;

#[derive(Debug, Clone)]
enum Op {
    CreateUser {
        name: u8,
        upper: bool,
        guest: bool,
    },
    Credentials {
        name: u8,
        upper: bool,
    },
    /// `creator` picks among existing users only (a missing creator is outside the contract).
    CreateRoom {
        creator: Option<Pick>,
        kind: RoomKind,
        name: u8,
        upper: bool,
    },
    DirectRoom {
        a: Pick,
        b: Pick,
    },
    RoomById {
        room: Pick,
    },
    PublicRoomByName {
        name: u8,
        upper: bool,
    },
    PublicRooms {
        after: Pick,
        limit: usize,
    },
    DeleteRoom {
        room: Pick,
    },
    AddMember {
        room: Pick,
        user: Pick,
        role: Role,
    },
    RemoveMember {
        room: Pick,
        user: Pick,
    },
    SetRole {
        room: Pick,
        user: Pick,
        role: Role,
    },
    Member {
        room: Pick,
        user: Pick,
    },
    Members {
        room: Pick,
    },
    RoomsOf {
        user: Pick,
    },
    Append {
        room: Pick,
        sender: Option<Pick>,
        client_id: Option<u8>,
    },
    History {
        room: Pick,
        before: bool,
        seq: u64,
        limit: usize,
    },
    LatestSeq {
        room: Pick,
    },
    MarkRead {
        room: Pick,
        user: Pick,
        seq: u64,
    },
    Unread {
        user: Pick,
    },
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Member), Just(Role::Admin), Just(Role::Owner)]
}

/// Up to 40 ops: a few users and rooms first (so that most later ops find something to work
/// on), then anything, creations included.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let user = (0..5u8, any::<bool>(), any::<bool>())
        .prop_map(|(name, upper, guest)| Op::CreateUser { name, upper, guest });
    let room =
        (any::<u8>(), any::<bool>(), 0..4u8).prop_map(|(creator, public, name)| Op::CreateRoom {
            creator: Some(creator),
            kind: if public {
                RoomKind::Public
            } else {
                RoomKind::Group
            },
            name,
            upper: false,
        });
    (
        prop::collection::vec(user, 1..=3),
        prop::collection::vec(room, 1..=2),
        prop::collection::vec(op(), 0..=35),
    )
        .prop_map(|(users, rooms, rest)| users.into_iter().chain(rooms).chain(rest).collect())
}

fn op() -> impl Strategy<Value = Op> {
    let pick = any::<u8>;
    let seq = prop_oneof![8 => 0u64..6, 1 => 6u64..16, 1 => Just(u64::MAX)];
    let limit = prop_oneof![6 => 0usize..6, 1 => Just(MAX_HISTORY_PAGE + 1)];
    prop_oneof![
        4 => (0..5u8, any::<bool>(), any::<bool>())
            .prop_map(|(name, upper, guest)| Op::CreateUser { name, upper, guest }),
        1 => (0..5u8, any::<bool>()).prop_map(|(name, upper)| Op::Credentials { name, upper }),
        4 => (
            proptest::option::weighted(0.8, pick()),
            prop_oneof![
                4 => Just(RoomKind::Group),
                4 => Just(RoomKind::Public),
                1 => Just(RoomKind::Direct)
            ],
            0..4u8,
            any::<bool>(),
        )
            .prop_map(|(creator, kind, name, upper)| Op::CreateRoom { creator, kind, name, upper }),
        2 => (pick(), pick()).prop_map(|(a, b)| Op::DirectRoom { a, b }),
        1 => pick().prop_map(|room| Op::RoomById { room }),
        1 => (0..4u8, any::<bool>()).prop_map(|(name, upper)| Op::PublicRoomByName { name, upper }),
        1 => (pick(), 0usize..4).prop_map(|(after, limit)| Op::PublicRooms { after, limit }),
        1 => pick().prop_map(|room| Op::DeleteRoom { room }),
        5 => (pick(), pick(), role()).prop_map(|(room, user, role)| Op::AddMember { room, user, role }),
        2 => (pick(), pick()).prop_map(|(room, user)| Op::RemoveMember { room, user }),
        1 => (pick(), pick(), role()).prop_map(|(room, user, role)| Op::SetRole { room, user, role }),
        1 => (pick(), pick()).prop_map(|(room, user)| Op::Member { room, user }),
        1 => pick().prop_map(|room| Op::Members { room }),
        1 => pick().prop_map(|user| Op::RoomsOf { user }),
        16 => (
            pick(),
            proptest::option::weighted(0.85, pick()),
            proptest::option::of(0..3u8),
        )
            .prop_map(|(room, sender, client_id)| Op::Append { room, sender, client_id }),
        4 => (pick(), any::<bool>(), seq.clone(), limit)
            .prop_map(|(room, before, seq, limit)| Op::History { room, before, seq, limit }),
        1 => pick().prop_map(|room| Op::LatestSeq { room }),
        4 => (pick(), pick(), seq).prop_map(|(room, user, seq)| Op::MarkRead { room, user, seq }),
        4 => pick().prop_map(|user| Op::Unread { user }),
    ]
}

fn cased(name: &str, upper: bool) -> String {
    if upper {
        name.to_uppercase()
    } else {
        name.to_string()
    }
}

/// Picks among `count` things, or one that does not exist (`None`).
fn resolve(pick: Pick, count: usize) -> Option<usize> {
    (pick >= GHOST_PICKS && count > 0).then(|| (pick - GHOST_PICKS) as usize % count)
}

// ----- normalised observations -----

#[derive(Debug, Clone, PartialEq, Eq)]
struct NRoom {
    handle: usize,
    kind: RoomKind,
    name: String,
    created_by: Option<usize>,
    created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NEntry {
    room: usize,
    seq: u64,
    at: Timestamp,
    sender: Option<usize>,
    sender_name: String,
    body: String,
    client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NMember {
    room: usize,
    user: usize,
    username: String,
    role: Role,
    joined_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Obs {
    Err(ErrorCode),
    Unit,
    Bool(bool),
    Seq(u64),
    /// Handle, username, guest, has a password hash.
    User(Option<(usize, String, bool, bool)>),
    Room(Option<NRoom>),
    Rooms(Vec<NRoom>),
    Appended(NEntry, bool),
    Entries(Vec<NEntry>),
    Member(Option<NMember>),
    Members(Vec<NMember>),
    Memberships(Vec<(NRoom, Role)>),
    /// Room handle, read seq, latest seq, unread count.
    Unread(Vec<(usize, u64, u64, u64)>),
    /// The harness saw something no correct store does (e.g. a reused id).
    Broken(String),
}

// ----- running ops against a store -----

struct Harness {
    store: Arc<dyn Store>,
    users: Vec<UserId>,
    rooms: Vec<RoomId>,
    user_handles: HashMap<UserId, usize>,
    room_handles: HashMap<RoomId, usize>,
}

impl Harness {
    fn user(&self, pick: Pick) -> UserId {
        resolve(pick, self.users.len()).map_or(GHOST_USER, |h| self.users[h])
    }

    fn room(&self, pick: Pick) -> RoomId {
        resolve(pick, self.rooms.len()).map_or(GHOST_ROOM, |h| self.rooms[h])
    }

    fn user_handle(&self, id: UserId) -> usize {
        self.user_handles.get(&id).copied().unwrap_or(GHOST)
    }

    fn room_handle(&self, id: RoomId) -> usize {
        self.room_handles.get(&id).copied().unwrap_or(GHOST)
    }

    fn new_user(&mut self, id: UserId) -> Option<Obs> {
        if self.user_handles.insert(id, self.users.len()).is_some() || id == GHOST_USER {
            return Some(Obs::Broken(format!("user id {id} handed out twice")));
        }
        self.users.push(id);
        None
    }

    fn new_room(&mut self, id: RoomId) -> Option<Obs> {
        if self.room_handles.insert(id, self.rooms.len()).is_some() || id == GHOST_ROOM {
            return Some(Obs::Broken(format!("room id {id} handed out twice")));
        }
        self.rooms.push(id);
        None
    }

    fn n_room(&self, r: &Room) -> NRoom {
        NRoom {
            handle: self.room_handle(r.id),
            kind: r.kind,
            name: r.name.clone(),
            created_by: r.created_by.map(|u| self.user_handle(u)),
            created_at: r.created_at,
        }
    }

    fn n_entry(&self, e: &LogEntry) -> NEntry {
        let EntryKind::Message(m) = &e.kind;
        NEntry {
            room: self.room_handle(e.room),
            seq: e.seq.0,
            at: e.at,
            sender: m.sender.map(|u| self.user_handle(u)),
            sender_name: m.sender_name.clone(),
            body: m.body.clone(),
            client_id: m.client_msg_id.clone(),
        }
    }

    fn n_member(&self, m: &Member) -> NMember {
        NMember {
            room: self.room_handle(m.room),
            user: self.user_handle(m.user),
            username: m.username.clone(),
            role: m.role,
            joined_at: m.joined_at,
        }
    }

    async fn run(&mut self, step: usize, op: &Op) -> Obs {
        let at = Timestamp(step as i64);
        let s = self.store.clone();
        macro_rules! obs {
            ($r:expr, |$v:ident| $ok:expr) => {
                match $r {
                    Ok($v) => $ok,
                    Err(e) => Obs::Err(e.code()),
                }
            };
        }
        match *op {
            Op::CreateUser { name, upper, guest } => {
                let name = cased(USER_NAMES[name as usize], upper);
                let hash = (!guest).then(|| format!("hash-{name}"));
                obs!(s.create_user(&name, hash, guest, at).await, |u| {
                    if let Some(broken) = self.new_user(u.id) {
                        return broken;
                    }
                    Obs::User(Some((
                        self.user_handle(u.id),
                        u.username,
                        u.guest,
                        !u.guest,
                    )))
                })
            }
            Op::Credentials { name, upper } => {
                let name = cased(USER_NAMES[name as usize], upper);
                obs!(s.credentials(&name).await, |c| Obs::User(c.map(|c| (
                    self.user_handle(c.user.id),
                    c.user.username,
                    c.user.guest,
                    c.password_hash.is_some()
                ))))
            }
            Op::CreateRoom {
                creator,
                kind,
                name,
                upper,
            } => {
                let created_by = match creator {
                    Some(p) if !self.users.is_empty() => {
                        Some(self.users[p as usize % self.users.len()])
                    }
                    _ => None,
                };
                let room = NewRoom {
                    kind,
                    name: cased(ROOM_NAMES[name as usize], upper),
                    created_by,
                    at,
                };
                obs!(s.create_room(room).await, |r| {
                    if let Some(broken) = self.new_room(r.id) {
                        return broken;
                    }
                    Obs::Room(Some(self.n_room(&r)))
                })
            }
            Op::DirectRoom { a, b } => {
                let (a, b) = (self.user(a), self.user(b));
                obs!(s.direct_room(a, b, &format!("dm{step}"), at).await, |r| {
                    if !self.room_handles.contains_key(&r.id) {
                        if let Some(broken) = self.new_room(r.id) {
                            return broken;
                        }
                    }
                    Obs::Room(Some(self.n_room(&r)))
                })
            }
            Op::RoomById { room } => {
                obs!(s.room(self.room(room)).await, |r| Obs::Room(
                    r.map(|r| self.n_room(&r))
                ))
            }
            Op::PublicRoomByName { name, upper } => {
                let name = cased(ROOM_NAMES[name as usize], upper);
                obs!(s.public_room_by_name(&name).await, |r| Obs::Room(
                    r.map(|r| self.n_room(&r))
                ))
            }
            Op::PublicRooms { after, limit } => {
                let after = resolve(after, self.rooms.len()).map_or(RoomId(0), |h| self.rooms[h]);
                obs!(s.public_rooms(after, limit).await, |rs| Obs::Rooms(
                    rs.iter().map(|r| self.n_room(r)).collect()
                ))
            }
            Op::DeleteRoom { room } => obs!(s.delete_room(self.room(room)).await, |b| Obs::Bool(b)),
            Op::AddMember { room, user, role } => {
                obs!(
                    s.add_member(self.room(room), self.user(user), role, at)
                        .await,
                    |b| Obs::Bool(b)
                )
            }
            Op::RemoveMember { room, user } => {
                obs!(
                    s.remove_member(self.room(room), self.user(user)).await,
                    |b| Obs::Bool(b)
                )
            }
            Op::SetRole { room, user, role } => {
                obs!(
                    s.set_role(self.room(room), self.user(user), role).await,
                    |_u| Obs::Unit
                )
            }
            Op::Member { room, user } => {
                obs!(s.member(self.room(room), self.user(user)).await, |m| {
                    Obs::Member(m.map(|m| self.n_member(&m)))
                })
            }
            Op::Members { room } => obs!(s.members(self.room(room)).await, |ms| Obs::Members(
                ms.iter().map(|m| self.n_member(m)).collect()
            )),
            Op::RoomsOf { user } => obs!(s.rooms_of(self.user(user)).await, |ms| Obs::Memberships(
                ms.iter().map(|m| (self.n_room(&m.room), m.role)).collect()
            )),
            Op::Append {
                room,
                sender,
                client_id,
            } => {
                let sender = sender.map(|p| self.user(p));
                let sender_name = match sender {
                    None => "system".to_string(),
                    Some(u) => format!("user{}", self.user_handle(u)),
                };
                let entry = NewEntry {
                    room: self.room(room),
                    at,
                    kind: EntryKind::Message(Message {
                        sender,
                        sender_name,
                        body: format!("body{step}"),
                        client_msg_id: client_id.map(|c| CLIENT_IDS[c as usize].to_string()),
                    }),
                };
                obs!(s.append(entry).await, |a| Obs::Appended(
                    self.n_entry(&a.entry),
                    a.duplicate
                ))
            }
            Op::History {
                room,
                before,
                seq,
                limit,
            } => {
                let q = if before {
                    HistoryQuery::Before(Seq(seq))
                } else {
                    HistoryQuery::After(Seq(seq))
                };
                obs!(s.history(self.room(room), q, limit).await, |es| {
                    Obs::Entries(es.iter().map(|e| self.n_entry(e)).collect())
                })
            }
            Op::LatestSeq { room } => obs!(s.latest_seq(self.room(room)).await, |q| Obs::Seq(q.0)),
            Op::MarkRead { room, user, seq } => {
                match s
                    .mark_read(self.room(room), self.user(user), Seq(seq))
                    .await
                {
                    Ok(q) => Obs::Seq(q.0),
                    // The trait leaves open which of the two an unknown room gives.
                    Err(e) if e.code() == ErrorCode::RoomNotFound => Obs::Err(ErrorCode::NotMember),
                    Err(e) => Obs::Err(e.code()),
                }
            }
            Op::Unread { user } => obs!(s.unread(self.user(user)).await, |us| Obs::Unread(
                us.iter()
                    .map(|u| (
                        self.room_handle(u.room),
                        u.read_seq.0,
                        u.latest_seq.0,
                        u.unread
                    ))
                    .collect()
            )),
        }
    }
}

// ----- the reference model -----

struct MUser {
    name: String,
    guest: bool,
}

struct MMember {
    role: Role,
    joined_at: Timestamp,
    read: u64,
}

struct MRoom {
    kind: RoomKind,
    name: String,
    created_by: Option<usize>,
    created_at: Timestamp,
    members: BTreeMap<usize, MMember>,
    log: Vec<NEntry>,
}

#[derive(Default)]
struct Model {
    users: Vec<MUser>,
    /// `None` once deleted.
    rooms: Vec<Option<MRoom>>,
    directs: HashMap<(usize, usize), usize>,
    keys: HashMap<(usize, String), (usize, u64)>,
}

impl Model {
    fn user(&self, pick: Pick) -> usize {
        resolve(pick, self.users.len()).unwrap_or(GHOST)
    }

    fn room(&self, pick: Pick) -> usize {
        resolve(pick, self.rooms.len()).unwrap_or(GHOST)
    }

    fn live(&self, room: usize) -> Option<&MRoom> {
        self.rooms.get(room).and_then(Option::as_ref)
    }

    fn live_mut(&mut self, room: usize) -> Option<&mut MRoom> {
        self.rooms.get_mut(room).and_then(Option::as_mut)
    }

    fn n_room(&self, h: usize) -> NRoom {
        let r = self.live(h).expect("live room");
        NRoom {
            handle: h,
            kind: r.kind,
            name: r.name.clone(),
            created_by: r.created_by,
            created_at: r.created_at,
        }
    }

    fn add(&mut self, room: usize, user: usize, role: Role, at: Timestamp) {
        let r = self.live_mut(room).expect("live room");
        r.members.insert(
            user,
            MMember {
                role,
                joined_at: at,
                read: 0,
            },
        );
    }

    fn n_member(&self, room: usize, user: usize) -> Option<NMember> {
        let m = self.live(room)?.members.get(&user)?;
        Some(NMember {
            room,
            user,
            username: self.users[user].name.clone(),
            role: m.role,
            joined_at: m.joined_at,
        })
    }

    fn new_room(
        &mut self,
        kind: RoomKind,
        name: String,
        by: Option<usize>,
        at: Timestamp,
    ) -> usize {
        self.rooms.push(Some(MRoom {
            kind,
            name,
            created_by: by,
            created_at: at,
            members: BTreeMap::new(),
            log: Vec::new(),
        }));
        self.rooms.len() - 1
    }

    fn run(&mut self, step: usize, op: &Op) -> Obs {
        let at = Timestamp(step as i64);
        match *op {
            Op::CreateUser { name, upper, guest } => {
                let name = cased(USER_NAMES[name as usize], upper);
                if self.users.iter().any(|u| fold(&u.name) == fold(&name)) {
                    return Obs::Err(ErrorCode::AlreadyExists);
                }
                self.users.push(MUser {
                    name: name.clone(),
                    guest,
                });
                Obs::User(Some((self.users.len() - 1, name, guest, !guest)))
            }
            Op::Credentials { name, upper } => {
                let name = cased(USER_NAMES[name as usize], upper);
                Obs::User(
                    self.users
                        .iter()
                        .position(|u| fold(&u.name) == fold(&name))
                        .map(|h| {
                            let u = &self.users[h];
                            (h, u.name.clone(), u.guest, !u.guest)
                        }),
                )
            }
            Op::CreateRoom {
                creator,
                kind,
                name,
                upper,
            } => {
                let name = cased(ROOM_NAMES[name as usize], upper);
                let by = match creator {
                    Some(p) if !self.users.is_empty() => Some(p as usize % self.users.len()),
                    _ => None,
                };
                if kind == RoomKind::Direct {
                    return Obs::Err(ErrorCode::InvalidField);
                }
                if kind == RoomKind::Public
                    && self
                        .rooms
                        .iter()
                        .flatten()
                        .any(|r| r.kind == RoomKind::Public && fold(&r.name) == fold(&name))
                {
                    return Obs::Err(ErrorCode::AlreadyExists);
                }
                let h = self.new_room(kind, name, by, at);
                if let Some(owner) = by {
                    self.add(h, owner, Role::Owner, at);
                }
                Obs::Room(Some(self.n_room(h)))
            }
            Op::DirectRoom { a, b } => {
                let (a, b) = (self.user(a), self.user(b));
                if a == b {
                    return Obs::Err(ErrorCode::InvalidField);
                }
                if a == GHOST || b == GHOST {
                    return Obs::Err(ErrorCode::UserNotFound);
                }
                let key = (a.min(b), a.max(b));
                if let Some(&h) = self.directs.get(&key) {
                    if self.live(h).is_some() {
                        return Obs::Room(Some(self.n_room(h)));
                    }
                }
                let h = self.new_room(RoomKind::Direct, format!("dm{step}"), Some(a), at);
                self.add(h, a, Role::Member, at);
                self.add(h, b, Role::Member, at);
                self.directs.insert(key, h);
                Obs::Room(Some(self.n_room(h)))
            }
            Op::RoomById { room } => {
                let h = self.room(room);
                Obs::Room(self.live(h).map(|_| self.n_room(h)))
            }
            Op::PublicRoomByName { name, upper } => {
                let name = cased(ROOM_NAMES[name as usize], upper);
                let found = (0..self.rooms.len()).find(|&h| {
                    self.live(h)
                        .is_some_and(|r| r.kind == RoomKind::Public && fold(&r.name) == fold(&name))
                });
                Obs::Room(found.map(|h| self.n_room(h)))
            }
            Op::PublicRooms { after, limit } => {
                let from = resolve(after, self.rooms.len()).map_or(0, |h| h + 1);
                Obs::Rooms(
                    (from..self.rooms.len())
                        .filter(|&h| self.live(h).is_some_and(|r| r.kind == RoomKind::Public))
                        .take(limit)
                        .map(|h| self.n_room(h))
                        .collect(),
                )
            }
            Op::DeleteRoom { room } => {
                let h = self.room(room);
                if self.live(h).is_none() {
                    return Obs::Bool(false);
                }
                self.rooms[h] = None;
                self.keys.retain(|_, (r, _)| *r != h);
                self.directs.retain(|_, r| *r != h);
                Obs::Bool(true)
            }
            Op::AddMember { room, user, role } => {
                let (room, user) = (self.room(room), self.user(user));
                let Some(r) = self.live(room) else {
                    return Obs::Err(ErrorCode::RoomNotFound);
                };
                if user == GHOST {
                    return Obs::Err(ErrorCode::UserNotFound);
                }
                if r.members.contains_key(&user) {
                    return Obs::Bool(false);
                }
                self.add(room, user, role, at);
                Obs::Bool(true)
            }
            Op::RemoveMember { room, user } => {
                let (room, user) = (self.room(room), self.user(user));
                Obs::Bool(
                    self.live_mut(room)
                        .is_some_and(|r| r.members.remove(&user).is_some()),
                )
            }
            Op::SetRole { room, user, role } => {
                let (room, user) = (self.room(room), self.user(user));
                match self.live_mut(room).and_then(|r| r.members.get_mut(&user)) {
                    Some(m) => {
                        m.role = role;
                        Obs::Unit
                    }
                    None => Obs::Err(ErrorCode::NotMember),
                }
            }
            Op::Member { room, user } => {
                Obs::Member(self.n_member(self.room(room), self.user(user)))
            }
            Op::Members { room } => {
                let room = self.room(room);
                Obs::Members(
                    self.live(room)
                        .map(|r| {
                            r.members
                                .keys()
                                .filter_map(|&u| self.n_member(room, u))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            }
            Op::RoomsOf { user } => {
                let user = self.user(user);
                Obs::Memberships(
                    (0..self.rooms.len())
                        .filter_map(|h| {
                            let m = self.live(h)?.members.get(&user)?;
                            Some((self.n_room(h), m.role))
                        })
                        .collect(),
                )
            }
            Op::Append {
                room,
                sender,
                client_id,
            } => {
                let room = self.room(room);
                let sender = sender.map(|p| self.user(p));
                let Some(r) = self.live(room) else {
                    return Obs::Err(ErrorCode::RoomNotFound);
                };
                if sender.is_some_and(|u| !r.members.contains_key(&u)) {
                    return Obs::Err(ErrorCode::NotMember);
                }
                let client_id = client_id.map(|c| CLIENT_IDS[c as usize].to_string());
                let key = match (sender, &client_id) {
                    (Some(u), Some(c)) => Some((u, c.clone())),
                    _ => None,
                };
                if let Some(&(r, seq)) = key.as_ref().and_then(|k| self.keys.get(k)) {
                    let original =
                        self.live(r).expect("key of live room").log[seq as usize - 1].clone();
                    return Obs::Appended(original, true);
                }
                let r = self.live_mut(room).expect("live room");
                let e = NEntry {
                    room,
                    seq: r.log.len() as u64 + 1,
                    at,
                    sender,
                    sender_name: sender.map_or("system".to_string(), |u| format!("user{u}")),
                    body: format!("body{step}"),
                    client_id,
                };
                r.log.push(e.clone());
                if let Some(k) = key {
                    self.keys.insert(k, (room, e.seq));
                }
                Obs::Appended(e, false)
            }
            Op::History {
                room,
                before,
                seq,
                limit,
            } => {
                let Some(r) = self.live(self.room(room)) else {
                    return Obs::Entries(Vec::new());
                };
                let limit = limit.min(MAX_HISTORY_PAGE);
                let out: Vec<NEntry> = if before {
                    let mut v: Vec<NEntry> = r
                        .log
                        .iter()
                        .rev()
                        .filter(|e| e.seq < seq)
                        .take(limit)
                        .cloned()
                        .collect();
                    v.reverse();
                    v
                } else {
                    r.log
                        .iter()
                        .filter(|e| e.seq > seq)
                        .take(limit)
                        .cloned()
                        .collect()
                };
                Obs::Entries(out)
            }
            Op::LatestSeq { room } => {
                Obs::Seq(self.live(self.room(room)).map_or(0, |r| r.log.len() as u64))
            }
            Op::MarkRead { room, user, seq } => {
                let (room, user) = (self.room(room), self.user(user));
                match self.live_mut(room).and_then(|r| r.members.get_mut(&user)) {
                    Some(m) => {
                        m.read = m.read.max(seq);
                        Obs::Seq(m.read)
                    }
                    None => Obs::Err(ErrorCode::NotMember),
                }
            }
            Op::Unread { user } => {
                let user = self.user(user);
                Obs::Unread(
                    (0..self.rooms.len())
                        .filter_map(|h| {
                            let r = self.live(h)?;
                            let m = r.members.get(&user)?;
                            let unread = r
                                .log
                                .iter()
                                .filter(|e| e.seq > m.read && e.sender != Some(user))
                                .count() as u64;
                            Some((h, m.read, r.log.len() as u64, unread))
                        })
                        .collect(),
                )
            }
        }
    }
}

// ----- the property -----

/// Runs `ops` on a fresh store from each factory and on the model, and fails at the first
/// step where a store's observation differs from the model's.
fn same_observations(ops: &[Op], factories: &[(&str, Factory)]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let expected: Vec<Obs> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| model.run(i, op))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for (name, make) in factories {
        let actual: Vec<Obs> = rt.block_on(async {
            let mut h = Harness {
                store: make().await,
                users: Vec::new(),
                rooms: Vec::new(),
                user_handles: HashMap::new(),
                room_handles: HashMap::new(),
            };
            let mut out = Vec::with_capacity(ops.len());
            for (i, op) in ops.iter().enumerate() {
                out.push(h.run(i, op).await);
            }
            out
        });
        for (i, (got, want)) in actual.iter().zip(&expected).enumerate() {
            prop_assert_eq!(
                got,
                want,
                "store {:?} differs from the model at step {}: {:?}",
                name,
                i,
                &ops[i]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn stores_agree_with_the_model(ops in ops()) {
        same_observations(&ops, &factories())?;
    }
}

/// A fixed sequence that exercises every kind of op, so the property is known to do real
/// work whatever the random cases happen to draw.
#[test]
fn fixed_sequence_agrees_with_the_model() {
    use Op::*;
    // Picks of the first, second, ... user or room, and of one that does not exist.
    const A: Pick = GHOST_PICKS;
    const B: Pick = GHOST_PICKS + 1;
    const C: Pick = GHOST_PICKS + 2;
    const NONE: Pick = 0;
    let ops = vec![
        CreateUser {
            name: 0,
            upper: false,
            guest: false,
        },
        CreateUser {
            name: 1,
            upper: false,
            guest: true,
        },
        CreateUser {
            name: 0,
            upper: true,
            guest: false,
        },
        Credentials {
            name: 0,
            upper: true,
        },
        CreateRoom {
            creator: Some(0),
            kind: RoomKind::Public,
            name: 0,
            upper: false,
        },
        CreateRoom {
            creator: Some(1),
            kind: RoomKind::Public,
            name: 0,
            upper: true,
        },
        CreateRoom {
            creator: Some(1),
            kind: RoomKind::Group,
            name: 0,
            upper: true,
        },
        CreateRoom {
            creator: None,
            kind: RoomKind::Direct,
            name: 1,
            upper: false,
        },
        DirectRoom { a: A, b: B },
        DirectRoom { a: B, b: A },
        DirectRoom { a: A, b: A },
        AddMember {
            room: A,
            user: B,
            role: Role::Admin,
        },
        AddMember {
            room: A,
            user: B,
            role: Role::Member,
        },
        SetRole {
            room: B,
            user: A,
            role: Role::Admin,
        },
        Append {
            room: A,
            sender: Some(A),
            client_id: Some(0),
        },
        Append {
            room: A,
            sender: Some(A),
            client_id: Some(0),
        },
        Append {
            room: A,
            sender: Some(B),
            client_id: Some(0),
        },
        Append {
            room: A,
            sender: None,
            client_id: Some(0),
        },
        Append {
            room: A,
            sender: Some(B),
            client_id: None,
        },
        History {
            room: A,
            before: true,
            seq: u64::MAX,
            limit: 2,
        },
        History {
            room: A,
            before: false,
            seq: 1,
            limit: MAX_HISTORY_PAGE + 1,
        },
        MarkRead {
            room: A,
            user: B,
            seq: 2,
        },
        MarkRead {
            room: A,
            user: B,
            seq: 1,
        },
        Unread { user: A },
        Unread { user: B },
        Member { room: A, user: B },
        Members { room: A },
        RoomsOf { user: A },
        PublicRooms {
            after: NONE,
            limit: 3,
        },
        PublicRoomByName {
            name: 0,
            upper: true,
        },
        RemoveMember { room: A, user: B },
        AddMember {
            room: A,
            user: B,
            role: Role::Member,
        },
        Unread { user: B },
        DeleteRoom { room: A },
        Append {
            room: A,
            sender: Some(A),
            client_id: Some(0),
        },
        Append {
            room: B,
            sender: Some(B),
            client_id: Some(0),
        },
        RoomById { room: A },
        LatestSeq { room: B },
        DeleteRoom { room: C },
        DirectRoom { a: B, b: A },
        // A is no member of B: refused, and no seq is used.
        Append {
            room: B,
            sender: Some(A),
            client_id: Some(1),
        },
        LatestSeq { room: B },
    ];
    let obs = {
        let mut m = Model::default();
        ops.iter()
            .enumerate()
            .map(|(i, op)| m.run(i, op))
            .collect::<Vec<_>>()
    };
    // Spot-check the model itself on a few steps, so that it is not merely agreeing with a
    // store that shares its mistakes.
    assert_eq!(obs[2], Obs::Err(ErrorCode::AlreadyExists));
    assert_eq!(obs[5], Obs::Err(ErrorCode::AlreadyExists));
    assert_eq!(obs[7], Obs::Err(ErrorCode::InvalidField));
    assert_eq!(obs[8], obs[9]);
    assert_eq!(obs[10], Obs::Err(ErrorCode::InvalidField));
    assert_eq!(obs[12], Obs::Bool(false));
    assert!(matches!(&obs[15], Obs::Appended(e, true) if e.room == 0 && e.seq == 1));
    assert!(matches!(&obs[16], Obs::Appended(e, false) if e.seq == 2));
    assert!(matches!(&obs[17], Obs::Appended(e, false) if e.seq == 3));
    assert_eq!(obs[22], Obs::Seq(2));
    assert!(matches!(&obs[34], Obs::Err(ErrorCode::RoomNotFound)));
    assert!(matches!(&obs[35], Obs::Appended(e, false) if e.room == 1 && e.seq == 1));
    assert_eq!(obs[40], Obs::Err(ErrorCode::NotMember));
    assert_eq!(obs[41], Obs::Seq(1));
    same_observations(&ops, &factories()).unwrap();
}
