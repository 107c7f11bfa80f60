//! What a queue knows of its export: the options, what the server offers,
//! and the export's URI and live-queue count, shared by the export and its
//! queues.

use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How to connect to an export and run its queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbdOptions {
    /// Most operations in flight per queue. 64 by default.
    pub depth: u32,
    /// How long one connection attempt (TCP or Unix connect and the handshake)
    /// may take. 10 s by default.
    pub connect_timeout: Duration,
    /// How long the server may stay away (from the moment the connection was
    /// lost) before the operations waiting for it fail with `EIO`. 30 s by default.
    pub reconnect_timeout: Duration,
    /// Pause between connection attempts while the server is away. 200 ms by default.
    pub reconnect_delay: Duration,
    /// An operation without a reply for this long counts as a dead connection
    /// (the server hangs): the queue reconnects and re-issues it. `None`: wait
    /// forever. 60 s by default.
    pub io_timeout: Option<Duration>,
    /// Discard with `NBD_CMD_WRITE_ZEROES` (trimming allowed) rather than
    /// `NBD_CMD_TRIM`, so that discarded ranges read back as zeros, as from a
    /// raw file with a hole punched. Off by default.
    pub discard_zeroes: bool,
}

impl Default for NbdOptions {
    fn default() -> Self {
        NbdOptions {
            depth: 64,
            connect_timeout: Duration::from_secs(10),
            reconnect_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_millis(200),
            io_timeout: Some(Duration::from_secs(60)),
            discard_zeroes: false,
        }
    }
}

/// What the server offers for the export (asked of libnbd at the handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NbdFeatures {
    /// Size in bytes.
    pub size: u64,
    /// Writes are refused (`NBD_FLAG_READ_ONLY`).
    pub read_only: bool,
    /// `NBD_CMD_FLUSH`.
    pub flush: bool,
    /// `NBD_CMD_FLAG_FUA`.
    pub fua: bool,
    /// `NBD_CMD_TRIM`.
    pub trim: bool,
    /// `NBD_CMD_WRITE_ZEROES`.
    pub zero: bool,
    /// `NBD_FLAG_CAN_MULTI_CONN`: several connections see one consistent disk.
    pub multi_conn: bool,
    /// The server's minimum block size (1 when it gave none): offsets and
    /// lengths must be multiples of it.
    pub min_block: u64,
}

/// The export's URI, options and features, shared by [`NbdExport`](super::NbdExport)
/// and its queues.
pub(super) struct Shared {
    pub uri: String,
    pub c_uri: CString,
    pub opts: NbdOptions,
    pub features: NbdFeatures,
    /// Queues alive.
    pub queues: AtomicUsize,
}

/// Counts a live queue of an export; the count drops with the queue.
pub(super) struct QueueCount(pub Arc<Shared>);

impl Drop for QueueCount {
    fn drop(&mut self) {
        self.0.queues.fetch_sub(1, Ordering::AcqRel);
    }
}
