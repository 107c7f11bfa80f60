//! The blkif backend framework: serve a disk to any blkif frontend (xenio's, a C
//! program using Xen's headers, Linux's xen-blkfront) over any platform.
//!
//! The framework ([`serve`], and a [`queue::QueueWorker`] per ring) owns the
//! rings, the handshake, validation and the event loop;
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
mod error;
mod poll;
pub mod queue;
pub mod reorder;
pub mod request;
pub mod storage;

pub use backend::{BackendConfig, Outcome, serve};
pub use config::DiskSpec;
pub use error::{Error, Result};
pub use queue::{Counters, GrantMode, QueueConfig};
pub use storage::{DiskInfo, FileStorage, Storage, StorageQueue};
pub use xenio_ring::wait::{Wait, WaitStats};
