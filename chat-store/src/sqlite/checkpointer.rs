//! WAL checkpoints on their own thread, off the writer's path.
//!
//! In WAL mode, commits append to the `-wal` file and a *checkpoint* copies the pages back
//! into the database file (with `synchronous = NORMAL`, that is also when the WAL and the
//! database are `fsync`ed). By default SQLite runs it inside the `COMMIT` that takes the WAL
//! past 1000 pages, on the committing connection: the writer thread would stall for the copy
//! and two `fsync`s while every publisher of the next batch waits. Profiling the 256-publisher
//! benchmark showed checkpoints taking about a seventh of the writer's time.
//!
//! So the writer connection's WAL hook (called after each commit with the WAL's size) only
//! *signals* this thread, which runs `PASSIVE` checkpoints on a connection of its own,
//! concurrently with the writer and the readers (a passive checkpoint never blocks them, and
//! is never blocked by them). Durability is unchanged: a checkpoint only moves committed
//! data from one file to the other.
//!
//! Should this thread fall far behind (or die), the hook checkpoints on the writer itself
//! past [`INLINE_PAGES`], so the WAL cannot grow without bound.

use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

/// WAL size (pages) from which the checkpointer is woken: about 40 MiB with 4 KiB pages, ten
/// times SQLite's own default. A chat log rewrites the same few pages in every commit (each
/// room's last log page, the index tails, `rooms.last_seq`), so a checkpoint copies far fewer
/// pages than the WAL holds, and its fixed cost (two `fsync`s) is shared by ten times the
/// commits. In the store benchmark this took appends with one publisher from 17 k/s to
/// 22 k/s and with 16 from 45 k/s to 56 k/s (256: unchanged); the price is a WAL file of up
/// to this size on disk.
pub(crate) const SIGNAL_PAGES: i32 = 10_000;

/// WAL size (pages) from which the writer checkpoints itself, because the checkpointer is
/// not keeping up. About 400 MiB with 4 KiB pages.
pub(crate) const INLINE_PAGES: i32 = 100_000;

/// Starts the checkpointer thread on its own connection and installs the WAL hook on the
/// writer connection. The thread exits when the writer connection is closed (dropping the
/// hook, and with it the only sender).
pub(crate) fn install(
    writer: &mut Connection,
    path: &Path,
    busy_timeout: Duration,
) -> Result<(), crate::OpenError> {
    let conn = Connection::open(path).map_err(|e| crate::OpenError::Sqlite {
        path: path.to_path_buf(),
        kind: super::values::kind_of(&e),
        message: e.to_string(),
    })?;
    let _ = conn.busy_timeout(busy_timeout);
    let (tx, rx) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("chat-store-checkpointer".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Errors are not fatal: the next commit signals again, and the writer falls
                // back to checkpointing itself if this keeps failing.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        })
        .map_err(crate::OpenError::Thread)?;
    let hook = move |wal: &mut rusqlite::hooks::Wal, pages: i32| -> rusqlite::Result<()> {
        if pages >= INLINE_PAGES {
            // Best effort: a failed checkpoint must not turn a successful commit into an
            // error.
            let _ = wal.checkpoint();
        } else if pages >= SIGNAL_PAGES {
            // Full: a checkpoint is already pending, which will cover these pages too.
            let _ = tx.try_send(());
        }
        Ok(())
    };
    writer
        .wal_hook(Some(hook))
        .map_err(|e| crate::OpenError::Sqlite {
            path: path.to_path_buf(),
            kind: super::values::kind_of(&e),
            message: e.to_string(),
        })
}
