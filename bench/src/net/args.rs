//! The command line of `xenio-bench net`.

use clap::Args;
use std::path::PathBuf;

/// The long help of `xenio-bench net`.
pub const NET_ABOUT: &str = "\
Network benchmark (needs root: it creates network namespaces and a TAP device).

xenio path: this process is the frontend (domain 1: netfront, and smoltcp for
TCP); `xenio netback` runs as a child process (domain 0) inside namespace
xbn-x-<pid>, attached to TAP xtap0 (192.0.2.1/24); the frontend is 192.0.2.2.
Baseline: namespaces xbn-a-<pid> and xbn-b-<pid> joined by a veth pair
(198.51.100.1 and .2), Linux sockets on both ends. No traffic leaves the
namespaces. Each repetition runs every workload on both paths, alternating.

Workloads:
  tcp-tx   one TCP connection, frontend (smoltcp) -> Linux socket; baseline:
           Linux socket -> Linux socket over the veth. MB/s received.
  tcp-rx   Linux socket -> frontend (smoltcp); baseline as tcp-tx. MB/s.
  pps-tx   60-byte UDP frames (18-byte payload) from the frontend (raw frames,
           no stack) to a Linux UDP socket for --seconds; baseline: a Linux UDP
           socket sending the same datagrams over the veth. Datagrams received
           per second.
  pps-rx   a Linux UDP socket sends 18-byte datagrams to the frontend, which
           counts the frames it receives; baseline as pps-tx.
Reported per workload: median [min..max] over --reps for both paths, the ratio
xenio/veth (median of per-repetition ratios, with their spread), and for the
xenio path notifications per packet (frontend notifications + netback tx and rx
notifications, from the backend's counters) and frontend sleeps per packet.";

/// Options of `xenio-bench net`.
#[derive(Args, Debug)]
pub struct NetArgs {
    /// Repetitions of every workload on both paths.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub reps: usize,
    /// Seconds per packets-per-second run.
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    pub seconds: f64,
    /// Megabytes per TCP run.
    #[arg(long, value_name = "MB", default_value_t = 64)]
    pub tcp_mb: u64,
    /// The xenio binary (default: next to xenio-bench, else in PATH).
    #[arg(long, value_name = "PATH")]
    pub xenio: Option<PathBuf>,
    /// Spin this many microseconds in netback before sleeping (its --poll-us).
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub poll_us: u64,
}
