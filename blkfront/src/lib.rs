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
//! acknowledged write is lost.
//!
//! [`BlkFront::connect`] starts; every entry point's documentation has a
//! runnable example against xenio's own backend, in one process.
//!
//! The modules, each one idea (only this file declares them; each imports only
//! the types it needs from the others, so no file imports one that imports it):
//!
//! - `options`: [`Options`] (what is asked for) and [`Info`] (what was negotiated);
//! - `pool`: the granted data pool and its buffers ([`Buf`]);
//! - `op`: [`Op`], [`Token`], [`Done`];
//! - `submit`: checking an op and splitting it into blkif requests;
//! - `queue`: one ring, its slots, request ids and response validation;
//! - `complete`: ops in flight until their last request is answered;
//! - `handshake`: the frontend's side of the XenbusState handshake;
//! - `front`: [`BlkFront`], which drives all of them;
//! - `blocking`: `read_at`, `write_at`, `flush`, `discard` on top of submit/poll;
//! - `error`: [`Error`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blocking;
mod complete;
mod error;
mod front;
mod handshake;
mod op;
mod options;
mod pool;
mod queue;
mod submit;

pub use error::{Error, Result};
pub use front::BlkFront;
pub use op::{Done, Op, Token};
pub use options::{Info, Options};
pub use pool::Buf;
