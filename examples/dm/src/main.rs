//! Run with: cargo run -p dm
//!
//! Personal one-to-one chat over WebSocket on 127.0.0.1:3000; see examples/README.md.
//! The conversations are kept in `./dm.db` (SQLite), so history survives a restart.

use chat_store::{SqliteConfig, SqliteStore};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = SqliteStore::open("dm.db", SqliteConfig::default()).await?;
    let engine = chat_core::Engine::new(Arc::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("dm on http://127.0.0.1:3000/ — DEVELOPMENT ONLY: ?user_id= is trusted as is");
    println!(r#"  websocat "ws://127.0.0.1:3000/ws?user_id=alice&recipient_id=bob""#);
    dm::run(listener, engine).await?;
    Ok(())
}
