//! [`AnyStorage`]: whichever storage a disk spec named, as one type, so that a
//! program serves what [`StorageTarget::open`](super::StorageTarget::open)
//! returns without naming the kind.

use super::file::FileStorage;
use super::nbd::NbdStorage;
use super::qcow2::Qcow2Storage;
#[cfg(feature = "rbd")]
use super::rbd::RbdStorage;
use super::seam::{DiskInfo, Storage, StorageQueue};
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;
use xenio_hostio::disk::{Completion, DiskQueue, Io, IoMem, WaitEnd};
use xenio_hostio::nbd::NbdQueue;
use xenio_hostio::qcow2::Qcow2Queue;
#[cfg(feature = "rbd")]
use xenio_hostio::rbd::RbdQueue;

/// One of the storages xenio ships, chosen at run time.
#[derive(Debug, Clone)]
pub enum AnyStorage {
    /// A raw file or block device.
    File(FileStorage),
    /// A qcow2 image.
    Qcow2(Qcow2Storage),
    /// An NBD export.
    Nbd(NbdStorage),
    /// A Ceph RBD image (cargo feature `rbd`).
    #[cfg(feature = "rbd")]
    Rbd(RbdStorage),
}

/// The queue of an [`AnyStorage`].
// One per queue thread, made once: a `DiskQueue` (with its registered files
// and runs of registered buffers) being larger than the others costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyQueue {
    /// io_uring on a file.
    File(DiskQueue),
    /// imago (and io_uring) on a qcow2 chain.
    Qcow2(Qcow2Queue),
    /// libnbd on a connection.
    Nbd(NbdQueue),
    /// librbd on an image.
    #[cfg(feature = "rbd")]
    Rbd(RbdQueue),
}

/// `$e` with `$q` bound to the inner value, whatever the variant.
macro_rules! each {
    ($enum:ident, $v:expr, $q:ident => $e:expr) => {
        match $v {
            $enum::File($q) => $e,
            $enum::Qcow2($q) => $e,
            $enum::Nbd($q) => $e,
            #[cfg(feature = "rbd")]
            $enum::Rbd($q) => $e,
        }
    };
}

impl Storage for AnyStorage {
    type Queue = AnyQueue;

    fn info(&self) -> DiskInfo {
        each!(AnyStorage, self, s => s.info())
    }

    fn queue(&self, depth: u32) -> io::Result<AnyQueue> {
        Ok(match self {
            AnyStorage::File(s) => AnyQueue::File(s.queue(depth)?),
            AnyStorage::Qcow2(s) => AnyQueue::Qcow2(s.queue(depth)?),
            AnyStorage::Nbd(s) => AnyQueue::Nbd(s.queue(depth)?),
            #[cfg(feature = "rbd")]
            AnyStorage::Rbd(s) => AnyQueue::Rbd(s.queue(depth)?),
        })
    }

    // Forwarded, not the trait's default (`info().sectors`, fixed at open):
    // without it a grown image was never seen through AnyStorage (`xenio
    // blkback --disk`, `xenio backendd`), found by the lab's domu-xl-live.
    fn sectors(&self) -> u64 {
        each!(AnyStorage, self, s => s.sectors())
    }

    fn max_queues(&self) -> Option<u32> {
        each!(AnyStorage, self, s => s.max_queues())
    }
}

impl StorageQueue for AnyQueue {
    fn submit(&mut self, tag: u64, io: Io) -> io::Result<()> {
        each!(AnyQueue, self, q => StorageQueue::submit(q, tag, io))
    }
    fn flush_submissions(&mut self) -> io::Result<()> {
        each!(AnyQueue, self, q => StorageQueue::flush_submissions(q))
    }
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        each!(AnyQueue, self, q => StorageQueue::complete(q, out, wait_for, timeout))
    }
    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        each!(AnyQueue, self, q => StorageQueue::completion_fd(q))
    }
    fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        each!(AnyQueue, self, q => StorageQueue::reap(q, out))
    }
    fn rearm_completion_fd(&mut self) {
        each!(AnyQueue, self, q => StorageQueue::rearm_completion_fd(q))
    }
    fn wait_with(
        &mut self,
        other: BorrowedFd<'_>,
        timeout: Duration,
    ) -> Option<io::Result<WaitEnd>> {
        each!(AnyQueue, self, q => StorageQueue::wait_with(q, other, timeout))
    }
    fn register_buffer(&mut self, mem: &IoMem) -> bool {
        each!(AnyQueue, self, q => StorageQueue::register_buffer(q, mem))
    }
    fn unregister_buffer(&mut self, mem: &IoMem) {
        each!(AnyQueue, self, q => StorageQueue::unregister_buffer(q, mem))
    }
    fn registered_ios(&self) -> u64 {
        each!(AnyQueue, self, q => StorageQueue::registered_ios(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::options::OpenOptions;
    use xenio_hostio::disk::Direct;

    #[test]
    fn a_grown_image_is_seen_through_any_storage() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("grow.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(1 << 20).unwrap();
        let options = OpenOptions {
            direct: Direct::Off,
            ..OpenOptions::default()
        };
        // (As StorageTarget::open makes it for a raw file: the test stays
        // below the dispatch, which uses this module.)
        let s = AnyStorage::File(FileStorage::open_with(&img, &options).unwrap());
        assert_eq!(s.sectors(), 2048);
        f.set_len(3 << 20).unwrap();
        assert_eq!(s.sectors(), 6144);
    }
}
