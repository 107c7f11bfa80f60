//! What xenio's backends forward to on the host: disk images and block devices
//! through io_uring ([`disk`]), qcow2 images with backing chains ([`qcow2`],
//! through imago), NBD exports (`nbd`, through libnbd; feature `nbd`, on by
//! default), Ceph RBD images (`rbd`, through librbd; feature `rbd`), and Linux
//! TAP devices ([`tap`]).
//!
//! Every storage queue has the shape of [`disk::DiskQueue`]: `submit(tag, Io)`,
//! `flush_submissions()`, `complete(out, wait_for, timeout)`, `reap_ready(out)`,
//! `rearm_completion_fd()` and `completion_fd()`, over the same [`disk::Io`] and
//! [`disk::Completion`], so a block backend drives them alike.
//!
//! These are OS-device wrappers, so the `unsafe` they need (io_uring
//! submissions that point the kernel at shared memory, the TAP ioctls
//! `TUNSETIFF`, `TUNSETVNETHDRSZ` and `TUNSETOFFLOAD`, the C APIs of libnbd
//! and librbd) lives here, each block with its `// SAFETY:` argument, and the driver
//! crates stay free of it. Nothing here knows the blkif or netif protocols: a
//! block backend hands [`disk::DiskQueue`] reads and writes into memory shared
//! with a frontend (the platform's [`Region`](xenio_xenbus::Region)s), a network
//! backend hands [`tap::Tap`] whole Ethernet frames.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod disk;
mod error;
#[cfg(feature = "nbd")]
pub mod nbd;
pub mod qcow2;
#[cfg(feature = "rbd")]
pub mod rbd;
pub mod rbd_target;
mod segs;
pub mod tap;
pub mod tapring;

pub use error::{Error, Result};
