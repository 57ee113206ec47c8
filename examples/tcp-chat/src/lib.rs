//! Run with: cargo run -p tcp-chat
//!
//! The terminal chat: people connect with `nc 127.0.0.1 9090` (or `chat-cli`), pick a guest
//! name with `/nick`, `/create` and `/join` public channels, `/leave` them, and talk in the
//! current one. All of it is transport-tcp's line mode on an engine that admits guests.

use chat_core::{Engine, Limits};
use std::future::Future;
use std::sync::Arc;

/// An in-memory engine that lets guests in: a name, no password.
pub fn engine() -> Engine {
    let limits = Limits {
        allow_guests: true,
        ..Limits::default()
    };
    Engine::builder(Arc::new(chat_store::MemoryStore::new()))
        .limits(limits)
        .build()
}

/// Serves the chat on `listener` until `shutdown` resolves, then closes every connection.
pub async fn run(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), transport_tcp::Error> {
    let mut config = transport_tcp::TcpConfig::default();
    config.banner = "Welcome to tcp-chat.".into();
    transport_tcp::serve(listener, engine(), config, shutdown).await
}
