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

A second xenio path (namespace xbn-g-<pid>, TAP xgtap0, 192.0.3.1/24, the
frontend 192.0.3.2) carries the frame engine: netfront negotiates checksum
offload and GSO with `xenio netback` (a TAP with the virtio-net header) and a
one-connection TCP mover on the raw-packet API (xenio_netfront::bulk_tcp)
sends 64 KiB segments; the host's large segments come back whole.

Workloads:
  tcp-tx   one TCP connection, frontend (smoltcp) -> Linux socket; baseline:
           Linux socket -> Linux socket over the veth. MB/s received.
  tcp-rx   Linux socket -> frontend (smoltcp); baseline as tcp-tx. MB/s.
  gso-tx   the frame engine: 64 KiB GSO segments frontend -> Linux socket.
  gso-rx   Linux socket -> the frame engine (64 KiB segments, TSO on the TAP).
  pps-tx   60-byte UDP frames (18-byte payload) from the frontend (raw frames,
           no stack) to a Linux UDP socket for --seconds; baseline: a Linux UDP
           socket sending the same datagrams over the veth. Datagrams received
           per second.
  pps-rx   a Linux UDP socket sends 18-byte datagrams to the frontend, which
           counts the frames it receives; baseline as pps-tx.
The veth baseline runs every TCP workload twice: with the veth's offloads on
(TSO, GSO, GRO, checksums: the default) and off (ethtool -K ... off; needs
ethtool).
Reported per workload: median [min..max] over --reps for both paths, the ratio
xenio/veth (median of per-repetition ratios, with their spread), against veth
with offloads off too, CPU seconds per GB moved (xenio: the frontend's thread,
the whole netback process and the Linux socket's thread; veth: both sockets'
threads; softirq work the kernel does outside them is not counted), and for the
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
    /// Run only these workloads (comma-separated names, see above); default all.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// MTU of every interface: the TAPs, the vifs (netback --mtu) and the veth pair.
    #[arg(long, value_name = "BYTES", default_value_t = 1500)]
    pub mtu: u32,
}
