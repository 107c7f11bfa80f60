//! The command line of `xenio-bench ring`, and of the hidden `ring-peer`
//! subcommand that runs the second side of a measurement.

use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// The long help of `xenio-bench ring`.
pub const RING_ABOUT: &str = "\
Ring micro-benchmark.

The frontend (this process, pinned to core A) and the backend (a child process
re-executing this binary, pinned to core B) exchange blkif requests (112 bytes)
and responses (16 bytes) over an xenio ring in a shared memfd mapping. Every
request carries its sequence number as id plus fields derived from it; the
backend checks each request, the frontend each response (id, order, status).
Any mismatch fails the run.

Workloads:
  latency     one request outstanding; one op = one round trip.
  throughput  the frontend keeps the ring full (refills every free slot, publishes
              once per batch); the backend takes all available requests, answers
              them and publishes once. One op = one request completed.
Modes:
  polling     both sides spin on the ring (no system calls, no notifications).
  event       eventfd doorbells, one per direction. A side that finds no work
              spins for --poll-us, does the ring's final check and sleeps; a push
              rings the peer only when the ring says the peer asked (Notify::Required).
Baselines, measured in the same run on the same cores:
  pingpong    two processes bounce one cache line (A writes i, B writes i+1).
  rtrb        two threads, one rtrb queue of requests and one of responses,
              latency (1 outstanding) and throughput (ring-size outstanding).
  c-ring.h    the polling workloads in C with Xen's own io/ring.h macros (the
              same layout: a response written over its request's slot), two
              processes, compiled at the start of the run with cc (needs
              libxen-dev; left out with a warning otherwise, or --no-c-pair).
              Where the ring trails rtrb and the C pair trails it as much, the
              layout is the limit; where the C pair is ahead, the code.

Repetitions are interleaved (rep 1 runs every configuration, then rep 2, ...).
The report gives median/min/max of ns/op and Mops/s, notifications per request,
and three targets, each marked PASS or MISS (a miss does not fail the run):
polling RTT <= 2x ping-pong RTT, full-ring throughput >= rtrb throughput,
event-mode notifications <= 0.1 per request under load. Progress goes to stderr,
the report to stdout.";

/// Knobs of `xenio-bench ring`.
#[derive(Debug, Clone, Args)]
pub struct RingArgs {
    /// Ring page order: the ring occupies 4096 << ORDER bytes. Order 0 holds 32
    /// blkif entries, 1 holds 64, ..., 8 holds 8192. Xen and Linux use 0..=4;
    /// higher orders are allowed locally. The rtrb baseline gets the same capacity.
    #[arg(long, default_value_t = 0, value_name = "ORDER", value_parser = clap::value_parser!(u32).range(0..=8))]
    pub order: u32,

    /// Repetitions. Each repetition measures every configuration once, always in
    /// the same order, so drift on a noisy machine hits all of them alike; the
    /// report gives median, min and max across repetitions.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: u32,

    /// Timed length of one measurement (one configuration in one repetition),
    /// after its warm-up. With all defaults (7 configurations x 5 repetitions x
    /// (1000 + 50) ms, plus process start-up) a run takes about 40 s.
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration_ms: u64,

    /// Time a fixed number of ops per measurement instead of a fixed duration
    /// (instead of --duration-ms). Ops are round trips for the latency workloads
    /// and completed requests for throughput. Beware: an event-mode round trip
    /// costs tens of microseconds on a virtual machine.
    #[arg(long, value_name = "N", conflicts_with = "duration_ms", value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,

    /// Untimed warm-up at the start of each measurement, once both sides are up
    /// and pinned, so caches, TLBs and clock frequency settle. 0 disables it.
    #[arg(long, default_value_t = 50, value_name = "MS")]
    pub warmup_ms: u64,

    /// The two CPUs: the frontend (and the first side of each baseline) runs on A,
    /// the backend on B. Both must be in this process's affinity mask
    /// (`taskset -p $$`). The same CPU twice is accepted, but then the polling
    /// sides yield instead of spinning and the numbers measure the scheduler.
    #[arg(long, default_value = "0,1", value_name = "A,B", value_parser = parse_cores)]
    pub cores: Cores,

    /// Event mode: how long a side that finds no work spins on the ring before it
    /// does the final check and sleeps on its eventfd. 0 is purely event-driven.
    /// A comma-separated list measures one event variant per value (e.g. `0,50`).
    /// The pure polling mode, the fully polled variant, is reported alongside
    /// unless --mode says otherwise.
    #[arg(long, default_value = "0", value_delimiter = ',', value_name = "US")]
    pub poll_us: Vec<u64>,

    /// Which ring configurations to run: `polling` (both sides spin), `event`
    /// (eventfd doorbells, with each --poll-us window) or `all`. The two baselines
    /// always run.
    #[arg(long, value_enum, default_value_t = ModeFilter::All)]
    pub mode: ModeFilter,

    /// Leave out the C ring.h pair (otherwise measured with the polling
    /// configurations when `cc` and Xen's headers, libxen-dev, are there).
    #[arg(long)]
    pub no_c_pair: bool,

    /// Also write the results (every repetition, the summaries and the ratios) as
    /// JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Testing aid: the ring backend answers request number SEQ with a wrong id,
    /// to show that verification fails the run.
    #[arg(long, hide = true, value_name = "SEQ")]
    pub debug_corrupt_response: Option<u64>,
}

/// The `--mode` filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeFilter {
    /// Polling and event-driven.
    All,
    /// Polling only.
    Polling,
    /// Event-driven only.
    Event,
}

/// Two CPU numbers, `A,B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cores {
    /// The frontend's CPU.
    pub front: usize,
    /// The backend's CPU.
    pub back: usize,
}

/// Parse `A,B` into [`Cores`].
pub fn parse_cores(s: &str) -> Result<Cores, String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected two CPU numbers `A,B`, got `{s}`"))?;
    let cpu = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|e| format!("`{t}` is not a CPU number: {e}"))
    };
    Ok(Cores {
        front: cpu(a)?,
        back: cpu(b)?,
    })
}

/// What the peer process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeerRole {
    /// The backend of a blkif ring.
    RingBackend,
    /// Side B of the cache-line ping-pong.
    PingPong,
}

/// How the peer waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeerWait {
    /// Spin.
    Polling,
    /// Sleep on the doorbell on stdin.
    Event,
}

/// Arguments of the hidden `ring-peer` subcommand (set by the parent).
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// What to do.
    #[arg(long, value_enum)]
    pub role: PeerRole,
    /// How to wait.
    #[arg(long, value_enum)]
    pub wait: PeerWait,
    /// Event mode spin window.
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Ring page order (the ring file must be exactly that large).
    #[arg(long, default_value_t = 0)]
    pub order: u32,
    /// Inherited descriptor of the ring's memfd.
    #[arg(long)]
    pub ring_fd: Option<i32>,
    /// Inherited descriptor of the control page's memfd.
    #[arg(long)]
    pub control_fd: i32,
    /// CPU to pin to.
    #[arg(long)]
    pub core: usize,
    /// Yield instead of spinning (both sides share one CPU).
    #[arg(long)]
    pub yield_cpu: bool,
    /// The parent's pid: the peer stops if its parent is no longer this process.
    #[arg(long)]
    pub parent_pid: i32,
    /// Give up after this many seconds whatever happens.
    #[arg(long)]
    pub timeout_s: u64,
    /// The configuration's name, for messages.
    #[arg(long)]
    pub config: String,
    /// Answer request number SEQ with a wrong id (testing aid).
    #[arg(long, value_name = "SEQ")]
    pub corrupt_response: Option<u64>,
}
