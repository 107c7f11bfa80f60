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

mod ffi;
mod handle;
mod queue;

pub use queue::NbdQueue;

use crate::{Error, Result};
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

pub(crate) struct ExportInner {
    uri: String,
    c_uri: CString,
    opts: NbdOptions,
    features: NbdFeatures,
    /// The handshake's connection, for the first queue.
    first: Mutex<Option<handle::Handle>>,
    queues: AtomicUsize,
}

/// An NBD export: its URI, what the server offers, and a factory of queues.
/// Cheap to clone (shares the connection state).
#[derive(Clone)]
pub struct NbdExport(Arc<ExportInner>);

impl std::fmt::Debug for NbdExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdExport")
            .field("uri", &self.0.uri)
            .field("features", &self.0.features)
            .finish()
    }
}

/// Refuse what is not an NBD URI before libnbd sees it.
fn check_uri(uri: &str) -> Result<CString> {
    let bad = |why: &str| Error::BadValue {
        what: format!(
            "NBD URI ({why}; expected nbd://host[:port]/export or nbd+unix:///export?socket=PATH)"
        ),
        value: uri.into(),
    };
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(bad("no scheme"));
    };
    match scheme {
        "nbd" | "nbds" => {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(bad("no host"));
            }
        }
        "nbd+unix" | "nbds+unix" => {
            if !rest.contains("socket=") {
                return Err(bad("no socket= parameter"));
            }
        }
        _ => return Err(bad("unknown scheme")),
    }
    CString::new(uri).map_err(|_| bad("a NUL byte"))
}

impl NbdExport {
    /// Connect to `uri` (one attempt, bounded by
    /// [`NbdOptions::connect_timeout`]) and read the export's features.
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] for a malformed URI or option; [`Error::Io`] naming
    /// the URI when the server cannot be reached, the handshake fails (no such
    /// export, a server that sends garbage or closes), or it times out.
    pub fn connect(uri: &str, opts: &NbdOptions) -> Result<NbdExport> {
        let c_uri = check_uri(uri)?;
        if opts.depth == 0 || opts.depth > 65536 {
            return Err(Error::BadValue {
                what: "NBD queue depth (1..=65536)".into(),
                value: opts.depth.to_string(),
            });
        }
        let h = handle::connect(&c_uri, opts.connect_timeout)
            .map_err(|e| Error::io(format!("{uri}: connecting"), e))?;
        let features = features(&h).map_err(|e| Error::io(format!("{uri}: handshake"), e))?;
        Ok(NbdExport(Arc::new(ExportInner {
            uri: uri.into(),
            c_uri,
            opts: opts.clone(),
            features,
            first: Mutex::new(Some(h)),
            queues: AtomicUsize::new(0),
        })))
    }

    /// The URI.
    pub fn uri(&self) -> &str {
        &self.0.uri
    }

    /// What the server offers.
    pub fn features(&self) -> NbdFeatures {
        self.0.features
    }

    /// The export's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.0.features.size
    }

    /// Most queues this export can have at once: 1 without multi-conn.
    pub fn max_queues(&self) -> Option<usize> {
        (!self.0.features.multi_conn).then_some(1)
    }

    /// A new queue over its own connection (the first one takes over the
    /// handshake's connection).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a second queue at once when the server does not
    /// allow multi-conn; [`Error::Io`] when a new connection fails.
    pub fn queue(&self) -> Result<NbdQueue> {
        let inner = &self.0;
        let n = inner.queues.fetch_add(1, Ordering::AcqRel);
        let guard = QueueCount(self.0.clone());
        if n > 0 && !inner.features.multi_conn {
            return Err(Error::Unsupported(format!(
                "{}: the server does not allow multi-conn: serve this export with one queue",
                inner.uri
            )));
        }
        let first = inner
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let h = match first {
            Some(h) => h,
            None => handle::connect(&inner.c_uri, inner.opts.connect_timeout)
                .map_err(|e| Error::io(format!("{}: connecting", inner.uri), e))?,
        };
        NbdQueue::new(self.0.clone(), h, guard)
    }
}

/// Counts a live queue of an export; the count drops with the queue.
pub(crate) struct QueueCount(Arc<ExportInner>);

impl Drop for QueueCount {
    fn drop(&mut self) {
        self.0.queues.fetch_sub(1, Ordering::AcqRel);
    }
}

fn features(h: &handle::Handle) -> std::io::Result<NbdFeatures> {
    let [read_only, flush, fua, trim, zero, multi_conn] = h.flags()?;
    Ok(NbdFeatures {
        size: h.size()?,
        read_only,
        flush,
        fua,
        trim,
        zero,
        multi_conn,
        min_block: h.min_block_size().max(1),
    })
}
