//! The command's one error type, and the exit status each kind gives.

use std::process::ExitCode;

/// What can make a `xenio` command fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is malformed or contradicts another (exit status 2, as for
    /// the argument errors clap reports).
    #[error("{0}")]
    Usage(String),
    /// A check the command runs found a difference (data read back differs, an
    /// echo reply never came).
    #[error("{0}")]
    Check(String),
    /// Something the command needed failed: what it was doing, and why.
    #[error("{what}: {source}")]
    Failed {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The platform (store, grants, event channels).
    #[error(transparent)]
    Platform(#[from] xenio_xenbus::Error),
    /// The store.
    #[error(transparent)]
    Store(#[from] xenio_xenstore::Error),
    /// A host device (a disk, a TAP).
    #[error(transparent)]
    Host(#[from] xenio_hostio::Error),
    /// The block backend.
    #[error(transparent)]
    Blkback(#[from] xenio_blkback::Error),
    /// The network backend.
    #[error(transparent)]
    Netback(#[from] xenio_netback::Error),
    /// The block frontend.
    #[error(transparent)]
    Blkfront(#[from] xenio_blkfront::Error),
    /// The network frontend.
    #[error(transparent)]
    Netfront(#[from] xenio_netfront::Error),
}

impl Error {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Results of the command.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Say what was being done when an error happened.
pub trait Context<T> {
    /// Wrap the error as [`Error::Failed`] with `what`.
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// The same, with the description built only on failure.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Failed {
            what: what.into(),
            source: Box::new(e),
        })
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Failed {
            what: what().into(),
            source: Box::new(e),
        })
    }
}
