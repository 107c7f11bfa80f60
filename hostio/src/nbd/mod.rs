//! An NBD client through libnbd (Debian's libnbd 1.14, linked with `-lnbd`),
//! behind the same queue shape as [`DiskQueue`](crate::disk::DiskQueue).
//!
//! - [`NbdExport::connect`] parses the URI (`nbd://host[:port]/export`,
//!   `nbd+unix:///export?socket=PATH`, and the `nbds` forms for TLS), does the
//!   fixed-newstyle handshake and reads what the server offers
//!   ([`NbdFeatures`]: size, read-only, FLUSH, FUA, TRIM, WRITE_ZEROES,
//!   multi-conn).
//! - [`NbdExport::queue`] makes one [`NbdQueue`] per blkback queue, each over its
//!   own connection when the server allows multi-conn (otherwise one queue
//!   only: without multi-conn a flush on one connection says nothing about
//!   writes on another).
//! - [`NbdQueue`] pipelines: each [`submit`](NbdQueue::submit) issues the
//!   command at once (libnbd writes it to the socket, many in flight), replies
//!   are read when the socket is readable. [`completion_fd`](NbdQueue::completion_fd)
//!   is an epoll descriptor (stable across reconnections) that is readable when
//!   the socket is, when a timer of the queue is due, or when completions wait.
//!
//! Operations: a read is `NBD_CMD_READ`, a write `NBD_CMD_WRITE`, a flush
//! `NBD_CMD_FLUSH` (completed at once, successfully, when the server offers no
//! flush: its writes are then not cached), a discard `NBD_CMD_TRIM` (or
//! `NBD_CMD_WRITE_ZEROES` when the server offers no TRIM, or always with
//! [`NbdOptions::discard_zeroes`], so that discarded ranges read as zeros), and
//! [`NbdQueue::submit_write_fua`] / [`NbdQueue::submit_write_zeroes`] give the
//! FUA flag and `NBD_CMD_WRITE_ZEROES` directly (a FUA write to a server without
//! FUA is a write then a flush). Operations the server does not offer complete
//! with `EOPNOTSUPP`.
//!
//! # A server that goes away
//!
//! libnbd does not reconnect; the queue does. Every operation stays in the
//! queue's slot, with its memory, until its reply has been processed, so when
//! the connection dies (the socket closes, the server sends something libnbd
//! cannot parse, or a reply takes longer than [`NbdOptions::io_timeout`]) the
//! queue closes the handle, connects again every
//! [`NbdOptions::reconnect_delay`] and re-issues every operation not yet
//! answered: nothing acknowledged is lost, and reads and writes are idempotent.
//! Replies with an error (the server's EIO, say) are final, unless the
//! connection died in the same turn, and they fail only their own operation.
//! If the server stays away for [`NbdOptions::reconnect_timeout`] (30 s by
//! default), every waiting operation fails with `EIO`, and new ones fail at
//! once until a connection succeeds again (attempts go on). No call of the
//! queue blocks longer than the timeout its caller gave: connecting is
//! non-blocking too.
//!
//! An acknowledged write is on the server, not necessarily on its disk: a
//! server that crashes may lose what it had not flushed (a raw file written
//! through the page cache survives a killed server process; qcow2 metadata in
//! qemu-nbd's memory does not). Flush, or write with FUA, for durability.
//!
//! ```no_run
//! use std::sync::Arc;
//! use xenio_hostio::disk::{Io, IoSeg};
//! use xenio_hostio::nbd::{NbdExport, NbdOptions};
//! use xenio_xenbus::Region;
//!
//! let export = NbdExport::connect("nbd+unix:///disk?socket=/run/nbd.sock", &NbdOptions::default())?;
//! let mut queue = export.queue()?;
//! let page = Arc::new(Region::anonymous(4096)?);
//! queue.submit(1, Io::Read { offset: 0, segs: vec![IoSeg::new(page, 0, 4096)] })?;
//! let mut done = Vec::new();
//! queue.complete(&mut done, 1, None)?;
//! assert!(done[0].result.is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod export;
mod ffi;
mod handle;
mod queue;

pub use config::{NbdFeatures, NbdOptions};
pub use export::NbdExport;
pub use queue::NbdQueue;
