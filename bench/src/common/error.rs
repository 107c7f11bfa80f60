//! The benchmark's one error type, and its result type.

use std::process::ExitStatus;
use xenio_ring::RingError;

/// The result type of this crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Everything that can stop a benchmark run. A missed performance target is not
/// an error (it is reported as `MISS`); wrong data on the ring is.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An argument that clap could not check by itself.
    #[error("invalid arguments: {0}")]
    Usage(String),
    /// A system call failed.
    #[error("{what}: {err}")]
    Os {
        /// What was being done.
        what: String,
        /// The errno.
        err: nix::Error,
    },
    /// An I/O operation of the standard library failed.
    #[error("{what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        err: std::io::Error,
    },
    /// A ring call failed (the peer broke the ring, or the benchmark misused it).
    #[error("{side} of the ring: {err}")]
    Ring {
        /// `"frontend"` or `"backend"`.
        side: &'static str,
        /// The ring's error.
        err: RingError,
    },
    /// The peer process exited with a failure (its own message is on stderr above).
    #[error(
        "the peer process (pid {pid}) of `{config}` failed: {status}{detail}; \
         its own message, if any, is printed above"
    )]
    PeerFailed {
        /// Its pid.
        pid: u32,
        /// The configuration being measured.
        config: String,
        /// How it ended.
        status: ExitStatus,
        /// Extra context (e.g. "while the run was still going").
        detail: &'static str,
    },
    /// The peer process did not get ready, or did not exit, in time; it was killed.
    #[error(
        "the peer process (pid {pid}) of `{config}` did not {what} within {secs} s and was killed"
    )]
    PeerTimeout {
        /// Its pid.
        pid: u32,
        /// The configuration being measured.
        config: String,
        /// What it failed to do.
        what: &'static str,
        /// The time limit.
        secs: u64,
    },
    /// The peer is alive but the side waiting on it saw no progress for a long time.
    #[error("`{config}`: no progress for {secs} s while waiting for {what}")]
    Stalled {
        /// The configuration being measured.
        config: String,
        /// What was awaited.
        what: &'static str,
        /// How long.
        secs: u64,
    },
    /// Data on the ring was wrong: a request or response did not carry what was sent.
    #[error("`{config}`: {errors} verification error(s) seen by the {side}; first: {first}")]
    Verification {
        /// The configuration being measured.
        config: String,
        /// `"frontend"` or `"backend"`.
        side: &'static str,
        /// How many entries were wrong.
        errors: u64,
        /// The first of them.
        first: String,
    },
    /// The peer process found its parent gone (the run was interrupted).
    #[error("the parent process (pid {expected}) went away")]
    ParentGone {
        /// The pid the peer was started by.
        expected: i32,
    },
    /// The peer process ran past the time limit its parent gave it.
    #[error("the peer ran past its {secs} s time limit")]
    PeerDeadline {
        /// The limit.
        secs: u64,
    },
    /// An external program of the block benchmark (fio, qemu-nbd, `xenio
    /// blkback`) is missing, failed, or printed something unusable.
    #[error("{tool}: {what}{detail}")]
    Tool {
        /// The program.
        tool: &'static str,
        /// What went wrong, with the configuration being measured.
        what: String,
        /// Its own words (stderr or log), if any, starting with a newline.
        detail: String,
    },
    /// The xenio frontend failed during a block measurement.
    #[error("`{config}`: the frontend: {err}")]
    Frontend {
        /// The configuration being measured.
        config: String,
        /// blkfront's error.
        err: xenio_blkfront::Error,
    },
    /// The local platform (store daemon, grants, event channels) failed.
    #[error("{what}: {err}")]
    Platform {
        /// What was being done.
        what: String,
        /// The platform's error.
        err: xenio_xenbus::Error,
    },
    /// The in-process baseline's backend thread panicked or ended early.
    #[error("`{config}`: the backend thread {what}")]
    Thread {
        /// The configuration being measured.
        config: String,
        /// What happened to it.
        what: &'static str,
    },
}

impl BenchError {
    /// A failed system call, with what was being done.
    pub fn os(what: impl Into<String>, err: nix::Error) -> Self {
        BenchError::Os {
            what: what.into(),
            err,
        }
    }

    /// A failed I/O call, with what was being done.
    pub fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            err,
        }
    }

    /// A frontend ring error (for `map_err`).
    pub fn front(err: RingError) -> Self {
        BenchError::Ring {
            side: "frontend",
            err,
        }
    }

    /// A backend ring error (for `map_err`).
    pub fn back(err: RingError) -> Self {
        BenchError::Ring {
            side: "backend",
            err,
        }
    }
}
