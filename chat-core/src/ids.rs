//! Newtype identifiers and scalar domain values.
//!
//! Every id is a distinct type so that a `RoomId` can never be passed where a `UserId` is
//! expected. All of them serialize as plain numbers (`#[serde(transparent)]`), so the wire
//! format stays simple for JSON clients.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A user account, assigned by the store.
    UserId
);
id_type!(
    /// A room (direct, group or public), assigned by the store.
    RoomId
);
id_type!(
    /// One live connection of a user (a device, a tab). Assigned by the hub; unique per node
    /// for the lifetime of the process.
    SessionId
);

/// Position of an entry in a room's log.
///
/// Seqs are assigned by the store when an entry is appended: per room, starting at 1,
/// gap-free and strictly increasing. `Seq(0)` means "before the first entry", which is what
/// a client that has seen nothing passes as `since_seq`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The position before the first entry of every room.
    pub const ZERO: Seq = Seq(0);

    /// The seq that follows this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch, as assigned by the server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }

    /// This instant plus `d` (saturating).
    pub fn plus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis() as i64))
    }
}
