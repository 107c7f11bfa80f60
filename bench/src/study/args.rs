//! The command line of `xenio-bench study`.

use crate::common::blkback::{GrantModeArg, ReorderArg};
use crate::study::types::Knob;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

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
With --target qcow2 or nbd the xenio path serves a qcow2 copy of the file or
a qemu-nbd export of it instead (the native path stays the file). The study
makes its own test file per size, so it runs on nothing it cannot make: no
RBD image or outside NBD server; for those, `xenio-bench blk --engines
xenio-rbd,fio-rbd --rbd-target ...` (and xenio-nbd) measure the fio-style
workloads with any ring knob.

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
ring, one page, no indirect segments, one queue, adaptive waiting, with merge
reordering), and one-knob sweeps around the base on one file size
(--sweep-size-mib) with the --sweep-phases workloads:
  ring-order  0,1,2,3,4   (the ring holds 32 << order requests)
  reorder     off,sort,merge
  indirect    0,32,256    (segments per request; 0: 11 pages per request)
  poll        0           (both sides event-driven, against the adaptive
                          base; with a --poll-us base: 0,50, microseconds
                          both sides spin before sleeping)
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

/// `--native-engine`: how the native path does its I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NativeIo {
    /// io_uring (the engine xenio's backend uses).
    #[value(name = "io_uring")]
    IoUring,
    /// Synchronous preadv/pwritev.
    Psync,
}

/// `--target`: what the xenio configurations serve (the native path is always
/// the raw test file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StudyTarget {
    /// The test file itself (`--disk format=raw,target=FILE`).
    #[default]
    File,
    /// A qcow2 copy of the test file, made once per size by `qemu-img convert
    /// -O qcow2` (every cluster allocated): `--disk format=qcow2,target=COPY`.
    Qcow2,
    /// The test file exported by qemu-nbd (`-f raw --cache=none
    /// --aio=io_uring --persistent`) on a Unix socket in the scratch
    /// directory: `--disk target=nbd+unix:///?socket=SOCKET`.
    Nbd,
}

/// Options of `xenio-bench study`.
#[derive(Args, Debug, Clone)]
pub struct StudyArgs {
    /// About a minute: 16 and 32 MiB files, 3 runs, 600 seeks, 8 MiB fio-style
    /// workloads, sweeps on 16 MiB with fewer values (ring order 0, 2, 4; reorder
    /// off; indirect 256; poll 0). Explicit options still apply.
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
    #[arg(long = "native-engine", value_enum, value_name = "ENGINE", default_value_t = NativeIo::IoUring)]
    pub native_io: NativeIo,

    /// What the xenio configurations serve: file (the test file, raw), qcow2 (a
    /// qcow2 copy of it, served with format=qcow2) or nbd (the test file
    /// exported by qemu-nbd, served with target=nbd+unix://), so that the ring
    /// knobs are swept over those storages too. The native path stays the raw
    /// test file, so xenio/native then also counts the storage's own cost.
    /// qcow2 and nbd need qemu-utils. Not RBD (the study makes its test file
    /// per size): `xenio-bench blk --engines xenio-rbd,fio-rbd` measures RBD.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = StudyTarget::File)]
    pub target: StudyTarget,

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
    /// before sleeping on the event channel (0: purely event-driven). Without
    /// it, both wait adaptively, as they do by default: they spin only while
    /// their recent waits say the next event is due within 150 us, and sleep
    /// otherwise.
    #[arg(long, value_name = "US")]
    pub poll_us: Option<u64>,

    /// Base: grant mode of the backend (map: zero copy; copy: grant copy).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = GrantModeArg::Map)]
    pub grant_mode: GrantModeArg,

    /// Base: no persistent grants.
    #[arg(long)]
    pub no_persistent: bool,
}

/// `StudyArgs` from command-line words, for unit tests.
#[cfg(test)]
pub fn test_args(v: &[&str]) -> StudyArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: StudyArgs,
    }
    T::parse_from(std::iter::once("t").chain(v.iter().copied())).a
}
