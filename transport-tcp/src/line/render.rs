//! Server frames as lines of text for a terminal, and what a line-mode connection remembers
//! to render them (room names, the current room, what each request was for).
//!
//! Every line the server writes in line mode starts with one of three markers, so that people
//! and scripts can tell them apart: `* ` for information, `! ` for errors, and `[room] ` for a
//! message (`[room] user: text`). Text that comes from other users — bodies, room names, even
//! usernames and error messages — goes through [`sanitize`] first.

use chat_core::protocol::{
    Entry, MemberChange, RequestId, Response, RoomInfo, RoomSummary, ServerFrame, UnsubscribeReason,
};
use chat_core::{ErrorCode, RoomId, RoomKind, Seq};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

/// Most rooms a connection remembers names of (its own rooms and the public ones it was
/// shown): the map must not grow without bound on a server with very many public rooms.
const MAX_KNOWN_ROOMS: usize = 10_000;
/// Most follow-up subscriptions waiting for the reader (new direct conversations).
const MAX_FOLLOWUPS: usize = 64;

/// The commands, shown in the banner and by `/help`.
pub(crate) const HELP: &[(&str, &str)] = &[
    ("/login <user> <password>", "sign in"),
    ("/nick <name>", "sign in as a guest"),
    (
        "/token <token>",
        "sign in again as the guest the token was given to",
    ),
    ("/create <room>", "create a public room and enter it"),
    ("/join <room>", "join a room (by name or id) and enter it"),
    ("/leave [room]", "leave the current (or the named) room"),
    ("/rooms", "your rooms, and public rooms to join"),
    ("/who [room]", "members of the current (or the named) room"),
    ("/msg <user> <text>", "send a direct message"),
    (
        "/history [n]",
        "the last n messages of the current room (default 20)",
    ),
    ("/help", "this list"),
    ("/quit", "disconnect"),
];

/// The command list as `*` lines. `guests`: whether `/nick` can work on this server.
pub(crate) fn help(out: &mut String, guests: bool) {
    info(out, "Commands:");
    for (command, what) in HELP {
        let what = if *command == "/nick <name>" && !guests {
            "sign in as a guest (disabled on this server)"
        } else {
            what
        };
        info(out, &format!("  {command:<26}{what}"));
    }
    info(
        out,
        "  anything else is said in the current room (start it with // to say a /)",
    );
}

/// The banner, shown when a person first types something: a greeting, how to sign in, and the
/// commands (`/help` explains each).
pub(crate) fn banner(out: &mut String, greeting: &str, guests: bool) {
    info(out, greeting);
    info(
        out,
        if guests {
            "Sign in with /login <user> <password>, or as a guest with /nick <name>."
        } else {
            "Sign in with /login <user> <password>."
        },
    );
    let names: Vec<&str> = HELP
        .iter()
        .filter_map(|(command, _)| command.split(' ').next())
        .collect();
    info(
        out,
        &format!("Commands: {} (/help explains them)", names.join(" ")),
    );
}

/// A `* ` line.
pub(crate) fn info(out: &mut String, text: &str) {
    out.push_str("* ");
    out.push_str(text);
    out.push_str("\r\n");
}

/// A `! ` line.
pub(crate) fn error(out: &mut String, text: &str) {
    out.push_str("! ");
    out.push_str(text);
    out.push_str("\r\n");
}

/// Text from elsewhere made safe to print on a terminal: nothing in the result can move the
/// cursor, change colours, ring the bell, retitle the window or reorder text.
///
/// - C0 controls and DEL become caret notation (`ESC` → `^[`, `BEL` → `^G`, `CR` → `^M`,
///   `BS` → `^H`), as `cat -v` shows them; a tab becomes a space. With `ESC` gone, no CSI or
///   OSC sequence can start.
/// - C1 controls (U+0080 to U+009F, which include the 8-bit CSI U+009B and OSC U+009D), the
///   bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F,
///   U+061C) and the line and paragraph separators (U+2028, U+2029) become U+FFFD.
///
/// Line breaks must be handled before this (a `\n` here becomes `^J`): the renderer splits a
/// body into lines and gives each its own `[room] user: ` prefix, so that no line of one
/// message can pass for another message.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(' '),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if needs_escape(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// What a request was sent for: decides how its reply is shown, and what the reader learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    /// A `ping` carrying text the connection itself produced (help, a parse error, …): its
    /// `pong` prints the text, in order with everything else.
    Say(String),
    /// `join`, first step of `/join`.
    Join,
    /// `create_room`, first step of `/create`.
    Create,
    /// `subscribe` that makes the room the current one.
    Enter(Enter),
    /// `subscribe` in the background (a direct conversation): replayed entries are shown.
    Watch,
    /// `leave`.
    Leave(RoomId),
    /// `rooms`, for `/rooms`.
    MyRooms,
    /// `rooms`, right after signing in.
    LoginRooms,
    /// `public_rooms`, second step of `/rooms`.
    PublicRooms,
    /// `members`.
    Who,
    /// `history`.
    History,
    /// `send` or `send_direct`: the ack is silent (the message itself is shown when it comes
    /// back from the room).
    Send,
}

/// How a room became the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enter {
    /// `/join` of a room the user was not a member of.
    Joined,
    /// `/create`.
    Created,
    /// `/join` of one of the user's rooms.
    Switched,
}

/// The outcome of a request, for the reader's next step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Succeeded; nothing the reader needs.
    Done,
    /// A `room` reply.
    Room(RoomInfo),
    /// A `sent` reply.
    Sent {
        /// The room (for a direct message, the direct room).
        room: RoomId,
        /// The message's seq.
        seq: Seq,
    },
    /// A `rooms` reply.
    Rooms(Vec<RoomSummary>),
    /// Refused by the rate limiter: not executed, send it again later.
    RateLimited,
    /// Failed; the error has been shown.
    Failed,
}

/// Something the writer asks the reader to do, because of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Followup {
    /// Subscribe to a room (a new direct conversation), replaying after `since`.
    Watch {
        /// The room.
        room: RoomId,
        /// Replay after this seq.
        since: Option<Seq>,
    },
}

/// A room the connection knows the name of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomMeta {
    pub(crate) name: String,
    pub(crate) kind: RoomKind,
    pub(crate) member: bool,
}

/// What a line-mode connection remembers. Shared by its reader and writer under one mutex,
/// held for a lookup or an update, never across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Who the connection is signed in as.
    pub(crate) me: Option<String>,
    /// Rooms by id: names for display, and which of them the user is a member of.
    pub(crate) rooms: HashMap<RoomId, RoomMeta>,
    /// Rooms the session is subscribed to.
    pub(crate) subscribed: HashSet<RoomId>,
    /// Where a plain line goes.
    pub(crate) current: Option<RoomId>,
    /// What each request in flight was for.
    pub(crate) pending: HashMap<RequestId, Pending>,
    /// Outcomes the writer has flushed to the peer and the reader has not taken yet.
    pub(crate) answered: VecDeque<(RequestId, Outcome)>,
    /// Follow-ups for the reader, oldest first.
    pub(crate) followups: VecDeque<Followup>,
}

impl State {
    /// A room's display name: its name, sanitized, or `room <id>` if it is not known.
    pub(crate) fn name(&self, room: RoomId) -> String {
        match self.rooms.get(&room) {
            Some(meta) => sanitize(&meta.name).into_owned(),
            None => format!("room {room}"),
        }
    }

    /// Finds a room the user named among the rooms the connection knows, preferring the
    /// user's own rooms. Names compare case-insensitively.
    pub(crate) fn find(&self, name: &str) -> Option<RoomId> {
        let folded = name.trim().to_lowercase();
        let mut best: Option<(RoomId, bool)> = None;
        for (id, meta) in &self.rooms {
            if meta.name.to_lowercase() == folded {
                match best {
                    Some((_, true)) => {}
                    Some((_, false)) if !meta.member => {}
                    _ => best = Some((*id, meta.member)),
                }
            }
        }
        best.map(|(id, _)| id)
    }

    /// Whether the user is known to be a member of `room`.
    pub(crate) fn is_member(&self, room: RoomId) -> bool {
        self.rooms.get(&room).is_some_and(|m| m.member)
    }

    fn learn(&mut self, room: &RoomInfo, member: Option<bool>) {
        if let Some(meta) = self.rooms.get_mut(&room.id) {
            meta.name.clone_from(&room.name);
            meta.kind = room.kind;
            if let Some(member) = member {
                meta.member = member;
            }
        } else if self.rooms.len() < MAX_KNOWN_ROOMS || member == Some(true) {
            self.rooms.insert(
                room.id,
                RoomMeta {
                    name: room.name.clone(),
                    kind: room.kind,
                    member: member.unwrap_or(false),
                },
            );
        }
    }

    fn left(&mut self, room: RoomId) {
        self.subscribed.remove(&room);
        if let Some(meta) = self.rooms.get_mut(&room) {
            meta.member = false;
        }
        if self.current == Some(room) {
            self.current = None;
        }
    }

    fn is_me(&self, username: &str) -> bool {
        self.me.as_deref() == Some(username)
    }

    fn followup(&mut self, f: Followup) {
        if self.followups.len() < MAX_FOLLOWUPS && !self.followups.contains(&f) {
            self.followups.push_back(f);
        }
    }
}

/// A message as `[room] user: text` lines: one per line of the body, each with the prefix.
pub(crate) fn message(out: &mut String, room: &str, sender: &str, body: &str) {
    let sender = sanitize(sender);
    let mut lines = body.split('\n').peekable();
    while let Some(line) = lines.next() {
        // A `\r\n` line break counts as a break; a lone `\r` is shown as `^M`.
        let line = match lines.peek() {
            Some(_) => line.strip_suffix('\r').unwrap_or(line),
            None => line,
        };
        let _ = write!(out, "[{room}] {sender}: {}\r\n", sanitize(line));
    }
}

fn entry(out: &mut String, st: &State, e: &Entry) {
    message(out, &st.name(e.room), &e.sender_name, &e.body);
}

fn kind(k: RoomKind) -> &'static str {
    match k {
        RoomKind::Direct => "direct",
        RoomKind::Group => "group",
        RoomKind::Public => "public",
    }
}

fn role(r: chat_core::Role) -> &'static str {
    match r {
        chat_core::Role::Member => "member",
        chat_core::Role::Admin => "admin",
        chat_core::Role::Owner => "owner",
    }
}

/// Renders one server frame into `out` (possibly nothing), updating `st`. Returns the outcome
/// of the request it answers, if it answers one of this connection's requests.
pub(crate) fn render(
    st: &mut State,
    resp: &Response,
    out: &mut String,
) -> Option<(RequestId, Outcome)> {
    let pending = resp.id.and_then(|id| st.pending.remove(&id));
    let outcome = render_frame(st, &resp.frame, pending, out);
    resp.id.zip(outcome)
}

fn render_frame(
    st: &mut State,
    frame: &ServerFrame,
    pending: Option<Pending>,
    out: &mut String,
) -> Option<Outcome> {
    let done = pending.as_ref().map(|_| Outcome::Done);
    match frame {
        ServerFrame::Welcome { user, token, .. } => {
            st.me = Some(user.username.clone());
            info(out, &format!("signed in as {}", sanitize(&user.username)));
            if let Some(token) = token {
                // The name is taken from now on: this is the guest's only way back.
                info(
                    out,
                    &format!(
                        "to come back as {} later, sign in with /token {} (keep it to yourself)",
                        sanitize(&user.username),
                        sanitize(token.expose())
                    ),
                );
            }
            done
        }
        ServerFrame::Error { code, message } => {
            if pending.is_some() && *code == ErrorCode::RateLimited {
                // The reader sends it again once the budget allows; nothing to show.
                return Some(Outcome::RateLimited);
            }
            error(out, &sanitize(message));
            pending.map(|_| Outcome::Failed)
        }
        ServerFrame::Pong => {
            if let Some(Pending::Say(text)) = &pending {
                out.push_str(text);
            }
            done
        }
        ServerFrame::Ok => {
            if let Some(Pending::Leave(room)) = pending {
                info(out, &format!("you left {}", st.name(room)));
                st.left(room);
            }
            done
        }
        ServerFrame::Room { room } => {
            st.learn(room, Some(true));
            match pending {
                Some(_) => Some(Outcome::Room(room.clone())),
                None => {
                    if room.kind == RoomKind::Direct {
                        // A new conversation: follow it, from its first message.
                        if !st.subscribed.contains(&room.id) {
                            st.followup(Followup::Watch {
                                room: room.id,
                                since: Some(Seq(0)),
                            });
                        }
                    } else if !st
                        .pending
                        .values()
                        .any(|p| matches!(p, Pending::Join | Pending::Create))
                    {
                        // Not our own `/join` or `/create` (those announce themselves).
                        let name = st.name(room.id);
                        info(
                            out,
                            &format!("you are now a member of {name}; /join {name} to talk there"),
                        );
                    }
                    None
                }
            }
        }
        ServerFrame::Subscribed { room, entries, .. } => {
            st.subscribed.insert(*room);
            match &pending {
                Some(Pending::Enter(how)) => {
                    st.current = Some(*room);
                    let name = st.name(*room);
                    let text = match how {
                        Enter::Joined => format!("joined {name}; you are now talking in {name}"),
                        Enter::Created => {
                            format!("created public room {name}; you are now talking in {name}")
                        }
                        Enter::Switched => format!("you are now talking in {name}"),
                    };
                    info(out, &text);
                }
                _ => {
                    for e in entries {
                        entry(out, st, e);
                    }
                }
            }
            done
        }
        ServerFrame::Unsubscribed { room, reason } => {
            let name = st.name(*room);
            let ours = st.pending.values().any(|p| *p == Pending::Leave(*room));
            match reason {
                UnsubscribeReason::Left if ours => {}
                UnsubscribeReason::Left => info(out, &format!("you are no longer in {name}")),
                UnsubscribeReason::Kicked => info(out, &format!("you were removed from {name}")),
                UnsubscribeReason::Deleted => info(out, &format!("{name} was deleted")),
            }
            st.left(*room);
            if *reason == UnsubscribeReason::Deleted {
                st.rooms.remove(room);
            }
            done
        }
        ServerFrame::Message(e) => {
            entry(out, st, e);
            done
        }
        ServerFrame::Sent { room, seq, .. } => pending.map(|_| Outcome::Sent {
            room: *room,
            seq: *seq,
        }),
        ServerFrame::History { room, entries, .. } => {
            let name = st.name(*room);
            if entries.is_empty() {
                info(out, &format!("no messages in {name} yet"));
            } else {
                info(
                    out,
                    &format!("the last {} messages in {name}:", entries.len()),
                );
                for e in entries {
                    entry(out, st, e);
                }
            }
            done
        }
        ServerFrame::Rooms { rooms } => {
            // The public list says nothing about membership (its `role` is always empty);
            // the user's own list is exactly their memberships.
            let public_list = pending == Some(Pending::PublicRooms);
            let member = (!public_list).then_some(true);
            for r in rooms {
                st.learn(&r.room, member);
            }
            match pending {
                Some(Pending::PublicRooms) => {
                    let others: Vec<String> = rooms
                        .iter()
                        .filter(|r| !st.is_member(r.room.id))
                        .map(|r| sanitize(&r.room.name).into_owned())
                        .collect();
                    if others.is_empty() {
                        info(out, "no other public rooms; /create one");
                    } else {
                        info(
                            out,
                            &format!("public rooms you can /join: {}", others.join(", ")),
                        );
                    }
                }
                Some(Pending::LoginRooms) if !rooms.is_empty() => {
                    let names: Vec<String> = rooms.iter().map(|r| summary(r, false)).collect();
                    info(
                        out,
                        &format!("your rooms: {}; /join one to talk there", names.join(", ")),
                    );
                }
                Some(Pending::MyRooms) if !rooms.is_empty() => {
                    info(out, "your rooms:");
                    for r in rooms {
                        let here = if st.current == Some(r.room.id) {
                            " <- you are here"
                        } else {
                            ""
                        };
                        info(out, &format!("  {}{here}", summary(r, true)));
                    }
                }
                _ => info(
                    out,
                    "you are in no rooms yet: /create <room> or /join <room>",
                ),
            }
            pending.map(|_| Outcome::Rooms(rooms.clone()))
        }
        ServerFrame::Members { room, members } => {
            let name = st.name(*room);
            info(out, &format!("members of {name}:"));
            for m in members {
                let online = if m.online { "online" } else { "offline" };
                info(
                    out,
                    &format!(
                        "  {} ({}, {online})",
                        sanitize(&m.user.username),
                        role(m.role)
                    ),
                );
            }
            done
        }
        ServerFrame::Presence { room, user, online } => {
            if !st.is_me(&user.username) {
                let state = if *online { "online" } else { "offline" };
                let name = st.name(*room);
                info(
                    out,
                    &format!("[{name}] {} is {state}", sanitize(&user.username)),
                );
            }
            done
        }
        ServerFrame::MemberChanged { room, user, change } => {
            if !st.is_me(&user.username) {
                let what = match change {
                    MemberChange::Joined => "joined".to_string(),
                    MemberChange::Left => "left".to_string(),
                    MemberChange::Kicked => "was removed".to_string(),
                    MemberChange::Role(r) => format!("is now {}", role(*r)),
                };
                let name = st.name(*room);
                info(
                    out,
                    &format!("[{name}] {} {what}", sanitize(&user.username)),
                );
            }
            done
        }
        ServerFrame::Notice { room, body } => {
            let prefix = match room {
                Some(r) => format!("[{}] notice", st.name(*r)),
                None => "notice".to_string(),
            };
            for line in body.split('\n') {
                info(out, &format!("{prefix}: {}", sanitize(line)));
            }
            done
        }
        ServerFrame::Invite { code, room, .. } => {
            let name = st.name(*room);
            info(out, &format!("invite code for {name}: {}", sanitize(code)));
            done
        }
        // Typing, read markers, and frames added after this was written: nothing to show.
        _ => done,
    }
}

fn summary(r: &RoomSummary, long: bool) -> String {
    let name = sanitize(&r.room.name);
    let unread = match r.unread {
        0 => String::new(),
        n => format!(", {n} unread"),
    };
    match (long, r.unread) {
        (true, _) => format!("{name} ({}{unread})", kind(r.room.kind)),
        (false, 0) => name.into_owned(),
        (false, n) => format!("{name} ({n} unread)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::Timestamp;
    use chat_core::protocol::UserInfo;
    use chat_core::{SessionId, UserId};

    #[test]
    fn control_characters_and_escape_sequences_never_survive() {
        assert_eq!(sanitize("plain text, ünïcödé ✓"), "plain text, ünïcödé ✓");
        assert!(matches!(sanitize("plain"), Cow::Borrowed(_)));
        assert_eq!(sanitize("\x1b[2J\x07evil\r"), "^[[2J^Gevil^M");
        assert_eq!(sanitize("a\x08b\tc\x7f\0"), "a^Hb c^?^@");
        assert_eq!(
            sanitize("\u{9b}31m\u{9d}0;title\u{7}"),
            "\u{fffd}31m\u{fffd}0;title^G"
        );
        assert_eq!(sanitize("abc\u{202e}fed"), "abc\u{fffd}fed");
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let s = c.to_string();
            let out = sanitize(&s);
            assert!(
                !out.chars().any(needs_escape),
                "U+{:04X} gave {out:?}",
                c as u32
            );
        }
    }

    #[test]
    fn every_line_of_a_message_carries_its_prefix() {
        let mut out = String::new();
        message(
            &mut out,
            "lobby",
            "alice",
            "one\r\ntwo\n[lobby] admin: fake\r",
        );
        assert_eq!(
            out,
            "[lobby] alice: one\r\n[lobby] alice: two\r\n[lobby] alice: [lobby] admin: fake^M\r\n"
        );
    }

    fn entry_frame(room: u64, body: &str) -> ServerFrame {
        ServerFrame::Message(Entry {
            room: RoomId(room),
            seq: Seq(1),
            at: Timestamp(0),
            sender: Some(UserId(2)),
            sender_name: "bob".into(),
            body: body.into(),
            client_msg_id: None,
        })
    }

    #[test]
    fn replies_use_what_the_request_was_for() {
        let mut st = State::default();
        let mut out = String::new();
        let welcome = ServerFrame::Welcome {
            version: 1,
            session: SessionId(1),
            user: UserInfo {
                id: UserId(1),
                username: "alice".into(),
            },
            limits: chat_core::protocol::WireLimits {
                max_body_bytes: 1,
                max_replay: 1,
                max_history_page: 1,
            },
            token: None,
        };
        render(
            &mut st,
            &Response {
                id: None,
                frame: welcome,
            },
            &mut out,
        );
        assert_eq!(out, "* signed in as alice\r\n");

        st.pending.insert(1, Pending::Create);
        let lobby = RoomInfo {
            id: RoomId(4),
            kind: RoomKind::Public,
            name: "lobby".into(),
        };
        out.clear();
        // The `room` event before the reply is silent: the command announces itself.
        let event = render(
            &mut st,
            &Response {
                id: None,
                frame: ServerFrame::Room {
                    room: lobby.clone(),
                },
            },
            &mut out,
        );
        let reply = render(
            &mut st,
            &Response {
                id: Some(1),
                frame: ServerFrame::Room {
                    room: lobby.clone(),
                },
            },
            &mut out,
        );
        assert_eq!((event, reply), (None, Some((1, Outcome::Room(lobby)))));
        assert_eq!(out, "");

        st.pending.insert(2, Pending::Enter(Enter::Created));
        let reply = render(
            &mut st,
            &Response {
                id: Some(2),
                frame: ServerFrame::Subscribed {
                    room: RoomId(4),
                    entries: vec![],
                    latest_seq: Seq(0),
                    gap: None,
                },
            },
            &mut out,
        );
        assert_eq!(reply, Some((2, Outcome::Done)));
        assert_eq!(
            out,
            "* created public room lobby; you are now talking in lobby\r\n"
        );
        assert_eq!(st.current, Some(RoomId(4)));

        out.clear();
        render(
            &mut st,
            &Response {
                id: None,
                frame: entry_frame(4, "hi \x1b]0;pwned\x07"),
            },
            &mut out,
        );
        assert_eq!(out, "[lobby] bob: hi ^[]0;pwned^G\r\n");

        // A refused request is retried by the reader, silently.
        st.pending.insert(3, Pending::Say("* x\r\n".into()));
        out.clear();
        let reply = render(
            &mut st,
            &Response {
                id: Some(3),
                frame: ServerFrame::Error {
                    code: ErrorCode::RateLimited,
                    message: "rate limited".into(),
                },
            },
            &mut out,
        );
        assert_eq!((reply, out.as_str()), (Some((3, Outcome::RateLimited)), ""));
    }

    #[test]
    fn a_new_direct_conversation_is_followed_from_its_start() {
        let mut st = State::default();
        let mut out = String::new();
        let dm = RoomInfo {
            id: RoomId(9),
            kind: RoomKind::Direct,
            name: "alice & bob".into(),
        };
        render(
            &mut st,
            &Response {
                id: None,
                frame: ServerFrame::Room { room: dm },
            },
            &mut out,
        );
        assert_eq!(out, "");
        assert_eq!(
            st.followups.pop_front(),
            Some(Followup::Watch {
                room: RoomId(9),
                since: Some(Seq(0))
            })
        );
    }
}
