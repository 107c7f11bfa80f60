//! What the frontend counts ([`Counters`]), readable from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters (read them any time).
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames put on the tx rings.
    pub tx_packets: AtomicU64,
    /// Their bytes.
    pub tx_bytes: AtomicU64,
    /// Tx slots used.
    pub tx_slots: AtomicU64,
    /// Tx packets the backend answered with an error or dropped.
    pub tx_errors: AtomicU64,
    /// Frames received.
    pub rx_packets: AtomicU64,
    /// Their bytes.
    pub rx_bytes: AtomicU64,
    /// Rx slots consumed.
    pub rx_slots: AtomicU64,
    /// Received packets dropped (error status, bad offset or size, too long).
    pub rx_errors: AtomicU64,
    /// Notifications sent to the backend (tx and rx channels).
    pub notifications: AtomicU64,
    /// Times [`NetFront::wait`](crate::NetFront::wait) slept on the event channels.
    pub sleeps: AtomicU64,
    /// Reconnections to a new backend.
    pub reconnects: AtomicU64,
}

/// Add `n` to counter `c`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
