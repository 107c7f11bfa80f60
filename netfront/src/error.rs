//! netfront's error type.

use xenio_xen_sys::DomId;

/// What can go wrong in the frontend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform (store, grants, event channels) failed.
    #[error(transparent)]
    Platform(xenio_xenbus::Error),
    /// A ring failed; a broken ring means the backend wrote nonsense.
    #[error(transparent)]
    Ring(#[from] xenio_ring::RingError),
    /// The backend answered something impossible.
    #[error("backend {backend} misbehaved: {what}")]
    Backend {
        /// The backend domain.
        backend: DomId,
        /// What it did.
        what: String,
    },
    /// A key is missing or malformed.
    #[error("key {key}: {problem}")]
    BadKey {
        /// Which key (its store path).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The frame cannot be sent (size, features).
    #[error("invalid frame: {0}")]
    Invalid(String),
}

/// A key the platform found missing or malformed
/// ([`xenio_xenbus::Error::BadKey`]) is [`Error::BadKey`]; every other
/// platform error is [`Error::Platform`].
impl From<xenio_xenbus::Error> for Error {
    fn from(e: xenio_xenbus::Error) -> Self {
        match e {
            xenio_xenbus::Error::BadKey { path, problem } => Error::BadKey { key: path, problem },
            e => Error::Platform(e),
        }
    }
}

impl From<xenio_xenbus::xenstore::Error> for Error {
    fn from(e: xenio_xenbus::xenstore::Error) -> Self {
        Error::Platform(e.into())
    }
}

/// Results of netfront.
pub type Result<T, E = Error> = std::result::Result<T, E>;
