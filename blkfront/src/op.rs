//! What a caller submits ([`Op`]), the receipt ([`Token`]) and what comes back
//! ([`Done`]).

use crate::error::Result;
use crate::pool::Buf;

/// An I/O to submit. Offsets and lengths are in bytes, multiples of 512.
#[derive(Debug)]
pub enum Op {
    /// Read `buf.len()` bytes at `offset` into `buf`.
    Read {
        /// Byte offset on the disk.
        offset: u64,
        /// Destination (returned in the completion).
        buf: Buf,
    },
    /// Write `buf` at `offset`.
    Write {
        /// Byte offset on the disk.
        offset: u64,
        /// Source (returned in the completion).
        buf: Buf,
    },
    /// Write `buf` at `offset` ordered after every earlier request and durable
    /// before it completes (`BLKIF_OP_WRITE_BARRIER`; needs `feature-barrier`).
    WriteBarrier {
        /// Byte offset on the disk.
        offset: u64,
        /// Source (returned in the completion).
        buf: Buf,
    },
    /// Make completed writes durable (`BLKIF_OP_FLUSH_DISKCACHE`).
    Flush,
    /// Discard `len` bytes at `offset` (`BLKIF_OP_DISCARD`).
    Discard {
        /// Byte offset on the disk.
        offset: u64,
        /// Bytes.
        len: u64,
    },
}

/// Identifies a submitted [`Op`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// A completed [`Op`].
#[derive(Debug)]
pub struct Done {
    /// The token [`BlkFront::submit`](crate::BlkFront::submit) returned.
    pub token: Token,
    /// Success, or why not.
    pub result: Result<()>,
    /// The op's buffer, back to the caller.
    pub buf: Option<Buf>,
}
