//! What blkback serves: the storage trait, and its io_uring implementation over
//! a file or block device.
//!
//! A backend is a framework: [`crate::serve`] and its queue workers own the
//! rings, the handshake, validation and the event loop; a [`Storage`] only says how to do I/O. Each
//! queue (ring) gets its own [`StorageQueue`], used by that queue's thread only.
//! Operations name memory as [`IoSeg`]s: pieces of mapped grant pages (zero
//! copy) or bounce buffers. `examples/mem_backend.rs` is a custom storage.

use std::sync::Arc;
use std::time::Duration;
use xenio_hostio::disk::{BlockFile, Direct, DiskOpen, DiskQueue, DiskQueueOptions, IoMode};
pub use xenio_hostio::disk::{Completion, DiscardInfo, Io, IoMem, IoSeg};

/// What the frontend is told about the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Logical sector size (`sector-size`).
    pub sector_size: u32,
    /// Physical sector size (`physical-sector-size`).
    pub physical_sector_size: u32,
    /// Writes are refused.
    pub readonly: bool,
    /// Flushes do something (`feature-flush-cache`, `feature-barrier`).
    pub flush: bool,
    /// Discard support (`feature-discard`, `discard-granularity`, `discard-alignment`).
    pub discard: Option<DiscardInfo>,
    /// One line for logs: what is served and how.
    pub description: String,
}

/// A disk blkback can serve.
pub trait Storage: Send + Sync {
    /// One queue's I/O context.
    type Queue: StorageQueue;
    /// The disk's geometry and features.
    fn info(&self) -> DiskInfo;
    /// A new I/O context for one ring, with room for `depth` operations in flight.
    fn queue(&self, depth: u32) -> xenio_xenbus::Result<Self::Queue>;
    /// The disk's size in 512-byte sectors now. [`crate::serve`] asks every
    /// 200 ms while a frontend is connected: a storage that can grow (an image
    /// file extended with `truncate -s`, a resized block device) returns its new
    /// size, and the frontend is told as Linux's blkback tells it (online
    /// resize). The default is [`Storage::info`]'s, which never changes.
    fn sectors(&self) -> u64 {
        self.info().sectors
    }
}

/// One queue's asynchronous I/O.
pub trait StorageQueue: Send {
    /// Queue an operation; `tag` comes back in its [`Completion`].
    fn submit(&mut self, tag: u64, io: Io) -> xenio_xenbus::Result<()>;
    /// Start everything queued.
    fn flush_submissions(&mut self) -> xenio_xenbus::Result<()>;
    /// Append completions to `out`, waiting for at least `wait_for` (or `timeout`).
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> xenio_xenbus::Result<()>;
    /// A descriptor that becomes readable when completions are ready, so the
    /// queue worker can wait for new requests and completions at once. `None`:
    /// the worker waits on completions alone while I/O is in flight.
    fn completion_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// Append what already finished, without waiting. The queue worker calls this on
    /// every turn of its loop, so it should be cheap (no system call when
    /// nothing finished) and must not be what clears the completion descriptor.
    fn reap(&mut self, out: &mut Vec<Completion>) -> xenio_xenbus::Result<()> {
        self.complete(out, 0, Some(Duration::ZERO))
    }
    /// Called before the queue worker sleeps on [`completion_fd`](Self::completion_fd):
    /// clear it so that it signals only completions that come after (the worker
    /// reaps once more before it sleeps).
    fn rearm_completion_fd(&mut self) {}
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

/// A raw image file or block device, through io_uring with O_DIRECT when the
/// filesystem allows it (and a reported fallback when not).
#[derive(Debug, Clone)]
pub struct FileStorage {
    file: Arc<BlockFile>,
    force_sync: bool,
}

impl FileStorage {
    /// Open `path`. `direct`: O_DIRECT on, off, or auto (fall back, and say why).
    pub fn open(
        path: impl AsRef<std::path::Path>,
        readonly: bool,
        direct: Direct,
    ) -> xenio_xenbus::Result<Self> {
        Ok(FileStorage {
            file: Arc::new(BlockFile::open(path, DiskOpen { readonly, direct })?),
            force_sync: false,
        })
    }

    /// Use synchronous system calls instead of io_uring (for comparison, or where
    /// io_uring is refused).
    pub fn force_sync(mut self, yes: bool) -> Self {
        self.force_sync = yes;
        self
    }

    /// The opened file.
    pub fn file(&self) -> &Arc<BlockFile> {
        &self.file
    }
}

impl Storage for FileStorage {
    type Queue = DiskQueue;

    fn info(&self) -> DiskInfo {
        let f = &self.file;
        let how = match (f.direct(), f.fallback_reason()) {
            (true, _) => "O_DIRECT".to_string(),
            (false, Some(why)) => format!("page cache: {why}"),
            (false, None) => "page cache".to_string(),
        };
        DiskInfo {
            sectors: f.sectors(),
            sector_size: f.logical_sector_size(),
            physical_sector_size: f.physical_sector_size(),
            readonly: f.is_readonly(),
            flush: true,
            discard: f.discard(),
            description: format!(
                "{} {} ({} bytes, {how})",
                if f.is_block_device() {
                    "block device"
                } else {
                    "file"
                },
                f.path().display(),
                f.size_bytes()
            ),
        }
    }

    /// The file's or device's size now (`fstat` / `BLKGETSIZE64`,
    /// [`BlockFile::refresh_size`]); the size known before if that fails.
    fn sectors(&self) -> u64 {
        match self.file.refresh_size() {
            Ok(bytes) => bytes / 512,
            Err(e) => {
                tracing::debug!("{e}");
                self.file.sectors()
            }
        }
    }

    fn queue(&self, depth: u32) -> xenio_xenbus::Result<DiskQueue> {
        let e = DiskQueue::with_options(
            self.file.clone(),
            &DiskQueueOptions {
                depth,
                force_sync: self.force_sync,
                completion_fd: true,
            },
        )?;
        if let IoMode::Sync { reason } = e.mode() {
            tracing::warn!(
                "{}: io_uring not used: {reason}",
                self.file.path().display()
            );
        }
        Ok(e)
    }
}

impl StorageQueue for DiskQueue {
    fn submit(&mut self, tag: u64, io: Io) -> xenio_xenbus::Result<()> {
        Ok(DiskQueue::submit(self, tag, io)?)
    }
    fn flush_submissions(&mut self) -> xenio_xenbus::Result<()> {
        DiskQueue::flush_submissions(self)?;
        Ok(())
    }
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> xenio_xenbus::Result<()> {
        Ok(DiskQueue::complete(self, out, wait_for, timeout)?)
    }
    fn completion_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        DiskQueue::completion_fd(self)
    }
    fn reap(&mut self, out: &mut Vec<Completion>) -> xenio_xenbus::Result<()> {
        Ok(DiskQueue::reap_ready(self, out)?)
    }
    fn rearm_completion_fd(&mut self) {
        DiskQueue::rearm_completion_fd(self)
    }
    fn register_buffer(&mut self, mem: &IoMem) -> bool {
        DiskQueue::register_fixed(self, mem)
    }
    fn unregister_buffer(&mut self, mem: &IoMem) {
        DiskQueue::unregister_fixed(self, mem)
    }
    fn registered_ios(&self) -> u64 {
        DiskQueue::fixed_ios(self)
    }
}
