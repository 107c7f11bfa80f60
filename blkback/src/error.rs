//! blkback's error type.

/// What can go wrong in the backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform (store, grants, event channels) failed.
    #[error(transparent)]
    Platform(xenio_xenbus::Error),
    /// The frontend broke the ring.
    #[error(transparent)]
    Ring(#[from] xenio_ring::RingError),
    /// The frontend published something unusable.
    #[error("the frontend's keys: {0}")]
    Frontend(String),
    /// The storage failed in a way that is not one request's error.
    #[error("storage: {0}")]
    Storage(String),
    /// A storage queue failed (`flush_submissions`, `complete` or `reap`
    /// returned an error, or `Storage::queue` could not make one): not one
    /// request's error, the whole queue's.
    #[error("the storage queue failed: {0}")]
    StorageQueue(#[from] std::io::Error),
    /// A setting this machine cannot honour (a CPU it does not have, say).
    #[error("configuration: {0}")]
    Config(String),
}

/// A bad key the platform read ([`xenio_xenbus::Error::BadKey`]) is one the
/// frontend published ([`Error::Frontend`]): the backend reads its own keys
/// without the platform's parser. Every other platform error is
/// [`Error::Platform`].
impl From<xenio_xenbus::Error> for Error {
    fn from(e: xenio_xenbus::Error) -> Self {
        match e {
            xenio_xenbus::Error::BadKey { path, problem } => {
                Error::Frontend(format!("{path}: {problem}"))
            }
            e @ xenio_xenbus::Error::Hotplug(_) => Error::Config(e.to_string()),
            e => Error::Platform(e),
        }
    }
}

impl From<xenio_xenbus::xenstore::Error> for Error {
    fn from(e: xenio_xenbus::xenstore::Error) -> Self {
        Error::Platform(e.into())
    }
}

/// Results of blkback.
pub type Result<T, E = Error> = std::result::Result<T, E>;
