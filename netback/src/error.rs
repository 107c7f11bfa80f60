//! netback's error type.

/// What can go wrong in the backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform (store, grants, event channels) failed.
    #[error(transparent)]
    Platform(xenio_xenbus::Error),
    /// The host device (the TAP) failed.
    #[error(transparent)]
    Host(#[from] xenio_hostio::Error),
    /// The frontend broke a ring.
    #[error(transparent)]
    Ring(#[from] xenio_ring::RingError),
    /// The frontend published or sent something unusable.
    #[error("the frontend: {0}")]
    Frontend(String),
    /// The backend's own configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The network side failed.
    #[error("network: {0}")]
    Network(String),
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

/// Results of netback.
pub type Result<T, E = Error> = std::result::Result<T, E>;
