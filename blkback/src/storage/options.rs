//! [`OpenOptions`]: how [`StorageTarget::open`](super::StorageTarget::open)
//! opens a storage, shared by every engine's constructor.

use std::time::Duration;
use xenio_hostio::disk::Direct;

/// How [`StorageTarget::open`](super::StorageTarget::open) opens a storage. [`Default`]: writable,
/// O_DIRECT where allowed, io_uring, 128 operations per queue, NBD's and RBD's
/// timeouts as below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Serve read-only (the image, export or RBD image is opened read-only
    /// where the engine can).
    pub readonly: bool,
    /// O_DIRECT for raw files and qcow2 images (and their backing files).
    pub direct: Direct,
    /// Raw files: synchronous system calls instead of io_uring.
    pub force_sync: bool,
    /// Operations in flight per queue: an NBD connection's depth (the
    /// others take it from [`Storage::queue`](super::Storage::queue)).
    pub depth: u32,
    /// qcow2: worker threads per queue for what cannot go straight to a file
    /// (0: `min(depth, 32)`).
    pub qcow2_threads: usize,
    /// NBD and RBD: how long connecting may take.
    pub connect_timeout: Duration,
    /// NBD: how long a server may stay away (reconnection attempts go on
    /// meanwhile) before waiting operations fail with `EIO`.
    pub reconnect_timeout: Duration,
    /// NBD: an operation without a reply for this long counts as a dead
    /// connection (reconnect, re-issue). `None`: wait forever.
    pub io_timeout: Option<Duration>,
    /// NBD and RBD: discard by writing zeros (so that discarded ranges read
    /// back as zeros, as from a raw file).
    pub discard_zeroes: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        let nbd = xenio_hostio::nbd::NbdOptions::default();
        OpenOptions {
            readonly: false,
            direct: Direct::Auto,
            force_sync: false,
            depth: 128,
            qcow2_threads: 0,
            connect_timeout: nbd.connect_timeout,
            reconnect_timeout: nbd.reconnect_timeout,
            io_timeout: nbd.io_timeout,
            discard_zeroes: false,
        }
    }
}
