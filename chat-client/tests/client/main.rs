//! chat-client against the real servers over real sockets on 127.0.0.1:0: one test binary
//! (one link on a busy machine), a module per theme.

mod basics;
mod cli;
mod common;
mod resume;
