//! The crate's one error type.

use thiserror::Error;

/// Why a load run could not be carried out. (Problems *during* the run — a refused send, a
/// dropped connection — are counted in the report instead: they are results, not failures.)
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The flags do not make sense together, or a target is not what it should be.
    #[error("configuration: {0}")]
    Config(String),
    /// A target address is not loopback and `--allow-remote` was not given.
    #[error(
        "{0} is not a loopback address; a load test can hurt a production server, so pass \
         --allow-remote to drive a remote one on purpose"
    )]
    Remote(String),
    /// The HTTP API could not be reached.
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        /// The request's URL.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP API answered with an error.
    #[error("{url} answered {status}: {body}{hint}")]
    Api {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The response body (truncated).
        body: String,
        /// What to do about it, when known (e.g. which server flag to raise).
        hint: String,
    },
    /// A connection could not be opened or a setup request failed.
    #[error("connection {index}: {source}")]
    Client {
        /// Which connection.
        index: usize,
        /// The client's error.
        #[source]
        source: chat_client::ClientError,
    },
    /// A setup phase did not finish within its bound.
    #[error("{0} did not finish within {1:?}")]
    Timeout(&'static str, std::time::Duration),
    /// `/proc/<pid>` could not be read (wrong `--server-pid`, or not Linux).
    #[error("reading {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
