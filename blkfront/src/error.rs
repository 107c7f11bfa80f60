//! blkfront's error type.

use xenio_xen_sys::DomId;

/// What can go wrong in the frontend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform (store, grants, event channels) failed.
    #[error(transparent)]
    Platform(xenio_xenbus::Error),
    /// The ring failed; a broken ring means the backend wrote nonsense.
    #[error(transparent)]
    Ring(#[from] xenio_ring::RingError),
    /// The backend answered something impossible (unknown id, wrong operation...).
    #[error("backend {backend} misbehaved: {what}")]
    Backend {
        /// The backend domain.
        backend: DomId,
        /// What it did.
        what: String,
    },
    /// The backend's keys are missing or malformed.
    #[error("backend key {key}: {problem}")]
    BadKey {
        /// Which key (its store path).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The request itself is not valid (alignment, range, unsupported operation).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The I/O failed at the backend (`BLKIF_RSP_ERROR`).
    #[error("the backend reported an I/O error for {0}")]
    Io(String),
    /// The backend does not support the operation (`BLKIF_RSP_EOPNOTSUPP`).
    #[error("the backend does not support {0}")]
    NotSupported(String),
    /// No buffer space in the grant pool right now: complete some I/O first.
    #[error("the grant pool is exhausted ({0} pages in use)")]
    PoolExhausted(usize),
    /// Waited too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The device is not there (yet): [`BlkFront::connect`](crate::BlkFront::connect)
    /// waited [`Options::device_timeout`](crate::Options::device_timeout) for it.
    #[error("{path}: {missing}")]
    NotReady {
        /// The store path that was missing or not ready.
        path: String,
        /// What is missing, and what usually creates it.
        missing: String,
    },
    /// The device went away for good: its store directories were removed (the
    /// backend stopped and detached it, or the toolstack did).
    #[error("the device was closed: {0}")]
    Closed(String),
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

/// Results of blkfront.
pub type Result<T, E = Error> = std::result::Result<T, E>;
