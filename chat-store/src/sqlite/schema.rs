//! The schema, its migrations, and the checks made before a file is touched.
//!
//! # Versioning
//!
//! The schema version lives in SQLite's `PRAGMA user_version` (a field of the file header,
//! changed transactionally). [`MIGRATIONS`]`[i]` takes a database from version `i` to
//! `i + 1`; they are forward-only and never edited once released: a change to the schema is
//! a new entry at the end. Opening runs the missing ones, all in one `BEGIN IMMEDIATE`
//! transaction together with the new `user_version`, so a crash mid-migration leaves the old
//! version intact. A file whose version is higher than [`LATEST`] was written by a newer
//! build and is refused, untouched: this build cannot know what the newer schema means.
//!
//! `PRAGMA application_id` marks the file as ours, so that pointing the store at some other
//! application's SQLite database is refused instead of "migrated".
//!
//! # Layout (version 2)
//!
//! - `users`, `rooms`: `INTEGER PRIMARY KEY AUTOINCREMENT`, so an id is never handed out
//!   twice, not even after the newest row is deleted (plain rowids would reuse it).
//! - Case-insensitive uniqueness: `users.username_folded` and `rooms.public_name` hold
//!   [`chat_core::validate::fold`] of the name (the latter only for public rooms, `NULL`
//!   otherwise) under `UNIQUE` indexes; the names themselves are stored as given.
//! - Direct rooms carry their pair as `(direct_lo, direct_hi)` (smaller id first) under a
//!   `UNIQUE` index, which makes "one room per pair" a constraint, not only a check.
//! - `rooms.last_seq` is the room's latest seq. The append reads it, inserts the entry at
//!   `last_seq + 1` and stores the new `last_seq`, in one write command on the single writer
//!   thread: the seq is assigned atomically with the insert and never twice, and
//!   `latest_seq` is answered without touching the log.
//! - `entries` is the log, `WITHOUT ROWID` with primary key `(room_id, seq)`: a room's log
//!   is stored clustered in seq order, so a history page is one contiguous range read and an
//!   unread count scans exactly the unread range. A partial `UNIQUE` index on
//!   `(client_msg_id, sender)` (only rows that have both) makes appends idempotent; it spans
//!   rooms, as the contract says. It leads with the client's id (since version 2) so that
//!   time-ordered ids (UUIDv7, ULID) from many senders all insert at the index's right
//!   edge: a commit then dirties a few index pages instead of one per sender.
//! - Entry kinds: `entries.kind` is an integer tag (`1` = message) and each kind's fields
//!   are nullable columns (`sender`, `sender_name`, `body`, `client_msg_id` for messages). A
//!   new kind is a new tag plus, if needed, new nullable columns added by a migration;
//!   existing rows never need rewriting. Columns rather than a serialized payload keep the
//!   idempotency index and the unread count (`sender`) plain SQL.
//! - `members` (`WITHOUT ROWID`, key `(room_id, user_id)`, plus an index by user) holds the
//!   role, the join time and the read marker, which therefore lives and dies with the
//!   membership.
//! - Deleting a room removes everything that belongs to it, without a table scan (each
//!   of those tables has an index starting with `room_id`): members (and their read
//!   markers) and invites by `ON DELETE CASCADE` foreign keys; the log by the trigger
//!   `rooms_delete_entries`, which also frees the room's idempotency keys.
//! - Why a trigger, not a foreign key, for the log: a foreign key (or a trigger) *on
//!   `entries`* makes SQLite keep a statement journal for every insert, copying each page
//!   the append touches; profiling the append path showed that, plus the key check, to cost
//!   about a quarter of the writer's time. The append checks that the room exists itself,
//!   in the same transaction, so no orphan entry can be written; the trigger sits on the
//!   (rare) room deletion instead.
//! - `entries.sender` and `invites.created_by` are deliberately not foreign keys: the
//!   trait lets the engine name authors it has checked itself, and users are never deleted.

use super::values::kind_of;
use crate::error::OpenError;
use rusqlite::{Connection, ErrorCode};
use std::path::Path;

/// `PRAGMA application_id` of a chat-store database: "chat" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x6368_6174;

/// The forward-only migrations; `MIGRATIONS[i]` goes from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the initial schema.
    r#"
    CREATE TABLE users (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        username        TEXT    NOT NULL,
        username_folded TEXT    NOT NULL,
        password_hash   TEXT,
        guest           INTEGER NOT NULL,
        created_at      INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX users_username ON users (username_folded);

    CREATE TABLE auth_sessions (
        token_hash BLOB    NOT NULL PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX auth_sessions_by_user ON auth_sessions (user_id);

    CREATE TABLE rooms (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT    NOT NULL,
        name        TEXT    NOT NULL,
        public_name TEXT,
        created_by  INTEGER REFERENCES users (id) ON DELETE SET NULL,
        created_at  INTEGER NOT NULL,
        direct_lo   INTEGER,
        direct_hi   INTEGER,
        last_seq    INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX rooms_public_name ON rooms (public_name);
    CREATE INDEX rooms_public ON rooms (id) WHERE public_name IS NOT NULL;
    CREATE UNIQUE INDEX rooms_direct_pair ON rooms (direct_lo, direct_hi);

    CREATE TABLE members (
        room_id   INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
        user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        role      TEXT    NOT NULL,
        joined_at INTEGER NOT NULL,
        read_seq  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_user ON members (user_id, room_id);

    CREATE TABLE entries (
        room_id       INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        kind          INTEGER NOT NULL,
        sender        INTEGER,
        sender_name   TEXT,
        body          TEXT,
        client_msg_id TEXT,
        PRIMARY KEY (room_id, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX entries_idempotency ON entries (sender, client_msg_id)
        WHERE sender IS NOT NULL AND client_msg_id IS NOT NULL;
    CREATE TRIGGER rooms_delete_entries AFTER DELETE ON rooms BEGIN
        DELETE FROM entries WHERE room_id = OLD.id;
    END;

    CREATE TABLE invites (
        code       TEXT    NOT NULL PRIMARY KEY,
        room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
        created_by INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        max_uses   INTEGER,
        uses       INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX invites_by_room ON invites (room_id);
    "#,
    // 1 -> 2: the idempotency index leads with the client's id instead of the sender. The
    // constraint is the same; what changes is where new keys land. Keyed by sender first,
    // every active sender has its own insertion point, so a commit of N appends from N
    // users dirties about N index pages, each written to the WAL and checkpointed. Keyed by
    // a time-ordered id first (UUIDv7, ULID, what `chat-client` and the web UI make), all
    // new keys land at the right edge of the index, on a handful of pages.
    r#"
    DROP INDEX entries_idempotency;
    CREATE UNIQUE INDEX entries_idempotency ON entries (client_msg_id, sender)
        WHERE sender IS NOT NULL AND client_msg_id IS NOT NULL;
    "#,
];

/// The schema version this build writes and understands.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

fn sqlite_err(path: &Path, e: rusqlite::Error) -> OpenError {
    let not_a_db = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    );
    if not_a_db {
        OpenError::NotADatabase {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    } else {
        OpenError::Sqlite {
            path: path.to_path_buf(),
            kind: kind_of(&e),
            message: e.to_string(),
        }
    }
}

fn incompatible(path: &Path, reason: String) -> OpenError {
    OpenError::Incompatible {
        path: path.to_path_buf(),
        reason,
    }
}

/// The first check, on the raw bytes of the file's header before SQLite opens it at all, so
/// that a file that is not a database, or is one of a newer schema, is refused without
/// SQLite creating a `-wal` or `-shm` beside it (or checkpointing into it when closing).
///
/// A missing or empty file is fine: it becomes a new database. The header layout is
/// SQLite's documented file format: the magic string at offset 0, `user_version` at 60 and
/// `application_id` at 68, both big-endian.
fn check_header(path: &Path) -> Result<(), OpenError> {
    use std::io::Read;
    let io_err = |e: std::io::Error| OpenError::Sqlite {
        path: path.to_path_buf(),
        kind: chat_core::StorageErrorKind::Other,
        message: format!("cannot read the file: {e}"),
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    let mut header = Vec::with_capacity(100);
    file.take(100).read_to_end(&mut header).map_err(io_err)?;
    if header.is_empty() {
        return Ok(());
    }
    // The magic string, a valid page size (a power of two from 512 to 32768, or 1 for
    // 65536), and the three payload fractions that SQLite fixes at 64, 32 and 32.
    let page_size = u16::from_be_bytes([
        header.get(16).copied().unwrap_or(0),
        header.get(17).copied().unwrap_or(0),
    ]);
    let valid = header.len() == 100
        && header.starts_with(b"SQLite format 3\0")
        && (page_size == 1 || (page_size >= 512 && page_size.is_power_of_two()))
        && header[21..24] == [64, 32, 32];
    if !valid {
        return Err(OpenError::NotADatabase {
            path: path.to_path_buf(),
            message: "the file does not start with a valid SQLite header".into(),
        });
    }
    let be = |at: usize| {
        i32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (version, app) = (i64::from(be(60)), be(68));
    if version > LATEST {
        return Err(too_new(path, version));
    }
    if version < 0 {
        return Err(damaged_version(path, version));
    }
    if version > 0 && app != APPLICATION_ID {
        return Err(foreign_app(path, app));
    }
    Ok(())
}

fn too_new(path: &Path, version: i64) -> OpenError {
    incompatible(
        path,
        format!(
            "schema version {version} is newer than this build supports ({LATEST}); \
             upgrade the application"
        ),
    )
}

/// No version of ours is negative: the file was damaged or written by something else, and
/// running migrations "from" it would skip them all.
fn damaged_version(path: &Path, version: i64) -> OpenError {
    incompatible(
        path,
        format!("schema version {version} is not one this store ever wrote"),
    )
}

fn foreign_app(path: &Path, app: i32) -> OpenError {
    incompatible(
        path,
        format!("an SQLite database of another application (application_id {app:#x})"),
    )
}

/// Checks, without writing anything, that the database on `conn` is empty, or a chat-store
/// database of a version this build can read. Returns its version. This repeats
/// [`check_header`] through SQLite, which also sees changes still in the WAL, and looks at
/// the schema of version-0 files.
fn check(conn: &Connection, path: &Path) -> Result<i64, OpenError> {
    let e = |e| sqlite_err(path, e);
    // The first read of the header: a file that is not a database fails here.
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(e)?;
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(e)?;
    if version > LATEST {
        return Err(too_new(path, version));
    }
    if version < 0 {
        return Err(damaged_version(path, version));
    }
    if version == 0 {
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(e)?;
        if objects > 0 {
            return Err(incompatible(
                path,
                "an SQLite database of another application (it has tables but no \
                 chat-store schema version)"
                    .into(),
            ));
        }
    } else if app != APPLICATION_ID {
        return Err(foreign_app(path, app));
    }
    Ok(version)
}

/// Opens the writer connection: checks the file (refusing it untouched if need be), then
/// switches it to WAL, applies the pragmas and runs the missing migrations.
pub(crate) fn open_writer(
    path: &Path,
    synchronous: &str,
    busy_timeout: std::time::Duration,
) -> Result<Connection, OpenError> {
    let e = |e| sqlite_err(path, e);
    check_header(path)?;
    let conn = Connection::open(path).map_err(e)?;
    conn.busy_timeout(busy_timeout).map_err(e)?;
    check(&conn, path)?;

    // From here on the file is ours and may be written.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(e)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Sqlite {
            path: path.to_path_buf(),
            kind: chat_core::StorageErrorKind::Other,
            message: format!("could not enable WAL mode (journal_mode is {mode})"),
        });
    }
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(e)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(e)?;
    // Every write command runs in a savepoint, whose undo records go to a "sub-journal".
    // With the default (`temp_store = FILE`) SQLite buffers that journal in 64 KiB heap
    // chunks allocated and freed per savepoint, and glibc then trims its heap (`madvise`,
    // TLB shoot-downs) on nearly every command: a quarter of the writer's time under load,
    // by profile. In memory, the journal uses small chunks and that cost disappears. The
    // price: the undo records of one command live in RAM until it ends, which only matters
    // for a huge `delete_room` (about the size of the deleted room's pages, transiently).
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(e)?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Runs the missing migrations in one immediate transaction.
fn migrate(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let e = |e| sqlite_err(path, e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(e)?;
    let result = (|| {
        // Read again under the write lock: another process may have migrated meanwhile.
        let version = check(conn, path)?;
        if version == LATEST {
            return Ok(());
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql).map_err(|err| OpenError::Sqlite {
                path: path.to_path_buf(),
                kind: kind_of(&err),
                message: format!("migration to schema version {}: {err}", i + 1),
            })?;
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(e)?;
        conn.pragma_update(None, "user_version", LATEST)
            .map_err(e)?;
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(e),
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

/// Opens a read-only connection for the reader pool.
pub(crate) fn open_reader(
    path: &Path,
    busy_timeout: std::time::Duration,
) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
}
