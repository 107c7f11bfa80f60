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

    /// Copy `buf.len()` bytes at `offset` of the region into `buf` (read-write
    /// and read-only memory alike).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when the bytes are not all inside the region.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        match self {
            IoMem::ReadWrite(r) => r.read(offset, buf),
            IoMem::ReadOnly(r) => r.read(offset, buf),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }

    /// Copy `data` into the region at `offset`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::PermissionDenied`] for read-only memory (a read-only
    /// grant: the destination of a read must be writable),
    /// [`io::ErrorKind::InvalidInput`] when the bytes are not all inside the region.
    pub fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        match self {
            IoMem::ReadWrite(r) => r
                .write(offset, data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
            IoMem::ReadOnly(_) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a read into read-only memory",
            )),
        }
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

impl IoSeg {
    /// Copy the segment's bytes into `buf` (the source of a write: `buf` must be
    /// exactly [`len`](Self::len) bytes).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `buf` is not the segment's length or
    /// the segment lies outside its memory.
    pub fn read_into(&self, buf: &mut [u8]) -> io::Result<()> {
        self.check_len(buf.len())?;
        self.mem.read(self.offset, buf)
    }

    /// Fill the segment with `data` (the destination of a read: `data` must be
    /// exactly [`len`](Self::len) bytes).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::PermissionDenied`] when the segment is read-only memory,
    /// [`io::ErrorKind::InvalidInput`] when `data` is not the segment's length or
    /// the segment lies outside its memory.
    pub fn write_from(&self, data: &[u8]) -> io::Result<()> {
        self.check_len(data.len())?;
        self.mem.write(self.offset, data)
    }

    /// Gather `segs`, in order, into `out` (their total length): the bytes a
    /// write puts on the disk.
    ///
    /// # Errors
    ///
    /// As [`read_into`](Self::read_into); `out` must be exactly as long as the
    /// segments together.
    pub fn gather(segs: &[IoSeg], out: &mut [u8]) -> io::Result<()> {
        let (mut at, total) = (0, out.len());
        for s in segs {
            let dst = out.get_mut(at..at + s.len).ok_or_else(|| short(total))?;
            s.read_into(dst)?;
            at += s.len;
        }
        if at != total {
            return Err(short(total));
        }
        Ok(())
    }

    /// Scatter `data` over `segs`, in order (their total length): what a read
    /// brings back from the disk.
    ///
    /// # Errors
    ///
    /// As [`write_from`](Self::write_from); `data` must be exactly as long as the
    /// segments together.
    pub fn scatter(segs: &[IoSeg], data: &[u8]) -> io::Result<()> {
        let mut at = 0;
        for s in segs {
            let src = data.get(at..at + s.len).ok_or_else(|| short(data.len()))?;
            s.write_from(src)?;
            at += s.len;
        }
        if at != data.len() {
            return Err(short(data.len()));
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> io::Result<()> {
        if len != self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a buffer of {len} bytes for a segment of {}", self.len),
            ));
        }
        Ok(())
    }
}

fn short(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a buffer of {len} bytes is not the segments' total length"),
    )
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

impl Io {
    /// Byte offset on the disk (0 for a flush).
    pub fn offset(&self) -> u64 {
        match self {
            Io::Read { offset, .. } | Io::Write { offset, .. } | Io::Discard { offset, .. } => {
                *offset
            }
            Io::Flush => 0,
        }
    }

    /// Bytes on the disk it covers: the segments' total for a read or a write,
    /// the discarded length, 0 for a flush.
    pub fn len(&self) -> u64 {
        match self {
            Io::Read { segs, .. } | Io::Write { segs, .. } => {
                segs.iter().map(|s| s.len as u64).sum()
            }
            Io::Discard { len, .. } => *len,
            Io::Flush => 0,
        }
    }

    /// Whether it covers no bytes (a flush).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `"read"`, `"write"`, `"flush"` or `"discard"`.
    pub fn name(&self) -> &'static str {
        match self {
            Io::Read { .. } => "read",
            Io::Write { .. } => "write",
            Io::Flush => "flush",
            Io::Discard { .. } => "discard",
        }
    }
}

/// "Busy, try again later": what a storage queue's `submit` returns (as an
/// [`io::Error`] of kind [`io::ErrorKind::WouldBlock`] carrying this type) when
/// it cannot take an operation now, though it could once some in flight
/// complete. Not a failure: the caller completes something and submits the
/// same operation again. Any other error fails the operation.
///
/// ```
/// use std::io;
/// use xenio_hostio::disk::Busy;
///
/// let e: io::Error = Busy.into();
/// assert!(Busy::is(&e));
/// assert!(Busy::is(&io::ErrorKind::WouldBlock.into()));
/// assert!(!Busy::is(&io::Error::other("disk on fire")));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Busy;

impl Busy {
    /// Whether `e` says "busy, try again later": this type, or any error of kind
    /// [`io::ErrorKind::WouldBlock`] (a non-blocking socket's, say).
    pub fn is(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::WouldBlock
    }
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the storage queue is full: try again once something completes")
    }
}

impl std::error::Error for Busy {}

impl From<Busy> for io::Error {
    fn from(b: Busy) -> io::Error {
        io::Error::new(io::ErrorKind::WouldBlock, b)
    }
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
