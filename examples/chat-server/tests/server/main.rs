//! End-to-end tests of chat-server over real sockets: the server runs in-process on
//! `127.0.0.1:0` (in memory, or on a temporary SQLite file) and is driven with reqwest,
//! tokio-tungstenite and — in `browser.rs` — a real headless Chromium.

mod browser;
mod common;
mod http;
mod http_conn;
mod sockets;
mod sqlite;
mod tcp;
