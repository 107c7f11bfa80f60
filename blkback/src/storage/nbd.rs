//! [`NbdStorage`]: an NBD export through libnbd ([`NbdQueue`]: pipelined, one
//! connection per queue where the server allows multi-conn, reconnecting and
//! re-issuing when the server goes away).

use super::options::OpenOptions;
use super::seam::{DiskInfo, Storage, StorageQueue};
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;
use xenio_hostio::disk::{Completion, DiscardInfo, Io};
use xenio_hostio::nbd::{NbdExport, NbdOptions, NbdQueue};

/// An NBD export served to a frontend. Every queue is its own connection
/// when the server advertises multi-conn; otherwise the device offers one
/// queue ([`Storage::max_queues`]).
///
/// A server that dies is reconnected to and every unanswered operation is
/// re-issued, so nothing acknowledged is lost; one that stays away longer than
/// [`OpenOptions::reconnect_timeout`] makes the waiting operations fail with
/// `EIO` (the frontend gets `BLKIF_RSP_ERROR`), and the device keeps trying.
#[derive(Debug, Clone)]
pub struct NbdStorage {
    export: NbdExport,
    readonly: bool,
}

impl NbdStorage {
    /// Connect to the export at `uri` (the handshake and the server's
    /// features): `depth`, the timeouts and `discard_zeroes` of `opts` apply.
    ///
    /// # Errors
    ///
    /// The URI is malformed, or the server does not answer the handshake
    /// within [`OpenOptions::connect_timeout`].
    pub fn connect(uri: &str, opts: &OpenOptions) -> io::Result<Self> {
        let export = NbdExport::connect(
            uri,
            &NbdOptions {
                depth: opts.depth.max(1),
                connect_timeout: opts.connect_timeout,
                reconnect_timeout: opts.reconnect_timeout,
                io_timeout: opts.io_timeout,
                discard_zeroes: opts.discard_zeroes,
                ..NbdOptions::default()
            },
        )?;
        Ok(NbdStorage {
            export,
            readonly: opts.readonly,
        })
    }

    /// The connected export.
    pub fn export(&self) -> &NbdExport {
        &self.export
    }
}

impl Storage for NbdStorage {
    type Queue = NbdQueue;

    fn info(&self) -> DiskInfo {
        let f = self.export.features();
        let readonly = self.readonly || f.read_only;
        let yes = |b: bool, what: &str| {
            if b {
                what.to_string()
            } else {
                format!("no {what}")
            }
        };
        DiskInfo {
            sectors: f.size / 512,
            sector_size: 512,
            physical_sector_size: 512,
            readonly,
            // Without NBD_CMD_FLUSH the server does not cache writes: the
            // queue answers a flush at once.
            flush: true,
            discard: ((f.trim || f.zero) && !readonly).then_some(DiscardInfo {
                granularity: u32::try_from(f.min_block.max(512)).unwrap_or(512),
                alignment: 0,
            }),
            description: format!(
                "NBD export {} ({} bytes; {}, {}, {}, {}, {})",
                self.export.uri(),
                f.size,
                yes(f.flush, "flush"),
                yes(f.fua, "fua"),
                yes(f.trim, "trim"),
                yes(f.zero, "write-zeroes"),
                yes(f.multi_conn, "multi-conn"),
            ),
        }
    }

    fn queue(&self, _depth: u32) -> io::Result<NbdQueue> {
        Ok(self.export.queue()?)
    }

    fn max_queues(&self) -> Option<u32> {
        self.export
            .max_queues()
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// libnbd's queue as blkback's: a full queue is [`Busy`](super::Busy).
impl StorageQueue for NbdQueue {
    fn submit(&mut self, tag: u64, io: Io) -> io::Result<()> {
        Ok(NbdQueue::submit(self, tag, io)?)
    }
    fn flush_submissions(&mut self) -> io::Result<()> {
        NbdQueue::flush_submissions(self)?;
        Ok(())
    }
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        Ok(NbdQueue::complete(self, out, wait_for, timeout)?)
    }
    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        NbdQueue::completion_fd(self)
    }
    fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        Ok(NbdQueue::reap_ready(self, out)?)
    }
    fn rearm_completion_fd(&mut self) {
        NbdQueue::rearm_completion_fd(self)
    }
}
