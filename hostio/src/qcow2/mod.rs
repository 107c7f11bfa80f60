//! qcow2 images (with backing chains) through [imago](https://crates.io/crates/imago),
//! behind the same queue shape as [`DiskQueue`](crate::disk::DiskQueue).
//!
//! - [`Qcow2Image`] opens an image made by `qemu-img create -f qcow2` (or
//!   `convert`), and the backing files its header names (a chain of overlays
//!   over a qcow2 or raw base), once per device. Queues share it in an `Arc`.
//! - [`Qcow2Queue`] is one queue's I/O: [`submit`](Qcow2Queue::submit),
//!   [`flush_submissions`](Qcow2Queue::flush_submissions),
//!   [`complete`](Qcow2Queue::complete), [`reap_ready`](Qcow2Queue::reap_ready),
//!   [`completion_fd`](Qcow2Queue::completion_fd), over the same [`Io`](crate::disk::Io)
//!   and [`Completion`](crate::disk::Completion) as the raw queue.
//!
//! Two paths. The direct path: a read or write whose whole range imago maps to
//! one place in one file (an allocated cluster of the image, or of a backing
//! file for a read: the steady state of a used disk) goes straight to that
//! file through the queue's own io_uring, zero copy into the request's shared
//! memory, with no thread hand-off; a read of what imago maps to zeros is
//! answered at once. Everything else (allocating writes, which copy the rest of
//! a cluster from the backing chain; compressed clusters; ranges over clusters
//! stored apart; unaligned memory; flush; discard) runs on a pool of worker
//! threads (as many as [`Qcow2QueueOptions::threads`]) through imago's
//! synchronous API, which blocks in `preadv`/`pwritev`: data is copied between
//! the request's shared memory and a worker's aligned buffer (never handed to
//! imago as a Rust slice: the peer may change shared memory at any time).
//! [`Qcow2Queue::direct_ios`] counts what took the direct path.

//! Operations map to imago as follows: a read to `read` (unallocated clusters read
//! from the backing chain, or as zeros), a write to `write` (allocating clusters,
//! copying the rest of a cluster from the backing chain), a flush to `flush`
//! (imago's metadata caches) then `sync` (`fdatasync`), and a discard to
//! `discard_to_zero`: the range reads as zeros afterwards, as a hole punched in
//! a raw file does, whatever the backing files hold, and whole clusters are
//! freed. `discard_to_zero` invalidates mappings that concurrent operations hold,
//! so a discard waits until the image's other operations have finished and runs
//! alone (an `RwLock`; the direct path takes its mappings with `try_read`, so a
//! queue's thread never waits behind a discard, and counts its operations in
//! flight, which the discard waits for). [`Qcow2Queue::submit_write_zeroes`] is imago's
//! `write_zeroes` (zero clusters, nothing freed), which runs beside other
//! operations. On a version 2 image (`compat=0.10`), where imago can neither
//! discard nor write zeros efficiently, both write zeros.
//!
//! Formats imago cannot write are refused with what to do instead:
//! [`ImageFormat`]'s parser refuses `vhd`/`vpc`/`vhdx` naming `qemu-img convert`,
//! and [`Qcow2Image::open`] recognises a VHD or VHDX file by its signature.
//!
//! ```no_run
//! use std::sync::Arc;
//! use xenio_hostio::disk::{Io, IoSeg};
//! use xenio_hostio::qcow2::{Qcow2Image, Qcow2Open, Qcow2Queue, Qcow2QueueOptions};
//! use xenio_xenbus::Region;
//!
//! let image = Arc::new(Qcow2Image::open("overlay.qcow2", &Qcow2Open::default())?);
//! let mut queue = Qcow2Queue::new(image, &Qcow2QueueOptions::default())?;
//! let page = Arc::new(Region::anonymous(4096)?);
//! queue.submit(7, Io::Read { offset: 0, segs: vec![IoSeg::new(page, 0, 4096)] })?;
//! queue.flush_submissions()?;
//! let mut done = Vec::new();
//! queue.complete(&mut done, 1, None)?;
//! assert_eq!(done[0].tag, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod direct;
mod image;
mod queue;

pub use image::{ImageFormat, Qcow2Image, Qcow2Open};
pub use queue::{Qcow2Queue, Qcow2QueueOptions};
