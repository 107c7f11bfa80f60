//! The netif backend framework: serve a virtual network interface to any netif
//! frontend (xenio's netfront, Linux's xen-netfront) over any platform, with
//! the frames going to and coming from a [`frames::Network`] — a Linux TAP
//! device ([`frames::TapNetwork`]) or anything else.
//!
//! Per queue there is one tx ring and one rx ring (`xen/io/netif.h`), one or
//! two event channels (`feature-split-event-channels`), and one thread
//! ([`queue::QueueWorker`]). The backend copies: tx fragments are grant-copied
//! out of the frontend's pages into one buffer per packet, and frames for the
//! frontend are grant-copied into the rx buffers it posted
//! (`feature-rx-copy`). Every tx request is copied out of the ring once, then
//! validated ([`tx::parse`]): a bad packet is answered with errors and dropped,
//! a protocol violation disconnects the frontend, never a crash.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod csum;
mod error;
pub mod frames;
pub mod queue;
pub mod tx;

pub use backend::{BackendConfig, Outcome, serve};
pub use error::{Error, Result};
pub use frames::{Frames, MemFrames, MemNetwork, Network, TapNetwork};
pub use queue::{Counters, QueueConfig, QueueRings, QueueState, QueueWorker};
