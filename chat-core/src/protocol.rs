//! The wire protocol shared by every transport: frames and their two codecs.
//!
//! A client sends [`Request`]s (a [`ClientFrame`] with an optional request id); the server
//! sends [`Response`]s (a [`ServerFrame`], with the request id echoed when it answers one).
//!
//! Two codecs carry the same frames:
//! - **JSON** (WebSocket text frames, line-mode tooling): one object per frame with a
//!   `"type"` tag and, on replies, an `"id"`: `{"type":"send","id":7,"room":1,"body":"hi"}`.
//! - **postcard** (WebSocket binary frames, TCP binary mode): the compact serde encoding of
//!   the same values, the variant as an index.
//!
//! postcard cannot decode serde's internally-tagged enums (they need `deserialize_any`), so
//! the frames derive serde's default external tagging and the JSON codec reshapes
//! `{"send":{..}}` into `{"type":"send",..}` and back. Field names `type`, `id` and `value`
//! (which carries the payload of a newtype variant around a non-object) are therefore
//! reserved in frame bodies.
//!
//! Fan-out frames are encoded at most once per codec: see [`Outgoing`].

use crate::error::{Error, ErrorCode, Result};
use crate::ids::{RoomId, Seq, SessionId, Timestamp, UserId};
use crate::model::{LogEntry, Role, RoomKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A request id chosen by the client, echoed on the reply.
pub type RequestId = u64;

/// A frame from a client, with the id to echo in the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the reply or error; `None` when the client does not need to correlate.
    pub id: Option<RequestId>,
    /// What the client asks for.
    pub frame: ClientFrame,
}

/// Everything a client can ask of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientFrame {
    /// Opens the session: version negotiation and, where the transport has not already
    /// authenticated the connection, credentials. Answered by [`ServerFrame::Welcome`].
    Hello(Hello),
    /// Starts receiving a room's messages, first replaying those after `since_seq`.
    /// Answered by [`ServerFrame::Subscribed`].
    Subscribe {
        /// The room.
        room: RoomId,
        /// Replay entries after this seq (omit to receive only new ones).
        #[serde(default)]
        since_seq: Option<Seq>,
    },
    /// Stops receiving a room's messages (membership is unchanged). Answered by `ok`.
    Unsubscribe {
        /// The room.
        room: RoomId,
    },
    /// Posts a message. Answered by [`ServerFrame::Sent`].
    Send {
        /// The room.
        room: RoomId,
        /// UTF-8 text.
        body: String,
        /// Makes retries idempotent: the same id from the same user is stored once.
        #[serde(default)]
        client_msg_id: Option<String>,
    },
    /// Posts a direct message to a user, creating the direct room on first use.
    /// Answered by [`ServerFrame::Sent`].
    SendDirect {
        /// The recipient's username.
        to: String,
        /// UTF-8 text.
        body: String,
        /// As for `send`.
        #[serde(default)]
        client_msg_id: Option<String>,
    },
    /// Reads a page of a room's log. Answered by [`ServerFrame::History`].
    History {
        /// The room.
        room: RoomId,
        /// Entries before this seq (the newest of them). Omit both for the latest page.
        #[serde(default)]
        before: Option<Seq>,
        /// Entries after this seq (the oldest of them).
        #[serde(default)]
        after: Option<Seq>,
        /// Page size (default 50, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Creates a group or public room. Answered by [`ServerFrame::Room`].
    CreateRoom {
        /// Display name.
        name: String,
        /// `group` or `public`.
        kind: RoomKind,
    },
    /// Joins a public room (by id or by name). Answered by [`ServerFrame::Room`].
    Join {
        /// The room id.
        #[serde(default)]
        room: Option<RoomId>,
        /// Or the public room's name.
        #[serde(default)]
        name: Option<String>,
    },
    /// Leaves a room; every session of the user stops receiving it. Answered by `ok`.
    Leave {
        /// The room.
        room: RoomId,
    },
    /// An owner or admin adds a user to a group or public room. Answered by `ok`.
    AddMember {
        /// The room.
        room: RoomId,
        /// The user's name.
        username: String,
    },
    /// An owner or admin removes a member with a lower role. Answered by `ok`.
    Kick {
        /// The room.
        room: RoomId,
        /// The user's name.
        username: String,
    },
    /// The owner changes a member's role. Answered by `ok`.
    SetRole {
        /// The room.
        room: RoomId,
        /// The user's name.
        username: String,
        /// `admin` or `member`.
        role: Role,
    },
    /// Creates an invite code for a room. Answered by [`ServerFrame::Invite`].
    CreateInvite {
        /// The room.
        room: RoomId,
        /// Validity in seconds (default 7 days).
        #[serde(default)]
        ttl_secs: Option<u64>,
        /// Maximum redemptions (default unlimited).
        #[serde(default)]
        max_uses: Option<u32>,
    },
    /// Joins a room with an invite code. Answered by [`ServerFrame::Room`].
    RedeemInvite {
        /// The code.
        code: String,
    },
    /// "I am typing" (ephemeral, rate-limited, never stored). No reply.
    Typing {
        /// The room.
        room: RoomId,
    },
    /// Moves the read marker forward. Answered by [`ServerFrame::Unread`] for the room.
    MarkRead {
        /// The room.
        room: RoomId,
        /// Read up to and including this seq.
        seq: Seq,
    },
    /// Lists the user's rooms with unread counts. Answered by [`ServerFrame::Rooms`].
    Rooms,
    /// Lists public rooms. Answered by [`ServerFrame::Rooms`].
    PublicRooms,
    /// Lists a room's members with presence. Answered by [`ServerFrame::Members`].
    Members {
        /// The room.
        room: RoomId,
    },
    /// Liveness check. Answered by [`ServerFrame::Pong`].
    Ping,
}

/// The opening frame of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub version: u32,
    /// Credentials, where the transport has not authenticated the connection already.
    #[serde(default)]
    pub auth: Option<HelloAuth>,
}

/// Credentials carried in a `hello`. Its `Debug` leaves the token and the password out, as
/// [`crate::Credentials`]'s does: a `hello` logged with `{:?}` must not leak them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloAuth {
    /// A session token from a login.
    Token(String),
    /// Username and password.
    Login {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
    /// A guest name (only where the server enables guests).
    Guest(String),
}

impl std::fmt::Debug for HelloAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloAuth::Token(_) => f.write_str("Token(..)"),
            HelloAuth::Login { username, .. } => {
                write!(f, "Login {{ username: {username:?}, .. }}")
            }
            HelloAuth::Guest(name) => write!(f, "Guest({name:?})"),
        }
    }
}

/// A credential the server hands out in a frame (a new guest's session token). On the wire
/// it is a plain string; its `Debug` prints `Secret(..)`, so a frame logged with `{:?}` does
/// not leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, to store or present: keep it as a password is kept.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A frame to a client, with the id of the request it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request id this answers; `None` for events.
    pub id: Option<RequestId>,
    /// The frame.
    pub frame: ServerFrame,
}

/// Everything the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame {
    /// The session is open.
    Welcome {
        /// The version both sides will speak.
        version: u32,
        /// This session's id.
        session: SessionId,
        /// Who the session is.
        user: UserInfo,
        /// Limits the client must respect.
        limits: WireLimits,
        /// Only for a `hello` that signed in a new guest: a session token to sign in with
        /// next time (`{"token": ...}`), since the guest's name is now taken. Keep it as a
        /// password is kept.
        #[serde(default)]
        token: Option<Secret>,
    },
    /// A generic success reply.
    Ok,
    /// A failure. `code` is stable; `message` is for humans.
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// The reply to `subscribe`: replayed entries, then live ones follow as `message`.
    Subscribed {
        /// The room.
        room: RoomId,
        /// The entries after `since_seq`, ascending (empty without `since_seq`).
        entries: Vec<Entry>,
        /// The room's latest seq when the subscription went live; every later entry
        /// arrives as a `message`.
        latest_seq: Seq,
        /// Entries after `since_seq` that were *not* replayed because there were more than
        /// the replay limit: fetch them with `history` if needed. Never silently skipped.
        #[serde(default)]
        gap: Option<SeqRange>,
    },
    /// The session no longer receives a room (left, kicked, or the room was deleted).
    Unsubscribed {
        /// The room.
        room: RoomId,
        /// Why.
        reason: UnsubscribeReason,
    },
    /// A new entry in a subscribed room's log.
    Message(Entry),
    /// The reply to `send` / `send_direct`: the message is durably stored.
    Sent {
        /// The room.
        room: RoomId,
        /// Its seq.
        seq: Seq,
        /// True when this was a retry of an already stored `client_msg_id`.
        duplicate: bool,
    },
    /// A page of history.
    History {
        /// The room.
        room: RoomId,
        /// Ascending by seq.
        entries: Vec<Entry>,
        /// Whether older (for `before`) or newer (for `after`) entries exist.
        has_more: bool,
    },
    /// A room (reply to `create_room`, `join`, `redeem_invite`), or an event telling all of a
    /// user's sessions that they became a member of it.
    Room {
        /// The room.
        room: RoomInfo,
    },
    /// The reply to `rooms` / `public_rooms`.
    Rooms {
        /// The rooms.
        rooms: Vec<RoomSummary>,
    },
    /// The reply to `members`.
    Members {
        /// The room.
        room: RoomId,
        /// Members with their presence.
        members: Vec<MemberInfo>,
    },
    /// Someone's first session subscribed to a room, or their last one left (user
    /// granularity, not session).
    Presence {
        /// The room.
        room: RoomId,
        /// The user.
        user: UserInfo,
        /// True when they came online in the room.
        online: bool,
    },
    /// Someone is typing (ephemeral).
    Typing {
        /// The room.
        room: RoomId,
        /// Who.
        user: UserInfo,
    },
    /// A member joined, left, was kicked or changed role (ephemeral; refetch members).
    MemberChanged {
        /// The room.
        room: RoomId,
        /// The member.
        user: UserInfo,
        /// What changed.
        change: MemberChange,
    },
    /// The reply to `mark_read`.
    Unread(UnreadInfo),
    /// The reply to `create_invite`.
    Invite {
        /// The code to share.
        code: String,
        /// The room.
        room: RoomId,
        /// When it expires.
        expires_at: Timestamp,
        /// Maximum redemptions.
        max_uses: Option<u32>,
    },
    /// A server-side notice for this user (from the embedding application), not stored.
    Notice {
        /// The room it concerns, if any.
        room: Option<RoomId>,
        /// The text.
        body: String,
    },
    /// The reply to `ping`.
    Pong,
}

/// An inclusive range of seqs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    /// First seq of the range.
    pub from: Seq,
    /// Last seq of the range.
    pub to: Seq,
}

/// A log entry as the wire shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The room.
    pub room: RoomId,
    /// Its seq.
    pub seq: Seq,
    /// Server time.
    pub at: Timestamp,
    /// Author id (`None`: the system).
    pub sender: Option<UserId>,
    /// Author name (`"system"` for the system).
    pub sender_name: String,
    /// The text.
    pub body: String,
    /// The client's id for idempotent retries, if it gave one.
    pub client_msg_id: Option<String>,
}

impl From<&LogEntry> for Entry {
    fn from(e: &LogEntry) -> Entry {
        match &e.kind {
            crate::model::EntryKind::Message(m) => Entry {
                room: e.room,
                seq: e.seq,
                at: e.at,
                sender: m.sender,
                sender_name: m.sender_name.clone(),
                body: m.body.clone(),
                client_msg_id: m.client_msg_id.clone(),
            },
        }
    }
}

/// A user as frames show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Id.
    pub id: UserId,
    /// Name.
    pub username: String,
}

/// A room as frames show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Id.
    pub id: RoomId,
    /// Kind.
    pub kind: RoomKind,
    /// Name.
    pub name: String,
}

impl From<&crate::model::Room> for RoomInfo {
    fn from(r: &crate::model::Room) -> RoomInfo {
        RoomInfo {
            id: r.id,
            kind: r.kind,
            name: r.name.clone(),
        }
    }
}

/// A room in a list, with the user's state in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// The room.
    pub room: RoomInfo,
    /// The user's role (`None` in a public room list for rooms they have not joined).
    pub role: Option<Role>,
    /// Latest seq.
    pub latest_seq: Seq,
    /// Unread messages from others.
    pub unread: u64,
}

/// A member with presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Who.
    pub user: UserInfo,
    /// Role.
    pub role: Role,
    /// Whether one of their sessions is subscribed to the room on this node.
    pub online: bool,
}

/// Read state of one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadInfo {
    /// The room.
    pub room: RoomId,
    /// Read up to.
    pub read_seq: Seq,
    /// Latest.
    pub latest_seq: Seq,
    /// Unread messages from others.
    pub unread: u64,
}

/// Limits announced in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLimits {
    /// Largest message body in bytes.
    pub max_body_bytes: u32,
    /// Most entries replayed by `subscribe`.
    pub max_replay: u32,
    /// Largest history page.
    pub max_history_page: u32,
}

/// Why a session stopped receiving a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsubscribeReason {
    /// The user left the room (possibly from another session).
    Left,
    /// The user was kicked.
    Kicked,
    /// The room was deleted.
    Deleted,
}

/// A membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// Joined (by themselves, an invite, or an admin).
    Joined,
    /// Left.
    Left,
    /// Kicked.
    Kicked,
    /// Their role changed.
    Role(Role),
}

/// The two encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// JSON objects with a `type` tag (WebSocket text frames).
    Json,
    /// postcard (WebSocket binary frames, TCP binary mode).
    Postcard,
}

impl Codec {
    /// Decodes a client request. Errors are [`Error::BadFrame`] with a useful message.
    pub fn decode_request(self, bytes: &[u8]) -> Result<Request> {
        match self {
            Codec::Json => decode_json(bytes),
            Codec::Postcard => {
                postcard::from_bytes(bytes).map_err(|e| Error::BadFrame(e.to_string()))
            }
        }
    }

    /// The request id of a frame that failed to decode, if one can still be read from it, so
    /// that the `bad_frame` error answers the request its sender is waiting on. Only called on
    /// the error path.
    pub fn request_id_hint(self, bytes: &[u8]) -> Option<RequestId> {
        match self {
            Codec::Json => serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()?
                .get("id")?
                .as_u64(),
            // The envelope starts with the id (`Option<u64>`), whatever follows it.
            Codec::Postcard => {
                postcard::take_from_bytes::<Option<RequestId>>(bytes)
                    .ok()?
                    .0
            }
        }
    }

    /// Encodes a client request (for client libraries and tests).
    pub fn encode_request(self, req: &Request) -> Bytes {
        match self {
            Codec::Json => encode_json(req.id, &req.frame),
            Codec::Postcard => encode_postcard(req),
        }
    }

    /// Encodes a server response.
    pub fn encode_response(self, resp: &Response) -> Bytes {
        match self {
            Codec::Json => encode_json(resp.id, &resp.frame),
            Codec::Postcard => encode_postcard(resp),
        }
    }

    /// Decodes a server response (for client libraries and tests).
    pub fn decode_response(self, bytes: &[u8]) -> Result<Response> {
        match self {
            Codec::Json => decode_json(bytes),
            Codec::Postcard => {
                postcard::from_bytes(bytes).map_err(|e| Error::BadFrame(e.to_string()))
            }
        }
    }
}

fn encode_postcard<T: Serialize>(value: &T) -> Bytes {
    // Serializing our own frame types into a Vec cannot fail: every type is postcard-safe
    // (no maps with non-string keys, no untagged enums, no skipped fields).
    Bytes::from(postcard::to_allocvec(value).expect("frames are always postcard-serializable"))
}

/// `{"variant": {fields}}` or `"variant"` → `{"type": "variant", "id": .., fields}`.
fn encode_json<F: Serialize>(id: Option<RequestId>, frame: &F) -> Bytes {
    use serde_json::{Map, Value};
    let tagged = serde_json::to_value(frame).expect("frames are always JSON-serializable");
    let mut out = Map::new();
    match tagged {
        Value::String(tag) => {
            out.insert("type".into(), Value::String(tag));
        }
        Value::Object(map) => {
            // External tagging: exactly one key, the variant.
            if let Some((tag, payload)) = map.into_iter().next() {
                out.insert("type".into(), Value::String(tag));
                match payload {
                    Value::Object(fields) => out.extend(fields),
                    // A newtype variant around a non-struct value, e.g. `{"token":"..."}`.
                    other => {
                        out.insert("value".into(), other);
                    }
                }
            }
        }
        other => {
            out.insert("value".into(), other);
        }
    }
    // `type` first, then `id`, then the fields: a reader can then tell the frame's type from
    // its first member and decode the rest straight into it (see `decode_json`).
    let tag = out.remove("type");
    let mut buf = Vec::with_capacity(128);
    buf.push(b'{');
    let leading = [
        tag.map(|t| ("type", t)),
        id.map(|id| ("id", Value::from(id))),
    ];
    let mut members = leading
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.to_string(), v))
        .chain(out)
        .peekable();
    while let Some((key, value)) = members.next() {
        serde_json::to_writer(&mut buf, &key).expect("a string always serializes");
        buf.push(b':');
        serde_json::to_writer(&mut buf, &value).expect("a JSON value always serializes");
        if members.peek().is_some() {
            buf.push(b',');
        }
    }
    buf.push(b'}');
    Bytes::from(buf)
}

/// The inverse of [`encode_json`].
///
/// A frame whose first member is `type` (what `encode_json` writes, and what a client that
/// builds its object type-first sends) is decoded in one pass, straight into the variant
/// ([`json_stream`]). Anything else, and any frame that pass refuses, takes the general
/// path below, which also words the errors.
fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if json_stream::starts_with_type(bytes) {
        if let Ok(frame) = json_stream::decode(bytes) {
            return Ok(frame);
        }
    }
    decode_json_tree(bytes)
}

/// The general JSON path: through a `serde_json::Value`, producing
/// `{"id": .., "frame": {"variant": {fields}}}` for the derived `Deserialize`. About twice
/// the cost of [`json_stream`] (the `codec` bench: 1.7–2.1 against 0.76–0.94 µs for a
/// delivered message).
fn decode_json_tree<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    use serde_json::{Map, Value};
    let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::BadFrame(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(Error::BadFrame("a frame must be a JSON object".into()));
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Number(n)) if n.is_u64() => Value::Number(n),
        Some(_) => {
            return Err(Error::BadFrame(
                "\"id\" must be a non-negative integer".into(),
            ));
        }
    };
    let tag = match map.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(Error::BadFrame("\"type\" must be a string".into())),
        None => return Err(Error::BadFrame("missing \"type\"".into())),
    };
    // Only a frame without fields is retried below, so the fields can be moved, not cloned
    // (the clone was a tenth of a JSON client's CPU per received message).
    let no_fields = map.is_empty();
    let frame = if no_fields {
        // Unit variants (`ping`) are a bare string; a struct variant with only optional
        // fields also accepts an empty object, so try the string form first.
        Value::String(tag.clone())
    } else if map.len() == 1 && map.contains_key("value") {
        let mut m = Map::new();
        m.insert(tag.clone(), map.remove("value").unwrap_or(Value::Null));
        Value::Object(m)
    } else {
        let mut m = Map::new();
        m.insert(tag.clone(), Value::Object(map));
        Value::Object(m)
    };
    let mut envelope = Map::new();
    envelope.insert("id".into(), id.clone());
    envelope.insert("frame".into(), frame);
    match serde_json::from_value(Value::Object(envelope)) {
        Ok(v) => Ok(v),
        Err(first) if no_fields => {
            // `{"type":"rooms"}` is a unit variant, but `{"type":"subscribe"}` with all
            // fields defaulted is a struct variant: retry as an empty struct.
            let mut m = Map::new();
            m.insert(tag, Value::Object(Map::new()));
            let mut envelope = Map::new();
            envelope.insert("id".into(), id);
            envelope.insert("frame".into(), Value::Object(m));
            serde_json::from_value(Value::Object(envelope))
                .map_err(|_| Error::BadFrame(clean_serde_message(&first.to_string())))
        }
        Err(e) => Err(Error::BadFrame(clean_serde_message(&e.to_string()))),
    }
}

/// One-pass decoding of a JSON frame that starts with its `type`: the derived `Deserialize`
/// of [`Request`] / [`Response`] is shown `{"frame": <the rest, as the variant's content>,
/// "id": ..}`, the rest being read from the parser as the variant asks for it, with `id`
/// picked out wherever it stands.
mod json_stream {
    use serde::de::value::{MapAccessDeserializer, StrDeserializer, StringDeserializer};
    use serde::de::{
        self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer,
        MapAccess, VariantAccess, Visitor,
    };
    use std::cell::Cell;
    use std::marker::PhantomData;

    /// Whether the frame's first member is `type` with a string value, spelled plainly.
    pub(super) fn starts_with_type(bytes: &[u8]) -> bool {
        let trimmed = bytes.trim_ascii_start();
        trimmed.starts_with(br#"{"type":""#)
    }

    pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let frame = de.deserialize_map(Top(PhantomData))?;
        de.end()?;
        Ok(frame)
    }

    struct Top<T>(PhantomData<T>);

    impl<'de, T: DeserializeOwned> Visitor<'de> for Top<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a frame object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
            match map.next_key::<String>()?.as_deref() {
                Some("type") => {}
                _ => return Err(de::Error::custom("the first member is not \"type\"")),
            }
            let tag: String = map.next_value()?;
            let id = Cell::new(None);
            T::deserialize(MapAccessDeserializer::new(Envelope {
                next: 0,
                frame: Some((tag, &mut map)),
                id: &id,
            }))
        }
    }

    /// `{"frame": .., "id": ..}` over the rest of the parser's map.
    struct Envelope<'a, A> {
        next: u8,
        frame: Option<(String, &'a mut A)>,
        id: &'a Cell<Option<u64>>,
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Envelope<'_, A> {
        type Error = A::Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, A::Error> {
            // The frame first: `id` is known only once the whole object has been read.
            let key = match self.next {
                0 => "frame",
                1 => "id",
                _ => return Ok(None),
            };
            let key: StrDeserializer<'_, A::Error> = key.into_deserializer();
            seed.deserialize(key).map(Some)
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, A::Error> {
            self.next += 1;
            match (self.next, self.frame.take()) {
                (1, Some((tag, rest))) => seed.deserialize(Frame {
                    tag,
                    rest: Rest {
                        map: rest,
                        id: self.id,
                    },
                }),
                _ => seed.deserialize(Id::<A::Error>(self.id.get(), PhantomData)),
            }
        }
    }

    /// The request id, once read (absent or `null`: `None`).
    struct Id<E>(Option<u64>, PhantomData<E>);

    impl<'de, E: de::Error> Deserializer<'de> for Id<E> {
        type Error = E;
        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
            match self.0 {
                Some(id) => visitor.visit_u64(id),
                None => visitor.visit_none(),
            }
        }
        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
            match self.0 {
                Some(id) => visitor.visit_some(IntoDeserializer::<E>::into_deserializer(id)),
                None => visitor.visit_none(),
            }
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf unit unit_struct newtype_struct seq tuple tuple_struct map struct
            enum identifier ignored_any
        }
    }

    /// The members after `type`, minus `id` (recorded when met).
    struct Rest<'a, A> {
        map: &'a mut A,
        id: &'a Cell<Option<u64>>,
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Rest<'_, A> {
        type Error = A::Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, A::Error> {
            loop {
                let Some(key) = self.map.next_key::<String>()? else {
                    return Ok(None);
                };
                if key == "id" {
                    let id: Option<u64> = self
                        .map
                        .next_value()
                        .map_err(|_| de::Error::custom("\"id\" must be a non-negative integer"))?;
                    self.id.set(id);
                    continue;
                }
                let key: StringDeserializer<A::Error> = key.into_deserializer();
                return seed.deserialize(key).map(Some);
            }
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, A::Error> {
            self.map.next_value_seed(seed)
        }
    }

    /// The frame: an externally tagged enum of variant `tag` with the rest as its content.
    struct Frame<'a, A> {
        tag: String,
        rest: Rest<'a, A>,
    }

    impl<'de, A: MapAccess<'de>> Deserializer<'de> for Frame<'_, A> {
        type Error = A::Error;
        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
            visitor.visit_enum(self)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
            enum identifier ignored_any
        }
    }

    impl<'a, 'de, A: MapAccess<'de>> EnumAccess<'de> for Frame<'a, A> {
        type Error = A::Error;
        type Variant = Rest<'a, A>;
        fn variant_seed<V: DeserializeSeed<'de>>(
            self,
            seed: V,
        ) -> Result<(V::Value, Rest<'a, A>), A::Error> {
            let tag: StringDeserializer<A::Error> = self.tag.into_deserializer();
            Ok((seed.deserialize(tag)?, self.rest))
        }
    }

    impl<'de, A: MapAccess<'de>> VariantAccess<'de> for Rest<'_, A> {
        type Error = A::Error;
        fn unit_variant(mut self) -> Result<(), A::Error> {
            match self.next_key::<de::IgnoredAny>()? {
                None => Ok(()),
                Some(_) => Err(de::Error::custom("this frame type takes no fields")),
            }
        }
        fn newtype_variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            // Every newtype frame wraps a struct, whose fields are the rest (a plain value
            // under `"value"` is for the general path).
            seed.deserialize(MapAccessDeserializer::new(self))
        }
        fn tuple_variant<V: Visitor<'de>>(
            self,
            _len: usize,
            visitor: V,
        ) -> Result<V::Value, A::Error> {
            Err(de::Error::invalid_type(de::Unexpected::Map, &visitor))
        }
        fn struct_variant<V: Visitor<'de>>(
            self,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, A::Error> {
            visitor.visit_map(self)
        }
    }
}

/// serde's messages name our internal envelope; say "unknown frame type" instead.
fn clean_serde_message(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let name = rest.split(',').next().unwrap_or(rest);
        return format!("unknown frame type {name}");
    }
    msg.to_string()
}

/// A server frame on its way to one or many sessions, encoded at most once per codec.
///
/// The hub wraps each fan-out frame in one `Arc<Outgoing>`: a room entry is appended once to
/// the room's ring, whose readers each clone the `Arc`; an event goes into each recipient's
/// queue as a clone. A transport asks for [`Outgoing::encoded`] in its codec; the first
/// caller encodes, every other recipient gets a clone of the same `Bytes` (a reference count
/// increment, no copy). Codecs nobody uses are never encoded.
pub struct Outgoing {
    response: Response,
    json: OnceLock<Bytes>,
    postcard: OnceLock<Bytes>,
}

impl std::fmt::Debug for Outgoing {
    // The frame (whose secrets print as `..`), and the encodings' sizes only: the bytes of
    // an encoded `welcome` would carry a guest's token in clear.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("response", &self.response)
            .field("json_bytes", &self.json.get().map(Bytes::len))
            .field("postcard_bytes", &self.postcard.get().map(Bytes::len))
            .finish()
    }
}

impl Outgoing {
    /// Wraps a frame for sending.
    pub fn new(id: Option<RequestId>, frame: ServerFrame) -> Arc<Outgoing> {
        Arc::new(Outgoing {
            response: Response { id, frame },
            json: OnceLock::new(),
            postcard: OnceLock::new(),
        })
    }

    /// An event (no request id).
    pub fn event(frame: ServerFrame) -> Arc<Outgoing> {
        Outgoing::new(None, frame)
    }

    /// The frame.
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// The frame's bytes in `codec`, encoded on first use and shared afterwards.
    pub fn encoded(&self, codec: Codec) -> Bytes {
        let cell = match codec {
            Codec::Json => &self.json,
            Codec::Postcard => &self.postcard,
        };
        cell.get_or_init(|| codec.encode_response(&self.response))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_request(req: Request) {
        for codec in [Codec::Json, Codec::Postcard] {
            let bytes = codec.encode_request(&req);
            let back = codec.decode_request(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{codec:?} failed on {:?}: {e}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert_eq!(back, req, "{codec:?}");
        }
        // The encoder writes `type` first, so the one-pass reader must take every frame on
        // its own (the public decoder would fall back to the tree quietly).
        let bytes = Codec::Json.encode_request(&req);
        assert!(json_stream::starts_with_type(&bytes));
        let fast: Request = json_stream::decode(&bytes).unwrap_or_else(|e| {
            panic!(
                "one pass failed on {:?}: {e}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(fast, req);
    }

    #[test]
    fn secrets_stay_out_of_debug_output_and_are_plain_strings_on_the_wire() {
        let login = HelloAuth::Login {
            username: "alice".into(),
            password: "hunter2-hunter2".into(),
        };
        let token = HelloAuth::Token("tok-123456".into());
        let shown = format!("{login:?} {token:?} {:?}", HelloAuth::Guest("g".into()));
        assert_eq!(
            shown,
            r#"Login { username: "alice", .. } Token(..) Guest("g")"#
        );
        let secret = Secret::from("tok-123456");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), r#""tok-123456""#);
        assert_eq!(
            postcard::to_allocvec(&secret).unwrap(),
            postcard::to_allocvec("tok-123456").unwrap()
        );
        assert_eq!(secret.expose(), "tok-123456");
        // Also once encoded: an `Outgoing` holds the wire bytes too.
        let welcome = Outgoing::event(ServerFrame::Welcome {
            version: 1,
            session: SessionId(1),
            user: UserInfo {
                id: UserId(1),
                username: "g".into(),
            },
            limits: WireLimits {
                max_body_bytes: 1,
                max_replay: 1,
                max_history_page: 1,
            },
            token: Some(secret),
        });
        let json = welcome.encoded(Codec::Json);
        assert!(String::from_utf8_lossy(&json).contains("tok-123456"));
        welcome.encoded(Codec::Postcard);
        let shown = format!("{welcome:?}");
        assert!(!shown.contains("tok-123456"), "{shown}");
        assert!(
            shown.contains(&format!("json_bytes: Some({})", json.len())),
            "{shown}"
        );
    }

    /// Server frames of each shape (unit, struct, newtype around a struct, nested lists and
    /// options) through the one-pass reader, with and without an id.
    #[test]
    fn json_responses_decode_in_one_pass() {
        let entry = Entry {
            room: RoomId(3),
            seq: Seq(9),
            at: Timestamp(1_700_000_000_000),
            sender: Some(UserId(4)),
            sender_name: "ann \"a\" ✓".into(),
            body: "hello\nworld".into(),
            client_msg_id: None,
        };
        let frames = vec![
            ServerFrame::Pong,
            ServerFrame::Ok,
            ServerFrame::Error {
                code: ErrorCode::NotMember,
                message: "no".into(),
            },
            ServerFrame::Sent {
                room: RoomId(1),
                seq: Seq(42),
                duplicate: true,
            },
            ServerFrame::Message(entry.clone()),
            ServerFrame::Unread(UnreadInfo {
                room: RoomId(3),
                read_seq: Seq(1),
                latest_seq: Seq(9),
                unread: 8,
            }),
            ServerFrame::Subscribed {
                room: RoomId(3),
                entries: vec![entry.clone(), entry],
                latest_seq: Seq(9),
                gap: Some(SeqRange {
                    from: Seq(1),
                    to: Seq(2),
                }),
            },
            ServerFrame::Presence {
                room: RoomId(3),
                user: UserInfo {
                    id: UserId(4),
                    username: "ann".into(),
                },
                online: false,
            },
        ];
        for frame in frames {
            for id in [None, Some(77)] {
                let resp = Response {
                    id,
                    frame: frame.clone(),
                };
                let bytes = Codec::Json.encode_response(&resp);
                let fast: Response = json_stream::decode(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "one pass failed on {:?}: {e}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                assert_eq!(fast, resp);
                assert_eq!(decode_json_tree::<Response>(&bytes).unwrap(), resp);
            }
        }
        // `id` is found wherever it stands, and a unit frame with fields is refused by this
        // pass (the general path words the error).
        let r: Request =
            json_stream::decode(br#"{"type":"send","room":5,"id":3,"body":"b"}"#).expect("decodes");
        assert_eq!(r.id, Some(3));
        assert!(json_stream::decode::<Request>(br#"{"type":"ping","x":1}"#).is_err());
        assert!(json_stream::decode::<Request>(br#"{"type":"ping","id":-1}"#).is_err());
        assert!(!json_stream::starts_with_type(br#"{"id":1,"type":"ping"}"#));
        assert!(json_stream::starts_with_type(b"  {\"type\":\"ping\"}"));
    }

    #[test]
    fn every_kind_of_request_roundtrips_in_both_codecs() {
        let frames = vec![
            ClientFrame::Hello(Hello {
                version: 1,
                auth: Some(HelloAuth::Token("abc".into())),
            }),
            ClientFrame::Hello(Hello {
                version: 1,
                auth: Some(HelloAuth::Login {
                    username: "a".into(),
                    password: "b".into(),
                }),
            }),
            ClientFrame::Hello(Hello {
                version: 1,
                auth: None,
            }),
            ClientFrame::Subscribe {
                room: RoomId(3),
                since_seq: Some(Seq(9)),
            },
            ClientFrame::Subscribe {
                room: RoomId(3),
                since_seq: None,
            },
            ClientFrame::Send {
                room: RoomId(1),
                body: "hi \"there\" ✓".into(),
                client_msg_id: Some("m1".into()),
            },
            ClientFrame::History {
                room: RoomId(1),
                before: None,
                after: None,
                limit: None,
            },
            ClientFrame::CreateRoom {
                name: "x".into(),
                kind: RoomKind::Group,
            },
            ClientFrame::SetRole {
                room: RoomId(1),
                username: "u".into(),
                role: Role::Admin,
            },
            ClientFrame::Rooms,
            ClientFrame::Ping,
        ];
        for (i, frame) in frames.into_iter().enumerate() {
            roundtrip_request(Request {
                id: Some(i as u64),
                frame: frame.clone(),
            });
            roundtrip_request(Request { id: None, frame });
        }
    }

    #[test]
    fn json_frames_have_a_flat_type_tag() {
        let bytes = Codec::Json.encode_response(&Response {
            id: Some(7),
            frame: ServerFrame::Sent {
                room: RoomId(1),
                seq: Seq(42),
                duplicate: false,
            },
        });
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"sent","id":7,"room":1,"seq":42,"duplicate":false})
        );
        let pong = Codec::Json.encode_response(&Response {
            id: None,
            frame: ServerFrame::Pong,
        });
        assert_eq!(&pong[..], br#"{"type":"pong"}"#);
    }

    #[test]
    fn json_requests_accept_the_documented_shapes() {
        let r = Codec::Json
            .decode_request(br#"{"type":"send","id":1,"room":5,"body":"hello"}"#)
            .unwrap();
        assert_eq!(
            r,
            Request {
                id: Some(1),
                frame: ClientFrame::Send {
                    room: RoomId(5),
                    body: "hello".into(),
                    client_msg_id: None
                }
            }
        );
        let r = Codec::Json.decode_request(br#"{"type":"ping"}"#).unwrap();
        assert_eq!(r.frame, ClientFrame::Ping);
        let r = Codec::Json
            .decode_request(br#"{"type":"hello","version":1,"auth":{"token":"t"}}"#)
            .unwrap();
        assert_eq!(
            r.frame,
            ClientFrame::Hello(Hello {
                version: 1,
                auth: Some(HelloAuth::Token("t".into()))
            })
        );
    }

    #[test]
    fn bad_json_is_a_bad_frame_error_not_a_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"not json",
            b"[1,2]",
            b"{}",
            br#"{"type":5}"#,
            br#"{"type":"nope"}"#,
            br#"{"type":"send","room":"x","body":"y"}"#,
            br#"{"type":"send","room":1}"#,
            br#"{"type":"ping","id":-1}"#,
            b"\xff\xfe",
        ];
        for case in cases {
            let err = Codec::Json.decode_request(case).unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::BadFrame,
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        let err = Codec::Json
            .decode_request(br#"{"type":"nope"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown frame type"), "{err}");
        // Each refusal says what is wrong.
        let says = |case: &[u8], what: &str| {
            let err = Codec::Json.decode_request(case).unwrap_err();
            assert!(err.to_string().contains(what), "{err} (wanted {what:?})");
        };
        says(b"[1,2]", "a frame must be a JSON object");
        says(b"{}", "missing \"type\"");
        says(br#"{"type":5}"#, "\"type\" must be a string");
        says(
            br#"{"type":"ping","id":-1}"#,
            "\"id\" must be a non-negative integer",
        );
        says(br#"{"type":"send","room":1}"#, "missing field `body`");
        says(br#"{"type":"send","room":1,"body":"y""#, "EOF");
    }

    /// What the JSON reader accepts beyond the canonical form: members in any order, an
    /// explicit null id, escapes in the tag, unknown members of a struct frame ignored.
    #[test]
    fn json_requests_in_other_spellings() {
        let want = Request {
            id: Some(7),
            frame: ClientFrame::Send {
                room: RoomId(5),
                body: "hi".into(),
                client_msg_id: None,
            },
        };
        for case in [
            &br#"{"body":"hi","room":5,"id":7,"type":"send"}"#[..],
            br#"{"type":"s\u0065nd","id":7,"room":5,"body":"hi"}"#,
            br#"{"type":"send","id":7,"room":5,"body":"hi","extra":[1,{"a":2}]}"#,
        ] {
            assert_eq!(
                Codec::Json.decode_request(case).unwrap(),
                want,
                "{}",
                String::from_utf8_lossy(case)
            );
        }
        let r = Codec::Json
            .decode_request(br#"{"type":"ping","id":null}"#)
            .unwrap();
        assert_eq!((r.id, r.frame), (None, ClientFrame::Ping));
    }

    #[test]
    fn the_id_of_a_bad_frame_can_often_be_recovered() {
        assert_eq!(
            Codec::Json.request_id_hint(br#"{"type":"send","id":9,"room":"x"}"#),
            Some(9)
        );
        assert_eq!(Codec::Json.request_id_hint(b"{nope"), None);
        let good = Codec::Postcard.encode_request(&Request {
            id: Some(300),
            frame: ClientFrame::Ping,
        });
        let mut bad = good.to_vec();
        bad.truncate(bad.len() - 1);
        bad.push(0xff);
        assert!(Codec::Postcard.decode_request(&bad).is_err());
        assert_eq!(Codec::Postcard.request_id_hint(&bad), Some(300));
    }

    #[test]
    fn postcard_garbage_is_a_bad_frame_error() {
        for case in [
            &b""[..],
            b"\xff\xff\xff\xff\xff",
            b"\x00\x63",
            b"\x01\x01\x02",
        ] {
            // Any outcome but a panic is acceptable for arbitrary bytes; most are errors.
            if let Err(e) = Codec::Postcard.decode_request(case) {
                assert_eq!(e.code(), ErrorCode::BadFrame);
            }
        }
    }

    #[test]
    fn outgoing_encodes_once_and_shares_bytes() {
        let out = Outgoing::event(ServerFrame::Pong);
        let a = out.encoded(Codec::Json);
        let b = out.encoded(Codec::Json);
        // The same allocation, not an equal copy.
        assert_eq!(a.as_ptr(), b.as_ptr());
        let p = out.encoded(Codec::Postcard);
        assert_eq!(
            Codec::Postcard.decode_response(&p).unwrap().frame,
            ServerFrame::Pong
        );
    }
}
