//! The reader pool: read-only connections used on Tokio's blocking pool.
//!
//! In WAL mode readers never wait for the writer (nor it for them): each read sees the last
//! committed state as of its start. So history, look-ups and unread counts run here, in
//! parallel with each other and with the writer's batches, instead of queueing behind
//! writes. A semaphore bounds how many run at once (and thus how many connections exist);
//! connections are opened lazily and reused.
//!
//! Acknowledged writes are always visible: the writer answers only after `COMMIT` returned,
//! and every read starts a new read transaction after that.

use super::schema::open_reader;
use super::values::Db;
use chat_core::{Error, Result, StorageErrorKind};
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

fn poisoned() -> Error {
    Error::Storage {
        kind: StorageErrorKind::Other,
        message: "reader pool lock poisoned".into(),
    }
}

impl Readers {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration, size: usize) -> Readers {
        Readers {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
        }
    }

    fn take(&self) -> Result<Connection> {
        if let Some(conn) = self.idle.lock().map_err(|_| poisoned())?.pop() {
            return Ok(conn);
        }
        open_reader(&self.path, self.busy_timeout).db()
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }

    /// Runs `f` on a reader connection on the blocking pool.
    pub(crate) async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("reader pool closed".into()))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = this.take()?;
            let result = f(&mut conn);
            // A connection is only returned if `f` left no transaction open; one that did
            // (it cannot with the functions in `ops`, but be safe) is closed instead.
            if conn.is_autocommit() {
                this.put(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }
}
