//! [`SqliteStore`]: the durable [`Store`], in one SQLite file.
//!
//! The moving parts, each in its own module:
//!
//! - `schema` — the tables, the forward-only migrations (`PRAGMA user_version`) and the
//!   checks that refuse a foreign, damaged or newer file before anything is written to it;
//! - `writer` — the writer thread and its group commit;
//! - `checkpointer` — WAL checkpoints on a thread of their own;
//! - `readers` — the pool of read-only connections;
//! - `ops` — the SQL of every operation;
//! - `values` — conversions between domain values and SQL values, and error mapping.

mod checkpointer;
mod ops;
mod readers;
mod schema;
mod values;
mod writer;

#[cfg(test)]
mod tests;

use crate::error::OpenError;
use async_trait::async_trait;
use chat_core::store::{Credentials, NewRoom, Store};
use chat_core::{
    Appended, AuthSession, Error, HistoryQuery, Invite, LogEntry, Member, Membership, NewEntry,
    Result, Role, Room, RoomId, Seq, Timestamp, Unread, User, UserId,
};
use readers::Readers;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use writer::Writer;

/// What a [`SqliteStore`]'s writer thread has done since the store was opened; see
/// [`SqliteStore::write_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Write commands executed (appends, user and room changes, …).
    pub commands: u64,
    /// Transactions begun for them. `commands / transactions` is the average group-commit
    /// batch: close to 1 when writes trickle in, large under many concurrent publishers.
    pub transactions: u64,
}

/// How hard SQLite works to make each commit durable (`PRAGMA synchronous`).
///
/// The store always runs in WAL mode; in WAL mode the two settings differ only in *when*
/// data reaches the disk platter, never in whether the file can be corrupted: with either,
/// the database is consistent after any crash, and a commit is atomic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `synchronous = NORMAL` (the default): a commit is written to the WAL file (that is,
    /// handed to the operating system) before it is acknowledged, but not `fsync`ed; the WAL
    /// is `fsync`ed at checkpoints.
    ///
    /// - An acknowledged append **survives a crash or kill of the process**: the data is in
    ///   the OS page cache, which outlives the process.
    /// - It **may be lost on power loss or an OS crash**: the most recent commits (those
    ///   since the last checkpoint's `fsync`) can roll back. The file stays consistent; the
    ///   log just ends earlier, with seqs still gap-free.
    ///
    /// The usual choice for a chat server: no `fsync` per commit keeps commits cheap, and
    /// a process crash (by far the most common failure) loses nothing acknowledged. Be
    /// clear about the price: after a power cut, a sender may have been told "stored" about
    /// a message that is gone. If that is not acceptable, use [`Synchronous::Full`].
    #[default]
    Normal,
    /// `synchronous = FULL`: the WAL is `fsync`ed at every commit, before acknowledging.
    /// An acknowledged append also **survives power loss** (on hardware that honours
    /// `fsync`). Each commit costs an `fsync` (from tens of microseconds on NVMe to
    /// milliseconds on other disks); group commit shares one `fsync` among every append of
    /// a batch, so throughput under many publishers stays high while the latency of a
    /// single append grows by one `fsync`.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How to open a [`SqliteStore`]. `SqliteConfig::default()` is right for most uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Durability of a commit; see [`Synchronous`]. Default: [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// How long an operation waits for a lock held by *another process* sharing the file
    /// before failing with [`chat_core::StorageErrorKind::Busy`]. Within one store there is
    /// no lock contention: one writer thread, and readers never wait in WAL mode.
    /// Default: 5 s.
    pub busy_timeout: Duration,
    /// How many reads may run at once, each on its own read-only connection (opened on
    /// first use). Reads run on Tokio's blocking pool. Default: 4.
    pub readers: usize,
    /// The most write commands committed in one transaction. Larger batches amortise the
    /// commit further but make the first caller of a batch wait for the whole batch.
    /// Default: 512.
    pub max_batch: usize,
    /// How many write commands may wait for the writer thread; callers beyond that wait
    /// (asynchronously) for room in the queue. Default: 4096.
    pub queue: usize,
}

impl Default for SqliteConfig {
    fn default() -> SqliteConfig {
        SqliteConfig {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            max_batch: 512,
            queue: 4096,
        }
    }
}

/// The durable [`Store`]: everything in one SQLite file (plus its `-wal` and `-shm`
/// companions while open), nothing to install or run beside the application.
///
/// # Opening
///
/// [`SqliteStore::open`] (async; the blocking work runs on Tokio's blocking pool) or
/// [`SqliteStore::open_blocking`] (for synchronous code, outside an async context) create
/// the file if needed and bring its schema up to date with forward-only migrations. A file
/// that is not a database, is a database of another application, or has a schema newer
/// than this build fails with an [`OpenError`] (`NotADatabase` → storage kind `Corrupt`,
/// `Incompatible` → `Incompatible`) and is left exactly as it was.
///
/// # Durability and threads
///
/// - WAL journal, `synchronous` per [`SqliteConfig::synchronous`]: an acknowledged write
///   survives a crash of the process (the default) or also a power loss
///   ([`Synchronous::Full`]). Appends are acknowledged only after their transaction
///   committed; a storage error is never an acknowledgement.
/// - One dedicated writer thread owns the write connection and commits in **groups**: the
///   writes queued while a transaction commits all go into the next one, so many concurrent
///   publishers share each commit. A write that is refused (a taken name, an unknown room,
///   …) does not fail its neighbours: each command runs in its own savepoint, or, for the
///   hot paths (append, mark read), decides every refusal before writing anything. A
///   storage failure that leaves the transaction unusable (disk full, I/O error) fails every
///   write of that transaction — never an acknowledgement for something not committed.
/// - WAL checkpoints run on a thread of their own, off the writer's path.
/// - Reads run on a small pool of read-only connections on Tokio's blocking pool; in WAL mode
///   they never wait for writes.
///
/// The methods therefore never block an async executor thread. They must be called from
/// within a Tokio runtime (reads use `spawn_blocking`).
///
/// # Seqs
///
/// Each room row keeps its `last_seq`. An append inserts the entry at `last_seq + 1` and
/// stores the new `last_seq` in the same transaction, on the single writer thread, so seqs
/// are gap-free, unique and visible only once committed; `latest_seq` is one primary-key
/// read.
///
/// # Costs to know about
///
/// - Every write goes through the one writer thread, so a long write delays the others:
///   deleting a room deletes its whole log in one transaction (about a second per million
///   entries, during which other writes queue; reads go on).
/// - Client message ids are indexed for idempotency. Ids that increase per client (a
///   counter, a ULID, a UUIDv7) keep that index cheap to update; uniformly random ids
///   (UUIDv4) land every append on a different index page, which costs noticeably more
///   write bandwidth under heavy load (see `benches/benches/store.rs` in the workspace).
///
/// # Sharing a file
///
/// Several processes may open the same file; SQLite's locks keep it consistent (writes then
/// contend, bounded by [`SqliteConfig::busy_timeout`]). Seq assignment stays atomic because
/// it happens inside each writer's `BEGIN IMMEDIATE` transaction.
pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Arc<Readers>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`; see the type's docs. The file
    /// checks, migrations and thread start-up run on Tokio's blocking pool.
    pub async fn open(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> std::result::Result<SqliteStore, OpenError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || SqliteStore::open_blocking(path, config))
            .await
            .map_err(|e| OpenError::Thread(std::io::Error::other(e.to_string())))?
    }

    /// Like [`SqliteStore::open`], blocking the calling thread. For synchronous start-up
    /// code; inside async code prefer `open`.
    pub fn open_blocking(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> std::result::Result<SqliteStore, OpenError> {
        let path = path.as_ref();
        for (name, value) in [
            ("readers", config.readers),
            ("max_batch", config.max_batch),
            ("queue", config.queue),
        ] {
            if value == 0 {
                return Err(OpenError::Config(format!("{name} must be at least 1")));
            }
        }
        let mut conn = schema::open_writer(path, config.synchronous.pragma(), config.busy_timeout)?;
        checkpointer::install(&mut conn, path, config.busy_timeout)?;
        // Readers reopen the file by name: pin it down now that it exists, so that a later
        // change of the working directory cannot send them elsewhere.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let writer =
            Writer::spawn(conn, config.queue, config.max_batch).map_err(OpenError::Thread)?;
        let readers = Arc::new(Readers::new(
            path.clone(),
            config.busy_timeout,
            config.readers,
        ));
        Ok(SqliteStore {
            path,
            writer,
            readers,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters of the writer thread, to see how well group commit batches under the
    /// application's load.
    pub fn write_stats(&self) -> WriteStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.writer.counters;
        WriteStats {
            commands: c.commands.load(Relaxed),
            transactions: c.transactions.load(Relaxed),
        }
    }

    /// The schema version this build creates and reads (`PRAGMA user_version`).
    pub fn schema_version() -> i64 {
        schema::LATEST
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        self.writer.call(f).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        self.readers.call(f).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(
        &self,
        username: &str,
        password_hash: Option<String>,
        guest: bool,
        at: Timestamp,
    ) -> Result<User> {
        let username = username.to_string();
        self.write(move |c| ops::create_user(c, &username, password_hash.as_deref(), guest, at))
            .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.read(move |c| ops::user(c, id)).await
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let username = username.to_string();
        self.read(move |c| ops::credentials(c, &username)).await
    }

    async fn create_auth_session(&self, session: AuthSession) -> Result<()> {
        self.write(move |c| ops::create_auth_session(c, &session))
            .await
    }

    async fn auth_session(
        &self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<AuthSession>> {
        let token_hash = *token_hash;
        self.read(move |c| ops::auth_session(c, &token_hash, now))
            .await
    }

    async fn revoke_auth_session(&self, token_hash: &[u8; 32]) -> Result<bool> {
        let token_hash = *token_hash;
        self.write(move |c| ops::revoke_auth_session(c, &token_hash))
            .await
    }

    async fn revoke_user_auth_sessions(&self, user: UserId) -> Result<u64> {
        self.write(move |c| ops::revoke_user_auth_sessions(c, user))
            .await
    }

    async fn create_room(&self, room: NewRoom) -> Result<Room> {
        self.write(move |c| ops::create_room(c, &room)).await
    }

    async fn direct_room(&self, a: UserId, b: UserId, name: &str, at: Timestamp) -> Result<Room> {
        if a == b {
            return Err(Error::invalid(
                "user",
                "a direct room needs two different users",
            ));
        }
        // The engine asks for the direct room on every direct message; once it exists that
        // is a read, so try a reader first and queue behind writes only to create it. The
        // writer checks again, so concurrent first calls still create one room.
        if let Some(room) = self.read(move |c| ops::find_direct_room(c, a, b)).await? {
            return Ok(room);
        }
        let name = name.to_string();
        self.write(move |c| ops::direct_room(c, a, b, &name, at))
            .await
    }

    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        self.read(move |c| ops::room(c, id)).await
    }

    async fn public_room_by_name(&self, name: &str) -> Result<Option<Room>> {
        let name = name.to_string();
        self.read(move |c| ops::public_room_by_name(c, &name)).await
    }

    async fn public_rooms(&self, after: RoomId, limit: usize) -> Result<Vec<Room>> {
        self.read(move |c| ops::public_rooms(c, after, limit)).await
    }

    async fn delete_room(&self, id: RoomId) -> Result<bool> {
        self.write(move |c| ops::delete_room(c, id)).await
    }

    async fn add_member(
        &self,
        room: RoomId,
        user: UserId,
        role: Role,
        at: Timestamp,
    ) -> Result<bool> {
        self.write(move |c| ops::add_member(c, room, user, role, at))
            .await
    }

    async fn remove_member(&self, room: RoomId, user: UserId) -> Result<bool> {
        self.write(move |c| ops::remove_member(c, room, user)).await
    }
    async fn remove_member_below(&self, room: RoomId, user: UserId, below: Role) -> Result<bool> {
        self.write(move |c| ops::remove_member_below(c, room, user, below))
            .await
    }

    async fn set_role(&self, room: RoomId, user: UserId, role: Role) -> Result<()> {
        self.write(move |c| ops::set_role(c, room, user, role))
            .await
    }

    async fn member(&self, room: RoomId, user: UserId) -> Result<Option<Member>> {
        self.read(move |c| ops::member(c, room, user)).await
    }

    async fn members(&self, room: RoomId) -> Result<Vec<Member>> {
        self.read(move |c| ops::members(c, room)).await
    }

    async fn rooms_of(&self, user: UserId) -> Result<Vec<Membership>> {
        self.read(move |c| ops::rooms_of(c, user)).await
    }

    async fn append(&self, entry: NewEntry) -> Result<Appended> {
        // The hot path: no savepoint (see `ops::append` for why that is safe).
        self.writer
            .call_without_savepoint(move |c| ops::append(c, entry))
            .await
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        self.read(move |c| ops::history(c, room, query, limit))
            .await
    }

    async fn latest_seq(&self, room: RoomId) -> Result<Seq> {
        self.read(move |c| ops::latest_seq(c, room)).await
    }

    async fn mark_read(&self, room: RoomId, user: UserId, seq: Seq) -> Result<Seq> {
        // `NotMember` is decided before the one write (the marker's update): no savepoint
        // needed.
        self.writer
            .call_without_savepoint(move |c| ops::mark_read(c, room, user, seq))
            .await
    }

    async fn unread(&self, user: UserId) -> Result<Vec<Unread>> {
        self.read(move |c| ops::unread(c, user)).await
    }

    async fn create_invite(&self, invite: Invite) -> Result<()> {
        self.write(move |c| ops::create_invite(c, &invite)).await
    }

    async fn invite(&self, code: &str) -> Result<Option<Invite>> {
        let code = code.to_string();
        self.read(move |c| ops::invite(c, &code)).await
    }

    async fn redeem_invite(&self, code: &str, user: UserId, now: Timestamp) -> Result<Room> {
        let code = code.to_string();
        self.write(move |c| ops::redeem_invite(c, &code, user, now))
            .await
    }
}
