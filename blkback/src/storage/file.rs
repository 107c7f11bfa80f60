//! [`FileStorage`]: a raw image file or block device through io_uring
//! ([`DiskQueue`]), with O_DIRECT where the filesystem allows it.

use super::options::OpenOptions;
use super::seam::{DiskInfo, Storage, StorageQueue};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use xenio_hostio::disk::{
    BlockFile, Completion, Direct, DiskOpen, DiskQueue, DiskQueueOptions, Io, IoMem, IoMode,
    WaitEnd,
};

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

    /// Open `path` as [`StorageTarget::open`](super::StorageTarget::open)
    /// does: `readonly`, `direct` and `force_sync` of `opts` apply.
    ///
    /// # Errors
    ///
    /// What [`BlockFile::open`] says, naming the path once: the file missing,
    /// not a regular file or block device, or refused read-write or with
    /// O_DIRECT. The error keeps its kind and OS error number.
    pub fn open_with(path: impl AsRef<std::path::Path>, opts: &OpenOptions) -> io::Result<Self> {
        let disk = DiskOpen {
            readonly: opts.readonly,
            direct: opts.direct,
        };
        Ok(FileStorage {
            file: Arc::new(BlockFile::open(path, disk)?),
            force_sync: opts.force_sync,
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

    fn queue(&self, depth: u32) -> io::Result<DiskQueue> {
        let e = DiskQueue::with_options(
            self.file.clone(),
            &DiskQueueOptions {
                depth,
                force_sync: self.force_sync,
                completion_fd: true,
                // Measured twice and not kept (README, "One wait primitive"):
                // with the wait a `poll` on an eventfd it trades the sleep's
                // restart for an eventfd read and an enter per wake-up; with
                // the wait in `io_uring_enter` (`wait_with`) it still costs
                // more calls per request (the registered eventfd) and CPU.
                defer_taskrun: false,
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

/// io_uring's queue as blkback's: a full queue ([`xenio_hostio::Error::Limit`])
/// is [`Busy`](super::Busy), every other error keeps its OS error number.
/// (Any queue of the same shape over [`Io`] and [`Completion`] plugs in the
/// same way.)
impl StorageQueue for DiskQueue {
    fn submit(&mut self, tag: u64, io: Io) -> io::Result<()> {
        Ok(DiskQueue::submit(self, tag, io)?)
    }
    fn flush_submissions(&mut self) -> io::Result<()> {
        DiskQueue::flush_submissions(self)?;
        Ok(())
    }
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        Ok(DiskQueue::complete(self, out, wait_for, timeout)?)
    }
    fn completion_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        DiskQueue::completion_fd(self)
    }
    fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        Ok(DiskQueue::reap_ready(self, out)?)
    }
    fn rearm_completion_fd(&mut self) {
        DiskQueue::rearm_completion_fd(self)
    }
    fn wait_with(
        &mut self,
        other: std::os::fd::BorrowedFd<'_>,
        timeout: Duration,
    ) -> Option<io::Result<WaitEnd>> {
        DiskQueue::wait_with(self, other, timeout)
            .map_err(io::Error::from)
            .transpose()
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
