//! [`OpenError`]: the one error type of this crate, for what can go wrong before a store
//! exists (opening a file, checking its schema, validating a configuration).
//!
//! Once a store is open, every failure is a [`chat_core::Error`], as the [`chat_core::Store`]
//! trait requires; [`OpenError`] converts into one too, so an application can treat both
//! alike (`?` works in functions returning `chat_core::Result`).

use chat_core::StorageErrorKind;
use std::path::PathBuf;

/// Why a store could not be opened.
///
/// Whatever the variant, a file that was refused is left exactly as it was: every check
/// that can refuse a file runs before the first write to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file exists but is not an SQLite database (or its header is damaged).
    #[error("{path}: not a database: {message}")]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// The file is a database written by a newer version of this crate (its schema version
    /// is higher than this build knows), or a database of some other application.
    #[error("{path}: {reason}")]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// The configuration is unusable (e.g. zero reader connections).
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// SQLite failed while opening, configuring or migrating the database.
    #[error("{path}: {message}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The broad cause, as for any other storage error.
        kind: StorageErrorKind,
        /// What SQLite said.
        message: String,
    },
    /// The writer thread could not be started.
    #[error("could not start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl OpenError {
    /// The [`StorageErrorKind`] this error is reported as when converted into a
    /// [`chat_core::Error`].
    pub fn kind(&self) -> StorageErrorKind {
        match self {
            OpenError::NotADatabase { .. } => StorageErrorKind::Corrupt,
            OpenError::Incompatible { .. } => StorageErrorKind::Incompatible,
            OpenError::Sqlite { kind, .. } => *kind,
            OpenError::Config(_) | OpenError::Thread(_) => StorageErrorKind::Other,
        }
    }
}

impl From<OpenError> for chat_core::Error {
    fn from(e: OpenError) -> chat_core::Error {
        chat_core::Error::Storage {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}
