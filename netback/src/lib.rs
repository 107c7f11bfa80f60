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
//!
//! Offloads go end to end when both sides take them ([`packet`],
//! [`offload`]): a frontend's TCP segments of up to 64 KiB (the GSO extra)
//! and blank checksums reach a network that takes them whole, with their
//! [`Meta`] (a TAP opened with the virtio-net header passes them to the host
//! as they are), and the network's large segments reach a frontend that
//! negotiated GSO with the GSO extra and `NETRXF_csum_blank`; whatever one
//! side cannot take, netback finishes (checksums) or cuts (segments).
//!
//! For a custom backend (a switch, a filter): implement [`Network`] and
//! [`Frames`] in `std::io` terms ([`frames`] has the table of what each
//! outcome means to the frontend), and serve a vif with [`Vif`];
//! `docs/network-backend-guide.md` walks through it, `examples/echo_backend.rs`
//! is one.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod csum;
mod error;
pub mod frames;
pub mod inline;
pub mod offload;
pub mod packet;
pub mod queue;
mod report;
mod rxbuf;
mod signals;
pub mod tx;
mod vif;

pub use backend::{BackendConfig, Outcome, serve};
pub use error::{Error, Result};
pub use frames::{Frames, MemFrames, MemNetwork, Network, TapNetwork, TapQueue};
pub use packet::{Checksum, Gso, GsoKind, Meta, Offloads, Received, Sent};
pub use queue::{Counters, QueueConfig, QueueRings, QueueState, QueueWorker};
pub use report::{FrameErrorHook, FrameFailure};
pub use rxbuf::{RX_BUF, RxBuf};
pub use signals::stop_on_signals;
pub use vif::Vif;
