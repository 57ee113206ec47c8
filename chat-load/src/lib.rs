//! # chat-load
//!
//! A load generator for a running chat server, for operators sizing a deployment and for
//! the project's own figures (`docs/BENCHMARKS.md`). The binary is `chat-load`; `--help`
//! explains every flag.
//!
//! ```text
//! chat-load --wire ws -n 1000 -k 1 -s 1 --rate 200 --size 100 -d 10 --server-pid $PID
//! chat-load --wire tcp -n 1000 -s 10 --rate 0 --in-flight 32
//! chat-load --wire ws -n 10000 --idle -d 10 --server-pid $PID
//! ```
//!
//! ## What a run does
//!
//! 1. **Accounts and rooms**, through the server's HTTP API: `--users` accounts (registered
//!    with a password, or as guests), `--rooms` public rooms created by the first account,
//!    and the joins each account needs — all with bounded concurrency and within
//!    `--setup-timeout`. Connections share accounts round-robin: one account may hold many
//!    sessions, and each registration costs the server an argon2 hash (tens of ms of a core),
//!    so a thousand connections need only a hundred hashes, not a thousand.
//! 2. **Connections**: `--connections` receivers (each subscribed to one room) and
//!    `--senders` senders, opened `--connect-concurrency` at a time with
//!    [`chat_client::Client`] — the project's own client, so the tool measures the protocol
//!    as real clients speak it — over WebSocket (JSON or postcard) or TCP. Each
//!    connection's connect time goes into a histogram.
//! 3. **Traffic**: the senders send `--rate` messages per second in total on a fixed schedule
//!    ([`Pacer`]; open loop, so a slow server is not offered less; the senders' schedules
//!    interleaved, [`Pacer::phase`], so that the total is evenly spaced), or as fast as the
//!    server acknowledges with at most `--in-flight` unacknowledged per sender. Each body carries
//!    its send time ([`make_body`]); receivers record send → receive latency in HDR
//!    histograms ([`Latency`]). Then the senders stop and the tool waits at most `--drain`
//!    for the outstanding deliveries. With `--idle` it only holds the connections.
//! 4. **Accounting**: every receiver should receive exactly the messages acknowledged in its
//!    room; [`LossReport`] counts shortfalls per receiver. With `--server-pid`, the server's
//!    VmRSS and CPU time come from `/proc` ([`ProcSample`]).
//!
//! A progress line goes to stderr once a second; at the end, a table and one JSON line
//! ([`Report`]) go to stdout. Every wait is bounded; the tool stops by itself. Targets must
//! be loopback unless `--allow-remote` is given.
//!
//! ## What the figures mean, and do not
//!
//! - Latency is measured when the receiving task takes the message from the client's event
//!   stream: it includes the server, both kernels' socket buffers, the client's decoding and
//!   any wait for the tool's own CPU. On one machine the tool competes with the server for
//!   the cores; the published figures say so.
//! - Connections are not closed and reopened during a run, and the client never reconnects
//!   ([`chat_client::ReconnectPolicy::never`]): a drop is counted, not hidden.
//!
//! ## Dependencies, and why each earns its place
//!
//! - `chat-client` (without its `cli` feature: no terminal crates): the client under test,
//!   never a copy of the protocol. `chat-core` for the `RoomId` it takes.
//! - `hdrhistogram`: percentiles of millions of samples in fixed memory, mergeable across
//!   tasks; the standard tool for latency distributions (no sorting of raw samples).
//! - `clap`: the workspace's flag parser; `--help` is generated from the doc comments.
//! - `reqwest` (JSON, **no TLS**, as the chat-server's tests): the HTTP API setup. A load
//!   test targets loopback or a host it is allowed on, plainly; not compiling a TLS stack
//!   saves minutes of C build.
//! - `serde`, `serde_json`: the API's bodies and the report's JSON line.
//! - `tokio` (multi-threaded runtime, timers, sync, signal): thousands of connections on a
//!   few threads; Ctrl-C stops a run.
//! - `thiserror`: the one error enum, [`LoadError`].
//! - `mimalloc` (binary only, as the global allocator): the tool decodes every delivery into
//!   owned strings, and glibc's `malloc`/`free` were 17 % of its CPU at saturation (6 % with
//!   mimalloc; about 13 % less CPU per delivery in all, measured in alternating runs). A load
//!   generator should spend the machine on load, not on its allocator. The server and the
//!   libraries keep the system allocator: that choice is the embedder's.

#![warn(missing_docs)]

mod api;
mod args;
mod error;
mod pacer;
mod procfs;
mod report;
mod run;
mod stats;

pub use api::{Api, bounded};
pub use args::{Accounts, Args, Wire, check_loopback, host_port_of_url};
pub use error::LoadError;
pub use pacer::Pacer;
pub use procfs::{ProcSample, parse_cpu_ticks, parse_vm_rss};
pub use report::{Report, ServerReport, ToolReport};
pub use run::{make_body, parse_sent_ns, run};
pub use stats::{Latency, LatencySummary, LossReport, ReceiverTally};
