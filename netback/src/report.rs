//! Failed frames, as the program serving a vif sees them: [`FrameFailure`]
//! (what failed, and what the frontend was told) and [`FrameErrorHook`] (a
//! callback for each), besides the counters and `tracing`.

use std::fmt;
use std::io;
use std::sync::Arc;

/// A [`Frames`](crate::Frames) call that failed: counted
/// ([`Counters::tx_network_errors`](crate::Counters::tx_network_errors) or
/// [`Counters::rx_network_errors`](crate::Counters::rx_network_errors)),
/// handed to the [`FrameErrorHook`], and logged (`tracing`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameFailure {
    /// `"send"` (a packet from the frontend: it was answered
    /// `NETIF_RSP_ERROR`, the ring goes on) or `"recv"` (reading for the
    /// frontend: the queue stopped and the frontend was disconnected).
    pub op: &'static str,
    /// The packet's bytes (`send`; 0 for `recv`).
    pub len: usize,
    /// The error's kind.
    pub kind: io::ErrorKind,
    /// The OS error number, if it had one.
    pub errno: Option<i32>,
    /// The error, as text.
    pub message: String,
}

impl FrameFailure {
    pub(crate) fn new(op: &'static str, len: usize, e: &io::Error) -> Self {
        FrameFailure {
            op,
            len,
            kind: e.kind(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for FrameFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            "send" => write!(
                f,
                "sending a packet of {} bytes failed (answered NETIF_RSP_ERROR): {}",
                self.len, self.message
            ),
            _ => write!(
                f,
                "{} failed (the frontend is disconnected): {}",
                self.op, self.message
            ),
        }
    }
}

/// A callback for every [`FrameFailure`], called on the queue thread that saw
/// it (keep it short: the queue waits for it).
#[derive(Clone)]
pub struct FrameErrorHook(pub Arc<dyn Fn(&FrameFailure) + Send + Sync>);

impl FrameErrorHook {
    /// Call `f` for each failure.
    pub fn new(f: impl Fn(&FrameFailure) + Send + Sync + 'static) -> Self {
        FrameErrorHook(Arc::new(f))
    }
}

impl fmt::Debug for FrameErrorHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameErrorHook(..)")
    }
}
