//! The SQL of every store operation, as plain synchronous functions of a connection.
//!
//! Write functions run on the writer thread inside the batch transaction (and their own
//! savepoint), so a check followed by a write is atomic; read functions run on a reader
//! connection. Every statement goes through `prepare_cached`, so each is parsed once per
//! connection.

use super::values::{
    Db, cap, cap_limit, kind_from_sql, kind_to_sql, marker_from_sql, marker_to_sql, role_from_sql,
    role_to_sql, unknown,
};
use chat_core::store::{Credentials, MAX_HISTORY_PAGE, NewRoom};
use chat_core::validate::fold;
use chat_core::{
    Appended, AuthSession, EntryKind, Error, HistoryQuery, Invite, LogEntry, Member, Membership,
    Message, NewEntry, Result, Role, Room, RoomId, RoomKind, Seq, Timestamp, Unread, User, UserId,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// `entries.kind` of a message.
const KIND_MESSAGE: i64 = 1;

const ROOM_COLS: &str = "id, kind, name, created_by, created_at";

pub(crate) const HISTORY_BEFORE: &str = "SELECT room_id, seq, at, kind, sender, sender_name, \
     body, client_msg_id FROM entries WHERE room_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3";
pub(crate) const HISTORY_AFTER: &str = "SELECT room_id, seq, at, kind, sender, sender_name, \
     body, client_msg_id FROM entries WHERE room_id = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3";
pub(crate) const UNREAD_COUNT: &str =
    "SELECT count(*) FROM entries WHERE room_id = ?1 AND seq > ?2 AND sender IS NOT ?3";
pub(crate) const UNREAD_ROOMS: &str = "SELECT m.room_id, m.read_seq, r.last_seq \
     FROM members m JOIN rooms r ON r.id = m.room_id WHERE m.user_id = ?1 ORDER BY m.room_id";
pub(crate) const ROOMS_OF: &str = "SELECT r.id, r.kind, r.name, r.created_by, r.created_at, \
     m.role FROM members m JOIN rooms r ON r.id = m.room_id WHERE m.user_id = ?1 \
     ORDER BY m.room_id";
pub(crate) const MEMBERS: &str = "SELECT m.user_id, u.username, m.role, m.joined_at \
     FROM members m JOIN users u ON u.id = m.user_id WHERE m.room_id = ?1 ORDER BY m.user_id";
pub(crate) const IDEMPOTENCY: &str = "SELECT room_id, seq, at, kind, sender, sender_name, body, \
     client_msg_id FROM entries WHERE client_msg_id = ?2 AND sender = ?1";
/// The room's last seq, and whether `?2` may post in it: a member, or no author at all.
const ROOM_FOR_APPEND: &str = "SELECT last_seq, ?2 IS NULL OR EXISTS \
     (SELECT 1 FROM members WHERE room_id = ?1 AND user_id = ?2) FROM rooms WHERE id = ?1";
/// The append's insert: see [`append`]. The `ON CONFLICT` target names the partial
/// idempotency index, so only a repeated `(sender, client_msg_id)` is skipped; any other
/// conflict is an error.
pub(crate) const APPEND: &str = "INSERT INTO entries (room_id, seq, at, kind, sender, \
     sender_name, body, client_msg_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (client_msg_id, sender) \
     WHERE sender IS NOT NULL AND client_msg_id IS NOT NULL DO NOTHING";
pub(crate) const PUBLIC_ROOMS: &str = "SELECT id, kind, name, created_by, created_at FROM rooms \
     WHERE public_name IS NOT NULL AND id > ?1 ORDER BY id LIMIT ?2";

// ----- row mapping -----

/// A non-negative integer column (ids, seqs, counts); a negative value is damaged data.
fn u64_at(row: &Row<'_>, col: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(col)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(col, v))
}

/// Like [`u64_at`], for a nullable column.
fn opt_u64_at(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(col)? {
        None => Ok(None),
        Some(v) => u64::try_from(v)
            .map(Some)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(col, v)),
    }
}

fn id<T: From<u64>>(row: &Row<'_>, col: usize) -> rusqlite::Result<T> {
    Ok(T::from(u64_at(row, col)?))
}

fn room_from(row: &Row<'_>) -> rusqlite::Result<Room> {
    let kind: String = row.get(1)?;
    Ok(Room {
        id: id(row, 0)?,
        kind: kind_from_sql(1, &kind)?,
        name: row.get(2)?,
        created_by: opt_u64_at(row, 3)?.map(UserId),
        created_at: Timestamp(row.get(4)?),
    })
}

fn entry_from(row: &Row<'_>) -> rusqlite::Result<LogEntry> {
    let kind = match row.get::<_, i64>(3)? {
        KIND_MESSAGE => EntryKind::Message(Message {
            sender: opt_u64_at(row, 4)?.map(UserId),
            sender_name: row.get(5)?,
            body: row.get(6)?,
            client_msg_id: row.get(7)?,
        }),
        other => return Err(unknown(3, "entry kind", other)),
    };
    Ok(LogEntry {
        room: id(row, 0)?,
        seq: Seq(u64_at(row, 1)?),
        at: Timestamp(row.get(2)?),
        kind,
    })
}

fn user_from(row: &Row<'_>) -> rusqlite::Result<(User, Option<String>)> {
    Ok((
        User {
            id: id(row, 0)?,
            username: row.get(1)?,
            guest: row.get(2)?,
            created_at: Timestamp(row.get(3)?),
        },
        row.get(4)?,
    ))
}

fn new_id(conn: &Connection) -> Result<u64> {
    u64::try_from(conn.last_insert_rowid())
        .map_err(|_| Error::Internal("SQLite handed out a negative id".into()))
}

fn user_exists(conn: &Connection, user: UserId) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM users WHERE id = ?1")
        .db()?
        .exists([cap(user.0)])
        .db()
}

fn require_user(conn: &Connection, user: UserId) -> Result<()> {
    if user_exists(conn, user)? {
        Ok(())
    } else {
        Err(Error::UserNotFound(user.to_string()))
    }
}

// ----- users -----

pub(crate) fn create_user(
    conn: &Connection,
    username: &str,
    password_hash: Option<&str>,
    guest: bool,
    at: Timestamp,
) -> Result<User> {
    let folded = fold(username);
    let taken = conn
        .prepare_cached("SELECT 1 FROM users WHERE username_folded = ?1")
        .db()?
        .exists([&folded])
        .db()?;
    if taken {
        return Err(Error::AlreadyExists("username"));
    }
    conn.prepare_cached(
        "INSERT INTO users (username, username_folded, password_hash, guest, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .db()?
    .execute(params![username, folded, password_hash, guest, at.0])
    .db()?;
    Ok(User {
        id: UserId(new_id(conn)?),
        username: username.to_string(),
        guest,
        created_at: at,
    })
}

pub(crate) fn user(conn: &Connection, id: UserId) -> Result<Option<User>> {
    conn.prepare_cached(
        "SELECT id, username, guest, created_at, password_hash FROM users WHERE id = ?1",
    )
    .db()?
    .query_row([cap(id.0)], user_from)
    .optional()
    .db()
    .map(|u| u.map(|(u, _)| u))
}

pub(crate) fn credentials(conn: &Connection, username: &str) -> Result<Option<Credentials>> {
    conn.prepare_cached(
        "SELECT id, username, guest, created_at, password_hash FROM users \
         WHERE username_folded = ?1",
    )
    .db()?
    .query_row([fold(username)], user_from)
    .optional()
    .db()
    .map(|c| {
        c.map(|(user, password_hash)| Credentials {
            user,
            password_hash,
        })
    })
}

// ----- login sessions -----

pub(crate) fn create_auth_session(conn: &Connection, s: &AuthSession) -> Result<()> {
    require_user(conn, s.user)?;
    let exists = conn
        .prepare_cached("SELECT 1 FROM auth_sessions WHERE token_hash = ?1")
        .db()?
        .exists([&s.token_hash[..]])
        .db()?;
    if exists {
        return Err(Error::AlreadyExists("session token"));
    }
    conn.prepare_cached(
        "INSERT INTO auth_sessions (token_hash, user_id, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )
    .db()?
    .execute(params![
        &s.token_hash[..],
        cap(s.user.0),
        s.created_at.0,
        s.expires_at.0
    ])
    .db()?;
    Ok(())
}

pub(crate) fn auth_session(
    conn: &Connection,
    token_hash: &[u8; 32],
    now: Timestamp,
) -> Result<Option<AuthSession>> {
    conn.prepare_cached(
        "SELECT user_id, created_at, expires_at FROM auth_sessions \
         WHERE token_hash = ?1 AND expires_at > ?2",
    )
    .db()?
    .query_row(params![&token_hash[..], now.0], |r| {
        Ok(AuthSession {
            token_hash: *token_hash,
            user: id(r, 0)?,
            created_at: Timestamp(r.get(1)?),
            expires_at: Timestamp(r.get(2)?),
        })
    })
    .optional()
    .db()
}

pub(crate) fn revoke_auth_session(conn: &Connection, token_hash: &[u8; 32]) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM auth_sessions WHERE token_hash = ?1")
        .db()?
        .execute([&token_hash[..]])
        .db()?;
    Ok(n > 0)
}

pub(crate) fn revoke_user_auth_sessions(conn: &Connection, user: UserId) -> Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM auth_sessions WHERE user_id = ?1")
        .db()?
        .execute([cap(user.0)])
        .db()?;
    Ok(n as u64)
}

// ----- rooms -----

fn insert_room(
    conn: &Connection,
    kind: RoomKind,
    name: &str,
    public_name: Option<&str>,
    created_by: Option<UserId>,
    at: Timestamp,
    pair: Option<(UserId, UserId)>,
) -> Result<Room> {
    conn.prepare_cached(
        "INSERT INTO rooms (kind, name, public_name, created_by, created_at, direct_lo, \
         direct_hi) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .db()?
    .execute(params![
        kind_to_sql(kind),
        name,
        public_name,
        created_by.map(|u| cap(u.0)),
        at.0,
        pair.map(|(lo, _)| cap(lo.0)),
        pair.map(|(_, hi)| cap(hi.0)),
    ])
    .db()?;
    Ok(Room {
        id: RoomId(new_id(conn)?),
        kind,
        name: name.to_string(),
        created_by,
        created_at: at,
    })
}

/// Inserts a membership; `false` if it existed. The caller has checked room and user.
fn insert_member(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    role: Role,
    at: Timestamp,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO members (room_id, user_id, role, joined_at, read_seq) \
             VALUES (?1, ?2, ?3, ?4, 0)",
        )
        .db()?
        .execute(params![cap(room.0), cap(user.0), role_to_sql(role), at.0])
        .db()?;
    Ok(n > 0)
}

pub(crate) fn create_room(conn: &Connection, room: &NewRoom) -> Result<Room> {
    if room.kind == RoomKind::Direct {
        return Err(Error::invalid(
            "kind",
            "direct rooms are created with direct_room",
        ));
    }
    if let Some(owner) = room.created_by {
        require_user(conn, owner)?;
    }
    let public_name = (room.kind == RoomKind::Public).then(|| fold(&room.name));
    if let Some(key) = &public_name {
        let taken = conn
            .prepare_cached("SELECT 1 FROM rooms WHERE public_name = ?1")
            .db()?
            .exists([key])
            .db()?;
        if taken {
            return Err(Error::AlreadyExists("room name"));
        }
    }
    let created = insert_room(
        conn,
        room.kind,
        &room.name,
        public_name.as_deref(),
        room.created_by,
        room.at,
        None,
    )?;
    if let Some(owner) = room.created_by {
        insert_member(conn, created.id, owner, Role::Owner, room.at)?;
    }
    Ok(created)
}

/// The existing direct room of the pair, if any (a read: also used as the fast path before
/// going to the writer).
pub(crate) fn find_direct_room(conn: &Connection, a: UserId, b: UserId) -> Result<Option<Room>> {
    let (lo, hi) = (a.min(b), a.max(b));
    conn.prepare_cached(&format!(
        "SELECT {ROOM_COLS} FROM rooms WHERE direct_lo = ?1 AND direct_hi = ?2"
    ))
    .db()?
    .query_row([cap(lo.0), cap(hi.0)], room_from)
    .optional()
    .db()
}

pub(crate) fn direct_room(
    conn: &Connection,
    a: UserId,
    b: UserId,
    name: &str,
    at: Timestamp,
) -> Result<Room> {
    if a == b {
        return Err(Error::invalid(
            "user",
            "a direct room needs two different users",
        ));
    }
    require_user(conn, a)?;
    require_user(conn, b)?;
    if let Some(existing) = find_direct_room(conn, a, b)? {
        return Ok(existing);
    }
    let pair = (a.min(b), a.max(b));
    let room = insert_room(conn, RoomKind::Direct, name, None, Some(a), at, Some(pair))?;
    insert_member(conn, room.id, a, Role::Member, at)?;
    insert_member(conn, room.id, b, Role::Member, at)?;
    Ok(room)
}

pub(crate) fn room(conn: &Connection, id: RoomId) -> Result<Option<Room>> {
    conn.prepare_cached(&format!("SELECT {ROOM_COLS} FROM rooms WHERE id = ?1"))
        .db()?
        .query_row([cap(id.0)], room_from)
        .optional()
        .db()
}

pub(crate) fn public_room_by_name(conn: &Connection, name: &str) -> Result<Option<Room>> {
    conn.prepare_cached(&format!(
        "SELECT {ROOM_COLS} FROM rooms WHERE public_name = ?1"
    ))
    .db()?
    .query_row([fold(name)], room_from)
    .optional()
    .db()
}

pub(crate) fn public_rooms(conn: &Connection, after: RoomId, limit: usize) -> Result<Vec<Room>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    conn.prepare_cached(PUBLIC_ROOMS)
        .db()?
        .query_map([cap(after.0), cap_limit(limit)], room_from)
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()
}

pub(crate) fn delete_room(conn: &Connection, id: RoomId) -> Result<bool> {
    // Members, entries (and with them their idempotency keys) and invites go by cascade.
    let n = conn
        .prepare_cached("DELETE FROM rooms WHERE id = ?1")
        .db()?
        .execute([cap(id.0)])
        .db()?;
    Ok(n > 0)
}

fn room_exists(conn: &Connection, room: RoomId) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM rooms WHERE id = ?1")
        .db()?
        .exists([cap(room.0)])
        .db()
}

// ----- members -----

pub(crate) fn add_member(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    role: Role,
    at: Timestamp,
) -> Result<bool> {
    if !room_exists(conn, room)? {
        return Err(Error::RoomNotFound(room));
    }
    require_user(conn, user)?;
    insert_member(conn, room, user, role, at)
}

pub(crate) fn remove_member(conn: &Connection, room: RoomId, user: UserId) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2")
        .db()?
        .execute([cap(room.0), cap(user.0)])
        .db()?;
    Ok(n > 0)
}

pub(crate) fn remove_member_below(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    below: Role,
) -> Result<bool> {
    let roles: Vec<&str> = [Role::Member, Role::Admin, Role::Owner]
        .into_iter()
        .filter(|r| *r < below)
        .map(role_to_sql)
        .collect();
    if roles.is_empty() {
        return Ok(false);
    }
    // At most two roles: a fixed statement per `below`, cached like the others.
    let sql = if roles.len() == 1 {
        "DELETE FROM members WHERE room_id = ?1 AND user_id = ?2 AND role = ?3"
    } else {
        "DELETE FROM members WHERE room_id = ?1 AND user_id = ?2 AND role IN (?3, ?4)"
    };
    let mut stmt = conn.prepare_cached(sql).db()?;
    let n = if roles.len() == 1 {
        stmt.execute(params![cap(room.0), cap(user.0), roles[0]])
    } else {
        stmt.execute(params![cap(room.0), cap(user.0), roles[0], roles[1]])
    }
    .db()?;
    Ok(n > 0)
}

pub(crate) fn set_role(conn: &Connection, room: RoomId, user: UserId, role: Role) -> Result<()> {
    let n = conn
        .prepare_cached("UPDATE members SET role = ?3 WHERE room_id = ?1 AND user_id = ?2")
        .db()?
        .execute(params![cap(room.0), cap(user.0), role_to_sql(role)])
        .db()?;
    if n == 0 {
        return Err(Error::NotMember(room));
    }
    Ok(())
}

pub(crate) fn member(conn: &Connection, room: RoomId, user: UserId) -> Result<Option<Member>> {
    conn.prepare_cached(
        "SELECT u.username, m.role, m.joined_at FROM members m JOIN users u ON u.id = m.user_id \
         WHERE m.room_id = ?1 AND m.user_id = ?2",
    )
    .db()?
    .query_row([cap(room.0), cap(user.0)], |r| {
        let role: String = r.get(1)?;
        Ok(Member {
            room,
            user,
            username: r.get(0)?,
            role: role_from_sql(1, &role)?,
            joined_at: Timestamp(r.get(2)?),
        })
    })
    .optional()
    .db()
}

pub(crate) fn members(conn: &Connection, room: RoomId) -> Result<Vec<Member>> {
    conn.prepare_cached(MEMBERS)
        .db()?
        .query_map([cap(room.0)], |r| {
            let role: String = r.get(2)?;
            Ok(Member {
                room,
                user: id(r, 0)?,
                username: r.get(1)?,
                role: role_from_sql(2, &role)?,
                joined_at: Timestamp(r.get(3)?),
            })
        })
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()
}

pub(crate) fn rooms_of(conn: &Connection, user: UserId) -> Result<Vec<Membership>> {
    conn.prepare_cached(ROOMS_OF)
        .db()?
        .query_map([cap(user.0)], |r| {
            let role: String = r.get(5)?;
            Ok(Membership {
                room: room_from(r)?,
                role: role_from_sql(5, &role)?,
            })
        })
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()
}

// ----- the log -----

pub(crate) fn append(conn: &Connection, entry: NewEntry) -> Result<Appended> {
    let EntryKind::Message(m) = &entry.kind;
    // The room's last seq and the author's membership (the `Store` authorship contract) in
    // one statement, inside the write transaction: a removal committed before this append is
    // always seen. Without an author (`?2` NULL) membership is not asked for. The look-up
    // costs the writer about 2 µs per append (store bench, 256 publishers), as a second
    // statement or folded into this one alike: it is the B-tree search, not the statement.
    let row: Option<(u64, bool)> = conn
        .prepare_cached(ROOM_FOR_APPEND)
        .db()?
        .query_row(
            params![cap(entry.room.0), entry.author().map(|u| cap(u.0))],
            |r| Ok((u64_at(r, 0)?, r.get::<_, bool>(1)?)),
        )
        .optional()
        .db()?;
    let Some((last, author_may_post)) = row else {
        return Err(Error::RoomNotFound(entry.room));
    };
    if !author_may_post {
        return Err(Error::NotMember(entry.room));
    }
    let seq = Seq(last + 1);
    // Runs without a savepoint (see `Writer::call_without_savepoint`): a domain outcome
    // (unknown room above, duplicate below) is decided before anything is written, and a
    // storage error after the insert loses the whole transaction, so no entry can be left
    // without its `last_seq` or the other way round. Plain `VALUES` on purpose: an
    // `INSERT … SELECT` from `rooms`, or a `RETURNING`, makes SQLite materialise a temporary
    // table per append (a tenth of the writer's time, by profile).
    let inserted = conn
        .prepare_cached(APPEND)
        .db()?
        .execute(params![
            cap(entry.room.0),
            cap(seq.0),
            entry.at.0,
            KIND_MESSAGE,
            m.sender.map(|u| cap(u.0)),
            m.sender_name,
            m.body,
            m.client_msg_id,
        ])
        .db()?;
    if inserted == 1 {
        conn.prepare_cached("UPDATE rooms SET last_seq = ?2 WHERE id = ?1")
            .db()?
            .execute(params![cap(entry.room.0), cap(seq.0)])
            .db()?;
        return Ok(Appended {
            entry: LogEntry {
                room: entry.room,
                seq,
                at: entry.at,
                kind: entry.kind,
            },
            duplicate: false,
        });
    }
    // Nothing inserted: the key was taken, so this is a retry.
    let original = match entry.idempotency_key() {
        Some((sender, cmid)) => conn
            .prepare_cached(IDEMPOTENCY)
            .db()?
            .query_row(params![cap(sender.0), cmid], entry_from)
            .optional()
            .db()?,
        None => None,
    };
    let original = original
        .ok_or_else(|| Error::Internal("append inserted nothing and found no original".into()))?;
    Ok(Appended {
        entry: original,
        duplicate: true,
    })
}

pub(crate) fn history(
    conn: &Connection,
    room: RoomId,
    query: HistoryQuery,
    limit: usize,
) -> Result<Vec<LogEntry>> {
    let limit = limit.min(MAX_HISTORY_PAGE);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (sql, seq) = match query {
        HistoryQuery::Before(s) => (HISTORY_BEFORE, s),
        HistoryQuery::After(s) => (HISTORY_AFTER, s),
    };
    let mut page: Vec<LogEntry> = conn
        .prepare_cached(sql)
        .db()?
        .query_map(
            params![cap(room.0), cap(seq.0), cap_limit(limit)],
            entry_from,
        )
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    if matches!(query, HistoryQuery::Before(_)) {
        // Read newest-first to take the newest `limit`; returned in ascending order.
        page.reverse();
    }
    Ok(page)
}

pub(crate) fn latest_seq(conn: &Connection, room: RoomId) -> Result<Seq> {
    let seq: Option<u64> = conn
        .prepare_cached("SELECT last_seq FROM rooms WHERE id = ?1")
        .db()?
        .query_row([cap(room.0)], |r| u64_at(r, 0))
        .optional()
        .db()?;
    Ok(Seq(seq.unwrap_or(0)))
}

// ----- read markers -----

pub(crate) fn mark_read(conn: &Connection, room: RoomId, user: UserId, seq: Seq) -> Result<Seq> {
    let current: Option<i64> = conn
        .prepare_cached("SELECT read_seq FROM members WHERE room_id = ?1 AND user_id = ?2")
        .db()?
        .query_row([cap(room.0), cap(user.0)], |r| r.get(0))
        .optional()
        .db()?;
    let Some(current) = current.map(marker_from_sql) else {
        return Err(Error::NotMember(room));
    };
    // Compared here, in u64, never in SQL (see `marker_to_sql`).
    if seq > current {
        conn.prepare_cached("UPDATE members SET read_seq = ?3 WHERE room_id = ?1 AND user_id = ?2")
            .db()?
            .execute([cap(room.0), cap(user.0), marker_to_sql(seq)])
            .db()?;
        return Ok(seq);
    }
    Ok(current)
}

/// Unread state of every room of `user`, from one snapshot: the member rows with each
/// room's `last_seq`, then, per room with something unread, a count over the range
/// `(read_seq, last_seq]` of its primary key — never the whole log.
pub(crate) fn unread(conn: &mut Connection, user: UserId) -> Result<Vec<Unread>> {
    let tx = conn.transaction().db()?;
    let rooms: Vec<(RoomId, Seq, Seq)> = tx
        .prepare_cached(UNREAD_ROOMS)
        .db()?
        .query_map([cap(user.0)], |r| {
            Ok((id(r, 0)?, marker_from_sql(r.get(1)?), Seq(u64_at(r, 2)?)))
        })
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    let mut out = Vec::with_capacity(rooms.len());
    {
        let mut count = tx.prepare_cached(UNREAD_COUNT).db()?;
        for (room, read_seq, latest_seq) in rooms {
            let unread = if read_seq >= latest_seq {
                0
            } else {
                count
                    .query_row(params![cap(room.0), cap(read_seq.0), cap(user.0)], |r| {
                        u64_at(r, 0)
                    })
                    .db()?
            };
            out.push(Unread {
                room,
                read_seq,
                latest_seq,
                unread,
            });
        }
    }
    tx.commit().db()?;
    Ok(out)
}

// ----- invites -----

pub(crate) fn create_invite(conn: &Connection, invite: &Invite) -> Result<()> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM invites WHERE code = ?1")
        .db()?
        .exists([&invite.code])
        .db()?;
    if exists {
        return Err(Error::AlreadyExists("invite code"));
    }
    if !room_exists(conn, invite.room)? {
        return Err(Error::RoomNotFound(invite.room));
    }
    conn.prepare_cached(
        "INSERT INTO invites (code, room_id, created_by, created_at, expires_at, max_uses, uses) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .db()?
    .execute(params![
        invite.code,
        cap(invite.room.0),
        cap(invite.created_by.0),
        invite.created_at.0,
        invite.expires_at.0,
        invite.max_uses,
        invite.uses,
    ])
    .db()?;
    Ok(())
}

pub(crate) fn invite(conn: &Connection, code: &str) -> Result<Option<Invite>> {
    conn.prepare_cached(
        "SELECT room_id, created_by, created_at, expires_at, max_uses, uses FROM invites \
         WHERE code = ?1",
    )
    .db()?
    .query_row([code], |r| {
        Ok(Invite {
            code: code.to_string(),
            room: id(r, 0)?,
            created_by: id(r, 1)?,
            created_at: Timestamp(r.get(2)?),
            expires_at: Timestamp(r.get(3)?),
            max_uses: r.get(4)?,
            uses: r.get(5)?,
        })
    })
    .optional()
    .db()
}

pub(crate) fn redeem_invite(
    conn: &Connection,
    code: &str,
    user: UserId,
    now: Timestamp,
) -> Result<Room> {
    let invite = invite(conn, code)?.ok_or(Error::InviteUnknown)?;
    let room = room(conn, invite.room)?.ok_or(Error::InviteUnknown)?;
    // Checked before expiry and uses: a member retrying a redemption gets the same answer.
    let is_member = conn
        .prepare_cached("SELECT 1 FROM members WHERE room_id = ?1 AND user_id = ?2")
        .db()?
        .exists([cap(room.id.0), cap(user.0)])
        .db()?;
    if is_member {
        return Ok(room);
    }
    require_user(conn, user)?;
    if now >= invite.expires_at {
        return Err(Error::InviteExpired);
    }
    if invite.max_uses.is_some_and(|max| invite.uses >= max) {
        return Err(Error::InviteExhausted);
    }
    insert_member(conn, room.id, user, Role::Member, now)?;
    conn.prepare_cached("UPDATE invites SET uses = min(uses + 1, 4294967295) WHERE code = ?1")
        .db()?
        .execute([code])
        .db()?;
    Ok(room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::schema::MIGRATIONS;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut s = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = s.parameter_count();
        let args: Vec<i64> = vec![1; n];
        s.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join(" | ")
    }

    /// The hot queries are index range reads, never scans of a whole table or log.
    #[test]
    fn hot_queries_use_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        for m in MIGRATIONS {
            conn.execute_batch(m).unwrap();
        }
        let cases = [
            (HISTORY_BEFORE, "USING PRIMARY KEY (room_id=? AND seq<?)"),
            (HISTORY_AFTER, "USING PRIMARY KEY (room_id=? AND seq>?)"),
            (UNREAD_COUNT, "USING PRIMARY KEY (room_id=? AND seq>?)"),
            (IDEMPOTENCY, "entries_idempotency"),
            (UNREAD_ROOMS, "members_by_user"),
            (ROOMS_OF, "members_by_user"),
            (MEMBERS, "USING PRIMARY KEY (room_id=?)"),
            (PUBLIC_ROOMS, "rooms_public"),
        ];
        for (sql, expected) in cases {
            let p = plan(&conn, sql);
            assert!(p.contains(expected), "{sql}\n  plan: {p}");
            assert!(!p.contains("SCAN"), "{sql}\n  plan: {p}");
            assert!(
                !p.contains("TEMP B-TREE"),
                "sorts in memory: {sql}\n  plan: {p}"
            );
        }
    }
}
