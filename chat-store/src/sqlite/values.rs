//! How domain values become SQL values and back, and how SQLite's errors become
//! [`chat_core::Error`]s.

use chat_core::{Error, Result, Role, RoomKind, Seq, StorageErrorKind};
use rusqlite::ErrorCode;
use rusqlite::types::Type;

/// A `u64` (an id, a seq) as an SQL integer for a *query* parameter, saturating at
/// `i64::MAX`.
///
/// Stored ids and seqs never exceed `i64::MAX` (SQLite hands out the ids; seqs count
/// entries), so every value above it means "past everything", and `i64::MAX` means the same
/// in every comparison the store makes (`seq < ?`, `seq > ?`, `id = ?`, `id > ?`). A plain
/// `as i64` would turn `u64::MAX` into `-1` and flip those comparisons.
pub(crate) fn cap(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `usize` (a page size) as an SQL `LIMIT`, saturating like [`cap`].
pub(crate) fn cap_limit(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A read marker as stored: the `u64`'s two's-complement bits.
///
/// Markers are the one `u64` the store must give back exactly as it was given: the trait
/// accepts any seq in `mark_read` (the engine, not the store, refuses seqs past the end), and
/// returns the marker, so `Seq(u64::MAX)` must come back as `Seq(u64::MAX)`, not capped.
/// The price is that a marker above `i64::MAX` reads as negative *in SQL*, so markers are
/// never compared in SQL: `mark_read` takes the maximum in Rust, and queries get the
/// marker through [`cap`].
pub(crate) fn marker_to_sql(seq: Seq) -> i64 {
    i64::from_ne_bytes(seq.0.to_ne_bytes())
}

/// The inverse of [`marker_to_sql`].
pub(crate) fn marker_from_sql(v: i64) -> Seq {
    Seq(u64::from_ne_bytes(v.to_ne_bytes()))
}

pub(crate) fn role_to_sql(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Admin => "admin",
        Role::Owner => "owner",
    }
}

pub(crate) fn role_from_sql(col: usize, s: &str) -> rusqlite::Result<Role> {
    match s {
        "member" => Ok(Role::Member),
        "admin" => Ok(Role::Admin),
        "owner" => Ok(Role::Owner),
        other => Err(unknown(col, "role", other)),
    }
}

pub(crate) fn kind_to_sql(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Direct => "direct",
        RoomKind::Group => "group",
        RoomKind::Public => "public",
    }
}

pub(crate) fn kind_from_sql(col: usize, s: &str) -> rusqlite::Result<RoomKind> {
    match s {
        "direct" => Ok(RoomKind::Direct),
        "group" => Ok(RoomKind::Group),
        "public" => Ok(RoomKind::Public),
        other => Err(unknown(col, "room kind", other)),
    }
}

/// A value this build does not know in a column it wrote itself: the data is damaged (a
/// newer schema would have raised `user_version`, and been refused at open).
pub(crate) fn unknown(col: usize, what: &str, got: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        Type::Text,
        format!("unknown {what} {got}").into(),
    )
}

/// The [`StorageErrorKind`] of an SQLite error.
pub(crate) fn kind_of(e: &rusqlite::Error) -> StorageErrorKind {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StorageErrorKind::Busy,
            ErrorCode::DiskFull => StorageErrorKind::Full,
            ErrorCode::ReadOnly => StorageErrorKind::ReadOnly,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StorageErrorKind::Corrupt,
            _ => StorageErrorKind::Other,
        },
        // A value of the wrong type or range in a column this store wrote: damaged data.
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => StorageErrorKind::Corrupt,
        _ => StorageErrorKind::Other,
    }
}

/// An SQLite error as the store reports it.
pub(crate) fn storage(e: rusqlite::Error) -> Error {
    Error::Storage {
        kind: kind_of(&e),
        message: e.to_string(),
    }
}

/// `?` for SQLite results inside functions returning [`chat_core::Result`] (the orphan rule
/// forbids a `From` impl between the two foreign error types).
pub(crate) trait Db<T> {
    /// The result with its error mapped by [`storage`].
    fn db(self) -> Result<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T> {
        self.map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_never_wrap() {
        assert_eq!(cap(0), 0);
        assert_eq!(cap(42), 42);
        assert_eq!(cap(i64::MAX as u64), i64::MAX);
        assert_eq!(cap(u64::MAX), i64::MAX);
        assert_eq!(cap_limit(usize::MAX), i64::MAX);
    }

    #[test]
    fn markers_round_trip_exactly() {
        for v in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(marker_from_sql(marker_to_sql(Seq(v))), Seq(v));
        }
    }

    #[test]
    fn enums_round_trip() {
        for r in [Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(role_from_sql(0, role_to_sql(r)).unwrap(), r);
        }
        for k in [RoomKind::Direct, RoomKind::Group, RoomKind::Public] {
            assert_eq!(kind_from_sql(0, kind_to_sql(k)).unwrap(), k);
        }
        assert!(role_from_sql(0, "king").is_err());
        assert_eq!(
            kind_of(&role_from_sql(0, "king").unwrap_err()),
            StorageErrorKind::Corrupt
        );
    }
}
