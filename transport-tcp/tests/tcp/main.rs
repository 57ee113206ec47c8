//! Integration tests over real sockets on 127.0.0.1:0: one test binary, split by topic.

mod binary;
mod chat;
mod common;
mod limits;
mod line;
mod readme;
mod shutdown;
mod split;
