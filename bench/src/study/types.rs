//! The study's shared types: workloads (Bonnie's patterns and the fio-style
//! ones) and their knobs, configurations, metrics, the device interface the
//! workloads drive, and what a study holds.

use crate::common::blkback::BackendKnobs;
use crate::common::error::Result;
use clap::ValueEnum;
use std::collections::BTreeMap;
use xenio_blkfront::Wait;

/// One pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Sequential output per character.
    PutcOut,
    /// Sequential output per block.
    BlockOut,
    /// Read, dirty, write back each chunk.
    Rewrite,
    /// Sequential input per character.
    GetcIn,
    /// Sequential input per block.
    BlockIn,
    /// Random seeks with 10% rewrites.
    Seeks,
    /// A fio-style workload (index into [`FIO`]).
    Fio(usize),
}

/// A fio-style workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FioSpec {
    /// E.g. `seq read 1M QD8`.
    pub name: &'static str,
    /// Writes (else reads).
    pub write: bool,
    /// Random offsets (else sequential).
    pub random: bool,
    /// Bytes per operation.
    pub bs: usize,
    /// Operations in flight.
    pub qd: usize,
}

/// The fio-style workloads.
pub const FIO: [FioSpec; 5] = [
    FioSpec {
        name: "seq read 1M QD8",
        write: false,
        random: false,
        bs: 1 << 20,
        qd: 8,
    },
    FioSpec {
        name: "seq write 1M QD8",
        write: true,
        random: false,
        bs: 1 << 20,
        qd: 8,
    },
    FioSpec {
        name: "rand read 4K QD1",
        write: false,
        random: true,
        bs: 4096,
        qd: 1,
    },
    FioSpec {
        name: "rand read 4K QD32",
        write: false,
        random: true,
        bs: 4096,
        qd: 32,
    },
    FioSpec {
        name: "rand write 4K QD32",
        write: true,
        random: true,
        bs: 4096,
        qd: 32,
    },
];

/// Bonnie's six patterns in Bonnie's order.
pub const BONNIE: [Phase; 6] = [
    Phase::PutcOut,
    Phase::BlockOut,
    Phase::Rewrite,
    Phase::GetcIn,
    Phase::BlockIn,
    Phase::Seeks,
];

/// Every phase: Bonnie's, then the fio-style ones.
pub fn all_phases() -> Vec<Phase> {
    let mut v = BONNIE.to_vec();
    v.extend((0..FIO.len()).map(Phase::Fio));
    v
}

impl Phase {
    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Phase::PutcOut => "putc out",
            Phase::BlockOut => "block out",
            Phase::Rewrite => "rewrite",
            Phase::GetcIn => "getc in",
            Phase::BlockIn => "block in",
            Phase::Seeks => "seeks",
            Phase::Fio(i) => FIO[i].name,
        }
    }

    /// The unit of its metric.
    pub fn unit(self) -> &'static str {
        match self {
            Phase::Seeks => "seeks/s",
            _ => "MB/s",
        }
    }

    /// One of Bonnie's patterns (they make up the total time).
    pub fn is_bonnie(self) -> bool {
        !matches!(self, Phase::Fio(_))
    }

    /// Parse a name (case-insensitive; '-' and '_' match spaces).
    pub fn parse(s: &str) -> Option<Phase> {
        let n = s.to_lowercase().replace(['-', '_'], " ");
        all_phases()
            .into_iter()
            .find(|p| p.name().to_lowercase() == n)
    }
}

/// The knobs of the patterns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Bonnie's chunk (bytes, a multiple of 512).
    pub chunk: usize,
    /// Chunks in flight in the sequential patterns.
    pub depth: usize,
    /// Seeks in `seeks` (all seekers together).
    pub seeks: u64,
    /// Concurrent seekers.
    pub seekers: usize,
    /// Bytes each fio-style sequential workload moves; random 4 KiB ones move
    /// 1/16 of it.
    pub fio_bytes: u64,
    /// Seed of the random offsets and rewrite choices.
    pub seed: u64,
}

/// Which knob a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Knob {
    /// Ring page order.
    #[value(name = "ring-order")]
    RingOrder,
    /// Backend reordering.
    Reorder,
    /// Indirect segments.
    Indirect,
    /// Queues.
    Queues,
    /// How both sides wait (adaptive, or a fixed spin; 0: event-driven).
    Poll,
}

impl Knob {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Knob::RingOrder => "ring-order",
            Knob::Reorder => "reorder",
            Knob::Indirect => "indirect",
            Knob::Queues => "queues",
            Knob::Poll => "poll",
        }
    }
}

/// A configuration: the native path or xenio with some knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `native`, `xenio`, `xenio ring-order=2`, ...
    pub name: String,
    /// The knob a sweep configuration varies, and its value.
    pub sweep: Option<(Knob, String)>,
    /// xenio's knobs and how the frontend waits (None: native).
    pub xenio: Option<(BackendKnobs, Wait)>,
    /// What it runs.
    pub phases: Vec<Phase>,
}

impl Config {
    /// What it runs, as JSON: its name, the backend's arguments and the
    /// frontend's spin (xenio: microseconds, absent when adaptive), and its
    /// workloads.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "backend_args": self.xenio.as_ref().map(|(k, _)| k.args()),
            "front_poll_us": self.xenio.as_ref().and_then(|(_, w)| match w {
                Wait::Fixed(d) => Some(d.as_micros() as u64),
                Wait::Adaptive => None,
            }),
            "phases": self.phases.iter().map(|p| p.name()).collect::<Vec<_>>(),
        })
    }
}

/// A reported metric: a phase, or the total time of Bonnie's phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// A phase's throughput.
    Phase(Phase),
    /// Seconds for the six Bonnie phases.
    Total,
}

impl Metric {
    /// Name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Phase(p) => p.name(),
            Metric::Total => "total time",
        }
    }
    /// Unit.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Phase(p) => p.unit(),
            Metric::Total => "s",
        }
    }
    /// Whether more is better.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::Total)
    }
}

/// Connection counters of xenio, summed over a configuration's runs on a size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    /// Ring requests the backend took.
    pub requests: u64,
    /// Requests merged into a neighbour's I/O.
    pub merged: u64,
    /// Notifications (both sides).
    pub notifications: u64,
}

/// Everything a study measured.
#[derive(Clone, Debug)]
pub struct StudyResults {
    /// What was run (for the report's header).
    pub plan: Plan,
    /// File sizes in bytes.
    pub sizes: Vec<u64>,
    /// Configurations (index 0 is native, 1 the base xenio).
    pub configs: Vec<Config>,
    /// Metric values per (size index, config index, metric), one per run.
    pub samples: BTreeMap<(usize, usize, Metric), Vec<f64>>,
    /// xenio's counters per (size index, config index).
    pub counters: BTreeMap<(usize, usize), Counters>,
}

/// The settings a study ran with.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs.
    pub runs: u32,
    /// Bonnie's chunk.
    pub chunk: usize,
    /// Sequential depth.
    pub depth: usize,
    /// Seeks and seekers.
    pub seeks: u64,
    /// Seekers.
    pub seekers: usize,
    /// fio-style bytes.
    pub fio_bytes: u64,
    /// Size index of the sweeps.
    pub sweep_size: Option<usize>,
    /// Native path description (`io_uring, O_DIRECT`).
    pub native: String,
    /// How the backend opened the file.
    pub backend_storage: String,
    /// O_DIRECT on both paths.
    pub direct: bool,
    /// Machine: CPUs, kernel, filesystem of --dir.
    pub machine: String,
    /// Wall time of the whole study.
    pub elapsed_secs: f64,
    /// `--quick`.
    pub quick: bool,
    /// Sittings the measurements took (more than 1: resumed with --resume).
    pub sittings: u32,
    /// Set when reporting an unfinished study: what it holds.
    pub partial: Option<String>,
}

/// The study's settings with the defaults of --quick or the full study applied.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// File sizes in bytes.
    pub sizes: Vec<u64>,
    /// Runs.
    pub runs: u32,
    /// Pattern knobs.
    pub params: Params,
    /// Configurations (native, base, sweeps).
    pub configs: Vec<Config>,
    /// Index into `sizes` of the sweeps.
    pub sweep_size: Option<usize>,
}

/// A block device a workload drives.
pub trait Dev {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Replace the buffers with `n` buffers of `len` bytes (multiples of 512),
    /// numbered `0..n`. Nothing may be in flight.
    fn buffers(&mut self, n: usize, len: usize) -> Result<()>;
    /// Copy `data` into the start of buffer `b`.
    fn copy_in(&mut self, b: usize, data: &[u8]) -> Result<()>;
    /// Copy the start of buffer `b` into `out`.
    fn copy_out(&mut self, b: usize, out: &mut [u8]) -> Result<()>;
    /// Submit a read into (or a write from) the first `len` bytes of buffer `b`
    /// at byte `offset`. A buffer has at most one operation in flight.
    fn submit(&mut self, b: usize, write: bool, offset: u64, len: usize) -> Result<()>;
    /// Wait for at least one completion; append the buffers whose operations
    /// completed to `done`.
    fn wait(&mut self, done: &mut Vec<usize>) -> Result<()>;
}

/// Bonnie's metrics in Figure 2's order (the six phases and total time).
pub fn figure2_metrics() -> Vec<Metric> {
    let mut v: Vec<Metric> = BONNIE.iter().map(|&p| Metric::Phase(p)).collect();
    v.push(Metric::Total);
    v
}

/// The fio-style metrics.
pub fn fio_metrics() -> Vec<Metric> {
    (0..FIO.len())
        .map(|i| Metric::Phase(Phase::Fio(i)))
        .collect()
}
