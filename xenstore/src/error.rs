//! The store's one error type.

use crate::wire::XsError;
use std::io;
use std::time::Duration;

/// What can go wrong talking to (or serving) a xenstore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store answered a request with an error (`EACCES`, `ENOENT`, `EAGAIN`...).
    #[error("xenstore {op} {path:?}: {errno}")]
    Store {
        /// The request type (READ, WRITE, ...).
        op: &'static str,
        /// The path it was about.
        path: String,
        /// The error the store sent (one of `xsd_errors`).
        errno: XsError,
    },
    /// The store connection broke or spoke nonsense.
    #[error("xenstore protocol: {0}")]
    Protocol(String),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A request got no reply in time (the store is dead or stuck).
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// A value read from the store is malformed.
    #[error("bad value for {what}: {value:?}")]
    BadValue {
        /// Which key or field.
        what: String,
        /// What was found.
        value: String,
    },
    /// No store can be reached here.
    #[error("{0}")]
    Unavailable(String),
    /// A limit was hit (a watch queue, a payload size).
    #[error("{0}")]
    Limit(String),
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The error the store answered with, if it answered with one.
    pub fn errno(&self) -> Option<XsError> {
        match self {
            Error::Store { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Whether this is the store's `ENOENT`.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(XsError::ENOENT)
    }

    /// Whether this is the store's `EAGAIN` (a transaction conflict: retry).
    pub fn is_again(&self) -> bool {
        self.errno() == Some(XsError::EAGAIN)
    }

    /// Whether this is the store's `EACCES`.
    pub fn is_denied(&self) -> bool {
        self.errno() == Some(XsError::EACCES)
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::io("system call", io::Error::from(e))
    }
}

/// Results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
