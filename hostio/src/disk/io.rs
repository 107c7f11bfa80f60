//! What an operation is made of: [`Io`], the memory it names ([`IoSeg`] of
//! an [`IoMem`]), and what comes back ([`Completion`]).

use std::io;
use std::sync::Arc;
use xenio_xenbus::{ReadOnlyRegion, Region};

/// Memory an operation reads into or writes from.
#[derive(Clone, Debug)]
pub enum IoMem {
    /// Read-write memory: the source of a write or the destination of a read.
    ReadWrite(Arc<Region>),
    /// Read-only memory (a read-only grant): only the source of a write.
    ReadOnly(Arc<ReadOnlyRegion>),
}

impl IoMem {
    /// Length of the whole region in bytes.
    pub fn len(&self) -> usize {
        match self {
            IoMem::ReadWrite(r) => r.len(),
            IoMem::ReadOnly(r) => r.len(),
        }
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the kernel may write into it.
    pub fn is_writable(&self) -> bool {
        matches!(self, IoMem::ReadWrite(_))
    }

    pub(crate) fn base(&self) -> *mut u8 {
        match self {
            IoMem::ReadWrite(r) => r.as_ptr(),
            // Only ever used as the source of a write (checked before submission).
            IoMem::ReadOnly(r) => r.as_ptr().cast_mut(),
        }
    }
}

impl From<Arc<Region>> for IoMem {
    fn from(r: Arc<Region>) -> Self {
        IoMem::ReadWrite(r)
    }
}

impl From<Arc<ReadOnlyRegion>> for IoMem {
    fn from(r: Arc<ReadOnlyRegion>) -> Self {
        IoMem::ReadOnly(r)
    }
}

/// A piece of a region: `len` bytes at `offset` (a blkif segment, say).
#[derive(Clone, Debug)]
pub struct IoSeg {
    /// The region.
    pub mem: IoMem,
    /// Byte offset in the region.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl IoSeg {
    /// `len` bytes at `offset` of `mem`.
    pub fn new(mem: impl Into<IoMem>, offset: usize, len: usize) -> Self {
        IoSeg {
            mem: mem.into(),
            offset,
            len,
        }
    }
}

/// One storage operation.
#[derive(Clone, Debug)]
pub enum Io {
    /// Read from the disk at byte `offset` into the segments, in order.
    /// The segments must be read-write memory.
    Read {
        /// Byte offset on the disk.
        offset: u64,
        /// Where the data goes, in order.
        segs: Vec<IoSeg>,
    },
    /// Write the segments, in order, to the disk at byte `offset`.
    Write {
        /// Byte offset on the disk.
        offset: u64,
        /// Where the data comes from, in order.
        segs: Vec<IoSeg>,
    },
    /// Make every completed write durable (`fdatasync`).
    Flush,
    /// Discard `len` bytes at `offset`: punch a hole in a file
    /// (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`, reads return zeros afterwards),
    /// `BLKDISCARD` on a block device (what reads return afterwards is the
    /// device's business). Both must be multiples of the logical sector size.
    /// `BLKDISCARD` is an ioctl: on a block device the discard runs synchronously
    /// at submission, even in io_uring mode.
    Discard {
        /// Byte offset on the disk.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

/// The outcome of one operation.
#[derive(Debug)]
pub struct Completion {
    /// The tag given to [`DiskQueue::submit`](super::DiskQueue::submit).
    pub tag: u64,
    /// Bytes read or written (the whole request: short transfers are continued
    /// by the queue), the length discarded, or 0 for a flush. An error names the
    /// file, the operation and the OS error (see [`Completion::errno`]).
    pub result: Result<usize, io::Error>,
}

impl Completion {
    /// The OS error number of a failed operation, if the kernel reported one.
    pub fn errno(&self) -> Option<i32> {
        let e = self.result.as_ref().err()?;
        e.raw_os_error().or_else(|| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<OpError>())
                .and_then(|op| op.source.raw_os_error())
        })
    }
}

/// A failed operation: what was being done, on which file, and the OS error.
/// Carried inside the `io::Error` of a [`Completion`] (same `kind()`).
#[derive(Debug)]
pub struct OpError {
    /// `"<path>: read of 4096 bytes at offset 8192"`, say.
    pub what: String,
    /// The OS error (or the queue's, for an unexpected end of file).
    pub source: io::Error,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for OpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl OpError {
    pub(crate) fn into_io(what: String, source: io::Error) -> io::Error {
        io::Error::new(source.kind(), OpError { what, source })
    }
}
