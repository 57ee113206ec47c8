//! Integration tests over real sockets on 127.0.0.1:0: one test binary, split by topic.

mod common;

#[cfg(feature = "axum")]
mod axum_route;
mod chat;
mod codec;
mod embed;
mod handshake;
mod limits;
mod pump;
mod shutdown;
