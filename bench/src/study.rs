//! `xenio-bench study`: the disk study of Youseff et al., *Paravirtualization
//! for HPC Systems* (2006), rerun with xenio's rings. See [`STUDY_ABOUT`]
//! (`xenio-bench study --help`).
//!
//! Pieces: [`crate::study_work`] (Bonnie's patterns and fio-style workloads),
//! [`crate::study_dev`] (the native and the xenio path), [`crate::study_stats`]
//! (mean, sd, t-tests), [`crate::study_report`] (tables, findings, CSV/JSON,
//! plots).

use crate::common::blkback::{
    BackendKnobs, DirectArg, GrantModeArg, ReorderArg, XenioWorld, find_xenio,
};
use crate::common::error::{BenchError, Result};
use crate::common::image::precondition;
use crate::common::proc::{self, ScratchPath};
use crate::study_checkpoint;
use crate::study_dev::{Dev, NativeDev, XenioDev};
use crate::study_work::{self, BONNIE, Params, Phase};
use clap::{Args, ValueEnum};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The long help of `xenio-bench study`.
pub const STUDY_ABOUT: &str = "\
The disk study of Youseff et al., \"Paravirtualization for HPC Systems\" (2006),
section 4.2 and Figure 2, rerun on this machine with xenio's rings.

Two paths, on the same file, in the same run:
  native  the file through io_uring (or preadv/pwritev with --native-engine
          psync), the engine xenio's backend uses: the paper's native kernel.
  xenio   blkfront (this process, domain 1) -> shared rings -> `xenio blkback`
          (a child process, domain 0, the real command) -> the same file, on
          xenio's local platform: the paper's Xen guest. One connection (a fresh
          backend process) per measurement.
Both open the file with O_DIRECT (unless --buffered), so the page cache does
not hide the disk: the paper chose file sizes larger than memory for the same
reason; here the sizes matter only for the disk's own caches and layout.

Workloads (--phases picks a subset; all by default):
  Bonnie, in Bonnie's order, over the whole file (Bonnie's chunk: --chunk-kib):
    putc out   sequential output per character: one putc-like call per byte into
               a one-chunk stdio buffer, written when full
    block out  sequential output per block (write() of a chunk)
    rewrite    read a chunk, dirty a word, seek back, write it (file MB/s)
    getc in    sequential input per character (read() a chunk, getc per byte)
    block in   sequential input per block
    seeks      --seekers concurrent seekers read random chunks, rewriting 1 in
               10 (Bonnie's UpdateSeek); seeks/s
  fio-style (buffers never touched; random 4K ones move --fio-mib/16):
    seq read 1M QD8, seq write 1M QD8, rand read 4K QD1, rand read 4K QD32,
    rand write 4K QD32
  total time  the sum of the six Bonnie phases (lower is better), the paper's
              last bar.

Method (the paper's section 3): --runs runs per configuration and file size;
runs are interleaved (run 1 measures every configuration, then run 2, ...; the
order rotates each run) so drift on a noisy machine hits all of them alike.
Per metric: mean and sample sd over the runs, xenio/native ratio of the means,
and Welch's two-sample t-test (statrs' Student's t distribution): t-value,
degrees of freedom, p; significant at the 95% level when p < 0.05. Student's
pooled test is in the JSON too.

Configurations: `native`, `xenio` (the base knobs below: by default Xen 3.0's
ring, one page, no indirect segments, one queue, event-driven, with merge
reordering), and one-knob sweeps around the base on one file size
(--sweep-size-mib) with the --sweep-phases workloads:
  ring-order  0,1,2,3,4   (the ring holds 32 << order requests)
  reorder     off,sort,merge
  indirect    0,32,256    (segments per request; 0: 11 pages per request)
  poll        0,50        (microseconds both sides spin before sleeping)
  queues      1,2         (one submitting thread; blkfront sleeps on every
                          queue's event channel at once)

Output: a Markdown report on stdout (Figure 2's table: each metric relative to
native per file size, * where significant; every mean, sd and t-value; the
sweeps; the paper's findings answered with these numbers) and, in --out:
report.md, samples.csv (every run), summary.csv, results.json, and plots
(SVG and PNG): relative.svg (Figure 2), ring-order.svg (throughput against
ring order, relative to native). PNG text needs a TrueType font (DejaVu Sans
from fonts-dejavu-core, or --font).

Defaults are the paper's: 100, 500 and 1000 MiB, 50 runs (hours on a small
machine: the ETA is printed once the first run is measured). --quick runs the
same study small (16 and 32 MiB, 3 runs, fewer seeks and sweep values) in about
a minute. Progress goes to stderr. No process outlives the run: children are
killed on exit, error and SIGINT/SIGTERM, and by the kernel should this process
die.";

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
    /// Polling window of both sides.
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

/// `--native-engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NativeEngine {
    /// io_uring (the engine xenio's backend uses).
    #[value(name = "io_uring")]
    IoUring,
    /// Synchronous preadv/pwritev.
    Psync,
}

/// Options of `xenio-bench study`.
#[derive(Args, Debug, Clone)]
pub struct StudyArgs {
    /// About a minute: 16 and 32 MiB files, 3 runs, 600 seeks, 8 MiB fio-style
    /// workloads, sweeps on 16 MiB with fewer values (ring order 0, 2, 4; reorder
    /// off; indirect 256; poll 50). Explicit options still apply.
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,

    /// The paper's full study (the default, spelled out): 100, 500 and 1000 MiB,
    /// 50 runs, 4000 seeks, every sweep value. Hours on a small machine.
    #[arg(long)]
    pub full: bool,

    /// File sizes in MiB, comma-separated [default: 100,500,1000; --quick: 16,32].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    pub sizes_mib: Vec<u64>,

    /// Runs per configuration and size (the paper: 50) [default: 50; --quick: 3].
    /// Two or more are needed for a t-test.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: Option<u32>,

    /// Workloads, comma-separated names (see above; '-' or '_' for spaces), e.g.
    /// `block-in,seeks,seq-read-1m-qd8` [default: all].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub phases: Vec<String>,

    /// Bonnie's chunk in KiB: the size of each read()/write() and of the stdio
    /// buffer (8 KiB, Bonnie++'s default; the paper's text says 1K blocks).
    #[arg(long, value_name = "KIB", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub chunk_kib: u64,

    /// Chunks the sequential Bonnie patterns keep in flight. 1: every
    /// read()/write() waits, as Bonnie's calls do with O_DIRECT; more stands for
    /// a guest kernel's readahead and write-behind.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub depth: u64,

    /// Seeks per `seeks` measurement, all seekers together (Bonnie: 4000)
    /// [default: 4000; --quick: 600].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub seeks: Option<u64>,

    /// Concurrent seekers (Bonnie forks 3 seek processes).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub seekers: u64,

    /// MiB each sequential fio-style workload moves (capped at the file size;
    /// random 4K ones move 1/16 of it) [default: 64; --quick: 8].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub fio_mib: Option<u64>,

    /// Knobs to sweep, comma-separated (ring-order, reorder, indirect, queues,
    /// poll) [default: all]. `--no-sweeps` runs none.
    #[arg(long, value_enum, value_name = "LIST", value_delimiter = ',')]
    pub sweep: Vec<Knob>,

    /// Run no sweeps (only native against the base xenio configuration).
    #[arg(long, conflicts_with = "sweep")]
    pub no_sweeps: bool,

    /// The file size the sweeps run on [default: the smallest of --sizes-mib].
    #[arg(long, value_name = "MIB")]
    pub sweep_size_mib: Option<u64>,

    /// Workloads of the sweep configurations [default: block out, block in,
    /// seeks, seq read 1M QD8, rand read 4K QD32].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub sweep_phases: Vec<String>,

    /// Native path: io_uring or psync (preadv/pwritev).
    #[arg(long, value_enum, value_name = "ENGINE", default_value_t = NativeEngine::IoUring)]
    pub native_engine: NativeEngine,

    /// Use the page cache on both paths instead of O_DIRECT (the native file and
    /// the backend's --direct=off). Not the study's setting: caches then hide the
    /// disk.
    #[arg(long)]
    pub buffered: bool,

    /// Directory of the test file (created, written fully once per size, removed
    /// at the end). Must be a disk filesystem that allows O_DIRECT.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub dir: PathBuf,

    /// Where the local platform's run directory and logs go (a tmpfs).
    #[arg(long, value_name = "DIR", default_value = "/dev/shm")]
    pub scratch: PathBuf,

    /// Where report.md, the CSV and JSON files and the plots go.
    #[arg(long, value_name = "DIR", default_value = "xenio-study")]
    pub out: PathBuf,

    /// Write no plots.
    #[arg(long)]
    pub no_plots: bool,

    /// TrueType font for the PNG plots' text [default: DejaVu Sans from
    /// /usr/share/fonts].
    #[arg(long, value_name = "TTF")]
    pub font: Option<PathBuf>,

    /// No progress bar (one line per finished run instead).
    #[arg(long)]
    pub no_progress: bool,

    /// Continue the unfinished study whose checkpoint is in --out (pass the
    /// same options). Every finished measurement is appended to
    /// --out/checkpoint.jsonl as it ends, so an interrupted study (Ctrl-C, a
    /// kill, a reboot) loses at most the measurement in progress.
    #[arg(long)]
    pub resume: bool,

    /// Measure nothing: write the report from --out/checkpoint.jsonl (an
    /// unfinished study, as it stands: cells have as many runs as were
    /// finished) or else --out/measurements.jsonl (what a finished study keeps,
    /// so a newer xenio-bench can report it again). Pass the same options.
    #[arg(long, conflicts_with = "resume")]
    pub report_only: bool,

    /// Seed of the random offsets and rewrite choices (the same for both paths).
    #[arg(long, value_name = "N", default_value_t = 0x5eed)]
    pub seed: u64,

    /// The `xenio` command [default: `xenio` next to this executable, else in PATH].
    #[arg(long, value_name = "PATH")]
    pub xenio: Option<PathBuf>,

    /// Base xenio configuration: ring page order (0..=4; 0 is Xen's default
    /// single-page ring of 32 requests, the paper's "default ring size").
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=4))]
    pub ring_order: u32,

    /// Base: queues (rings, one backend thread each).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub queues: u32,

    /// Base: indirect segments per request (0: none, 11 pages per request, as in
    /// Xen 3.0).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub indirect: u32,

    /// Base: backend reordering within a batch (off, sort, merge). The paper
    /// credits reordering in the host for Xen's sequential output.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ReorderArg::Merge)]
    pub reorder: ReorderArg,

    /// Base: microseconds both the backend and the frontend spin on the ring
    /// before sleeping on the event channel (0: purely event-driven).
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub poll_us: u64,

    /// Base: grant mode of the backend (map: zero copy; copy: grant copy).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = GrantModeArg::Map)]
    pub grant_mode: GrantModeArg,

    /// Base: no persistent grants.
    #[arg(long)]
    pub no_persistent: bool,
}

/// A configuration: the native path or xenio with some knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `native`, `xenio`, `xenio ring-order=2`, ...
    pub name: String,
    /// The knob a sweep configuration varies, and its value.
    pub sweep: Option<(Knob, String)>,
    /// xenio's knobs and the frontend's spin (None: native).
    pub xenio: Option<(BackendKnobs, Duration)>,
    /// What it runs.
    pub phases: Vec<Phase>,
}

impl Config {
    /// What it runs, as JSON: its name, the backend's arguments and the
    /// frontend's spin (xenio), and its workloads.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "backend_args": self.xenio.as_ref().map(|(k, _)| k.args()),
            "front_poll_us": self.xenio.as_ref().map(|(_, p)| p.as_micros() as u64),
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

fn parse_phases(list: &[String], what: &str) -> Result<Vec<Phase>> {
    let mut v = Vec::new();
    for s in list {
        let p = Phase::parse(s).ok_or_else(|| {
            BenchError::Usage(format!(
                "{what}: unknown workload `{s}` (known: {})",
                study_work::all_phases()
                    .iter()
                    .map(|p| p.name().replace(' ', "-"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if !v.contains(&p) {
            v.push(p);
        }
    }
    // Bonnie's order, then the fio-style ones.
    v.sort();
    Ok(v)
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

fn base_knobs(a: &StudyArgs) -> BackendKnobs {
    BackendKnobs {
        ring_order: a.ring_order,
        queues: a.queues,
        indirect: a.indirect,
        persistent: !a.no_persistent,
        grant_mode: a.grant_mode,
        reorder: a.reorder,
        poll_us: a.poll_us,
        io_depth: 128,
        batch: 512,
        direct: if a.buffered {
            DirectArg::Off
        } else {
            DirectArg::On
        },
        extra: Vec::new(),
    }
}

fn reorder_name(r: ReorderArg) -> &'static str {
    match r {
        ReorderArg::Off => "off",
        ReorderArg::Sort => "sort",
        ReorderArg::Merge => "merge",
    }
}

/// Apply defaults, check the arguments, build the configurations.
pub fn resolve(a: &StudyArgs) -> Result<Resolved> {
    let q = a.quick;
    let sizes_mib = if a.sizes_mib.is_empty() {
        if q {
            vec![16, 32]
        } else {
            vec![100, 500, 1000]
        }
    } else {
        a.sizes_mib.clone()
    };
    let runs = a.runs.unwrap_or(if q { 3 } else { 50 });
    let chunk = (a.chunk_kib << 10) as usize;
    let params = Params {
        chunk,
        depth: a.depth as usize,
        seeks: a.seeks.unwrap_or(if q { 600 } else { 4000 }),
        seekers: a.seekers as usize,
        fio_bytes: a.fio_mib.unwrap_or(if q { 8 } else { 64 }) << 20,
        seed: a.seed,
    };
    let phases = if a.phases.is_empty() {
        study_work::all_phases()
    } else {
        parse_phases(&a.phases, "--phases")?
    };
    let mut sizes = Vec::new();
    for &mib in &sizes_mib {
        let bytes = mib << 20;
        let need = phases
            .iter()
            .map(|p| match p {
                Phase::Fio(i) => study_work::FIO[*i].bs as u64,
                _ => chunk as u64,
            })
            .max()
            .unwrap_or(0);
        if bytes < need * 2 {
            return Err(BenchError::Usage(format!(
                "a {mib} MiB file is too small for these workloads (blocks of {need} bytes)"
            )));
        }
        if !sizes.contains(&bytes) {
            sizes.push(bytes);
        }
    }
    let base = base_knobs(a);
    let front_poll = Duration::from_micros(a.poll_us);
    let mut configs = vec![
        Config {
            name: "native".into(),
            sweep: None,
            xenio: None,
            phases: phases.clone(),
        },
        Config {
            name: "xenio".into(),
            sweep: None,
            xenio: Some((base.clone(), front_poll)),
            phases: phases.clone(),
        },
    ];
    let knobs: Vec<Knob> = if a.no_sweeps {
        Vec::new()
    } else if a.sweep.is_empty() {
        vec![
            Knob::RingOrder,
            Knob::Reorder,
            Knob::Indirect,
            Knob::Queues,
            Knob::Poll,
        ]
    } else {
        let mut k = a.sweep.clone();
        k.dedup();
        k
    };
    let sweep_phases: Vec<Phase> = if a.sweep_phases.is_empty() {
        vec![
            Phase::BlockOut,
            Phase::BlockIn,
            Phase::Seeks,
            Phase::Fio(0),
            Phase::Fio(3),
        ]
    } else {
        parse_phases(&a.sweep_phases, "--sweep-phases")?
    }
    .into_iter()
    .filter(|p| phases.contains(p))
    .collect();
    let mut sweep_size = None;
    if !knobs.is_empty() && !sweep_phases.is_empty() {
        let want = a.sweep_size_mib.map(|m| m << 20);
        sweep_size = match want {
            Some(w) => Some(sizes.iter().position(|&s| s == w).ok_or_else(|| {
                BenchError::Usage(format!(
                    "--sweep-size-mib {} is not one of --sizes-mib",
                    w >> 20
                ))
            })?),
            None => sizes
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| **s)
                .map(|(i, _)| i),
        };
        for knob in knobs {
            let mut add = |label: String, k: BackendKnobs, poll: Duration| {
                if k == base && poll == front_poll {
                    return; // that is the base configuration itself
                }
                configs.push(Config {
                    name: format!("xenio {}={label}", knob.name()),
                    sweep: Some((knob, label)),
                    xenio: Some((k, poll)),
                    phases: sweep_phases.clone(),
                });
            };
            match knob {
                Knob::RingOrder => {
                    let orders: &[u32] = if q { &[0, 2, 4] } else { &[0, 1, 2, 3, 4] };
                    for &o in orders {
                        add(
                            o.to_string(),
                            BackendKnobs {
                                ring_order: o,
                                ..base.clone()
                            },
                            front_poll,
                        );
                    }
                }
                Knob::Reorder => {
                    let modes: &[ReorderArg] = if q {
                        &[ReorderArg::Off]
                    } else {
                        &[ReorderArg::Off, ReorderArg::Sort, ReorderArg::Merge]
                    };
                    for &m in modes {
                        add(
                            reorder_name(m).to_string(),
                            BackendKnobs {
                                reorder: m,
                                ..base.clone()
                            },
                            front_poll,
                        );
                    }
                }
                Knob::Indirect => {
                    let v: &[u32] = if q { &[256] } else { &[0, 32, 256] };
                    for &n in v {
                        add(
                            n.to_string(),
                            BackendKnobs {
                                indirect: n,
                                ..base.clone()
                            },
                            front_poll,
                        );
                    }
                }
                Knob::Queues => {
                    for n in [1, 2] {
                        add(
                            n.to_string(),
                            BackendKnobs {
                                queues: n,
                                ..base.clone()
                            },
                            front_poll,
                        );
                    }
                }
                Knob::Poll => {
                    for us in [0, 50] {
                        add(
                            format!("{us}us"),
                            BackendKnobs {
                                poll_us: us,
                                ..base.clone()
                            },
                            Duration::from_micros(us),
                        );
                    }
                }
            }
        }
    }
    Ok(Resolved {
        sizes,
        runs,
        params,
        configs,
        sweep_size,
    })
}

/// Bytes a measurement roughly moves, weighted by how slow the pattern is (for
/// the progress bar's ETA).
fn work(c: &Config, size: u64, p: &Params) -> u64 {
    c.phases
        .iter()
        .map(|ph| match ph {
            Phase::Rewrite => 2 * size,
            Phase::Seeks => p.seeks * p.chunk as u64 * 4,
            Phase::Fio(i) => {
                let f = &study_work::FIO[*i];
                if f.bs < (64 << 10) {
                    (p.fio_bytes / 16).min(size) * if f.qd == 1 { 8 } else { 2 }
                } else {
                    p.fio_bytes.min(size) / 4
                }
            }
            _ => size,
        })
        .sum::<u64>()
        // A connection costs about as much as moving a few MB.
        + (4 << 20)
}

fn pool_pages(c: &Config, p: &Params) -> usize {
    c.phases
        .iter()
        .map(|ph| match ph {
            Phase::Fio(i) => study_work::FIO[*i].bs * study_work::FIO[*i].qd,
            Phase::Seeks => p.chunk * p.seekers,
            _ => p.chunk * p.depth,
        })
        .max()
        .unwrap_or(p.chunk)
        .div_ceil(4096)
        + 16
}

/// Run `c`'s phases on `dev`; returns each phase's metric.
fn run_phases(dev: &mut dyn Dev, c: &Config, p: &Params) -> Result<Vec<(Phase, f64, f64)>> {
    let mut out = Vec::with_capacity(c.phases.len());
    for &ph in &c.phases {
        let r = study_work::run_phase(dev, ph, p)?;
        out.push((ph, r.value, r.secs));
    }
    Ok(out)
}

/// Each phase's (metric, seconds), xenio's counters, how the file was opened.
type Measured = (Vec<(Phase, f64, f64)>, Option<Counters>, String);

/// One measurement of configuration `c` on `file`.
fn measure(
    c: &Config,
    file: &Path,
    p: &Params,
    a: &StudyArgs,
    world: Option<&mut XenioWorld>,
) -> Result<Measured> {
    match (&c.xenio, world) {
        (None, _) => {
            let mut dev =
                NativeDev::open(file, a.buffered, a.native_engine == NativeEngine::Psync, 64)?;
            let r = run_phases(&mut dev, c, p)?;
            Ok((r, None, dev.describe()))
        }
        (Some((knobs, poll)), Some(world)) => {
            world.set_knobs(knobs.clone());
            let mut session = world.open(file, pool_pages(c, p), &c.name)?;
            let r = {
                let mut dev = XenioDev::new(&mut session.front, *poll, &c.name);
                run_phases(&mut dev, c, p)
            };
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    drop(session);
                    return Err(e);
                }
            };
            let (k, storage) = session.close()?;
            Ok((
                r,
                Some(Counters {
                    requests: k.requests,
                    merged: k.merged,
                    notifications: k.front_notifications + k.back_notifications,
                }),
                storage,
            ))
        }
        (Some(_), None) => Err(BenchError::Usage("no xenio world".into())),
    }
}

fn fs_of(dir: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return String::new();
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if dir.starts_with(f[1]) && best.as_ref().is_none_or(|(l, _)| f[1].len() > *l) {
            best = Some((f[1].len(), format!("{} on {} ({})", f[2], f[0], f[1])));
        }
    }
    best.map(|b| b.1).unwrap_or_default()
}

/// Run the study: progress on stderr, the report on stdout and in --out.
pub fn run(a: &StudyArgs) -> Result<()> {
    let r = resolve(a)?;
    let fp = study_checkpoint::fingerprint(&r, a);
    let machine = format!(
        "{} CPUs, Linux {}, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        fs_of(&a.dir)
    );
    let mut res = StudyResults {
        plan: Plan {
            runs: r.runs,
            chunk: r.params.chunk,
            depth: r.params.depth,
            seeks: r.params.seeks,
            seekers: r.params.seekers,
            fio_bytes: r.params.fio_bytes,
            sweep_size: r.sweep_size,
            native: String::new(),
            backend_storage: String::new(),
            direct: !a.buffered,
            // Filled from the checkpoint and by this sitting, if it measures.
            machine: String::new(),
            elapsed_secs: 0.0,
            quick: a.quick,
            sittings: 0,
            partial: None,
        },
        sizes: r.sizes.clone(),
        configs: r.configs.clone(),
        samples: BTreeMap::new(),
        counters: BTreeMap::new(),
    };
    let per_size: Vec<Vec<usize>> = (0..r.sizes.len())
        .map(|si| {
            (0..r.configs.len())
                .filter(|&ci| ci < 2 || Some(si) == r.sweep_size)
                .collect()
        })
        .collect();
    let measurements: usize = per_size.iter().map(Vec::len).sum::<usize>() * r.runs as usize;

    if a.report_only {
        // An unfinished study's checkpoint, else a finished study's measurements.
        let Some(path) = [study_checkpoint::FILE, study_checkpoint::FINISHED]
            .iter()
            .map(|f| a.out.join(f))
            .find(|p| p.exists())
        else {
            return Err(BenchError::Usage(format!(
                "--report-only: neither {} nor {} exists in {} (no study measured there)",
                study_checkpoint::FILE,
                study_checkpoint::FINISHED,
                a.out.display()
            )));
        };
        let entries = study_checkpoint::load(&path, &fp, &r)?;
        let done = load_entries(&mut res, entries);
        if done < measurements {
            res.plan.partial = Some(format!(
                "{done} of {measurements} measurements (the study was not finished; --resume continues it)"
            ));
        }
        eprintln!(
            "xenio-bench study: reporting {done} of {measurements} measurements from {}",
            path.display()
        );
        return crate::study_report::write_all(&res, &a.out, a.no_plots, a.font.as_deref());
    }

    proc::install_signal_cleanup()?;
    let xenio_bin = find_xenio(a.xenio.as_deref())?;
    for p in proc::remove_stale(
        &[&a.dir, &a.scratch, Path::new("/dev/shm")],
        "xenio-bench-study-",
    ) {
        eprintln!(
            "xenio-bench study: removed {} (left by a run that was killed)",
            p.display()
        );
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| BenchError::io(format!("creating {}", a.out.display()), e))?;
    let (mut checkpoint, entries) = study_checkpoint::Checkpoint::open(&a.out, &fp, &r, a.resume)?;
    let done: BTreeSet<(usize, usize, usize)> =
        entries.iter().map(|e| (e.si, e.ci, e.run)).collect();
    let loaded = load_entries(&mut res, entries);
    // This sitting follows the checkpoint's, and its time adds to theirs.
    let sitting = res.plan.sittings + 1;
    let elapsed_before = res.plan.elapsed_secs;
    res.plan.sittings = sitting;
    add_machine(&mut res.plan, &machine);
    let pid = std::process::id();
    let scratch = ScratchPath::new(a.scratch.join(format!("xenio-bench-study-{pid}")));
    std::fs::create_dir_all(scratch.path())
        .map_err(|e| BenchError::io(format!("creating {}", scratch.path().display()), e))?;
    let image = ScratchPath::new(a.dir.join(format!("xenio-bench-study-{pid}.img")));
    let mut world = XenioWorld::start(
        &xenio_bin,
        scratch.path(),
        r.configs[1].xenio.clone().expect("the base is xenio").0,
        Duration::ZERO,
    )?;

    let work_of = |si: usize, ci: usize| work(&r.configs[ci], r.sizes[si], &r.params);
    let total_work: u64 = per_size
        .iter()
        .enumerate()
        .map(|(si, cs)| cs.iter().map(|&ci| work_of(si, ci)).sum::<u64>() * u64::from(r.runs))
        .sum();
    let loaded_work: u64 = done.iter().map(|&(si, ci, _)| work_of(si, ci)).sum();
    let direct_word = if a.buffered {
        "the page cache (--buffered)"
    } else {
        "O_DIRECT on both paths: the page cache does not hide the disk"
    };
    eprintln!(
        "xenio-bench study: {} size(s) [{}] MiB x {} runs, {} configurations ({} sweep), {measurements} measurements; {direct_word}",
        r.sizes.len(),
        r.sizes
            .iter()
            .map(|s| (s >> 20).to_string())
            .collect::<Vec<_>>()
            .join(", "),
        r.runs,
        r.configs.len(),
        r.configs.len() - 2,
    );
    if loaded > 0 {
        eprintln!(
            "xenio-bench study: resuming (sitting {sitting}): {loaded} of {measurements} measurements already in {}",
            a.out.join(study_checkpoint::FILE).display()
        );
    }
    if r.runs < 2 {
        eprintln!("xenio-bench study: one run: no t-test (use --runs 2 or more)");
    }

    let pb = if a.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(total_work);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {percent:>3}% ETA {eta_precise} {msg}",
            )
            .map_err(|e| BenchError::Usage(format!("progress template: {e}")))?
            .progress_chars("=> "),
        );
        pb.set_position(loaded_work);
        pb.reset_eta();
        pb.enable_steady_tick(Duration::from_millis(500));
        pb
    };

    let started = Instant::now();
    let mut done_work = 0u64;
    let mut eta_said = false;
    for (si, &size) in r.sizes.iter().enumerate() {
        let cs = &per_size[si];
        let todo = |run: usize, ci: usize| !done.contains(&(si, ci, run));
        if !(0..r.runs as usize).any(|run| cs.iter().any(|&ci| todo(run, ci))) {
            continue;
        }
        pb.set_message(format!("writing the {} MiB file", size >> 20));
        pb.suspend(|| {
            eprintln!(
                "xenio-bench study: writing {} ({} MiB) once",
                image.path().display(),
                size >> 20
            )
        });
        if !precondition(image.path(), size, a.seed)? && !a.buffered {
            return Err(BenchError::Usage(format!(
                "{} refuses O_DIRECT; pick a --dir on a disk filesystem (ext4, xfs) or pass --buffered",
                a.dir.display()
            )));
        }
        for run in 0..r.runs as usize {
            let mut order = cs.clone();
            let n = order.len();
            order.rotate_left(run % n.max(1));
            let run_started = Instant::now();
            let mut measured = false;
            for &ci in &order {
                if !todo(run, ci) {
                    continue;
                }
                let c = &r.configs[ci];
                pb.set_message(format!(
                    "{} MiB, run {}/{}: {}",
                    size >> 20,
                    run + 1,
                    r.runs,
                    c.name
                ));
                let label = format!("{} on {} MiB, run {}", c.name, size >> 20, run + 1);
                let (values, counters, storage) =
                    measure(c, image.path(), &r.params, a, Some(&mut world)).inspect_err(|_| {
                        pb.abandon();
                        eprintln!("xenio-bench study: failed during `{label}`");
                    })?;
                let e = study_checkpoint::Entry {
                    si,
                    ci,
                    run,
                    values,
                    counters,
                    storage,
                    elapsed_secs: elapsed_before + started.elapsed().as_secs_f64(),
                    sitting,
                    machine: machine.clone(),
                };
                checkpoint.append(&e)?;
                record(&mut res, &e);
                measured = true;
                let w = work_of(si, ci);
                done_work += w;
                pb.inc(w);
            }
            if !measured {
                continue;
            }
            if !eta_said && started.elapsed() > Duration::from_secs(2) {
                eta_said = true;
                let rate = done_work as f64 / started.elapsed().as_secs_f64();
                let left = (total_work - loaded_work - done_work) as f64 / rate.max(1.0);
                pb.suspend(|| {
                    eprintln!(
                        "xenio-bench study: first run took {:.1} s; estimated {:.0} s more ({:.1} min in all)",
                        run_started.elapsed().as_secs_f64(),
                        left,
                        (elapsed_before + started.elapsed().as_secs_f64() + left) / 60.0
                    )
                });
            }
            if a.no_progress {
                // The rate of this sitting so far, applied to the work left.
                let secs = started.elapsed().as_secs_f64();
                let left =
                    (total_work - loaded_work - done_work) as f64 * secs / done_work.max(1) as f64;
                eprintln!(
                    "xenio-bench study: {} MiB run {}/{} done ({:.0} s so far, about {:.0} min left)",
                    size >> 20,
                    run + 1,
                    r.runs,
                    elapsed_before + secs,
                    left / 60.0
                );
            }
        }
    }
    pb.finish_and_clear();
    drop(world);
    res.plan.elapsed_secs = elapsed_before + started.elapsed().as_secs_f64();
    eprintln!(
        "xenio-bench study: measured in {:.1} s",
        res.plan.elapsed_secs
    );
    crate::study_report::write_all(&res, &a.out, a.no_plots, a.font.as_deref())?;
    let kept = checkpoint.finish()?;
    eprintln!(
        "xenio-bench study: the measurements stay in {} (`--report-only` writes the report again from them)",
        kept.display()
    );
    Ok(())
}

/// Put a finished measurement into the results.
fn record(res: &mut StudyResults, e: &study_checkpoint::Entry) {
    let (si, ci) = (e.si, e.ci);
    if res.configs[ci].xenio.is_none() {
        res.plan.native.clone_from(&e.storage);
    } else if res.plan.backend_storage.is_empty() {
        res.plan.backend_storage.clone_from(&e.storage);
    }
    let mut total = 0.0;
    let mut bonnie = 0;
    for &(ph, v, secs) in &e.values {
        res.samples
            .entry((si, ci, Metric::Phase(ph)))
            .or_default()
            .push(v);
        if ph.is_bonnie() {
            total += secs;
            bonnie += 1;
        }
    }
    if bonnie == BONNIE.len() {
        res.samples
            .entry((si, ci, Metric::Total))
            .or_default()
            .push(total);
    }
    if let Some(k) = e.counters {
        let c = res.counters.entry((si, ci)).or_default();
        c.requests += k.requests;
        c.merged += k.merged;
        c.notifications += k.notifications;
    }
}

/// Put a checkpoint's measurements into the results in run order; returns how
/// many there were. The plan takes the latest wall time and the sittings.
fn load_entries(res: &mut StudyResults, mut entries: Vec<study_checkpoint::Entry>) -> usize {
    entries.sort_by_key(|e| (e.si, e.run, e.ci));
    for e in &entries {
        record(res, e);
        res.plan.elapsed_secs = res.plan.elapsed_secs.max(e.elapsed_secs);
        res.plan.sittings = res.plan.sittings.max(e.sitting);
        add_machine(&mut res.plan, &e.machine);
    }
    entries.len()
}

/// Name `machine` in the plan unless it is there already (a study resumed on
/// another machine names both, in order).
fn add_machine(plan: &mut Plan, machine: &str) {
    if machine.is_empty() || plan.machine.contains(machine) {
        return;
    }
    if plan.machine.is_empty() {
        plan.machine = machine.to_string();
    } else {
        plan.machine = format!("{}; then {machine}", plan.machine);
    }
}

/// `StudyArgs` from command-line words, for unit tests.
#[cfg(test)]
pub(crate) fn test_args(v: &[&str]) -> StudyArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: StudyArgs,
    }
    T::parse_from(std::iter::once("t").chain(v.iter().copied())).a
}

#[cfg(test)]
mod tests {
    use super::test_args as args;
    use super::*;

    #[test]
    fn defaults_are_the_papers_and_quick_is_small() {
        let r = resolve(&args(&[])).unwrap();
        assert_eq!(r.sizes, [100 << 20, 500 << 20, 1000 << 20]);
        assert_eq!(r.runs, 50);
        assert_eq!(r.params.seeks, 4000);
        assert_eq!(r.sweep_size, Some(0));
        // native, base, ring orders 1-4, reorder off/sort, indirect 32/256,
        // queues 2, poll 50.
        assert_eq!(r.configs.len(), 2 + 4 + 2 + 2 + 1 + 1);
        let q2 = resolve(&args(&["--sweep", "queues"])).unwrap();
        assert_eq!(q2.configs[2].name, "xenio queues=2");
        assert!(r.configs.iter().any(|c| c.name == "xenio queues=2"));
        assert_eq!(r.configs[1].xenio.as_ref().unwrap().0.ring_order, 0);
        let q = resolve(&args(&["--quick"])).unwrap();
        assert_eq!(q.sizes, [16 << 20, 32 << 20]);
        assert_eq!(q.runs, 3);
        assert!(q.configs.len() < r.configs.len());
        let names: Vec<&str> = q.configs.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"xenio ring-order=4"), "{names:?}");
    }

    #[test]
    fn phases_and_sweeps_are_selectable_and_checked() {
        let r = resolve(&args(&[
            "--quick",
            "--phases",
            "seeks,block-in",
            "--sweep",
            "ring-order",
            "--sweep-phases",
            "block_in",
        ]))
        .unwrap();
        assert_eq!(r.configs[0].phases, [Phase::BlockIn, Phase::Seeks]);
        assert!(r.configs[2..].iter().all(|c| c.phases == [Phase::BlockIn]));
        assert_eq!(r.configs.len(), 2 + 2);
        assert!(resolve(&args(&["--phases", "bogus"])).is_err());
        assert!(resolve(&args(&["--sizes-mib", "1"])).is_err());
        assert!(resolve(&args(&["--sizes-mib", "8,16", "--sweep-size-mib", "4"])).is_err());
        let n = resolve(&args(&["--no-sweeps"])).unwrap();
        assert_eq!((n.configs.len(), n.sweep_size), (2, None));
    }
}
