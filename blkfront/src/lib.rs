//! The blkif frontend, as a library: connect to any blkif backend through the
//! XenbusState handshake, then do block I/O through the shared ring.
//!
//! Data lives in a pool of pages granted to the backend once, at connect time
//! (persistent grants): [`BlkFront::alloc`] hands out buffers from it, so the data
//! path is zero copy. Submission is asynchronous ([`BlkFront::submit`] returns a
//! [`Token`], [`BlkFront::poll`] returns completions); [`BlkFront::read_at`],
//! [`BlkFront::write_at`], [`BlkFront::flush`] and [`BlkFront::discard`] are the
//! blocking conveniences. Large I/Os are split into requests of at most 11
//! segments, or indirect requests when the backend offers them.
//!
//! Nothing the backend writes is trusted: an unknown or duplicate response id, or
//! a response with the wrong operation, is an error, never a panic. When the
//! backend goes away and a new one comes (its `state` leaves `Connected`), the
//! frontend reconnects and re-issues every request that had no response, so no
//! acknowledged write is lost. When the device itself goes away (its store
//! directories removed: the backend stopped and detached it, or the toolstack
//! did), the next operation fails at once with [`Error::Closed`].
//! [`BlkFront::connect`] waits, up to [`Options::device_timeout`], for a device
//! that is not there yet, and says what is missing ([`Error::NotReady`]).
//!
//! [`BlkFront::connect`] starts; every entry point's documentation has a
//! runnable example against xenio's own backend, in one process.
//!
//! The modules, each one idea (a parent declares and drives its children; a
//! child imports only the types it needs, never its parent, so no file imports
//! one that imports it):
//!
//! - `options`: [`Options`] (what is asked for) and [`Info`] (what was negotiated);
//! - `pool`: the granted data pool and its buffers ([`Buf`]);
//! - `op`: [`Op`], [`Token`], [`Done`];
//! - `front`: [`BlkFront`], which drives its parts: `front::handshake` (the
//!   XenbusState handshake), `front::submit` (an op checked and split into
//!   requests), `front::queue` (one ring, its slots, request ids, response
//!   validation), `front::complete` (ops until their last request is answered);
//! - `blocking`: `read_at`, `write_at`, `flush`, `discard` on top of submit/poll;
//! - `error`: [`Error`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blocking;
mod error;
mod front;
mod op;
mod options;
mod pool;

pub use error::{Error, Result};
pub use front::BlkFront;
pub use op::{Done, Op, Token};
pub use options::{Info, Options};
pub use pool::Buf;
pub use xenio_ring::wait::{Wait, WaitStats};
