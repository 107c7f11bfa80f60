//! The host-I/O error type.

use std::io;

/// What can go wrong opening or driving a disk or a TAP device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An argument is malformed (a device name, an offset, a segment).
    #[error("bad value for {what}: {value:?}")]
    BadValue {
        /// Which argument.
        what: String,
        /// What was given.
        value: String,
    },
    /// A limit was hit: the submission queue is full, a segment lies outside
    /// its memory.
    #[error("{0}")]
    Limit(String),
    /// Something xenio does not do (an image format it cannot write, a feature
    /// the server lacks); the message says what to do instead.
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::io("system call", io::Error::from(e))
    }
}

/// Results of host I/O.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Backends that report through the platform's error keep every variant's
/// meaning (a full queue stays [`xenio_xenbus::Error::Limit`]).
impl From<Error> for xenio_xenbus::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { context, source } => xenio_xenbus::Error::Io { context, source },
            Error::BadValue { what, value } => xenio_xenbus::Error::BadValue { what, value },
            Error::Limit(why) => xenio_xenbus::Error::Limit(why),
            Error::Unsupported(why) => xenio_xenbus::Error::Io {
                context: "unsupported".into(),
                source: io::Error::new(io::ErrorKind::Unsupported, why),
            },
        }
    }
}
