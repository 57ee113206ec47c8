//! # chat-store
//!
//! Implementations of [`chat_core::Store`], the persistence boundary of the chat engine, and
//! the conformance suite that every implementation must pass.
//!
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
//! use chat_store::MemoryStore;
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! # drop(store);
//! ```

#![warn(missing_docs)]

pub mod conformance;
pub mod memory;

pub use memory::MemoryStore;
