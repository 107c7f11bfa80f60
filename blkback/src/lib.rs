//! The blkif backend framework: serve a disk to any blkif frontend (xenio's, a C
//! program using Xen's headers, Linux's xen-blkfront) over any platform.
//!
//! The framework ([`Server`], or [`serve`], and a [`queue::QueueWorker`] per
//! ring) owns the rings, the handshake, validation and the event loop; a
//! storage says how to do I/O, in std types: a [`SyncStorage`] (`read_at`,
//! `write_at`, `flush`, `discard`, served through [`Synchronous`]) or an
//! asynchronous [`Storage`]. The [`storage`] module's table says what each of
//! its errors tells the frontend; a failed merged operation is retried request
//! by request, so errors stay with their requests. [`storage::FileStorage`]
//! serves raw image files and block devices through io_uring with O_DIRECT,
//! [`storage::Qcow2Storage`] qcow2 images, [`storage::NbdStorage`] NBD exports,
//! `storage::RbdStorage` Ceph RBD images (feature `rbd`), and
//! [`StorageTarget::open`] picks one from an `xl` disk spec;
//! `examples/checksum_backend.rs` is a custom backend as a program,
//! `examples/mem_backend.rs` a custom storage in one process, and
//! `docs/backend-guide.md` walks through writing one.
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
pub mod inflight;
mod poll;
pub mod queue;
pub mod reorder;
pub mod report;
pub mod request;
pub mod ring;
pub mod server;
pub mod storage;

pub use backend::{BackendConfig, Outcome, serve};
pub use config::DiskSpec;
pub use error::{Error, Result};
pub use queue::{Counters, GrantMode, QueueConfig};
pub use report::{IoErrorHook, IoFailure};
pub use server::Server;
pub use storage::{
    AnyStorage, DiskInfo, FileStorage, OpenOptions, Storage, StorageQueue, StorageTarget,
    SyncStorage, Synchronous,
};
pub use xenio_ring::wait::{Wait, WaitStats};
