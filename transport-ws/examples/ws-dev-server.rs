//! A development chat server on WebSocket, in memory, for trying the protocol by hand.
//!
//! Run with: `cargo run -p transport-ws --example ws-dev-server`
//!
//! It listens on `127.0.0.1:8080` (or `$WS_ADDR`), creates the users `alice` and `bob` and a
//! public room `lobby`, and prints a token for each user and ready-to-paste `websocat`
//! commands. **It also enables the insecure development identity** (`?user=<name>`, anyone
//! may claim any name) so that new users can be tried without a token: never copy this
//! configuration to a server others can reach.
//!
//! Stop it with Ctrl-C: open connections are closed gracefully with 1001.

use chat_core::{Engine, RoomKind, Timestamp};
use std::sync::Arc;
use transport_ws::{WsConfig, WsServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("WS_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_string());
    let engine = Engine::new(Arc::new(chat_store::MemoryStore::new()));

    let lobby = engine.create_system_room("lobby", RoomKind::Public).await?;
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let user = engine
            .store()
            .create_user(name, None, false, Timestamp::now())
            .await?;
        let token = engine.accounts().issue_token(user.id).await?;
        tokens.push((name, token));
    }

    let mut config = WsConfig::default();
    // DEVELOPMENT ONLY: `?user=<name>` connects as that user with no credential at all.
    config.auth.insecure_dev_user_param = Some("user".to_string());
    let server = WsServer::new(engine, config)?;

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    println!(
        "chat WebSocket server on ws://{addr}/  (room \"lobby\" has id {})",
        lobby.id
    );
    for (name, token) in &tokens {
        println!("  {name}: websocat 'ws://{addr}/?token={}'", token.as_str());
    }
    println!("  or, development identity: websocat 'ws://{addr}/?user=carol'");
    println!("then type JSON lines, e.g.");
    println!(r#"  {{"type":"join","name":"lobby","id":1}}"#);
    println!(
        r#"  {{"type":"subscribe","room":{},"since_seq":0,"id":2}}"#,
        lobby.id
    );
    println!(
        r#"  {{"type":"send","room":{},"body":"hello","id":3}}"#,
        lobby.id
    );

    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
        })
        .await?;
    Ok(())
}
