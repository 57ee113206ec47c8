//! The store conformance suite, run on [`chat_store::SqliteStore`], each test on a fresh
//! database file in its own temporary directory (removed when the test's store is dropped).

mod support;

chat_store::store_conformance_tests!(support::TempStore::shared);
