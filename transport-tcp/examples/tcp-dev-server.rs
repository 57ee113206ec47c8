//! A development chat server on TCP, in memory, for trying both modes by hand.
//!
//! Run with: `cargo run -p transport-tcp --example tcp-dev-server`
//!
//! It listens on `127.0.0.1:9090` (or `$TCP_ADDR`), keeps everything in memory, and lets
//! guests sign in by name (`/nick alice` in line mode, `hello` with `{"guest":"alice"}` in
//! binary mode). It also creates the password account `dev` / `development` so that `/login`
//! can be tried. Then: `nc 127.0.0.1 9090` and type. See transport-tcp/README.md.
//!
//! Stop it with Ctrl-C: open connections are told "server shutting down" and closed.

use chat_core::{Engine, Limits};
use std::sync::Arc;
use transport_tcp::{TcpConfig, TcpServer};

/// The engine the README's `nc` session runs against: in memory, guests allowed. The
/// README's test (`tests/tcp/readme.rs`) builds the same.
fn engine() -> Engine {
    let limits = Limits {
        allow_guests: true,
        ..Limits::default()
    };
    Engine::builder(Arc::new(chat_store::MemoryStore::new()))
        .limits(limits)
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("TCP_ADDR").unwrap_or_else(|_| "127.0.0.1:9090".to_string());
    let engine = engine();
    engine.accounts().register("dev", "development").await?;
    let server = TcpServer::new(engine, TcpConfig::default())?;

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    println!("chat TCP server on {addr} (both modes; guests allowed)");
    println!("  people:   nc {} {}", addr.ip(), addr.port());
    println!("            then /nick <name> (or /login dev development), /create <room>, ...");
    println!("  programs: 4-byte big-endian length + postcard frames; first frame `hello`");

    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
        })
        .await?;
    Ok(())
}
