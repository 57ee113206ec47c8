//! # chat-store
//!
//! Implementations of [`chat_core::Store`], the persistence boundary of the chat engine, and
//! the conformance suite that every implementation must pass.
//!
//! - [`SqliteStore`] keeps everything in one SQLite file: the embedded default, durable,
//!   with group commit and crash-safe acknowledgements (see its docs).
//! - [`MemoryStore`] keeps everything in process memory: for tests, examples and ephemeral
//!   single-node servers.
//! - [`conformance`] is the executable form of the contracts written on [`chat_core::Store`]:
//!   one `async fn` per behaviour, and the [`store_conformance_tests!`] macro that turns them
//!   into one `#[tokio::test]` each for a given store. A new store is checked by adding one
//!   test file with one line:
//!
//! ```
//! // tests/conformance_memory.rs
//! chat_store::store_conformance_tests!(|| async { std::sync::Arc::new(chat_store::MemoryStore::new()) });
//! # fn main() {}
//! ```
//!
//! The engine in `chat-core` only ever talks to an `Arc<dyn Store>`:
//!
//! ```
//! use std::sync::Arc;
//! use chat_core::Store;
//! use chat_store::{MemoryStore, SqliteConfig, SqliteStore};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! # drop(store);
//! # let dir = tempfile::tempdir().unwrap();
//! # let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
//! # rt.block_on(async {
//! let store: Arc<dyn Store> =
//!     Arc::new(SqliteStore::open(dir.path().join("chat.db"), SqliteConfig::default()).await?);
//! # drop(store);
//! # Ok::<_, chat_store::OpenError>(())
//! # }).unwrap();
//! ```
//!
//! # Dependencies, and why they earn their place
//!
//! - **`rusqlite`** (with `bundled`): SQLite is the embedded database: one file, no server,
//!   transactions, WAL, and decades of crash-safety testing that no hand-written log format
//!   in this crate could match. `rusqlite` is the thin, mature, safe binding to it; the
//!   `bundled` feature compiles a known SQLite version into the binary, so a fresh machine
//!   needs no system library and every deployment runs the version the tests ran; `hooks`
//!   gives the WAL hook that moves checkpoints off the writer thread.
//! - **`thiserror`**: the one error type of this crate ([`OpenError`]) with no hand-written
//!   `Display`/`Error` boilerplate; already a dependency of `chat-core`.
//! - **`tempfile`** (tests only): the durable paths must be tested on real files (WAL,
//!   fsync, reopening, crashes), and `tempfile` gives each test its own directory that is
//!   removed afterwards, even when the test fails.

#![warn(missing_docs)]

pub mod conformance;
pub mod error;
pub mod memory;
pub mod sqlite;

pub use error::OpenError;
pub use memory::MemoryStore;
pub use sqlite::{SqliteConfig, SqliteStore, Synchronous, WriteStats};
