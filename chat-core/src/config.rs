//! Every limit of the engine, explicit and documented in one place.

use std::time::Duration;

/// Limits and tunables. `Limits::default()` is safe to expose to the internet; every field
/// is documented with its default and why it is that.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message body, in bytes of UTF-8. Default 16 KiB: enough for long prose,
    /// small enough that one room's replay fits comfortably in memory.
    pub max_body_bytes: usize,
    /// How far (in entries) a session may fall behind a room it reads, and the capacity of
    /// its queue of replies and events. Default 1024. Each room keeps this many recent
    /// entries, plus a quarter, for its readers; a session further behind, or whose queue is
    /// full when a frame must be queued, is closed as `slow_consumer` (it can come back and
    /// resume). Memory per room and per session is therefore bounded, and a stalled client
    /// never slows the publisher or anyone else.
    pub session_queue: usize,
    /// Most entries replayed by one `subscribe` with `since_seq`. Default 500. Beyond this,
    /// the reply names the `gap` explicitly and the client pages it in with `history`.
    pub max_replay: usize,
    /// Default page size of `history` when the client gives none. Default 50.
    pub default_history_page: usize,
    /// Most rooms one session may subscribe to at once. Default 1000.
    pub max_subscriptions_per_session: usize,
    /// Longest room name, in characters. Default 100.
    pub max_room_name_chars: usize,
    /// Longest `client_msg_id`, in bytes. Default 64.
    pub max_client_msg_id_bytes: usize,
    /// Requests per second a session may sustain (token bucket refill). Default 20.
    pub requests_per_second: f64,
    /// Burst of requests above the sustained rate. Default 40.
    pub request_burst: f64,
    /// Consecutive rate-limited requests after which the session is closed as
    /// `policy_violation`. Default 50: a client that ignores `rate_limited` errors is cut off.
    pub max_rate_violations: u32,
    /// Typing indicators per second a session may send (excess is dropped silently; typing is
    /// best-effort by nature). Default 1, burst 3.
    pub typing_per_second: f64,
    /// Burst of typing indicators. Default 3.
    pub typing_burst: f64,
    /// How long a room waits for a missing seq (an out-of-order arrival whose predecessor has
    /// not arrived) before reading it from the store. Default 250 ms. Locally this only fires
    /// if a publisher died between append and delivery; across nodes it repairs events a
    /// backplane lost.
    pub gap_fill_after: Duration,
    /// Most out-of-order entries a room buffers while waiting for a missing seq; past this the
    /// gap is filled from the store at once. Default 4096.
    pub max_reorder_buffer: usize,
    /// Rooms with more live subscribers than this on a node do not broadcast `presence`
    /// events. Default 1000. Each join or leave would otherwise cost one frame per subscriber
    /// (O(N²) frames while a big room fills up) and flood idle clients' queues; in big rooms,
    /// clients ask `members` for who is online instead.
    pub presence_broadcast_max: usize,
    /// Lifetime of a login token. Default 7 days.
    pub token_ttl: Duration,
    /// Default lifetime of an invite. Default 7 days.
    pub invite_ttl: Duration,
    /// Longest accepted password, in bytes; longer ones are refused before hashing so that a
    /// huge password cannot be used to burn CPU. Default 1024.
    pub max_password_bytes: usize,
    /// Shortest accepted password for registration, in characters. Default 8.
    pub min_password_chars: usize,
    /// Whether guests (a name, no password) may sign in. Default false.
    pub allow_guests: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024,
            session_queue: 1024,
            max_replay: 500,
            default_history_page: 50,
            max_subscriptions_per_session: 1000,
            max_room_name_chars: 100,
            max_client_msg_id_bytes: 64,
            requests_per_second: 20.0,
            request_burst: 40.0,
            max_rate_violations: 50,
            typing_per_second: 1.0,
            typing_burst: 3.0,
            gap_fill_after: Duration::from_millis(250),
            max_reorder_buffer: 4096,
            presence_broadcast_max: 1000,
            token_ttl: Duration::from_secs(7 * 24 * 3600),
            invite_ttl: Duration::from_secs(7 * 24 * 3600),
            max_password_bytes: 1024,
            min_password_chars: 8,
            allow_guests: false,
        }
    }
}
