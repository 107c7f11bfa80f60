//! `xenio-bench`: its command line and the dispatch to each benchmark's `run`.
//! See `xenio-bench --help` and the `xenio_bench` crate docs.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use xenio_bench::{blk, net, ring, study};

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
    #[command(long_about = study::args::STUDY_ABOUT)]
    Study(study::args::StudyArgs),
    /// Ring micro-benchmark: two processes on two pinned cores exchange blkif
    /// requests over a shared ring, against a cache-line ping-pong and rtrb queues.
    #[command(long_about = ring::args::RING_ABOUT)]
    Ring(ring::args::RingArgs),
    /// Internal: the backend side of `ring` (started by `ring` itself; its
    /// stdin/stdout are the eventfd doorbells, never a terminal).
    #[command(hide = true)]
    RingPeer(ring::args::PeerArgs),
    /// Block I/O benchmark: fio-style workloads through blkfront -> rings ->
    /// `xenio blkback` (a child process) -> a file, against fio (io_uring,
    /// O_DIRECT), a /dev/shm copy and qemu-nbd on the same file, in the same run.
    #[command(long_about = blk::args::BLK_ABOUT)]
    Blk(blk::args::BlkArgs),
    /// Network benchmark: TCP throughput and small-frame packets per second
    /// through netfront -> rings -> `xenio netback` -> a TAP device, against a
    /// veth pair between two namespaces, in the same run (needs root).
    #[command(long_about = net::args::NET_ABOUT)]
    Net(net::args::NetArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Study(args) => match study::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench study: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Blk(args) => match blk::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench blk: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Net(args) => match net::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench net: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Ring(args) => match ring::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench ring: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::RingPeer(args) => match ring::run_peer(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench ring-peer (`{}`): error: {e}", args.config);
                ExitCode::from(2)
            }
        },
    }
}
