//! Ceph RBD images through librbd's asynchronous API (what QEMU's
//! `block/rbd.c` uses), behind the same queue shape as
//! [`DiskQueue`](crate::disk::DiskQueue). Behind the cargo feature `rbd`
//! (building needs librbd-dev and librados-dev: `-lrbd -lrados`).
//!
//! - [`RbdTarget`] parses QEMU's spelling,
//!   `rbd:pool[/namespace]/image[@snapshot][:conf=PATH][:id=NAME][:keyring=PATH][:key=value...]`:
//!   the cluster's config file, the client name, its key, and any Ceph option.
//! - [`RbdImage::open`] connects (bounded by [`RbdOptions::connect_timeout`]) and
//!   opens the image once per device.
//! - [`RbdQueue`] issues `rbd_aio_readv`/`rbd_aio_writev` straight on the
//!   request's shared memory, `rbd_aio_flush`, and `rbd_aio_discard` or
//!   `rbd_aio_write_zeroes`; each completion's callback posts the result and
//!   signals an eventfd ([`completion_fd`](RbdQueue::completion_fd)).
//!
//! librbd's own cache (`rbd_cache`, on by default) acknowledges writes from
//! memory once the first flush has been seen, and makes them durable at the
//! next flush, as a disk's write cache does; `:rbd_cache=false` in the target
//! makes every write acknowledged only once the OSDs have it.
//!
//! An OSD that restarts is librados' business: operations wait for it and are
//! resent, so nothing acknowledged is lost. By default librados waits forever;
//! the Ceph option `rados_osd_op_timeout=SECONDS` in the target makes
//! operations fail (`ETIMEDOUT`) after that long instead.
//!
//! ```no_run
//! use std::sync::Arc;
//! use xenio_hostio::disk::{Io, IoSeg};
//! use xenio_hostio::rbd::{RbdImage, RbdOptions, RbdQueue, RbdTarget};
//! use xenio_xenbus::Region;
//!
//! let target: RbdTarget = "rbd:rbd/disk:conf=/etc/ceph/ceph.conf:id=admin".parse()?;
//! let image = Arc::new(RbdImage::open(&target, &RbdOptions::default())?);
//! let mut queue = RbdQueue::new(image, 64)?;
//! let page = Arc::new(Region::anonymous(4096)?);
//! queue.submit(1, Io::Read { offset: 0, segs: vec![IoSeg::new(page, 0, 4096)] })?;
//! let mut done = Vec::new();
//! queue.complete(&mut done, 1, None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ffi;
mod image;
mod queue;

pub use crate::rbd_target::RbdTarget;
pub use image::{RbdImage, RbdOptions};
pub use queue::RbdQueue;
