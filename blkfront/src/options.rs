//! What the frontend asks for ([`Options`]) and what it got ([`Info`]).

use std::time::Duration;
use xenio_ring::wait::Wait;
use xenio_xen_sys::blkif::BLKIF_SECTOR_SIZE;

/// What the frontend asks for; the backend's limits cap each.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest ring page order to use (0..=4 like Linux; the backend's
    /// `max-ring-page-order` caps it).
    pub max_ring_page_order: u32,
    /// Queues (rings) to use; the backend's `multi-queue-max-queues` caps it.
    pub queues: u32,
    /// Segments per indirect request (0: never use indirect requests); the
    /// backend's `feature-max-indirect-segments` caps it.
    pub indirect_segments: u32,
    /// Advertise `feature-persistent` (the data pool is granted once either
    /// way); never to a backend the toolstack does not trust (see
    /// [`BlkFront::backend_trusted`](crate::BlkFront::backend_trusted)).
    pub persistent: bool,
    /// Pages in the data pool granted to the backend (buffers come from here).
    pub pool_pages: usize,
    /// How long to wait for the backend at each step before giving up.
    pub timeout: Duration,
    /// How long [`BlkFront::connect`](crate::BlkFront::connect) waits for the
    /// device to appear (its `backend` key, written by the toolstack or
    /// `xenio blkback --create-device`) and its backend to start (its `state`
    /// past `Initialising`), before failing with
    /// [`Error::NotReady`](crate::Error::NotReady). Zero: do not wait.
    pub device_timeout: Duration,
    /// How [`BlkFront::poll`](crate::BlkFront::poll) waits for responses. A
    /// sleep and its wake-up cost 13-36 us on small VMs, about a fast disk's
    /// latency, so spinning cuts the latency of shallow queues; but a spin that
    /// lasts longer than the wait it replaces only burns a CPU.
    /// [`Wait::Adaptive`] (the default) spins only while the recent waits say
    /// responses are due soon (within 150 us: one request in flight on a fast
    /// disk, anything on memory) and sleeps on the event channels otherwise
    /// (a burst of 32 requests on a disk, 1 MiB I/O, an idle device); see
    /// [`xenio_ring::wait`]. [`Wait::Fixed`] always spins that long before
    /// sleeping (zero: never spin).
    pub wait: Wait,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_ring_page_order: 4,
            queues: 1,
            indirect_segments: 32,
            persistent: true,
            pool_pages: 4096,
            timeout: Duration::from_secs(30),
            device_timeout: Duration::from_secs(30),
            wait: Wait::Adaptive,
        }
    }
}

/// What was negotiated, and the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Disk size in 512-byte sectors (`sectors` is in `sector-size` units on the
    /// wire for some backends; xenio follows Linux: 512-byte units).
    pub sectors: u64,
    /// `sector-size`.
    pub sector_size: u32,
    /// `physical-sector-size`.
    pub physical_sector_size: u32,
    /// `info` has `VDISK_READONLY` (or `mode` is `r`).
    pub readonly: bool,
    /// `feature-flush-cache`.
    pub flush: bool,
    /// `feature-barrier`.
    pub barrier: bool,
    /// `feature-discard` with (`discard-granularity`, `discard-alignment`).
    pub discard: Option<(u64, u64)>,
    /// The ring page order in use.
    pub ring_page_order: u32,
    /// Queues in use.
    pub queues: u32,
    /// Segments per request (11, or the indirect segment count in use).
    pub max_segments: usize,
    /// The backend's `feature-persistent`.
    pub persistent: bool,
}

impl Info {
    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * BLKIF_SECTOR_SIZE as u64
    }
}
