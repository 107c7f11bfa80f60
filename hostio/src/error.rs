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

/// For the std-typed traits backends implement (blkback's storage queue): a
/// full queue ([`Error::Limit`]) is [`Busy`](crate::disk::Busy) ("try again
/// later"), a system call's error keeps its kind and OS error number (and
/// says what was being done), a bad value is
/// [`InvalidInput`](io::ErrorKind::InvalidInput), something not done is
/// [`Unsupported`](io::ErrorKind::Unsupported) (`EOPNOTSUPP` to a frontend
/// for a flush or discard).
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Limit(why) => io::Error::new(io::ErrorKind::WouldBlock, LimitBusy(why)),
            Error::Io { context, source } => crate::disk::io::OpError::into_io(context, source),
            e @ Error::BadValue { .. } => io::Error::new(io::ErrorKind::InvalidInput, e),
            e @ Error::Unsupported(_) => io::Error::new(io::ErrorKind::Unsupported, e),
        }
    }
}

/// [`crate::disk::Busy`] with the queue's own words.
#[derive(Debug)]
struct LimitBusy(String);

impl std::fmt::Display for LimitBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "busy: {}", self.0)
    }
}

impl std::error::Error for LimitBusy {}

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
