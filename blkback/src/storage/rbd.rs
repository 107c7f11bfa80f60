//! `RbdStorage`: a Ceph RBD image through librbd's asynchronous API
//! ([`RbdQueue`]). Behind the cargo feature `rbd` (librbd-dev, librados-dev).

use super::options::OpenOptions;
use super::seam::{DiskInfo, Storage, StorageQueue};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;
use xenio_hostio::disk::{Completion, DiscardInfo, Io};
use xenio_hostio::rbd::{RbdImage, RbdOptions, RbdQueue, RbdTarget};

/// A Ceph RBD image served to a frontend, named as QEMU names it:
/// `rbd:pool[/namespace]/image[@snapshot][:conf=PATH][:id=NAME][:keyring=PATH][:option=value...]`.
/// `conf=` is the cluster's ceph.conf (default: librados' search,
/// `/etc/ceph/ceph.conf`), `id=` the client (`client.NAME`, default `admin`),
/// `keyring=` its key; any other `option=value` is a Ceph option
/// (`rados_osd_op_timeout=30` makes operations fail instead of waiting forever
/// for an OSD that does not come back; `rbd_cache=false` acknowledges writes
/// only once the OSDs have them).
#[derive(Debug, Clone)]
pub struct RbdStorage {
    image: Arc<RbdImage>,
}

impl RbdStorage {
    /// Connect to the cluster and open the image (`readonly`,
    /// `connect_timeout` and `discard_zeroes` of `opts` apply).
    ///
    /// # Errors
    ///
    /// A malformed spec, a cluster that cannot be reached, an image that is
    /// not there.
    pub fn open(spec: &str, opts: &OpenOptions) -> io::Result<Self> {
        let target: RbdTarget = spec.parse()?;
        let image = RbdImage::open(
            &target,
            &RbdOptions {
                readonly: opts.readonly,
                connect_timeout: opts.connect_timeout,
                discard_zeroes: opts.discard_zeroes,
            },
        )?;
        Ok(RbdStorage {
            image: Arc::new(image),
        })
    }

    /// The opened image.
    pub fn image(&self) -> &Arc<RbdImage> {
        &self.image
    }
}

impl Storage for RbdStorage {
    type Queue = RbdQueue;

    fn info(&self) -> DiskInfo {
        let i = &self.image;
        DiskInfo {
            sectors: i.size_bytes() / 512,
            sector_size: 512,
            physical_sector_size: 512,
            readonly: i.is_readonly(),
            flush: true,
            discard: (!i.is_readonly()).then_some(DiscardInfo {
                granularity: 512,
                alignment: 0,
            }),
            description: format!("RBD image {} ({} bytes)", i.target(), i.size_bytes()),
        }
    }

    fn queue(&self, depth: u32) -> io::Result<RbdQueue> {
        Ok(RbdQueue::new(self.image.clone(), depth)?)
    }
}

/// librbd's queue as blkback's: a full queue is [`Busy`](super::Busy).
impl StorageQueue for RbdQueue {
    fn submit(&mut self, tag: u64, io: Io) -> io::Result<()> {
        Ok(RbdQueue::submit(self, tag, io)?)
    }
    fn flush_submissions(&mut self) -> io::Result<()> {
        RbdQueue::flush_submissions(self)?;
        Ok(())
    }
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        Ok(RbdQueue::complete(self, out, wait_for, timeout)?)
    }
    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        RbdQueue::completion_fd(self)
    }
    fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        Ok(RbdQueue::reap_ready(self, out)?)
    }
    fn rearm_completion_fd(&mut self) {
        RbdQueue::rearm_completion_fd(self)
    }
}
