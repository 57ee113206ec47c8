//! Model-based test of the hub: random sequences of session and membership operations run
//! against an engine on `MemoryStore` and against a small reference model, step by step.
//!
//! Everything here runs on a current-thread runtime and every engine call queues its frames
//! before it returns, so after each operation every session's outbox holds exactly what that
//! operation produced. Two kinds of checks run on it:
//!
//! - **Invariants**, from the frames alone (a client's point of view): `message` frames (and
//!   the entries of `subscribed` replies) only for rooms the session is subscribed to and the
//!   user is a member of; seqs strictly increasing and gap-free from the subscription point;
//!   after `unsubscribed` (leave, kick) or an acknowledged `unsubscribe`, nothing more of that
//!   room; and, at the end of the case, every subscription period's replay + live stream
//!   equals the store's log from the period's start to where the room stood when it ended
//!   (in particular a resumed session sees exactly the log after its `since_seq`).
//! - **The model**: the exact list of significant frames (`message`, `subscribed`,
//!   `unsubscribed`, `sent`, `ok`, `error`) each session must have received, in order,
//!   including "a retried `client_msg_id` is acknowledged as a duplicate with the original
//!   seq and delivered to nobody".

mod common;

use chat_core::protocol::{ClientFrame, Response, ServerFrame, UnsubscribeReason};
use chat_core::{
    Author, Engine, ErrorCode, HistoryQuery, Identity, Limits, Request, RoomId, RoomKind, Seq,
    UserId,
};
use common::{Client, engine_with, user};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Sessions per user the `Open` op allows.
const MAX_SESSIONS_PER_USER: usize = 3;
const USER_NAMES: [&str; 4] = ["owner", "ann", "bob", "cy"];

type TestResult = Result<(), TestCaseError>;

#[derive(Debug, Clone, Copy)]
enum Since {
    /// `since_seq: None`: live only, from the room's current head.
    None,
    /// `since_seq: Some(last seq this session saw in the room)` (0 if none): a resume.
    LastSeen,
    /// `since_seq: Some(0)`: the whole log.
    Zero,
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        user: usize,
    },
    Close {
        session: Index,
    },
    AddMember {
        user: usize,
        room: usize,
    },
    Leave {
        user: usize,
        room: usize,
    },
    Kick {
        user: usize,
        room: usize,
    },
    Subscribe {
        session: Index,
        room: usize,
        since: Since,
    },
    Unsubscribe {
        session: Index,
        room: usize,
    },
    /// A user publishes; through one of their sessions (a `send` frame) when `via_session`
    /// is given and they have one, else with `Engine::publish`.
    Publish {
        user: usize,
        room: usize,
        client_msg_id: Option<u8>,
        via_session: Option<Index>,
    },
    SystemPublish {
        room: usize,
    },
    /// Drop a session, open a new one for the same user, resubscribe to the old one's rooms
    /// with `since_seq` = the last seq it saw there.
    Reconnect {
        session: Index,
    },
}

#[derive(Debug, Clone)]
struct Case {
    users: usize,
    rooms: usize,
    max_replay: usize,
    ops: Vec<Op>,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let user = 0..USER_NAMES.len();
    let room = 0..3usize;
    let since = prop_oneof![
        1 => Just(Since::None),
        3 => Just(Since::LastSeen),
        1 => Just(Since::Zero),
    ];
    prop_oneof![
        3 => user.clone().prop_map(|user| Op::Open { user }),
        1 => any::<Index>().prop_map(|session| Op::Close { session }),
        3 => (user.clone(), room.clone()).prop_map(|(user, room)| Op::AddMember { user, room }),
        1 => (user.clone(), room.clone()).prop_map(|(user, room)| Op::Leave { user, room }),
        1 => (user.clone(), room.clone()).prop_map(|(user, room)| Op::Kick { user, room }),
        5 => (any::<Index>(), room.clone(), since)
            .prop_map(|(session, room, since)| Op::Subscribe { session, room, since }),
        1 => (any::<Index>(), room.clone())
            .prop_map(|(session, room)| Op::Unsubscribe { session, room }),
        7 => (
            user,
            room.clone(),
            proptest::option::weighted(0.6, 0..3u8),
            proptest::option::of(any::<Index>()),
        )
            .prop_map(|(user, room, client_msg_id, via_session)| Op::Publish {
                user,
                room,
                client_msg_id,
                via_session,
            }),
        1 => room.prop_map(|room| Op::SystemPublish { room }),
        2 => any::<Index>().prop_map(|session| Op::Reconnect { session }),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        3..=4usize,
        2..=3usize,
        prop_oneof![Just(2usize), Just(1000usize)],
        proptest::collection::vec(op_strategy(), 1..60),
    )
        .prop_map(|(users, rooms, max_replay, ops)| Case {
            users,
            rooms,
            max_replay,
            ops,
        })
}

/// The frames whose exact sequence the model predicts.
#[derive(Debug, Clone, PartialEq)]
enum Sig {
    Message {
        room: RoomId,
        seq: Seq,
        sender: Option<UserId>,
        body: String,
    },
    Subscribed {
        id: u64,
        room: RoomId,
        entries: Vec<(Seq, String)>,
        latest: Seq,
        gap: Option<(Seq, Seq)>,
    },
    Unsubscribed {
        room: RoomId,
        reason: UnsubscribeReason,
    },
    Sent {
        id: u64,
        room: RoomId,
        seq: Seq,
        duplicate: bool,
    },
    Ok {
        id: u64,
    },
    Error {
        id: Option<u64>,
        code: ErrorCode,
    },
}

enum Frame {
    Sig(Sig),
    /// Another room-scoped frame (presence, member change, typing), and the user a member
    /// change is about.
    Scoped(RoomId, Option<UserId>),
    Other,
}

fn classify(r: &Response) -> Frame {
    match &r.frame {
        ServerFrame::Message(e) => Frame::Sig(Sig::Message {
            room: e.room,
            seq: e.seq,
            sender: e.sender,
            body: e.body.clone(),
        }),
        ServerFrame::Subscribed {
            room,
            entries,
            latest_seq,
            gap,
        } => Frame::Sig(Sig::Subscribed {
            id: r.id.unwrap_or(u64::MAX),
            room: *room,
            entries: entries.iter().map(|e| (e.seq, e.body.clone())).collect(),
            latest: *latest_seq,
            gap: gap.map(|g| (g.from, g.to)),
        }),
        ServerFrame::Unsubscribed { room, reason } => Frame::Sig(Sig::Unsubscribed {
            room: *room,
            reason: *reason,
        }),
        ServerFrame::Sent {
            room,
            seq,
            duplicate,
        } => Frame::Sig(Sig::Sent {
            id: r.id.unwrap_or(u64::MAX),
            room: *room,
            seq: *seq,
            duplicate: *duplicate,
        }),
        ServerFrame::Ok => Frame::Sig(Sig::Ok {
            id: r.id.unwrap_or(u64::MAX),
        }),
        ServerFrame::Error { code, .. } => Frame::Sig(Sig::Error {
            id: r.id,
            code: *code,
        }),
        ServerFrame::MemberChanged { room, user, .. } => Frame::Scoped(*room, Some(user.id)),
        ServerFrame::Presence { room, .. } | ServerFrame::Typing { room, .. } => {
            Frame::Scoped(*room, None)
        }
        _ => Frame::Other,
    }
}

/// One subscription of one session to one room, from its `subscribed` reply to its end, as
/// the client saw it.
#[derive(Debug, Clone)]
struct Period {
    session: u64,
    room: usize,
    since: Option<Seq>,
    resumed: bool,
    /// The first seq this period covers (the replay's start, or `latest_seq + 1`).
    first: Seq,
    /// The next seq the client must see.
    next: Seq,
    got: Vec<(Seq, String)>,
    /// The room's latest seq when the period ended.
    end: Option<Seq>,
}

#[derive(Debug, Default)]
struct Stream {
    active: Option<Period>,
    /// The highest seq this session knows of in the room (for resuming).
    last_seen: Option<Seq>,
}

/// What a `subscribe` request was, to interpret its reply.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Subscribe {
        room: usize,
        since: Option<Seq>,
        resumed: bool,
    },
    Unsubscribe {
        room: usize,
    },
}

struct Sess {
    label: u64,
    client: Client,
    user: usize,
    /// The model: rooms this session is subscribed to.
    subscribed: BTreeSet<usize>,
    /// What the current op must produce for it, in order.
    expected: Vec<Sig>,
    /// The client's view of its subscriptions.
    streams: BTreeMap<usize, Stream>,
    pending: HashMap<u64, Pending>,
}

struct Logged {
    body: String,
    sender: Option<UserId>,
}

struct Harness {
    engine: Engine,
    users: Vec<Identity>,
    rooms: Vec<RoomId>,
    max_replay: u64,
    members: Vec<BTreeSet<usize>>,
    log: Vec<Vec<Logged>>,
    /// Idempotency: `(user, client_msg_id)` → `(room index, seq)` of the original.
    sent_ids: HashMap<(usize, u8), (usize, Seq)>,
    sessions: Vec<Sess>,
    done: Vec<Period>,
    next_id: u64,
    next_label: u64,
    step: usize,
}

fn room_index(rooms: &[RoomId], room: RoomId) -> usize {
    rooms
        .iter()
        .position(|r| *r == room)
        .expect("a room of the test")
}

impl Harness {
    fn latest(&self, room: usize) -> Seq {
        Seq(self.log[room].len() as u64)
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn open(&mut self, user: usize) -> usize {
        let client = Client::open(&self.engine, &self.users[user]);
        self.next_label += 1;
        self.sessions.push(Sess {
            label: self.next_label,
            client,
            user,
            subscribed: BTreeSet::new(),
            expected: Vec::new(),
            streams: BTreeMap::new(),
            pending: HashMap::new(),
        });
        self.sessions.len() - 1
    }

    /// Ends every active period of a session that is going away.
    fn retire(&mut self, s: Sess) {
        for (room, stream) in s.streams {
            if let Some(mut p) = stream.active {
                p.end = Some(self.latest(room));
                self.done.push(p);
            }
        }
    }

    /// Queues the expected reply of a subscribe and updates the model.
    fn expect_subscribe(&mut self, s: usize, room: usize, since: Option<Seq>, id: u64) {
        let user = self.sessions[s].user;
        let exp = if self.members[room].contains(&user) {
            let latest = self.latest(room);
            let (entries, gap) = match since {
                None => (Vec::new(), None),
                Some(since) => {
                    let n = latest.0 - since.0;
                    let (from, gap) = if n > self.max_replay {
                        let to = latest.0 - self.max_replay;
                        (to + 1, Some((since.next(), Seq(to))))
                    } else {
                        (since.0 + 1, None)
                    };
                    let entries = (from..=latest.0)
                        .map(|seq| (Seq(seq), self.log[room][seq as usize - 1].body.clone()))
                        .collect();
                    (entries, gap)
                }
            };
            self.sessions[s].subscribed.insert(room);
            Sig::Subscribed {
                id,
                room: self.rooms[room],
                entries,
                latest,
                gap,
            }
        } else {
            self.sessions[s].subscribed.remove(&room);
            Sig::Error {
                id: Some(id),
                code: ErrorCode::NotMember,
            }
        };
        self.sessions[s].expected.push(exp);
    }

    async fn subscribe(&mut self, s: usize, room: usize, since: Option<Seq>, resumed: bool) {
        let id = self.fresh_id();
        self.expect_subscribe(s, room, since, id);
        let sess = &mut self.sessions[s];
        sess.pending.insert(
            id,
            Pending::Subscribe {
                room,
                since,
                resumed,
            },
        );
        sess.client
            .session
            .handle(Request {
                id: Some(id),
                frame: ClientFrame::Subscribe {
                    room: self.rooms[room],
                    since_seq: since,
                },
            })
            .await;
    }

    /// The model's side of an append that stored a new entry: its seq, and a `message` for
    /// every session subscribed to the room.
    fn expect_delivery(&mut self, room: usize, sender: Option<UserId>, body: &str) -> Seq {
        self.log[room].push(Logged {
            body: body.to_string(),
            sender,
        });
        let seq = self.latest(room);
        let rid = self.rooms[room];
        for sess in self.sessions.iter_mut() {
            if sess.subscribed.contains(&room) {
                sess.expected.push(Sig::Message {
                    room: rid,
                    seq,
                    sender,
                    body: body.to_string(),
                });
            }
        }
        seq
    }

    /// The model's side of a leave or kick that succeeds.
    fn expect_removal(&mut self, user: usize, room: usize, reason: UnsubscribeReason) {
        self.members[room].remove(&user);
        let rid = self.rooms[room];
        for sess in self.sessions.iter_mut() {
            if sess.user == user && sess.subscribed.remove(&room) {
                sess.expected.push(Sig::Unsubscribed { room: rid, reason });
            }
        }
    }

    fn pick(&self, i: &Index) -> Option<usize> {
        (!self.sessions.is_empty()).then(|| i.index(self.sessions.len()))
    }

    async fn apply(&mut self, op: &Op) -> TestResult {
        let owner = self.users[0].clone();
        match op {
            Op::Open { user } => {
                let user = user % self.users.len();
                if self.sessions.iter().filter(|s| s.user == user).count() < MAX_SESSIONS_PER_USER {
                    self.open(user);
                }
            }
            Op::Close { session } => {
                if let Some(s) = self.pick(session) {
                    let sess = self.sessions.remove(s);
                    // Whatever it had queued is dropped with it; it was checked after the
                    // previous op already.
                    self.retire(sess);
                }
            }
            Op::AddMember { user, room } => {
                let (user, room) = (user % self.users.len(), room % self.rooms.len());
                let r = self
                    .engine
                    .add_member(&owner, self.rooms[room], &self.users[user].username)
                    .await;
                prop_assert!(r.is_ok(), "add_member: {r:?}");
                self.members[room].insert(user);
            }
            Op::Leave { user, room } => {
                // The owner never leaves (the rooms would become unmanageable).
                let user = 1 + user % (self.users.len() - 1);
                let room = room % self.rooms.len();
                let was_member = self.members[room].contains(&user);
                if was_member {
                    self.expect_removal(user, room, UnsubscribeReason::Left);
                }
                let r = self.engine.leave(&self.users[user], self.rooms[room]).await;
                if was_member {
                    prop_assert!(r.is_ok(), "leave: {r:?}");
                } else {
                    prop_assert_eq!(r.map_err(|e| e.code()), Err(ErrorCode::NotMember));
                }
            }
            Op::Kick { user, room } => {
                let user = user % self.users.len();
                let room = room % self.rooms.len();
                let expected = if user == 0 {
                    Err(ErrorCode::Forbidden)
                } else if self.members[room].contains(&user) {
                    self.expect_removal(user, room, UnsubscribeReason::Kicked);
                    Ok(())
                } else {
                    Err(ErrorCode::NotMember)
                };
                let r = self
                    .engine
                    .kick(&owner, self.rooms[room], &self.users[user].username)
                    .await;
                prop_assert_eq!(r.map_err(|e| e.code()), expected);
            }
            Op::Subscribe {
                session,
                room,
                since,
            } => {
                let Some(s) = self.pick(session) else {
                    return Ok(());
                };
                let room = room % self.rooms.len();
                let last_seen = self.sessions[s]
                    .streams
                    .get(&room)
                    .and_then(|st| st.last_seen)
                    .unwrap_or(Seq::ZERO);
                let since = match since {
                    Since::None => None,
                    Since::LastSeen => Some(last_seen),
                    Since::Zero => Some(Seq::ZERO),
                };
                self.subscribe(s, room, since, false).await;
            }
            Op::Unsubscribe { session, room } => {
                let Some(s) = self.pick(session) else {
                    return Ok(());
                };
                let room = room % self.rooms.len();
                let id = self.fresh_id();
                let sess = &mut self.sessions[s];
                sess.subscribed.remove(&room);
                sess.expected.push(Sig::Ok { id });
                sess.pending.insert(id, Pending::Unsubscribe { room });
                sess.client
                    .session
                    .handle(Request {
                        id: Some(id),
                        frame: ClientFrame::Unsubscribe {
                            room: self.rooms[room],
                        },
                    })
                    .await;
            }
            Op::Publish {
                user,
                room,
                client_msg_id,
                via_session,
            } => {
                let user = user % self.users.len();
                let room = room % self.rooms.len();
                let body = format!("step {} by {}", self.step, USER_NAMES[user]);
                let cmid = client_msg_id.map(|c| format!("cmid-{c}"));
                let own: Vec<usize> = (0..self.sessions.len())
                    .filter(|&s| self.sessions[s].user == user)
                    .collect();
                let via = via_session
                    .as_ref()
                    .filter(|_| !own.is_empty())
                    .map(|i| own[i.index(own.len())]);
                let id = self.fresh_id();
                // The model's answer: Err(code) or (room, seq, duplicate).
                let expected: Result<(RoomId, Seq, bool), ErrorCode> =
                    if !self.members[room].contains(&user) {
                        Err(ErrorCode::NotMember)
                    } else if let Some(&(orig_room, seq)) =
                        client_msg_id.and_then(|c| self.sent_ids.get(&(user, c)))
                    {
                        Ok((self.rooms[orig_room], seq, true))
                    } else {
                        Ok((self.rooms[room], self.latest(room).next(), false))
                    };
                if let Some(s) = via {
                    // The sender's ack is queued before the message fans out.
                    self.sessions[s].expected.push(match expected {
                        Ok((room, seq, duplicate)) => Sig::Sent {
                            id,
                            room,
                            seq,
                            duplicate,
                        },
                        Err(code) => Sig::Error { id: Some(id), code },
                    });
                }
                if let Ok((_, _, false)) = expected {
                    let seq = self.expect_delivery(room, Some(self.users[user].user), &body);
                    if let Some(c) = client_msg_id {
                        self.sent_ids.insert((user, *c), (room, seq));
                    }
                }
                match via {
                    Some(s) => {
                        self.sessions[s]
                            .client
                            .session
                            .handle(Request {
                                id: Some(id),
                                frame: ClientFrame::Send {
                                    room: self.rooms[room],
                                    body,
                                    client_msg_id: cmid,
                                },
                            })
                            .await;
                    }
                    None => {
                        let r = self
                            .engine
                            .publish(
                                Author::User(self.users[user].clone()),
                                self.rooms[room],
                                body,
                                cmid,
                            )
                            .await
                            .map(|a| (a.entry.room, a.entry.seq, a.duplicate))
                            .map_err(|e| e.code());
                        prop_assert_eq!(r, expected, "publish result");
                    }
                }
            }
            Op::SystemPublish { room } => {
                let room = room % self.rooms.len();
                let body = format!("step {} by the system", self.step);
                let seq = self.expect_delivery(room, None, &body);
                let r = self
                    .engine
                    .publish(Author::System, self.rooms[room], body, None)
                    .await
                    .map(|a| (a.entry.seq, a.duplicate))
                    .map_err(|e| e.code());
                prop_assert_eq!(r, Ok((seq, false)), "system publish result");
            }
            Op::Reconnect { session } => {
                let Some(s) = self.pick(session) else {
                    return Ok(());
                };
                let old = self.sessions.remove(s);
                let user = old.user;
                let resume: Vec<(usize, Seq)> = old
                    .subscribed
                    .iter()
                    .map(|&room| {
                        let seen = old
                            .streams
                            .get(&room)
                            .and_then(|st| st.last_seen)
                            .unwrap_or(Seq::ZERO);
                        (room, seen)
                    })
                    .collect();
                self.retire(old);
                let s = self.open(user);
                for (room, since) in resume {
                    self.subscribe(s, room, Some(since), true).await;
                }
            }
        }
        Ok(())
    }

    /// Drains every outbox and checks what came out, against the invariants and the model.
    fn check(&mut self, subscribed_before: &[(u64, BTreeSet<usize>)]) -> TestResult {
        let step = self.step;
        for si in 0..self.sessions.len() {
            let mut actual = Vec::new();
            let mut scoped = Vec::new();
            while let Some(f) = self.sessions[si].client.outbox.try_recv() {
                match classify(f.response()) {
                    Frame::Sig(sig) => actual.push(sig),
                    Frame::Scoped(room, about) => scoped.push((room, about)),
                    Frame::Other => {}
                }
            }
            let label = self.sessions[si].label;
            let user = self.sessions[si].user;
            let before = subscribed_before
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, set)| set.clone())
                .unwrap_or_default();

            // Invariants, from the frames alone.
            for sig in &actual {
                self.observe(si, sig)?;
            }
            let me = self.users[user].user;
            for (room, about) in scoped {
                let room = room_index(&self.rooms, room);
                // A user is told about changes to their own membership on every session.
                prop_assert!(
                    about == Some(me)
                        || before.contains(&room)
                        || self.sessions[si].subscribed.contains(&room),
                    "step {step}: session {label} got a room event of room {room}, which it \
                     is not subscribed to"
                );
            }
            // The model.
            let expected = std::mem::take(&mut self.sessions[si].expected);
            prop_assert_eq!(
                &actual,
                &expected,
                "step {}: frames of session {} (user {})",
                step,
                label,
                USER_NAMES[user]
            );
        }
        Ok(())
    }

    /// Feeds one frame to the client-side view of session `si` and checks the invariants.
    fn observe(&mut self, si: usize, sig: &Sig) -> TestResult {
        let step = self.step;
        let latest: Vec<Seq> = (0..self.rooms.len()).map(|r| self.latest(r)).collect();
        let sess = &mut self.sessions[si];
        let label = sess.label;
        match sig {
            Sig::Message {
                room, seq, body, ..
            } => {
                let room = room_index(&self.rooms, *room);
                prop_assert!(
                    self.members[room].contains(&sess.user),
                    "step {step}: session {label} got seq {seq} of room {room} while its user \
                     is not a member"
                );
                let stream = sess.streams.entry(room).or_default();
                let Some(p) = stream.active.as_mut() else {
                    return Err(TestCaseError::fail(format!(
                        "step {step}: session {label} got seq {seq} of room {room} without \
                         being subscribed to it"
                    )));
                };
                prop_assert!(
                    *seq == p.next,
                    "step {step}: session {label}, room {room}: got seq {seq}, expected {} \
                     ({})",
                    p.next,
                    if *seq < p.next {
                        "duplicate or reordered"
                    } else {
                        "gap"
                    }
                );
                p.next = seq.next();
                p.got.push((*seq, body.clone()));
                stream.last_seen = Some(*seq);
            }
            Sig::Subscribed {
                id,
                room,
                entries,
                latest: head,
                gap,
            } => {
                let room = room_index(&self.rooms, *room);
                let Some(Pending::Subscribe {
                    room: asked,
                    since,
                    resumed,
                }) = sess.pending.remove(id)
                else {
                    return Err(TestCaseError::fail(format!(
                        "step {step}: session {label}: a subscribed reply to no subscribe"
                    )));
                };
                prop_assert_eq!(asked, room);
                prop_assert!(
                    self.members[room].contains(&sess.user),
                    "step {step}: session {label} subscribed to room {room} as a non-member"
                );
                prop_assert!(*head <= latest[room], "latest_seq ahead of the store");
                // The replay is gap-free from since_seq (or names its gap) up to latest_seq.
                let first = match (since, gap) {
                    (None, _) => {
                        prop_assert!(entries.is_empty() && gap.is_none());
                        head.next()
                    }
                    (Some(since), None) => since.next(),
                    (Some(since), Some((from, to))) => {
                        prop_assert_eq!(*from, since.next(), "gap starts after since_seq");
                        to.next()
                    }
                };
                let seqs: Vec<Seq> = entries.iter().map(|e| e.0).collect();
                let want: Vec<Seq> = (first.0..=head.0).map(Seq).collect();
                prop_assert_eq!(
                    seqs,
                    want,
                    "step {}: session {}, room {}: replay after {:?}",
                    step,
                    label,
                    room,
                    since
                );
                let stream = sess.streams.entry(room).or_default();
                if let Some(mut old) = stream.active.take() {
                    old.end = Some(latest[room]);
                    self.done.push(old);
                }
                stream.active = Some(Period {
                    session: label,
                    room,
                    since,
                    resumed,
                    first,
                    next: head.next(),
                    got: entries.clone(),
                    end: None,
                });
                stream.last_seen = Some(stream.last_seen.unwrap_or(Seq::ZERO).max(*head));
            }
            Sig::Unsubscribed { room, .. } => {
                let room = room_index(&self.rooms, *room);
                let stream = sess.streams.entry(room).or_default();
                let Some(mut p) = stream.active.take() else {
                    return Err(TestCaseError::fail(format!(
                        "step {step}: session {label}: unsubscribed from room {room}, which \
                         it was not subscribed to"
                    )));
                };
                p.end = Some(latest[room]);
                self.done.push(p);
            }
            Sig::Ok { id } | Sig::Error { id: Some(id), .. } => match sess.pending.remove(id) {
                Some(Pending::Unsubscribe { room }) | Some(Pending::Subscribe { room, .. }) => {
                    // An acknowledged unsubscribe, or a failed subscribe: not subscribed.
                    let stream = sess.streams.entry(room).or_default();
                    if let Some(mut p) = stream.active.take() {
                        p.end = Some(latest[room]);
                        self.done.push(p);
                    }
                }
                None => {}
            },
            Sig::Sent { .. } | Sig::Error { id: None, .. } => {}
        }
        Ok(())
    }

    /// End of the case: every subscription period saw exactly the store's log from its start
    /// to where the room stood when it ended.
    async fn check_periods(&mut self) -> TestResult {
        let sessions = std::mem::take(&mut self.sessions);
        for s in sessions {
            self.retire(s);
        }
        for p in &self.done {
            let end = p.end.expect("ended");
            let log = self
                .engine
                .history_unchecked(
                    self.rooms[p.room],
                    HistoryQuery::After(Seq(p.first.0 - 1)),
                    1000,
                )
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want: Vec<(Seq, String)> = log
                .entries
                .iter()
                .filter(|e| e.seq <= end)
                .map(|e| {
                    let chat_core::EntryKind::Message(m) = &e.kind;
                    (e.seq, m.body.clone())
                })
                .collect();
            prop_assert_eq!(
                &p.got,
                &want,
                "session {} room {} (since {:?}, resumed: {}): replay + live stream differs \
                 from the store's log {}..={}",
                p.session,
                p.room,
                p.since,
                p.resumed,
                p.first,
                end
            );
        }
        // And the model's log is the store's.
        for (room, log) in self.log.iter().enumerate() {
            let stored = self
                .engine
                .history_unchecked(self.rooms[room], HistoryQuery::After(Seq::ZERO), 1000)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let stored: Vec<(Option<UserId>, String)> = stored
                .entries
                .iter()
                .map(|e| {
                    let chat_core::EntryKind::Message(m) = &e.kind;
                    (m.sender, m.body.clone())
                })
                .collect();
            let model: Vec<(Option<UserId>, String)> =
                log.iter().map(|l| (l.sender, l.body.clone())).collect();
            prop_assert_eq!(stored, model, "room {} log", room);
        }
        Ok(())
    }
}

async fn run_case(case: Case) -> TestResult {
    let engine = engine_with(Limits {
        session_queue: 100_000,
        requests_per_second: 1e9,
        request_burst: 1e9,
        max_replay: case.max_replay,
        ..Limits::default()
    });
    let mut users = Vec::new();
    for name in &USER_NAMES[..case.users] {
        users.push(user(&engine, name).await);
    }
    let mut rooms = Vec::new();
    for i in 0..case.rooms {
        let room = engine
            .create_room(&users[0], &format!("room {i}"), RoomKind::Group)
            .await
            .expect("create room");
        rooms.push(room.id);
    }
    let mut h = Harness {
        max_replay: engine.limits().max_replay as u64,
        engine,
        members: vec![BTreeSet::from([0]); rooms.len()],
        log: (0..rooms.len()).map(|_| Vec::new()).collect(),
        users,
        rooms,
        sent_ids: HashMap::new(),
        sessions: Vec::new(),
        done: Vec::new(),
        next_id: 0,
        next_label: 0,
        step: 0,
    };
    // One session per user to start with.
    for u in 0..case.users {
        h.open(u);
    }
    for (step, op) in case.ops.iter().enumerate() {
        h.step = step;
        let before: Vec<(u64, BTreeSet<usize>)> = h
            .sessions
            .iter()
            .map(|s| (s.label, s.subscribed.clone()))
            .collect();
        h.apply(op).await?;
        h.check(&before)?;
    }
    h.check_periods().await
}

proptest! {
    #![proptest_config(Config {
        cases: 128,
        // Only the two test files may be created in this tree: no regression file.
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn hub_delivers_what_the_model_predicts(case in case_strategy()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run_case(case))?;
    }
}
