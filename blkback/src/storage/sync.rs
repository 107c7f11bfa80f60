//! [`SyncStorage`]: a disk written as four blocking methods, and
//! [`Synchronous`], which serves one through the asynchronous seam.

use super::seam::{DiskInfo, Storage, StorageQueue};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use xenio_hostio::disk::{Completion, Io, IoSeg};

/// A disk as plain blocking calls: the simplest storage to write. Offsets and
/// lengths are bytes, multiples of 512 and inside [`DiskInfo::sectors`] (the
/// framework validated them); operations that overlap a write never run at the
/// same time, but others may, from several queue threads (`&self`, `Sync`).
///
/// Serve it wrapped in [`Synchronous`]. Each error becomes the blkif status of
/// the [table](super#what-the-frontend-sees): `Unsupported` from
/// [`flush`](Self::flush) or [`discard`](Self::discard) is `EOPNOTSUPP`, any
/// other error `ERROR`, for that request only.
///
/// ```
/// use std::io;
/// use std::sync::Mutex;
/// use xenio_blkback::storage::{DiskInfo, SyncStorage};
///
/// /// A disk in memory.
/// struct Mem(Mutex<Vec<u8>>);
///
/// impl SyncStorage for Mem {
///     fn info(&self) -> DiskInfo {
///         DiskInfo { sectors: self.0.lock().unwrap().len() as u64 / 512, ..Default::default() }
///     }
///     fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
///         let at = offset as usize;
///         buf.copy_from_slice(&self.0.lock().unwrap()[at..at + buf.len()]);
///         Ok(())
///     }
///     fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
///         let at = offset as usize;
///         self.0.lock().unwrap()[at..at + data.len()].copy_from_slice(data);
///         Ok(())
///     }
/// }
///
/// let disk = Mem(Mutex::new(vec![0; 1 << 20]));
/// disk.write_at(512, &[7; 512])?;
/// let mut back = [0; 512];
/// disk.read_at(512, &mut back)?;
/// assert_eq!(back, [7; 512]);
/// // Not implemented, so not offered (`DiskInfo::flush` is false) and unsupported.
/// assert_eq!(disk.flush().unwrap_err().kind(), io::ErrorKind::Unsupported);
/// # Ok::<(), io::Error>(())
/// ```
pub trait SyncStorage: Send + Sync {
    /// The disk's geometry and features. Set [`DiskInfo::flush`] if
    /// [`flush`](Self::flush) does something, [`DiskInfo::discard`] if
    /// [`discard`](Self::discard) does.
    fn info(&self) -> DiskInfo;
    /// Fill `buf` with the bytes at `offset`.
    ///
    /// # Errors
    ///
    /// Any: the request(s) reading these bytes get `ERROR`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write `data` at `offset`.
    ///
    /// # Errors
    ///
    /// Any: the request(s) writing these bytes get `ERROR`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make every completed write durable. Called only when [`DiskInfo::flush`]
    /// says so; the default says `Unsupported`.
    ///
    /// # Errors
    ///
    /// `Unsupported`: the request gets `EOPNOTSUPP`; any other: `ERROR`.
    fn flush(&self) -> io::Result<()> {
        Err(unsupported("flush"))
    }
    /// Forget `len` bytes at `offset` (what reads return afterwards is the
    /// storage's business). Called only when [`DiskInfo::discard`] says so; the
    /// default says `Unsupported`.
    ///
    /// # Errors
    ///
    /// `Unsupported`: the request gets `EOPNOTSUPP`; any other: `ERROR`.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(unsupported("discard"))
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this storage does not {what}"),
    )
}

/// A [`SyncStorage`] served as a [`Storage`]: each queue does its
/// operations one at a time, on the queue's thread, when they are submitted,
/// through one bounce buffer per queue (kept, so an operation allocates
/// nothing).
///
/// ```
/// # use std::io;
/// # use xenio_blkback::storage::{DiskInfo, SyncStorage};
/// # struct Zeros;
/// # impl SyncStorage for Zeros {
/// #     fn info(&self) -> DiskInfo { DiskInfo { sectors: 8, ..Default::default() } }
/// #     fn read_at(&self, _: u64, buf: &mut [u8]) -> io::Result<()> { buf.fill(0); Ok(()) }
/// #     fn write_at(&self, _: u64, _: &[u8]) -> io::Result<()> { Ok(()) }
/// # }
/// use xenio_blkback::storage::{Storage, Synchronous};
///
/// let storage = Synchronous::new(Zeros);
/// assert_eq!(storage.info().sectors, 8);
/// ```
#[derive(Debug)]
pub struct Synchronous<S>(Arc<S>);

impl<S> Synchronous<S> {
    /// Serve `disk`.
    pub fn new(disk: S) -> Self {
        Synchronous(Arc::new(disk))
    }

    /// Serve a disk the caller keeps a handle to.
    pub fn from_arc(disk: Arc<S>) -> Self {
        Synchronous(disk)
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<S> {
        &self.0
    }
}

impl<S> Clone for Synchronous<S> {
    fn clone(&self) -> Self {
        Synchronous(self.0.clone())
    }
}

impl<S: SyncStorage> Storage for Synchronous<S> {
    type Queue = SyncQueue<S>;

    fn info(&self) -> DiskInfo {
        self.0.info()
    }

    fn queue(&self, depth: u32) -> io::Result<SyncQueue<S>> {
        Ok(SyncQueue {
            disk: self.0.clone(),
            done: Vec::with_capacity(depth as usize),
            bounce: Vec::new(),
        })
    }
}

/// One queue of a [`Synchronous`] storage: operations run at submission,
/// their completions wait to be reaped.
#[derive(Debug)]
pub struct SyncQueue<S> {
    disk: Arc<S>,
    done: Vec<Completion>,
    /// Grows to the largest operation seen, then stays.
    bounce: Vec<u8>,
}

impl<S: SyncStorage> SyncQueue<S> {
    fn run(&mut self, io: Io) -> io::Result<usize> {
        let len = usize::try_from(io.len()).map_err(io::Error::other)?;
        match io {
            Io::Read { offset, segs } => {
                let buf = bounce(&mut self.bounce, len);
                self.disk.read_at(offset, buf)?;
                IoSeg::scatter(&segs, buf)?;
            }
            Io::Write { offset, segs } => {
                let buf = bounce(&mut self.bounce, len);
                IoSeg::gather(&segs, buf)?;
                self.disk.write_at(offset, buf)?;
            }
            Io::Flush => self.disk.flush()?,
            Io::Discard { offset, len } => self.disk.discard(offset, len)?,
        }
        Ok(len)
    }
}

/// The first `len` bytes of the queue's bounce buffer, grown if needed.
fn bounce(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

impl<S: SyncStorage> StorageQueue for SyncQueue<S> {
    fn submit(&mut self, tag: u64, io: Io) -> io::Result<()> {
        let result = self.run(io);
        self.done.push(Completion { tag, result });
        Ok(())
    }

    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        _wait_for: usize,
        _timeout: Option<Duration>,
    ) -> io::Result<()> {
        out.append(&mut self.done);
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        out.append(&mut self.done);
        Ok(())
    }
}
