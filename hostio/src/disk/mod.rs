//! Storage I/O for block backends: reads and writes between a file or block device
//! and shared memory regions, zero copy (O_DIRECT) through io_uring.
//!
//! - [`BlockFile`] opens an image file or a block device and reports what a blkif
//!   backend advertises: `sectors`, `sector-size`, `physical-sector-size`, discard
//!   granularity and alignment, and whether O_DIRECT is in use (and if not, why).
//! - [`DiskQueue`] is one io_uring (one per queue thread): [`DiskQueue::submit`] validates
//!   and queues an [`Io`], [`DiskQueue::flush_submissions`] hands everything queued to
//!   the kernel in one system call, [`DiskQueue::complete`] reaps [`Completion`]s.
//!   Where io_uring cannot be set up (old kernel, seccomp, `io_uring_disabled`),
//!   the queue executes each operation synchronously at submission and
//!   [`DiskQueue::mode`] says so.
//!
//! The data moves directly between the disk and the memory an [`IoSeg`] names: a
//! piece of a mapped grant region, say. The queue holds the region (an `Arc`)
//! until the operation's completion is reaped, and dropping a queue waits for
//! whatever is still in the kernel, so the kernel never writes into freed memory.
//!
//! Operations in flight at the same time are unordered (as in io_uring): a flush
//! covers the writes that completed before it was submitted, and a caller that
//! needs one operation after another (overlapping writes, a read after a write, a
//! barrier) waits for the first one's completion before submitting the second.
//!
//! ```
//! use std::sync::Arc;
//! use xenio_xenbus::Region;
//! use xenio_hostio::disk::{BlockFile, DiskOpen, DiskQueue, Io, IoSeg};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("disk.img");
//! std::fs::File::create(&path).unwrap().set_len(1 << 20).unwrap();
//! let disk = Arc::new(BlockFile::open(&path, DiskOpen::default()).unwrap());
//! let mut queue = DiskQueue::new(disk, 64).unwrap();
//!
//! let page = Arc::new(Region::anonymous(4096).unwrap());
//! page.fill(0, 4096, 0xab).unwrap();
//! let seg = IoSeg::new(page.clone(), 0, 4096);
//! queue.submit(1, Io::Write { offset: 8192, segs: vec![seg] }).unwrap();
//! queue.flush_submissions().unwrap();
//! let mut done = Vec::new();
//! queue.complete(&mut done, 1, None).unwrap();
//! assert_eq!(done[0].tag, 1);
//! assert_eq!(*done[0].result.as_ref().unwrap(), 4096);
//! ```

mod file;
pub(crate) mod io;
mod queue;
pub(crate) mod sys;

pub use file::{BlockFile, Direct, DiscardInfo, DiskOpen};
pub use io::{Busy, Completion, Io, IoMem, IoSeg, OpError};
pub use queue::{DiskQueue, DiskQueueOptions, FIXED_SLOTS, IoMode, WaitEnd};
