//! What blkback serves: the storage traits a vendor implements, what each of
//! their errors tells the frontend, and the io_uring implementation over a file
//! or block device.
//!
//! A backend is a framework: [`crate::serve`] (or [`crate::Server`]) and its
//! queue workers own the rings, the handshake, validation, reordering and the
//! event loop; a storage only says how to do I/O. Two ways to write one, both
//! in std types only (no xenio error type to name):
//!
//! - [`SyncStorage`]: `read_at` / `write_at` / `flush` / `discard` on `&self`,
//!   called from the queue threads (so `Send + Sync`); wrap it in
//!   [`Synchronous`] to serve it. Enough for memory, a key-value store, a
//!   network client that blocks.
//! - [`Storage`] + [`StorageQueue`]: asynchronous, one queue per ring, for
//!   storage with its own completion mechanism (io_uring, an NBD socket).
//!   [`FileStorage`] is one; [`Synchronous`] is another, over any
//!   [`SyncStorage`].
//!
//! Operations name memory as [`IoSeg`]s: pieces of the frontend's mapped
//! grant pages (zero copy) or bounce buffers, read-write or read-only.
//! [`IoSeg::read_into`] / [`IoSeg::write_from`] (and [`IoSeg::gather`] /
//! [`IoSeg::scatter`] over a whole operation) copy in one line whichever the
//! memory is.
//!
//! # What the frontend sees
//!
//! Every error a storage can return, and the blkif status the frontend gets
//! for it (`BLKIF_RSP_*` of `xen/io/blkif.h`; Linux's xen-blkback answers the
//! same way). "Unsupported" is an [`std::io::Error`] of kind
//! [`ErrorKind::Unsupported`](std::io::ErrorKind::Unsupported) or with OS error
//! `EOPNOTSUPP`; "busy" is [`Busy`] (kind
//! [`ErrorKind::WouldBlock`](std::io::ErrorKind::WouldBlock)).
//!
//! | where | what the storage returns | read | write | flush (and a barrier's flushes) | discard |
//! | --- | --- | --- | --- | --- | --- |
//! | a [`Completion`], a [`SyncStorage`] method | `Ok(_)` | `OKAY` | `OKAY` | `OKAY` | `OKAY` |
//! | | unsupported | `ERROR` | `ERROR` | `EOPNOTSUPP` | `EOPNOTSUPP` |
//! | | any other error (busy included) | `ERROR` | `ERROR` | `ERROR` | `ERROR` |
//! | [`StorageQueue::submit`] | busy | submitted again once something completed: no answer yet | | | |
//! | | any other error | as that error in a completion | | | |
//! | [`StorageQueue::flush_submissions`], [`complete`](StorageQueue::complete), [`reap`](StorageQueue::reap) | an error | the queue's failure: every queue of the device stops, the frontend is disconnected (`Closing`) and may connect again | | | |
//! | [`Storage::queue`] | an error | the connection fails as above | | | |
//!
//! The frontend never sees an operation the disk does not offer: without
//! [`DiskInfo::flush`] it is told no `feature-flush-cache` / `feature-barrier`,
//! without [`DiskInfo::discard`] no `feature-discard`, and a request for one
//! is answered `EOPNOTSUPP` without reaching the storage. An operation's
//! count (`Ok(n)`) is not checked: return an error rather than a short
//! transfer.
//!
//! **Errors stay with their requests.** When reordering merged several
//! requests into one operation and it fails, each request is submitted again
//! on its own (its own segments, unmerged) and answered by its own result: a
//! request fails only for its own sectors. A flush shared by back-to-back
//! flush requests is not split (it has no sectors).
//!
//! **Failed operations are reported**, besides `tracing` (`warn`): counted in
//! [`Counters::io_errors`](crate::Counters::io_errors), the last one kept in
//! [`Counters::last_io_error`](crate::Counters::last_io_error), and handed to
//! [`QueueConfig::on_io_error`](crate::QueueConfig::on_io_error) (the
//! [`Server`](crate::Server) builder's `on_io_error`).
//!
//! # The storages xenio ships
//!
//! [`StorageTarget`] is what an `xl` disk spec (`format=`, `target=`) or a
//! toolstack's `params` node (`format:target`) names, and
//! [`StorageTarget::open`] the one function that turns it into an
//! [`AnyStorage`]: a raw file or block device ([`FileStorage`], io_uring), a
//! qcow2 image with its backing chain ([`Qcow2Storage`], imago), an NBD export
//! ([`NbdStorage`], libnbd: pipelined, multi-conn, reconnecting), or a Ceph RBD
//! image (`RbdStorage`, librbd, behind the cargo feature `rbd`). VHD and VHDX
//! are refused with the `qemu-img convert` command that makes a qcow2 of them.
//!
//! The files: `seam` (the asynchronous traits and [`DiskInfo`]), `status`
//! (the table above, as code), `sync` ([`SyncStorage`] and its adapter),
//! `file` ([`FileStorage`] and io_uring's [`DiskQueue`](xenio_hostio::disk::DiskQueue)),
//! `qcow2`, `nbd`, `rbd` (the other engines of `xenio_hostio` as storages),
//! `any` ([`AnyStorage`]), `options` ([`OpenOptions`]), `target`
//! ([`StorageTarget`], the dispatch).

pub(crate) mod any;
pub(crate) mod file;
pub(crate) mod nbd;
pub(crate) mod options;
pub(crate) mod qcow2;
#[cfg(feature = "rbd")]
pub(crate) mod rbd;
pub(crate) mod seam;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod target;

pub use any::{AnyQueue, AnyStorage};
pub use file::FileStorage;
pub use nbd::NbdStorage;
pub use options::OpenOptions;
pub use qcow2::Qcow2Storage;
#[cfg(feature = "rbd")]
pub use rbd::RbdStorage;
pub use seam::{DiskInfo, Storage, StorageQueue};
pub use status::blkif_status;
pub use sync::{SyncQueue, SyncStorage, Synchronous};
pub use target::{SpecError, StorageTarget};
pub use xenio_hostio::disk::{Busy, Completion, DiscardInfo, Io, IoMem, IoSeg, WaitEnd};
