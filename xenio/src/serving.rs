//! How a disk is served: the knobs `xenio blkback` (one disk) and `xenio
//! backendd` (every disk a toolstack hands it) share, one definition each, and
//! what they become ([`BackendConfig`], [`OpenOptions`]).

use crate::error::{Error, Result};
use clap::Args;
use std::time::Duration;
use xenio_blkback::reorder::ReorderMode;
use xenio_blkback::{BackendConfig, GrantMode, OpenOptions, QueueConfig, Wait};
use xenio_hostio::disk::Direct;

/// The rings, queues, grants, waiting and storage of every disk served.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Largest ring page order offered (max-ring-page-order; Linux offers 4).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_ring_page_order: u32,

    /// Queues offered (multi-queue-max-queues), one ring and one thread each.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_queues: u32,

    /// Indirect segments per request offered (feature-max-indirect-segments; 0: none).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_indirect_segments: u32,

    /// Do not offer persistent grants (feature-persistent).
    #[arg(long)]
    pub no_persistent: bool,

    /// Most persistent grants kept mapped per queue (least recently used go first).
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub max_persistent_grants: usize,

    /// How to reach the frontend's pages: map (zero copy) or copy (grant copy into
    /// bounce buffers, like QEMU's qdisk).
    #[arg(long, value_name = "MODE", default_value = "map")]
    pub grant_mode: GrantMode,

    /// Request reordering within a batch: off, sort (by sector) or merge (sort and
    /// merge adjacent requests). Results always equal in-order execution.
    #[arg(long, value_name = "MODE", default_value = "merge")]
    pub reorder: ReorderMode,

    /// Largest merged I/O in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub max_merge_kib: u64,

    /// Most requests taken from a ring in one batch (the reordering window).
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub batch: usize,

    /// How long each queue spins before it sleeps. Without this option
    /// (the default) waiting adapts: a queue spins only while something is
    /// outstanding and its recent waits say the next event is due soon (it
    /// learns, separately for "waiting for requests" and "waiting for I/O",
    /// the share of waits that a spin of at most 150 us would have caught and
    /// the mean and deviation of those short waits; it spins while at least
    /// two thirds would have been caught, for the mean plus three deviations
    /// plus 5 us, and sleeps on the event channel otherwise, or when the CPU
    /// turns out to be shared and a spin is kept off it). While I/O is in
    /// flight, the wait for the frontend's next requests is not spun when the
    /// storage is slow against what the spin saves (mean service time over 32
    /// times the spin or a 50 us wake-up: 1 MiB reads, say). An idle device
    /// sleeps. With N: always spin N
    /// microseconds (looking for requests when idle, for requests and I/O
    /// completions while I/O is in flight) before sleeping; 0 is purely
    /// event-driven. Spins yield the CPU every 10 us, so a frontend that shares
    /// the CPU still runs; a fixed window costs a core while it spins.
    #[arg(long, value_name = "US")]
    pub poll_us: Option<u64>,

    /// Accepted for old scripts: --poll-us windows are always fixed now (the
    /// adaptive waiting is the default without --poll-us).
    #[arg(long, hide = true)]
    pub poll_fixed: bool,

    /// How a queue thread sleeps: `poll` (poll(2) on the event channel and the
    /// storage's completion descriptor), or `ring` (raw images and devices
    /// through io_uring: one io_uring_enter waits for I/O completions and the
    /// event channel, polled from the ring; other storages poll). `ring` saves
    /// a system call per sleep but measured no faster (README, "One wait
    /// primitive"), so `poll` stays the default.
    #[arg(long, value_name = "HOW", default_value = "poll", value_parser = ["poll", "ring"])]
    pub sleep_in: String,

    /// Storage operations in flight per queue (io_uring depth; an NBD
    /// connection's depth).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub io_depth: u32,

    /// Storage operations handed to the kernel per system call (0: a whole
    /// batch at once). Between chunks blkback answers what already completed,
    /// so the frontend refills the ring while the rest is submitted; submitting
    /// a large batch in one go leaves the disk's queue running dry meanwhile.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub submit_chunk: usize,

    /// O_DIRECT for raw and qcow2 images: auto (fall back to the page cache,
    /// and say so, where refused), on, off.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_direct)]
    pub direct: Direct,

    /// Raw images: synchronous system calls instead of io_uring.
    #[arg(long)]
    pub sync_io: bool,

    /// qcow2: worker threads per queue for what cannot go straight to the file
    /// (allocating writes, compressed clusters, flush, discard; 0: min(--io-depth, 32)).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub qcow2_threads: usize,

    /// NBD and RBD: seconds connecting may take before the disk is refused.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub nbd_connect_timeout: u64,

    /// NBD: seconds a server may stay away (reconnecting every 200 ms) before
    /// the requests waiting for it fail with an I/O error; new requests then
    /// fail at once until it is back. The device and other devices keep serving.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub nbd_reconnect_timeout: u64,

    /// NBD: seconds without a reply before a connection counts as hung (it is
    /// closed, reconnected, and its requests re-issued; 0: wait forever).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub nbd_io_timeout: u64,

    /// NBD and RBD: discard by writing zeros (NBD_CMD_WRITE_ZEROES,
    /// rbd_aio_write_zeroes), so that discarded ranges read back as zeros.
    #[arg(long)]
    pub discard_zeroes: bool,
}

/// `--direct auto|on|off`.
fn parse_direct(s: &str) -> Result<Direct> {
    match s {
        "auto" => Ok(Direct::Auto),
        "on" => Ok(Direct::On),
        "off" => Ok(Direct::Off),
        o => Err(Error::Usage(format!("{o:?}: expected auto, on or off"))),
    }
}

impl ServeArgs {
    /// How the storage is opened (`readonly` from the disk's mode).
    pub fn open_options(&self, readonly: bool) -> OpenOptions {
        OpenOptions {
            readonly,
            direct: self.direct,
            force_sync: self.sync_io,
            depth: self.io_depth.max(1),
            qcow2_threads: self.qcow2_threads,
            connect_timeout: Duration::from_secs(self.nbd_connect_timeout.max(1)),
            reconnect_timeout: Duration::from_secs(self.nbd_reconnect_timeout),
            io_timeout: (self.nbd_io_timeout > 0).then(|| Duration::from_secs(self.nbd_io_timeout)),
            discard_zeroes: self.discard_zeroes,
        }
    }

    /// What is offered and how each queue serves; the device's own keys
    /// (discard, cdrom, ...) and the process's (cpus, once, ...) are the
    /// caller's to fill in.
    pub fn backend_config(&self) -> BackendConfig {
        BackendConfig {
            max_ring_page_order: self.max_ring_page_order,
            max_queues: self.max_queues.max(1),
            max_indirect_segments: self.max_indirect_segments,
            persistent: !self.no_persistent,
            queue: QueueConfig {
                grant_mode: self.grant_mode,
                persistent: !self.no_persistent,
                max_persistent_grants: self.max_persistent_grants,
                reorder: self.reorder,
                max_merge_sectors: self.max_merge_kib * 2,
                max_batch: self.batch.max(1),
                wait: self
                    .poll_us
                    .map_or(Wait::Adaptive, |us| Wait::Fixed(Duration::from_micros(us))),
                sleep_in_storage: self.sleep_in == "ring",
                io_depth: self.io_depth.max(1),
                submit_chunk: self.submit_chunk,
                on_io_error: None,
            },
            ..BackendConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn defaults_and_what_they_become() {
        let s = Cli::parse_from(["x"]).serve;
        let c = s.backend_config();
        assert_eq!(
            (c.max_ring_page_order, c.max_queues, c.max_indirect_segments),
            (4, 4, 256)
        );
        assert!(c.persistent && c.queue.persistent);
        assert_eq!(c.queue.wait, Wait::Adaptive);
        assert_eq!(c.queue.max_merge_sectors, 2048);
        let o = s.open_options(true);
        assert!(o.readonly);
        assert_eq!((o.direct, o.depth), (Direct::Auto, 128));
        assert_eq!(o.io_timeout, Some(Duration::from_secs(60)));

        let s = Cli::parse_from([
            "x",
            "--poll-us",
            "20",
            "--direct",
            "on",
            "--io-depth",
            "0",
            "--nbd-io-timeout",
            "0",
            "--no-persistent",
            "--max-queues",
            "0",
        ])
        .serve;
        let c = s.backend_config();
        assert_eq!(c.queue.wait, Wait::Fixed(Duration::from_micros(20)));
        assert!(!c.persistent && !c.queue.persistent);
        assert_eq!((c.max_queues, c.queue.io_depth), (1, 1));
        let o = s.open_options(false);
        assert_eq!((o.direct, o.depth, o.io_timeout), (Direct::On, 1, None));
    }

    #[test]
    fn a_wrong_direct_is_refused_by_name() {
        let e = Cli::try_parse_from(["x", "--direct", "maybe"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--direct") && e.contains("auto, on or off"),
            "{e}"
        );
    }
}
