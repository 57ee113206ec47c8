//! The crate's one error type, and the stable codes clients see.

use crate::ids::{RoomId, Seq};
use serde::{Deserialize, Serialize};

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine, in a store, or with a client's input.
///
/// Every variant maps to one stable [`ErrorCode`] through [`Error::code`]; that code (not the
/// message) is what clients should match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame could not be decoded, or a field has the wrong type.
    #[error("malformed frame: {0}")]
    BadFrame(String),
    /// The client asked for a protocol version this server does not speak.
    #[error("protocol version {requested} is not supported (this server speaks {supported})")]
    UnsupportedVersion {
        /// What the client asked for.
        requested: u32,
        /// What this server speaks.
        supported: u32,
    },
    /// The request needs an authenticated session.
    #[error("not authenticated")]
    Unauthenticated,
    /// Unknown user or wrong password; deliberately the same error for both.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The token is unknown, revoked or expired.
    #[error("the token is invalid or has expired")]
    InvalidToken,
    /// The user may not do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No such room.
    #[error("room {0} does not exist")]
    RoomNotFound(RoomId),
    /// No public room has this name.
    #[error("no public room is named {0:?}")]
    RoomNameNotFound(String),
    /// No such user.
    #[error("user {0:?} does not exist")]
    UserNotFound(String),
    /// The user is not a member of the room.
    #[error("not a member of room {0}")]
    NotMember(RoomId),
    /// A unique thing (username, public room name) is taken.
    #[error("{0} is already taken")]
    AlreadyExists(&'static str),
    /// A message body with no text.
    #[error("message body is empty")]
    EmptyBody,
    /// A message body over the limit.
    #[error("message body is {size} bytes; the limit is {limit}")]
    BodyTooLarge {
        /// The body's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A field failed validation.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A client asked to resume from a seq the room has not reached.
    #[error("seq {requested} is ahead of room {room}'s latest seq {latest}")]
    SeqAhead {
        /// The room.
        room: RoomId,
        /// What the client asked for.
        requested: Seq,
        /// The room's latest seq.
        latest: Seq,
    },
    /// The session sends too fast.
    #[error("rate limited: slow down")]
    RateLimited,
    /// A limit on how many things a session or user may hold.
    #[error("limit reached: {0}")]
    LimitReached(&'static str),
    /// No such invite code.
    #[error("unknown invite code")]
    InviteUnknown,
    /// The invite's expiry has passed.
    #[error("the invite has expired")]
    InviteExpired,
    /// The invite's maximum number of uses is reached.
    #[error("the invite has been used up")]
    InviteExhausted,
    /// The store failed. The operation did not take effect (appends are never acknowledged
    /// on a store error).
    #[error("storage error ({kind:?}): {message}")]
    Storage {
        /// The broad cause.
        kind: StorageErrorKind,
        /// Details for logs.
        message: String,
    },
    /// A bug or an invariant violation; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a store operation failed; lets callers tell a transient failure from a fatal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageErrorKind {
    /// Locked or busy beyond the busy timeout; retrying may succeed.
    Busy,
    /// The disk is full.
    Full,
    /// The database is read-only.
    ReadOnly,
    /// The database is corrupt or not a database.
    Corrupt,
    /// The schema is newer than this build understands.
    Incompatible,
    /// Anything else.
    Other,
}

/// Stable, machine-readable error codes. These strings are part of the protocol; they never
/// change meaning. See `docs/PROTOCOL.md` for the full table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame could not be decoded.
    BadFrame,
    /// Unsupported protocol version.
    UnsupportedVersion,
    /// Authentication needed.
    Unauthenticated,
    /// Wrong username or password.
    InvalidCredentials,
    /// Token invalid or expired.
    InvalidToken,
    /// Not allowed.
    Forbidden,
    /// No such room.
    RoomNotFound,
    /// No such user.
    UserNotFound,
    /// Not a member of the room.
    NotMember,
    /// Name taken.
    AlreadyExists,
    /// Empty message body.
    EmptyBody,
    /// Message body over the limit.
    BodyTooLarge,
    /// A field failed validation.
    InvalidField,
    /// Resume point ahead of the log.
    SeqAhead,
    /// Too fast.
    RateLimited,
    /// A per-session or per-user limit.
    LimitReached,
    /// Unknown invite code.
    InviteUnknown,
    /// Expired invite.
    InviteExpired,
    /// Used-up invite.
    InviteExhausted,
    /// Store failure; the request did not take effect.
    StorageError,
    /// Server bug.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::UserNotFound => "user_not_found",
            ErrorCode::NotMember => "not_member",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::EmptyBody => "empty_body",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::SeqAhead => "seq_ahead",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::InviteUnknown => "invite_unknown",
            ErrorCode::InviteExpired => "invite_expired",
            ErrorCode::InviteExhausted => "invite_exhausted",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::Internal => "internal",
        }
    }

    /// Every code, for documentation and exhaustive tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthenticated,
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidToken,
        ErrorCode::Forbidden,
        ErrorCode::RoomNotFound,
        ErrorCode::UserNotFound,
        ErrorCode::NotMember,
        ErrorCode::AlreadyExists,
        ErrorCode::EmptyBody,
        ErrorCode::BodyTooLarge,
        ErrorCode::InvalidField,
        ErrorCode::SeqAhead,
        ErrorCode::RateLimited,
        ErrorCode::LimitReached,
        ErrorCode::InviteUnknown,
        ErrorCode::InviteExpired,
        ErrorCode::InviteExhausted,
        ErrorCode::StorageError,
        ErrorCode::Internal,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The stable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::BadFrame(_) => ErrorCode::BadFrame,
            Error::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Error::Unauthenticated => ErrorCode::Unauthenticated,
            Error::InvalidCredentials => ErrorCode::InvalidCredentials,
            Error::InvalidToken => ErrorCode::InvalidToken,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::RoomNotFound(_) | Error::RoomNameNotFound(_) => ErrorCode::RoomNotFound,
            Error::UserNotFound(_) => ErrorCode::UserNotFound,
            Error::NotMember(_) => ErrorCode::NotMember,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::EmptyBody => ErrorCode::EmptyBody,
            Error::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            Error::Invalid { .. } => ErrorCode::InvalidField,
            Error::SeqAhead { .. } => ErrorCode::SeqAhead,
            Error::RateLimited => ErrorCode::RateLimited,
            Error::LimitReached(_) => ErrorCode::LimitReached,
            Error::InviteUnknown => ErrorCode::InviteUnknown,
            Error::InviteExpired => ErrorCode::InviteExpired,
            Error::InviteExhausted => ErrorCode::InviteExhausted,
            Error::Storage { .. } => ErrorCode::StorageError,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The message a client may see. Internal and storage details stay in the server's logs.
    pub fn public_message(&self) -> String {
        match self {
            Error::Storage { .. } => "the server could not store or read data; try again".into(),
            Error::Internal(_) => "internal server error".into(),
            other => other.to_string(),
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn storage_details_are_not_shown_to_clients() {
        let e = Error::Storage {
            kind: StorageErrorKind::Full,
            message: "/var/lib/chat.db: disk full".into(),
        };
        assert_eq!(e.code(), ErrorCode::StorageError);
        assert!(!e.public_message().contains("/var/lib"));
    }
}
