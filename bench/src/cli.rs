//! The command line of `xenio-bench`.

use clap::{Parser, Subcommand};

/// `xenio-bench`: measurements of xenio's building blocks.
#[derive(Debug, Parser)]
#[command(name = "xenio-bench", version, about, long_about = None)]
pub struct Cli {
    /// What to measure.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The disk study of Youseff et al. (2006): Bonnie's patterns and fio-style
    /// workloads, native against xenio's rings (a `xenio blkback` process) on the
    /// same file, N interleaved runs, t-tests, Figure 2 as Markdown/CSV/JSON and
    /// plots, knob sweeps (ring order, reorder, indirect, queues, polling).
    #[command(long_about = crate::study::args::STUDY_ABOUT)]
    Study(crate::study::args::StudyArgs),
    /// Ring micro-benchmark: two processes on two pinned cores exchange blkif
    /// requests over a shared ring, against a cache-line ping-pong and rtrb queues.
    #[command(long_about = crate::ring::args::RING_ABOUT)]
    Ring(crate::ring::args::RingArgs),
    /// Internal: the backend side of `ring` (started by `ring` itself; its
    /// stdin/stdout are the eventfd doorbells, never a terminal).
    #[command(hide = true)]
    RingPeer(crate::ring::args::PeerArgs),
    /// Block I/O benchmark: fio-style workloads through blkfront -> rings ->
    /// `xenio blkback` (a child process) -> a file, against fio (io_uring,
    /// O_DIRECT), a /dev/shm copy and qemu-nbd on the same file, in the same run.
    #[command(long_about = crate::blk::args::BLK_ABOUT)]
    Blk(crate::blk::args::BlkArgs),
    /// Network benchmark: TCP throughput and small-frame packets per second
    /// through netfront -> rings -> `xenio netback` -> a TAP device, against a
    /// veth pair between two namespaces, in the same run (needs root).
    #[command(long_about = crate::net::args::NET_ABOUT)]
    Net(crate::net::args::NetArgs),
}
