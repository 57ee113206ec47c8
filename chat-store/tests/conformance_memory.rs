//! The store conformance suite, run on [`MemoryStore`].

use chat_store::MemoryStore;
use std::sync::Arc;

chat_store::store_conformance_tests!(|| async { Arc::new(MemoryStore::new()) });
