//! The writer thread and its group commit.
//!
//! One `std::thread` owns the only write connection. Callers send it commands (closures over
//! a `&Connection`) through a bounded Tokio channel, so a full queue makes callers *wait*
//! (asynchronously), never grows without bound, and never blocks an executor thread. Each
//! command carries a oneshot sender for its reply.
//!
//! # Group commit
//!
//! The thread blocks for one command, then drains whatever else is already queued (up to
//! `max_batch`) and runs the whole batch in **one** `BEGIN IMMEDIATE` transaction:
//!
//! 1. each command runs inside its own `SAVEPOINT`; a command that fails (say, a taken
//!    username) is rolled back to its savepoint alone, and the others go on. The two hot
//!    commands (append, mark read) skip the savepoint: they decide every refusal before
//!    writing anything, and a storage error in them fails the whole batch instead (see
//!    [`Writer::call_without_savepoint`]);
//! 2. `COMMIT`;
//! 3. only then is each caller answered — with its own result if the commit succeeded, with
//!    the commit's error if it did not. Nobody is ever told "done" about something that is
//!    not durable.
//!
//! No timer is involved: while one batch commits, the next one queues up, so the batch size
//! follows the load by itself (one command per transaction when idle, hundreds under many
//! concurrent publishers), and the cost of a commit (a WAL append, and an `fsync` with
//! `synchronous = FULL`) is shared by the whole batch.
//!
//! If SQLite rolls the whole transaction back by itself (it may, on `SQLITE_FULL`,
//! `SQLITE_IOERR`, `SQLITE_BUSY` or `SQLITE_NOMEM`), the commands run so far in it are lost:
//! they all get the error, and the rest of the batch continues in a fresh transaction.
//!
//! Because there is exactly one writer, every command is serialized with every other: a
//! check-then-write inside one command (seq assignment, idempotency look-up, direct-room
//! creation, invite redemption) is atomic without any further locking.

use super::values::storage;
use chat_core::{Error, Result, StorageErrorKind};
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// A write command as the thread sees it: run it, then (after the commit) answer it.
pub(crate) trait Command: Send {
    /// Runs the command inside the open transaction and keeps its result for
    /// [`Command::finish`]. Returns its error, if any, for the writer to decide what to roll
    /// back (see `run_one`).
    fn run(&mut self, conn: &Connection) -> Result<()>;

    /// Whether the command runs in a savepoint of its own; see
    /// [`Writer::call_without_savepoint`] for the commands that do not.
    fn needs_savepoint(&self) -> bool;

    /// Answers the caller: with the kept result if `failure` is `None` (the transaction
    /// committed), otherwise with `failure`.
    fn finish(self: Box<Self>, failure: Option<Error>);
}

/// A closure and the caller waiting for its result.
struct Job<T, F> {
    f: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
    savepoint: bool,
}

impl<T, F> Command for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> Result<()> {
        let Some(f) = self.f.take() else {
            return Err(Error::Internal("write command run twice".into()));
        };
        let result = f(conn);
        let status = result.as_ref().map(drop).map_err(Clone::clone);
        self.result = Some(result);
        status
    }

    fn needs_savepoint(&self) -> bool {
        self.savepoint
    }

    fn finish(self: Box<Self>, failure: Option<Error>) {
        let answer = match failure {
            Some(e) => Err(e),
            None => self
                .result
                .unwrap_or_else(|| Err(Error::Internal("write command panicked".into()))),
        };
        // The caller may have gone away (its future was dropped); the work is done anyway.
        let _ = self.reply.send(answer);
    }
}

fn stopped() -> Error {
    Error::Storage {
        kind: StorageErrorKind::Other,
        message: "the store's writer thread has stopped".into(),
    }
}

/// What the writer thread has done so far.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Transactions begun (normally one per batch).
    pub(crate) transactions: AtomicU64,
    /// Commands run.
    pub(crate) commands: AtomicU64,
}

/// The callers' side of the writer thread. Dropping it (with the store) lets the thread
/// finish the queued commands and exit, closing the write connection.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Box<dyn Command>>,
    pub(crate) counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(
        conn: Connection,
        queue: usize,
        max_batch: usize,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(queue);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("chat-store-writer".into())
            .spawn(move || run(conn, rx, max_batch, &c))?;
        Ok(Writer { tx, counters })
    }

    /// How many commands wait in the queue.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Runs `f` on the writer thread, in a transaction (and a savepoint of its own), and
    /// returns its result once that transaction has committed.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(f, true).await
    }

    /// Like [`Writer::call`] without the savepoint, for the hot paths (append, mark read),
    /// where `SAVEPOINT`/`RELEASE` and the page copies SQLite makes for a savepoint are a
    /// sizeable share of the work.
    ///
    /// Contract for `f`: it returns a non-storage error (`RoomNotFound`, `NotMember`, …)
    /// only **before its first write**. A storage error (`Error::Storage`) may come at any
    /// point; since nothing can then undo `f` alone, it makes the writer roll back the whole
    /// transaction and fail every command in it — never a half-done command committed.
    pub(crate) async fn call_without_savepoint<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(f, false).await
    }

    async fn submit<T, F>(&self, f: F, savepoint: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Job {
            f: Some(f),
            result: None,
            reply,
            savepoint,
        });
        self.tx.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The thread's loop: one batch per iteration until every sender is gone.
fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Command>>,
    max_batch: usize,
    counters: &Counters,
) {
    let mut batch: Vec<Box<dyn Command>> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        counters
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let transactions = execute(&conn, batch.drain(..));
        counters
            .transactions
            .fetch_add(transactions, Ordering::Relaxed);
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(storage)
}

/// Rolls back whatever is open; used when the transaction is already lost.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
}

/// Runs one command in its own savepoint (if it needs one). `Err` means the *transaction*
/// is lost (not merely the command failed), so nothing run in it may be acknowledged.
fn run_one(conn: &Connection, cmd: &mut dyn Command) -> Result<()> {
    let savepoint = cmd.needs_savepoint();
    if savepoint {
        exec(conn, "SAVEPOINT cmd")?;
    }
    // A panic in a command must not take the writer (and the store) down with it; the
    // command is answered with an internal error and its changes are rolled back.
    let (outcome, panicked) = match catch_unwind(AssertUnwindSafe(|| cmd.run(conn))) {
        Ok(outcome) => (outcome, false),
        Err(_) => (Err(Error::Internal("write command panicked".into())), true),
    };
    let Err(error) = outcome else {
        return if savepoint {
            exec(conn, "RELEASE cmd")
        } else {
            Ok(())
        };
    };
    if conn.is_autocommit() {
        // SQLite rolled the whole transaction back: report the storage error that made it
        // do so (disk full, I/O error, …) to everyone who ran in it.
        return Err(match error {
            e @ Error::Storage { .. } => e,
            other => Error::Storage {
                kind: StorageErrorKind::Other,
                message: format!("the transaction was rolled back after: {other}"),
            },
        });
    }
    if !savepoint {
        // See `Writer::call_without_savepoint`: a storage error (or a panic) may have
        // struck after a write, and only rolling back everything undoes that; any other
        // error came before the first write, so there is nothing to undo.
        return match error {
            e @ Error::Storage { .. } => Err(e),
            _ if panicked => Err(Error::Storage {
                kind: StorageErrorKind::Other,
                message: "a write command panicked; its transaction was rolled back".into(),
            }),
            _ => Ok(()),
        };
    }
    exec(conn, "ROLLBACK TO cmd")?;
    exec(conn, "RELEASE cmd")
}

/// Runs a batch of commands: one transaction (more only if SQLite aborts one), one commit,
/// then the answers. Returns how many transactions it began.
pub(crate) fn execute(conn: &Connection, batch: impl IntoIterator<Item = Box<dyn Command>>) -> u64 {
    let mut queue = batch.into_iter();
    let mut ran: Vec<Box<dyn Command>> = Vec::new();
    let mut transactions = 0;
    while let Some(mut next) = queue.next() {
        transactions += 1;
        if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
            // Nothing can run (e.g. another process holds the write lock past the busy
            // timeout): every command of the batch gets the error.
            rollback(conn);
            next.finish(Some(e.clone()));
            for cmd in queue {
                cmd.finish(Some(e.clone()));
            }
            return transactions;
        }
        let mut lost = None;
        loop {
            let outcome = run_one(conn, &mut *next);
            ran.push(next);
            if let Err(e) = outcome {
                lost = Some(e);
                break;
            }
            match queue.next() {
                Some(cmd) => next = cmd,
                None => break,
            }
        }
        let failure = match lost {
            Some(e) => {
                rollback(conn);
                Some(e)
            }
            None => match exec(conn, "COMMIT") {
                Ok(()) => None,
                Err(e) => {
                    rollback(conn);
                    Some(e)
                }
            },
        };
        for cmd in ran.drain(..) {
            cmd.finish(failure.clone());
        }
    }
    transactions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::values::Db;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE t (v INTEGER NOT NULL UNIQUE,
                             p INTEGER REFERENCES parent (id));",
        )
        .unwrap();
        c
    }

    type Reply = oneshot::Receiver<Result<i64>>;

    /// A command inserting `v` into `t`, then failing if `fail` is set.
    fn insert(v: i64, fail: bool) -> (Box<dyn Command>, Reply) {
        job(move |c| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [v]).db()?;
            if fail {
                return Err(Error::AlreadyExists("v"));
            }
            Ok(v)
        })
    }

    fn job(
        f: impl FnOnce(&Connection) -> Result<i64> + Send + 'static,
    ) -> (Box<dyn Command>, Reply) {
        job_with(f, true)
    }

    fn job_with(
        f: impl FnOnce(&Connection) -> Result<i64> + Send + 'static,
        savepoint: bool,
    ) -> (Box<dyn Command>, Reply) {
        let (reply, rx) = oneshot::channel();
        let cmd: Box<dyn Command> = Box::new(Job {
            f: Some(f),
            result: None,
            reply,
            savepoint,
        });
        (cmd, rx)
    }

    fn values(c: &Connection) -> Vec<i64> {
        let mut s = c.prepare("SELECT v FROM t ORDER BY v").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn answer(mut rx: Reply) -> Result<i64> {
        rx.try_recv().expect("answered")
    }

    #[test]
    fn a_failing_command_rolls_back_alone() {
        let c = conn();
        let (a, ra) = insert(1, false);
        let (b, rb) = insert(2, true);
        let (d, rd) = insert(1, false); // violates UNIQUE: a statement error
        let (e, re) = insert(3, false);
        assert_eq!(execute(&c, vec![a, b, d, e]), 1, "one transaction");
        assert_eq!(answer(ra), Ok(1));
        assert_eq!(answer(rb), Err(Error::AlreadyExists("v")));
        assert!(matches!(answer(rd), Err(Error::Storage { .. })));
        assert_eq!(answer(re), Ok(3));
        assert_eq!(values(&c), vec![1, 3]);
        assert!(c.is_autocommit(), "no transaction left open");
    }

    #[test]
    fn without_savepoint_a_refusal_fails_alone() {
        let c = conn();
        let (a, ra) = insert(1, false);
        // Refuses before writing, as the contract requires.
        let (b, rb) = job_with(|_| Err(Error::NotMember(chat_core::RoomId(1))), false);
        let (d, rd) = job_with(
            |c| {
                c.execute("INSERT INTO t (v) VALUES (3)", []).db()?;
                Ok(3)
            },
            false,
        );
        assert_eq!(execute(&c, vec![a, b, d]), 1);
        assert_eq!(answer(ra), Ok(1));
        assert!(matches!(answer(rb), Err(Error::NotMember(_))));
        assert_eq!(answer(rd), Ok(3));
        assert_eq!(values(&c), vec![1, 3]);
    }

    #[test]
    fn without_savepoint_a_storage_error_fails_the_transaction() {
        let c = conn();
        let (a, ra) = insert(1, false);
        // Writes, then fails on its second statement (a UNIQUE violation): its first write
        // cannot be undone alone, so nothing of this transaction may commit.
        let (b, rb) = job_with(
            |c| {
                c.execute("INSERT INTO t (v) VALUES (2)", []).db()?;
                c.execute("INSERT INTO t (v) VALUES (1)", []).db()?;
                Ok(2)
            },
            false,
        );
        let (d, rd) = insert(3, false);
        assert_eq!(execute(&c, vec![a, b, d]), 2);
        assert!(matches!(answer(ra), Err(Error::Storage { .. })));
        assert!(matches!(answer(rb), Err(Error::Storage { .. })));
        assert_eq!(answer(rd), Ok(3), "the rest ran in a new transaction");
        assert_eq!(values(&c), vec![3]);
    }

    #[test]
    fn a_failed_commit_acknowledges_nobody() {
        let c = conn();
        let (a, ra) = insert(1, false);
        // Deferred foreign keys are checked at COMMIT, which therefore fails.
        let (b, rb) = job(|c| {
            c.execute_batch("PRAGMA defer_foreign_keys = ON").db()?;
            c.execute("INSERT INTO t (v, p) VALUES (2, 99)", []).db()?;
            Ok(2)
        });
        let (d, rd) = insert(3, false);
        execute(&c, vec![a, b, d]);
        for r in [ra, rb, rd] {
            let got = answer(r);
            assert!(matches!(got, Err(Error::Storage { .. })), "{got:?}");
        }
        assert_eq!(values(&c), Vec::<i64>::new());
        assert!(c.is_autocommit());
    }

    #[test]
    fn a_transaction_lost_midway_fails_what_ran_and_continues() {
        let c = conn();
        let (a, ra) = insert(1, false);
        // Stands for SQLite aborting the transaction on its own (e.g. SQLITE_FULL).
        let (b, rb) = job(|c| {
            c.execute_batch("ROLLBACK").db()?;
            Err(Error::Storage {
                kind: StorageErrorKind::Full,
                message: "simulated".into(),
            })
        });
        let (d, rd) = insert(3, false);
        assert_eq!(execute(&c, vec![a, b, d]), 2);
        assert!(matches!(answer(ra), Err(Error::Storage { .. })));
        assert!(matches!(answer(rb), Err(Error::Storage { .. })));
        assert_eq!(answer(rd), Ok(3), "the rest ran in a new transaction");
        assert_eq!(values(&c), vec![3]);
    }

    #[test]
    fn a_panicking_command_is_an_error_not_a_dead_writer() {
        let c = conn();
        let (a, ra) = insert(1, false);
        let (b, rb) = job(|c| {
            c.execute("INSERT INTO t (v) VALUES (2)", []).db()?;
            panic!("bug in a command");
        });
        let (d, rd) = insert(3, false);
        execute(&c, vec![a, b, d]);
        assert_eq!(answer(ra), Ok(1));
        assert!(matches!(answer(rb), Err(Error::Internal(_))));
        assert_eq!(answer(rd), Ok(3));
        assert_eq!(values(&c), vec![1, 3]);
    }

    #[test]
    fn begin_failure_fails_the_whole_batch() {
        let c = conn();
        c.execute_batch("BEGIN").unwrap(); // BEGIN IMMEDIATE inside a transaction fails
        let (a, ra) = insert(1, false);
        let (b, rb) = insert(2, false);
        execute(&c, vec![a, b]);
        assert!(matches!(answer(ra), Err(Error::Storage { .. })));
        assert!(matches!(answer(rb), Err(Error::Storage { .. })));
        assert_eq!(values(&c), Vec::<i64>::new());
    }
}
