//! The blkif backend framework: serve a disk to any blkif frontend (xenio's, a C
//! program using Xen's headers, Linux's xen-blkfront) over any platform.
//!
//! The engine owns the rings, the handshake, validation and the event loop;
//! a [`storage::Storage`] says how to do I/O. [`storage::FileStorage`] serves raw
//! image files and block devices through io_uring with O_DIRECT;
//! `examples/mem_backend.rs` shows a custom storage.
//!
//! Every request is copied out of the ring once, then validated
//! ([`request::parse`]): a bad request gets `BLKIF_RSP_ERROR` (or `EOPNOTSUPP`) and
//! the ring keeps serving; a broken ring disconnects the frontend. Batches are
//! reordered ([`reorder`]) without changing what in-order execution would give.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod engine;
pub mod poll;
pub mod reorder;
pub mod request;
pub mod storage;

pub use backend::{BackendConfig, Outcome, serve};
pub use config::DiskSpec;
pub use engine::{Counters, GrantMode, QueueConfig};
pub use storage::{DiskInfo, FileStorage, Storage, StorageQueue};

/// What can go wrong in the backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform (store, grants, event channels) failed.
    #[error(transparent)]
    Platform(#[from] xenio_xenbus::Error),
    /// The frontend broke the ring.
    #[error(transparent)]
    Ring(#[from] xenio_ring::RingError),
    /// The frontend published something unusable.
    #[error("the frontend's keys: {0}")]
    Frontend(String),
    /// The storage failed in a way that is not one request's error.
    #[error("storage: {0}")]
    Storage(String),
    /// A setting this machine cannot honour (a CPU it does not have, say).
    #[error("configuration: {0}")]
    Config(String),
}

impl From<xenio_xenbus::xenstore::Error> for Error {
    fn from(e: xenio_xenbus::xenstore::Error) -> Self {
        Error::Platform(e.into())
    }
}

/// Results of blkback.
pub type Result<T, E = Error> = std::result::Result<T, E>;
