//! xenio's benchmarks.
//!
//! `xenio-bench blk` ([`blk`]) measures fio-style block workloads through
//! blkfront -> rings -> `xenio blkback` (a separate process) -> a file, against
//! fio (io_uring, O_DIRECT), a /dev/shm copy and qemu-nbd on the same file in the
//! same run, with the targets marked PASS or MISS.
//!
//! `xenio-bench study` ([`study`]) reruns the disk study of Youseff et al.,
//! *Paravirtualization for HPC Systems* (2006): Bonnie's patterns and fio-style
//! workloads, native against xenio, N interleaved runs, t-tests, Figure 2.
//!
//! `xenio-bench net` ([`net`]) measures TCP throughput and small-frame packet rates through
//! netfront -> rings -> `xenio netback` -> a TAP device, against two network
//! namespaces joined by a veth pair in the same run.
//!
//! `xenio-bench ring` is the ring micro-benchmark: two processes
//! pinned to two cores exchange blkif requests and responses over an
//! [`xenio_ring`] ring in shared memory, polling or with eventfd doorbells, and
//! the numbers are set against two baselines measured in the same run on the same
//! cores (a cache-line ping-pong and a pair of `rtrb` queues). See
//! [`ring`] for what is measured and how, and `xenio-bench ring --help` for
//! the knobs.
//!
//! Each benchmark is a module folder whose `mod.rs` only orchestrates (its
//! `run` is the subcommand) and alone imports the folder's other files; those
//! import only the folder's shared files (`types.rs`, `args.rs`, and helpers
//! that import nothing but them) and [`common`], which imports no benchmark.
//! No file imports the `mod.rs` above it, and no files import each other in a
//! circle (`python3 .ci/import-cycles.py bench` checks). The command line
//! (`Cli`) and the dispatch are the binary's, `src/main.rs`.
//!
//! The crate has no `unsafe`: the shared mapping is the ring crate's
//! [`xenio_ring::MmapRegion`], and every OS service (affinity, eventfd, memfd,
//! `prctl`, `poll`) goes through nix's safe wrappers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blk;
pub mod common;
pub mod net;
pub mod ring;
pub mod study;

pub use common::error::{BenchError, Result};
