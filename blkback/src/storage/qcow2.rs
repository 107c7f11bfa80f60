//! [`Qcow2Storage`]: a qcow2 image and its backing chain, through imago
//! ([`Qcow2Queue`]: allocated clusters straight to the file with io_uring,
//! the rest on worker threads).

use super::options::OpenOptions;
use super::seam::{DiskInfo, Storage, StorageQueue};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use xenio_hostio::disk::{Completion, DiscardInfo, Io};
use xenio_hostio::qcow2::{Qcow2Image, Qcow2Open, Qcow2Queue, Qcow2QueueOptions};

/// A qcow2 image (made by `qemu-img create -f qcow2`, with or without a
/// backing file) served to a frontend. The image is opened once; every queue
/// shares it. A discard makes its range read as zeros (whatever the backing
/// files hold) and frees whole clusters; a flush writes imago's metadata
/// caches back and `fdatasync`s. The image stays valid for `qemu-img check`.
#[derive(Debug, Clone)]
pub struct Qcow2Storage {
    image: Arc<Qcow2Image>,
    threads: usize,
}

impl Qcow2Storage {
    /// Open the image at `path` and its backing chain (`readonly`, `direct`
    /// and `qcow2_threads` of `opts` apply).
    ///
    /// # Errors
    ///
    /// What [`Qcow2Image::open`] says: the image or a backing file missing or
    /// broken, not a qcow2 image, an incompatible feature (`extended_l2`), a
    /// VHD/VHDX file (with the conversion to run).
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> io::Result<Self> {
        let image = Qcow2Image::open(
            path,
            &Qcow2Open {
                readonly: opts.readonly,
                direct: opts.direct,
            },
        )?;
        Ok(Qcow2Storage {
            image: Arc::new(image),
            threads: opts.qcow2_threads,
        })
    }

    /// The opened image.
    pub fn image(&self) -> &Arc<Qcow2Image> {
        &self.image
    }
}

impl Storage for Qcow2Storage {
    type Queue = Qcow2Queue;

    fn info(&self) -> DiskInfo {
        let i = &self.image;
        DiskInfo {
            sectors: i.sectors(),
            sector_size: 512,
            physical_sector_size: 512,
            readonly: i.is_readonly(),
            flush: true,
            discard: (!i.is_readonly()).then_some(DiscardInfo {
                granularity: 512,
                alignment: 0,
            }),
            description: i.description().to_string(),
        }
    }

    fn queue(&self, depth: u32) -> io::Result<Qcow2Queue> {
        Ok(Qcow2Queue::new(
            self.image.clone(),
            &Qcow2QueueOptions {
                depth,
                threads: self.threads,
            },
        )?)
    }
}

/// imago's queue as blkback's: a full queue is [`Busy`](super::Busy).
impl StorageQueue for Qcow2Queue {
    fn submit(&mut self, tag: u64, io: Io) -> io::Result<()> {
        Ok(Qcow2Queue::submit(self, tag, io)?)
    }
    fn flush_submissions(&mut self) -> io::Result<()> {
        Qcow2Queue::flush_submissions(self)?;
        Ok(())
    }
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        Ok(Qcow2Queue::complete(self, out, wait_for, timeout)?)
    }
    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        Qcow2Queue::completion_fd(self)
    }
    fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        Ok(Qcow2Queue::reap_ready(self, out)?)
    }
    fn rearm_completion_fd(&mut self) {
        Qcow2Queue::rearm_completion_fd(self)
    }
}
