//! The asynchronous storage seam: [`Storage`] (a disk) and [`StorageQueue`]
//! (one ring's I/O context), and [`DiskInfo`] (what the frontend is told).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;
use xenio_hostio::disk::{Completion, DiscardInfo, Io, IoMem, WaitEnd};

/// What the frontend is told about the disk.
///
/// [`Default`] is a 0-byte, writable disk of 512-byte sectors without flush or
/// discard: set what differs.
///
/// ```
/// use xenio_blkback::DiskInfo;
///
/// let info = DiskInfo { sectors: (64 << 20) / 512, flush: true, ..Default::default() };
/// assert_eq!(info.sector_size, 512);
/// assert!(info.discard.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors (whatever `sector_size` says, as blkif counts).
    pub sectors: u64,
    /// Logical sector size (`sector-size`).
    pub sector_size: u32,
    /// Physical sector size (`physical-sector-size`).
    pub physical_sector_size: u32,
    /// Writes are refused (answered `ERROR` without reaching the storage).
    pub readonly: bool,
    /// Flushes do something (`feature-flush-cache`, `feature-barrier`): the
    /// storage gets [`Io::Flush`] (or [`SyncStorage::flush`](super::SyncStorage::flush)).
    pub flush: bool,
    /// Discard support (`feature-discard`, `discard-granularity`,
    /// `discard-alignment`): the storage gets [`Io::Discard`] (or
    /// [`SyncStorage::discard`](super::SyncStorage::discard)).
    pub discard: Option<DiscardInfo>,
    /// One line for logs: what is served and how.
    pub description: String,
}

impl Default for DiskInfo {
    fn default() -> Self {
        DiskInfo {
            sectors: 0,
            sector_size: 512,
            physical_sector_size: 512,
            readonly: false,
            flush: false,
            discard: None,
            description: String::new(),
        }
    }
}

/// A disk blkback can serve, asynchronously: one [`StorageQueue`] per ring.
/// (A storage that does its I/O where it is asked is simpler to write as a
/// [`SyncStorage`](super::SyncStorage).)
pub trait Storage: Send + Sync {
    /// One queue's I/O context.
    type Queue: StorageQueue;
    /// The disk's geometry and features, read when a frontend connects.
    fn info(&self) -> DiskInfo;
    /// A new I/O context for one ring, with room for `depth` operations in
    /// flight, used by that ring's thread only.
    ///
    /// # Errors
    ///
    /// Any: the frontend's connection fails (it is disconnected and may try
    /// again), see the [table](super#what-the-frontend-sees).
    fn queue(&self, depth: u32) -> io::Result<Self::Queue>;
    /// The disk's size in 512-byte sectors now. [`crate::serve`] asks every
    /// 200 ms while a frontend is connected: a storage that can grow (an image
    /// file extended with `truncate -s`, a resized block device) returns its new
    /// size, and the frontend is told as Linux's blkback tells it (online
    /// resize). The default is [`Storage::info`]'s, which never changes.
    fn sectors(&self) -> u64 {
        self.info().sectors
    }

    /// Most queues this storage can have at once (an NBD export without
    /// multi-conn: one); the backend offers no more than this
    /// (`multi-queue-max-queues`). `None`, the default: no limit of its own.
    fn max_queues(&self) -> Option<u32> {
        None
    }
}

/// One queue's asynchronous I/O. The queue worker submits operations,
/// starts them, and reaps their [`Completion`]s; operations in flight at the
/// same time never overlap a write (the worker orders those), so they may
/// complete in any order.
pub trait StorageQueue: Send {
    /// Queue an operation; `tag` comes back in its [`Completion`].
    ///
    /// # Errors
    ///
    /// [`Busy`](super::Busy) (or any error of kind `WouldBlock`) when the queue
    /// is full: the worker completes something and submits the same operation
    /// again. Any other error fails the operation as a completion with that
    /// error would.
    fn submit(&mut self, tag: u64, io: Io) -> io::Result<()>;
    /// Start everything queued (the default does nothing: for queues that
    /// start operations in [`submit`](Self::submit)).
    ///
    /// # Errors
    ///
    /// Any: the queue has failed and the frontend is disconnected.
    fn flush_submissions(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Append completions to `out`, waiting for at least `wait_for` (or `timeout`).
    ///
    /// # Errors
    ///
    /// Any: the queue has failed and the frontend is disconnected. An
    /// operation's own failure goes in its [`Completion`], not here.
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()>;
    /// A descriptor that becomes readable when completions are ready, so the
    /// queue worker can wait for new requests and completions at once. `None`:
    /// the worker waits on completions alone while I/O is in flight.
    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// Append what already finished, without waiting. The queue worker calls this on
    /// every turn of its loop, so it should be cheap (no system call when
    /// nothing finished) and must not be what clears the completion descriptor.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        self.complete(out, 0, Some(Duration::ZERO))
    }
    /// Called before the queue worker sleeps on [`completion_fd`](Self::completion_fd):
    /// clear it so that it signals only completions that come after (the worker
    /// reaps once more before it sleeps).
    fn rearm_completion_fd(&mut self) {}
    /// Sleep until a completion is ready or `other` (the queue's event
    /// channel) polls readable, for at most `timeout`, in one system call,
    /// reaping what finished for the next [`reap`](Self::reap); `other` is
    /// watched, not read. `None`, the default: this queue cannot, and the
    /// worker polls [`completion_fd`](Self::completion_fd) and `other` itself.
    fn wait_with(
        &mut self,
        other: BorrowedFd<'_>,
        timeout: Duration,
    ) -> Option<io::Result<WaitEnd>> {
        let _ = (other, timeout);
        None
    }
    /// Offer `mem` as memory used again and again (a persistent grant): the
    /// queue may register it with the kernel so that I/O into it costs less.
    /// Whether it did; I/O works the same either way.
    fn register_buffer(&mut self, mem: &IoMem) -> bool {
        let _ = mem;
        false
    }
    /// `mem` is about to go away (an evicted persistent grant).
    fn unregister_buffer(&mut self, mem: &IoMem) {
        let _ = mem;
    }
    /// Operations so far that used registered memory.
    fn registered_ios(&self) -> u64 {
        0
    }
}
