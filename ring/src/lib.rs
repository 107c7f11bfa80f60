//! The shared request/response ring of Xen's `io/ring.h`, in safe Rust, over any
//! memory region.
//!
//! A ring is one region of `1 << order` pages: a 64-byte header with four
//! free-running `u32` indices, then a power-of-two array of entries, each a union
//! of a request and a response. The frontend ([`FrontRing`]) produces requests and
//! consumes responses; the backend ([`BackRing`]) does the opposite. The names
//! follow the C macros: [`FrontRing::push_requests_and_check_notify`] is
//! `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`, [`BackRing::final_check_for_requests`] is
//! `RING_FINAL_CHECK_FOR_REQUESTS`, and so on. The ring does no I/O and never
//! notifies: pushes return a `#[must_use]` [`Notify`] and the caller kicks its
//! event channel when it says so.
//!
//! ```
//! use std::sync::Arc;
//! use xenio_ring::{BackRing, FrontRing, HeapMemory};
//! use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse, BLKIF_OP_READ, BLKIF_RSP_OKAY};
//!
//! let mem = Arc::new(HeapMemory::pages(0));
//! let mut front = FrontRing::<BlkifRequest, BlkifResponse, _>::init(mem.clone())?;
//! let mut back = BackRing::<BlkifRequest, BlkifResponse, _>::attach(mem)?;
//! assert_eq!(front.size(), 32);
//!
//! front.push_request(&BlkifRequest { operation: BLKIF_OP_READ, id: 7, ..Default::default() })?;
//! assert!(front.push_requests_and_check_notify().is_required()); // the backend asked to be told
//!
//! let req = back.take_request()?.expect("one request");
//! back.push_response(&BlkifResponse::new(req.id, req.operation, BLKIF_RSP_OKAY))?;
//! assert!(back.push_responses_and_check_notify().is_required());
//! assert!(!back.final_check_for_requests()?); // idle: the next request will notify us
//!
//! assert_eq!(front.take_response()?.map(|r| r.id), Some(7));
//! # Ok::<(), xenio_ring::RingError>(())
//! ```
//!
//! # Memory ordering
//!
//! Every access to shared memory is an aligned 32-bit atomic (see [`shm`]). The
//! protocol needs three kinds of ordering, named after ring.h's barriers:
//!
//! - **`xen_wmb` → Release.** A producer writes entries with relaxed stores, then
//!   publishes its producer index (`req_prod` / `rsp_prod`) with a Release store.
//! - **`xen_rmb` → Acquire.** A consumer loads the peer's producer index with
//!   Acquire before reading the entries it covers; that pairs with the Release
//!   above, so the entries are complete. The same Acquire also tells the frontend
//!   that the backend has finished reading a slot before the frontend reuses it.
//! - **`xen_mb` → `fence(SeqCst)`.** This is the one that prevents lost wake-ups.
//!   The producer stores its index, then reads the consumer's event index
//!   (`req_event`) to decide whether to notify. The consumer, going idle, stores
//!   the event index and then re-reads the producer index
//!   (`RING_FINAL_CHECK_FOR_*`). Each side does *store A, then load B* while the
//!   other does *store B, then load A*. Without a full fence, both loads may be
//!   satisfied before either store is visible (store buffers: x86 allows exactly
//!   this reordering), and then the producer sees an old event index and does not
//!   notify while the consumer sees the old producer index and goes to sleep: the
//!   request sits in the ring and nobody wakes up. With a SeqCst fence between
//!   store and load on both sides, at least one of them sees the other's store:
//!   either the producer notifies or the consumer finds the work.
//!   `tests/loom.rs` checks this exhaustively (`RUSTFLAGS="--cfg loom"`).
//!
//! # A peer that misbehaves
//!
//! The peer is another domain and may write anything at any time. Each entry is
//! copied out of shared memory exactly once before it is returned (the C
//! `RING_COPY_REQUEST`), indices are masked before they become offsets, and a
//! producer index outside the window the protocol allows is an error that marks
//! the ring broken ([`RingError::is_broken`]), never a loop bound. No content of
//! the region can make a call panic, loop, or allocate without bound.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod back;
mod error;
mod front;
mod notify;
pub mod shm;
pub mod spin;
mod sring;
mod sync;
pub mod wait;

pub use back::BackRing;
pub use error::RingError;
pub use front::FrontRing;
pub use notify::Notify;
pub use shm::{HeapMemory, SharedMemory};
#[cfg(not(loom))]
pub use shm::{MmapRegion, RawRegion};
pub use sync::AtomicU32;
pub use xenio_xen_sys::ring::RingIdx;

use xenio_xen_sys::{blkif, netif};

/// A blkif frontend ring (`blkif_front_ring_t`).
pub type BlkifFrontRing<M> = FrontRing<blkif::BlkifRequest, blkif::BlkifResponse, M>;
/// A blkif backend ring (`blkif_back_ring_t`).
pub type BlkifBackRing<M> = BackRing<blkif::BlkifRequest, blkif::BlkifResponse, M>;
/// A netif tx frontend ring (`netif_tx_front_ring_t`).
pub type NetifTxFrontRing<M> = FrontRing<netif::NetifTxRequest, netif::NetifTxResponse, M>;
/// A netif tx backend ring (`netif_tx_back_ring_t`).
pub type NetifTxBackRing<M> = BackRing<netif::NetifTxRequest, netif::NetifTxResponse, M>;
/// A netif rx frontend ring (`netif_rx_front_ring_t`).
pub type NetifRxFrontRing<M> = FrontRing<netif::NetifRxRequest, netif::NetifRxResponse, M>;
/// A netif rx backend ring (`netif_rx_back_ring_t`).
pub type NetifRxBackRing<M> = BackRing<netif::NetifRxRequest, netif::NetifRxResponse, M>;
