//! The netif frontend, as a library: connect to any netif backend through the
//! XenbusState handshake, then send and receive Ethernet frames through the
//! shared tx and rx rings; [`NetFront`] also implements smoltcp's
//! [`phy::Device`](smoltcp::phy::Device), so a user gets a TCP/IP stack over a
//! Xen vif ([`stack::Stack`]).
//!
//! Per queue, the frontend grants one page per tx ring slot (read-only: frames
//! are copied into them) and one page per rx ring slot (read-write: the backend
//! copies received frames into them, `request-rx-copy`). The rx ring is kept
//! full: every buffer the backend fills is copied out and posted again at once.
//! As in Linux's netfront, the rx request at ring index `i` has id
//! `i % ring size` and uses buffer page `i % ring size`.
//!
//! Nothing the backend writes is trusted: a response for a slot not in flight,
//! an rx response whose offset and size run past its page, or a packet longer
//! than any frame is counted and dropped, never a panic. When the backend goes
//! away and comes back (its `state` leaves `Connected`), the frontend
//! reconnects; frames in flight at that moment are lost, as on a real link.
//!
//! [`NetFront::connect`] starts; [`NetFront::send`] and [`NetFront::recv`]
//! have runnable examples against xenio's own backend, in one process.
//!
//! The modules, each one idea (a parent declares and drives its children; a
//! child imports only the types it needs, never its parent, so no file imports
//! one that imports it):
//!
//! - `options`: [`Options`] (what is asked for), [`Info`] (what was
//!   negotiated), [`MAX_FRAME`], [`parse_mac`];
//! - `counters`: [`Counters`];
//! - `packet`: [`PacketMeta`] (checksum offload and large TCP segments for
//!   [`NetFront::send_packet`] and [`NetFront::recv_packet`]);
//! - `front`: [`NetFront`], which drives its parts: `front::handshake` (the
//!   XenbusState handshake), `front::queue` (one queue, its two rings and
//!   event channel(s)), `front::tx` (a tx ring, its pages, a frame's layout in
//!   slots), `front::rx` (an rx ring kept full of buffers, packet reassembly);
//! - `phy`: smoltcp's `phy::Device` ([`RxToken`], [`TxToken`]);
//! - [`stack`]: a smoltcp interface and sockets over a [`NetFront`];
//! - `error`: [`Error`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "test-utils")]
pub mod bulk_tcp;
mod counters;
mod error;
mod front;
mod options;
mod packet;
mod phy;
pub mod stack;

pub use counters::Counters;
pub use error::{Error, Result};
pub use front::NetFront;
pub use options::{Info, MAX_FRAME, Options, parse_mac};
pub use packet::{Gso, GsoKind, PacketMeta};
pub use phy::{RxToken, TxToken};
