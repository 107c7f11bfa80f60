//! Failed storage operations, as the program serving a disk sees them:
//! [`IoFailure`] (what failed, and what the frontend was told) and
//! [`IoErrorHook`] (a callback for each).

use std::fmt;
use std::io;
use std::sync::Arc;

/// A storage operation that failed one or more requests: counted in
/// [`Counters::io_errors`](crate::Counters::io_errors), kept as
/// [`Counters::last_io_error`](crate::Counters::last_io_error), handed to the
/// [`IoErrorHook`], and logged (`tracing`, `warn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoFailure {
    /// `"read"`, `"write"`, `"flush"` or `"discard"`.
    pub op: &'static str,
    /// First byte on the disk (0 for a flush).
    pub offset: u64,
    /// Bytes on the disk (0 for a flush).
    pub len: u64,
    /// Requests answered with this failure.
    pub requests: usize,
    /// The blkif status they got (`BLKIF_RSP_ERROR` or `BLKIF_RSP_EOPNOTSUPP`).
    pub status: i16,
    /// The error's kind.
    pub kind: io::ErrorKind,
    /// The OS error number, if it had one.
    pub errno: Option<i32>,
    /// The error, as text.
    pub message: String,
}

impl IoFailure {
    /// Describe a failed operation.
    pub(crate) fn new(
        op: &'static str,
        (offset, len): (u64, u64),
        requests: usize,
        status: i16,
        e: &io::Error,
    ) -> Self {
        IoFailure {
            op,
            offset,
            len,
            requests,
            status,
            kind: e.kind(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} bytes at {} failed ({} request(s) answered {}): {}",
            self.op, self.len, self.offset, self.requests, self.status, self.message
        )
    }
}

/// A callback for every [`IoFailure`], called on the queue thread that saw
/// it (keep it short: the queue waits for it).
#[derive(Clone)]
pub struct IoErrorHook(pub Arc<dyn Fn(&IoFailure) + Send + Sync>);

impl IoErrorHook {
    /// Call `f` for each failure.
    pub fn new(f: impl Fn(&IoFailure) + Send + Sync + 'static) -> Self {
        IoErrorHook(Arc::new(f))
    }
}

impl fmt::Debug for IoErrorHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IoErrorHook(..)")
    }
}
