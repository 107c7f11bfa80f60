//! `xenio-bench blk`: fio-style block workloads through blkfront -> rings ->
//! `xenio blkback` (a separate process) -> a file, against baselines measured in
//! the same run on the same file: fio itself (io_uring, O_DIRECT), the same two
//! paths on a memory-backed copy (/dev/shm), and qemu-nbd driven by fio's nbd
//! engine as a peer userspace block server.
//!
//! Each repetition runs every workload on every engine (the engine order rotates
//! from one repetition to the next), so drift on a noisy machine hits all of
//! them alike; the report gives median [min..max] over the repetitions, and each
//! ratio is computed within a repetition before it is summarised. See
//! [`BLK_ABOUT`] (`xenio-bench blk --help`) for every knob.
//!
//! Pieces: [`crate::blk_xenio`] (the asynchronous frontend driver against a
//! backend process of [`crate::common::blkback`]), [`crate::blk_fio`] (fio and
//! qemu-nbd), [`crate::blk_report`] (tables, targets, JSON),
//! [`crate::common::proc`] (children and scratch files that never outlive the
//! run).

use crate::blk_fio::{self, FioTarget, NbdServer};
use crate::blk_report::{self, BlkResults, Plan};
use crate::blk_xenio;
use crate::common::blkback::{
    BackendKnobs, DirectArg, GrantModeArg, ReorderArg, XenioCounters, XenioWorld, find_xenio,
};
use crate::common::error::{BenchError, Result};
use crate::common::image::precondition;
use crate::common::proc::{self, ScratchPath};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The long help of `xenio-bench blk`.
pub const BLK_ABOUT: &str = "\
Block I/O benchmark: fio-style workloads through xenio's block path, against
baselines measured in the same run on the same file.

Engines (--engines picks a subset; default: all):
  xenio         blkfront (this process, domain 1) -> shared rings -> `xenio blkback`
                (a child process, domain 0, the real command) -> io_uring -> the
                file, on xenio's local platform (store daemon in this process).
                An asynchronous driver keeps QD requests in flight with
                submit/poll; buffers come from the frontend's grant pool,
                allocated once and reused; random offsets come from a seeded PRNG,
                sequential offsets wrap over the file.
  fio           fio --ioengine=io_uring --direct=1 on the same file.
  qemu-nbd      qemu-nbd -f raw --cache=none --aio=io_uring (see --nbd-aio) on the
                same file, listening on a Unix socket, driven by fio's nbd engine
                (--ioengine=nbd --uri=nbd+unix:///?socket=...): a peer userspace
                block server.
  xenio-shm, fio-shm, qemu-nbd-shm
                the same on a copy of the file in /dev/shm (memory-backed: what is
                left is the software path).

Workloads: sequential 1 MiB read and write at QD 1, 8 and 32; random 4 KiB read
and write at QD 1 and 32; random 64 KiB read at QD 8 (--quick: the six that
the targets use). Every measurement runs --warmup-secs untimed (fio:
--ramp_time), then --runtime-secs timed. The file (--size-mib in --dir, which
must allow O_DIRECT) is written fully once before anything is measured, so
reads hit real blocks; it is removed at the end.

Reported per workload and engine: MB/s and IOPS (median [min..max] over the
repetitions), p50/p99 latency per operation (fio: total latency, submission to
completion; xenio: from before submit to the completion being reaped), and for
xenio notifications per request: (frontend kicks + backend kicks) / ring
requests, from the frontend's own counter and the counters `xenio blkback`
prints when it exits (whole connection, warm-up included).

Targets (PASS/MISS on the median of the per-repetition ratios; a MISS does not
fail the run): sequential 1 MiB QD8 >= 0.95x fio; random 4 KiB QD32 >= 0.90x fio
IOPS; random 4 KiB QD1 p50 latency <= 1.3x fio's; random 4 KiB QD32 >= 4x
qemu-nbd; notifications per request <= 0.1 at QD32. Context ratios (xenio
against fio on the file and on /dev/shm for every workload) follow.

The backend knobs (--ring-order ... --backend-arg) are passed to `xenio
blkback`; --ring-order, --queues, --indirect and --no-persistent are also what
the frontend asks for. No process outlives the run: children are killed on
exit, on error and on SIGINT/SIGTERM, and killed by the kernel should this
process die (setpriv --pdeathsig). Progress goes to stderr, the report to
stdout.";

/// One engine: a software path and where the file lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Engine {
    /// blkfront -> rings -> `xenio blkback` -> the file.
    Xenio,
    /// fio, io_uring, O_DIRECT, on the file.
    Fio,
    /// fio's nbd engine -> qemu-nbd -> the file.
    #[value(name = "qemu-nbd")]
    QemuNbd,
    /// xenio on the copy in /dev/shm.
    #[value(name = "xenio-shm")]
    XenioShm,
    /// fio on the copy in /dev/shm.
    #[value(name = "fio-shm")]
    FioShm,
    /// qemu-nbd on the copy in /dev/shm.
    #[value(name = "qemu-nbd-shm")]
    QemuNbdShm,
}

impl Engine {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Xenio => "xenio",
            Engine::Fio => "fio",
            Engine::QemuNbd => "qemu-nbd",
            Engine::XenioShm => "xenio-shm",
            Engine::FioShm => "fio-shm",
            Engine::QemuNbdShm => "qemu-nbd-shm",
        }
    }

    /// Whether it runs on the /dev/shm copy.
    pub fn shm(self) -> bool {
        matches!(self, Engine::XenioShm | Engine::FioShm | Engine::QemuNbdShm)
    }

    fn is_xenio(self) -> bool {
        matches!(self, Engine::Xenio | Engine::XenioShm)
    }

    fn is_nbd(self) -> bool {
        matches!(self, Engine::QemuNbd | Engine::QemuNbdShm)
    }
}

/// `--nbd-aio`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NbdAio {
    /// `--aio=io_uring`.
    #[value(name = "io_uring")]
    IoUring,
    /// `--aio=native` (Linux AIO).
    Native,
}

/// Options of `xenio-bench blk`.
#[derive(Args, Debug, Clone)]
pub struct BlkArgs {
    /// Directory of the test file. Its filesystem must allow O_DIRECT (ext4, xfs,
    /// btrfs; not every tmpfs). The file is created, written fully once, and
    /// removed at the end.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub dir: PathBuf,

    /// Size of the test file in MiB [default: 1024; 256 with --quick].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub size_mib: Option<u64>,

    /// Repetitions. Each runs every workload on every engine [default: 3; 1 with
    /// --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: Option<u32>,

    /// Timed seconds of one measurement (one workload on one engine in one
    /// repetition) [default: 5; 1.2 with --quick].
    #[arg(long, value_name = "SECS")]
    pub runtime_secs: Option<f64>,

    /// Untimed warm-up before each measurement (fio: --ramp_time) [default: 1;
    /// 0.4 with --quick].
    #[arg(long, value_name = "SECS")]
    pub warmup_secs: Option<f64>,

    /// About a minute: the six workloads the targets use, 256 MiB, one
    /// repetition, 0.4 + 1.2 s each. Explicit --size-mib, --reps, --runtime-secs,
    /// --warmup-secs and --workloads still apply.
    #[arg(long)]
    pub quick: bool,

    /// Only workloads whose name contains one of these (comma-separated,
    /// case-insensitive; '-' and '_' match spaces), e.g. `4k-qd32,seq-read-1m-qd8`.
    /// Names: seq read 1M QD1|QD8|QD32, seq write 1M QD1|QD8|QD32, rand read 4K
    /// QD1|QD32, rand write 4K QD1|QD32, rand read 64K QD8.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub workloads: Vec<String>,

    /// Engines to run, comma-separated [default: all of them].
    /// Targets whose engines are left out are reported as not measured.
    #[arg(long, value_enum, value_name = "LIST", value_delimiter = ',')]
    pub engines: Vec<Engine>,

    /// Seed of the random offsets (xenio's PRNG and fio's --randseed).
    #[arg(long, value_name = "N", default_value_t = 0x5eed)]
    pub seed: u64,

    /// The `xenio` command [default: `xenio` next to this executable, else in PATH].
    #[arg(long, value_name = "PATH")]
    pub xenio: Option<PathBuf>,

    /// Where the local platform's run directory (store sockets, grant pool files,
    /// event channel FIFOs) and the logs go. Use a tmpfs: the grant pool is a
    /// shared file mapping, and on a disk filesystem every page the frontend or
    /// the backend writes would also be written back to the disk.
    #[arg(long, value_name = "DIR", default_value = "/dev/shm")]
    pub scratch: PathBuf,

    /// qemu-nbd's --aio: io_uring or native (both with --cache=none).
    #[arg(long, value_enum, value_name = "AIO", default_value_t = NbdAio::IoUring)]
    pub nbd_aio: NbdAio,

    /// Ring page order: the frontend asks for it and the backend offers it
    /// (max-ring-page-order). 0..=4 like Linux; one page holds 32 requests.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub ring_order: u32,

    /// Queues (rings, one backend thread each): asked for by the frontend,
    /// offered by the backend (multi-queue-max-queues).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub queues: u32,

    /// Indirect segments per request, asked and offered
    /// (feature-max-indirect-segments); 0: none, I/Os are split into requests of
    /// 11 pages. 256 carries a 1 MiB I/O in one request.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub indirect: u32,

    /// No persistent grants (neither side offers feature-persistent): the backend
    /// maps and unmaps every request's pages.
    #[arg(long)]
    pub no_persistent: bool,

    /// Backend: map the frontend's pages (zero copy) or grant copy into bounce
    /// buffers (--grant-mode of `xenio blkback`).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = GrantModeArg::Map)]
    pub grant_mode: GrantModeArg,

    /// Backend request reordering within a batch: off, sort, merge.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ReorderArg::Merge)]
    pub reorder: ReorderArg,

    /// Backend: spin this many microseconds looking for requests and completions
    /// before sleeping (0: purely event-driven). With 500 and --front-poll-us
    /// 100, 4 KiB QD32 on a disk reaches fio's IOPS at ~3x its CPU per I/O.
    /// Spins yield the CPU every 10 us, so two spinners on one CPU still take
    /// turns.
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub poll_us: u64,

    /// Frontend (this benchmark's driver): spin this many microseconds polling
    /// the ring for responses before sleeping on the event channel (0: purely
    /// event-driven, like fio's io_uring engine without --hipri; yields the CPU
    /// every 10 us like the backend's spin).
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub front_poll_us: u64,

    /// Backend: storage operations in flight per queue (io_uring depth).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub io_depth: u32,

    /// Backend: most requests taken from a ring in one batch (the reordering
    /// window).
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub batch: usize,

    /// Backend O_DIRECT: auto, on or off.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = DirectArg::Auto)]
    pub direct: DirectArg,

    /// One more argument for `xenio blkback`, verbatim (repeatable), e.g.
    /// `--backend-arg=--max-merge-kib=512`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub backend_arg: Vec<String>,

    /// Also write the results (every repetition, summaries, ratios) as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

impl BlkArgs {
    /// The backend knobs these options ask for.
    pub fn backend_knobs(&self) -> BackendKnobs {
        BackendKnobs {
            ring_order: self.ring_order,
            queues: self.queues,
            indirect: self.indirect,
            persistent: !self.no_persistent,
            grant_mode: self.grant_mode,
            reorder: self.reorder,
            poll_us: self.poll_us,
            io_depth: self.io_depth,
            batch: self.batch,
            direct: self.direct,
            extra: self.backend_arg.clone(),
        }
    }
}

/// One fio-style workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// E.g. `rand read 4K QD32`.
    pub name: &'static str,
    /// Write (else read).
    pub write: bool,
    /// Random offsets (else sequential, wrapping at the end of the file).
    pub random: bool,
    /// Bytes per operation.
    pub bs: usize,
    /// Operations in flight.
    pub qd: usize,
}

const fn wl(name: &'static str, write: bool, random: bool, bs: usize, qd: usize) -> Workload {
    Workload {
        name,
        write,
        random,
        bs,
        qd,
    }
}

const MIB: usize = 1 << 20;
const KIB: usize = 1 << 10;

/// Every workload, in report order.
pub const WORKLOADS: [Workload; 11] = [
    wl("seq read 1M QD1", false, false, MIB, 1),
    wl("seq read 1M QD8", false, false, MIB, 8),
    wl("seq read 1M QD32", false, false, MIB, 32),
    wl("seq write 1M QD1", true, false, MIB, 1),
    wl("seq write 1M QD8", true, false, MIB, 8),
    wl("seq write 1M QD32", true, false, MIB, 32),
    wl("rand read 4K QD1", false, true, 4 * KIB, 1),
    wl("rand read 4K QD32", false, true, 4 * KIB, 32),
    wl("rand write 4K QD1", true, true, 4 * KIB, 1),
    wl("rand write 4K QD32", true, true, 4 * KIB, 32),
    wl("rand read 64K QD8", false, true, 64 * KIB, 8),
];

/// The workloads of `--quick`: the ones the targets use.
pub const QUICK: [&str; 6] = [
    "seq read 1M QD8",
    "seq write 1M QD8",
    "rand read 4K QD1",
    "rand read 4K QD32",
    "rand write 4K QD1",
    "rand write 4K QD32",
];

const DEFAULT_ENGINES: [Engine; 6] = [
    Engine::Xenio,
    Engine::Fio,
    Engine::QemuNbd,
    Engine::XenioShm,
    Engine::FioShm,
    Engine::QemuNbdShm,
];

/// Warm-up and timed window of one measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Untimed.
    pub warmup: Duration,
    /// Timed.
    pub runtime: Duration,
}

/// One measurement: one workload on one engine in one repetition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Megabytes (10^6) per second.
    pub mbs: f64,
    /// Operations per second.
    pub iops: f64,
    /// Median latency per operation, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Operations completed in the timed window.
    pub ops: u64,
    /// CPU time per operation in the timed window, microseconds: xenio's
    /// frontend thread plus the whole backend process; fio's own usr+sys CPU.
    /// None where not measured (the qemu-nbd engines).
    pub cpu_us_per_op: Option<f64>,
    /// xenio only.
    pub xenio: Option<XenioCounters>,
}

impl Sample {
    /// (frontend + backend notifications) / ring requests; xenio only.
    pub fn notifications_per_request(&self) -> Option<f64> {
        let c = self.xenio?;
        (c.requests > 0)
            .then(|| (c.front_notifications + c.back_notifications) as f64 / c.requests as f64)
    }
}

fn secs(x: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(x)
        .map_err(|_| BenchError::Usage(format!("{what} {x}: not a number of seconds")))
}

fn normalize(s: &str) -> String {
    s.to_lowercase().replace(['-', '_'], " ")
}

/// What the arguments resolve to (quick-mode defaults applied, filters checked).
#[derive(Clone, Debug)]
pub struct Resolved {
    /// File size in bytes.
    pub size: u64,
    /// Repetitions.
    pub reps: u32,
    /// Per measurement.
    pub timing: Timing,
    /// Selected workloads, in report order.
    pub workloads: Vec<Workload>,
    /// Selected engines, in the order of the first repetition.
    pub engines: Vec<Engine>,
}

/// Apply defaults and filters.
pub fn resolve(a: &BlkArgs) -> Result<Resolved> {
    let q = a.quick;
    let size_mib = a.size_mib.unwrap_or(if q { 256 } else { 1024 });
    let reps = a.reps.unwrap_or(if q { 1 } else { 3 });
    let runtime = secs(
        a.runtime_secs.unwrap_or(if q { 1.2 } else { 5.0 }),
        "--runtime-secs",
    )?;
    let warmup = secs(
        a.warmup_secs.unwrap_or(if q { 0.4 } else { 1.0 }),
        "--warmup-secs",
    )?;
    if runtime < Duration::from_millis(100) {
        return Err(BenchError::Usage(
            "--runtime-secs must be at least 0.1".into(),
        ));
    }
    let filters: Vec<String> = a.workloads.iter().map(|f| normalize(f)).collect();
    let workloads: Vec<Workload> = WORKLOADS
        .iter()
        .copied()
        .filter(|w| {
            if filters.is_empty() {
                !q || QUICK.contains(&w.name)
            } else {
                let n = normalize(w.name);
                filters.iter().any(|f| n.contains(f.as_str()))
            }
        })
        .collect();
    if workloads.is_empty() {
        return Err(BenchError::Usage(format!(
            "--workloads {:?} matches no workload",
            a.workloads
        )));
    }
    let size = size_mib << 20;
    if let Some(w) = workloads.iter().find(|w| w.bs as u64 * 2 > size) {
        return Err(BenchError::Usage(format!(
            "a {size_mib} MiB file is too small for `{}`",
            w.name
        )));
    }
    let mut engines = if a.engines.is_empty() {
        DEFAULT_ENGINES.to_vec()
    } else {
        a.engines.clone()
    };
    let mut seen = std::collections::HashSet::new();
    engines.retain(|e| seen.insert(*e));
    Ok(Resolved {
        size,
        reps,
        timing: Timing { warmup, runtime },
        workloads,
        engines,
    })
}

pub(crate) fn first_line(program: &Path, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown version".into())
}

fn need(program: &str, package: &str) -> Result<PathBuf> {
    proc::find_program(program).ok_or_else(|| BenchError::Tool {
        tool: "xenio-bench blk",
        what: format!("`{program}` is not installed"),
        detail: format!(" (apt-get install {package}; or leave its engines out with --engines)"),
    })
}

/// Run the benchmark: progress on stderr, the report on stdout, JSON if asked.
pub fn run(a: &BlkArgs) -> Result<()> {
    // First, before any thread exists: signals clean up children and files.
    proc::install_signal_cleanup()?;
    let r = resolve(a)?;
    let uses = |f: fn(Engine) -> bool| r.engines.iter().any(|&e| f(e));
    let fio = if uses(|e| !e.is_xenio()) {
        Some(need("fio", "fio")?)
    } else {
        None
    };
    let qemu_nbd = if uses(Engine::is_nbd) {
        Some(need("qemu-nbd", "qemu-utils")?)
    } else {
        None
    };
    let xenio_bin = if uses(Engine::is_xenio) {
        Some(find_xenio(a.xenio.as_deref())?)
    } else {
        None
    };
    for p in proc::remove_stale(
        &[&a.dir, &a.scratch, Path::new("/dev/shm")],
        "xenio-bench-blk-",
    ) {
        eprintln!(
            "xenio-bench blk: removed {} (left by a run that was killed)",
            p.display()
        );
    }
    let pid = std::process::id();
    let scratch = ScratchPath::new(a.scratch.join(format!("xenio-bench-blk-{pid}")));
    std::fs::create_dir_all(scratch.path())
        .map_err(|e| BenchError::io(format!("creating {}", scratch.path().display()), e))?;
    let image = ScratchPath::new(a.dir.join(format!("xenio-bench-blk-{pid}.img")));
    let shm_image =
        uses(Engine::shm).then(|| ScratchPath::new(format!("/dev/shm/xenio-bench-blk-{pid}.img")));

    let per = r.timing.warmup + r.timing.runtime + Duration::from_millis(400);
    let total = r.reps as usize * r.workloads.len() * r.engines.len();
    eprintln!(
        "xenio-bench blk: {} workloads x {} engines x {} reps = {total} measurements of {:.1}+{:.1} s (about {:.0} s)",
        r.workloads.len(),
        r.engines.len(),
        r.reps,
        r.timing.warmup.as_secs_f64(),
        r.timing.runtime.as_secs_f64(),
        per.as_secs_f64() * total as f64
    );
    eprintln!(
        "xenio-bench blk: writing {} ({} MiB) once",
        image.path().display(),
        r.size >> 20
    );
    let t = Instant::now();
    if !precondition(image.path(), r.size, a.seed)? {
        return Err(BenchError::Usage(format!(
            "{} refuses O_DIRECT; pick a --dir on a disk filesystem (ext4, xfs)",
            a.dir.display()
        )));
    }
    let shm_direct = match &shm_image {
        Some(s) => {
            eprintln!(
                "xenio-bench blk: writing {} ({} MiB) once",
                s.path().display(),
                r.size >> 20
            );
            precondition(s.path(), r.size, a.seed)?
        }
        None => true,
    };
    eprintln!(
        "xenio-bench blk: preconditioned in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let knobs = a.backend_knobs();
    let world = match &xenio_bin {
        Some(bin) => Some(XenioWorld::start(
            bin,
            scratch.path(),
            knobs.clone(),
            Duration::from_micros(a.front_poll_us),
        )?),
        None => None,
    };
    let plan = Plan {
        dir: a.dir.clone(),
        size: r.size,
        reps: r.reps,
        timing: r.timing,
        seed: a.seed,
        knobs,
        front_poll_us: a.front_poll_us,
        nbd_aio: a.nbd_aio,
        shm_direct,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        fio_version: fio.as_deref().map(|p| first_line(p, "--version")),
        nbd_version: qemu_nbd.as_deref().map(|p| first_line(p, "--version")),
        xenio_bin: xenio_bin.clone(),
        backend_storage: None,
    };
    let mut results = BlkResults::new(plan, r.workloads.clone(), r.engines.clone());
    let fio_out = scratch.path().join("fio.json");
    let mut n = 0;
    for rep in 0..r.reps as usize {
        // Rotate the engine order so no engine always follows the same one.
        let mut order: Vec<usize> = (0..r.engines.len()).collect();
        order.rotate_left(rep % r.engines.len().max(1));
        for (wi, w) in r.workloads.iter().enumerate() {
            for &ei in &order {
                let e = r.engines[ei];
                n += 1;
                let file = if e.shm() {
                    shm_image.as_ref().map_or(image.path(), |s| s.path())
                } else {
                    image.path()
                };
                let label = format!("{} on {}", w.name, e.name());
                let direct = !e.shm() || shm_direct;
                let s = match e {
                    Engine::Xenio | Engine::XenioShm => {
                        let world = world.as_ref().expect("started when a xenio engine is");
                        let (s, storage) =
                            blk_xenio::measure(world, w, file, r.timing, a.seed, &label)?;
                        if !e.shm() {
                            results.plan.backend_storage.get_or_insert(storage);
                        }
                        s
                    }
                    Engine::Fio | Engine::FioShm => blk_fio::run(&blk_fio::FioRun {
                        fio: fio.as_deref().expect("checked above"),
                        workload: w,
                        target: FioTarget::File { path: file, direct },
                        size: r.size,
                        timing: r.timing,
                        seed: a.seed,
                        label: &label,
                        out: &fio_out,
                    })?,
                    Engine::QemuNbd | Engine::QemuNbdShm => {
                        let server = NbdServer::start(
                            qemu_nbd.as_deref().expect("checked above"),
                            file,
                            scratch.path(),
                            a.nbd_aio,
                            &label,
                        )?;
                        let mut s = blk_fio::run(&blk_fio::FioRun {
                            fio: fio.as_deref().expect("checked above"),
                            workload: w,
                            target: FioTarget::Nbd { uri: server.uri() },
                            size: r.size,
                            timing: r.timing,
                            seed: a.seed,
                            label: &label,
                            out: &fio_out,
                        })?;
                        server.stop();
                        // fio's CPU alone: qemu-nbd's is not counted, so none.
                        s.cpu_us_per_op = None;
                        s
                    }
                };
                let notif = s
                    .notifications_per_request()
                    .map(|x| format!("  {x:.3} notif/req"))
                    .unwrap_or_default();
                eprintln!(
                    "[{n}/{total}] rep {}/{}  {:<18} {:<12} {:>9.1} MB/s {:>9.0} IOPS  p50 {:>8.1} us  p99 {:>8.1} us{notif}",
                    rep + 1,
                    r.reps,
                    w.name,
                    e.name(),
                    s.mbs,
                    s.iops,
                    s.p50_us,
                    s.p99_us,
                );
                results.samples[wi][ei].push(s);
            }
        }
    }
    drop(world);
    let text = blk_report::render(&results);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| BenchError::io("writing the report to stdout", e))?;
    if let Some(path) = &a.json {
        let json = blk_report::to_json(&results).to_string() + "\n";
        std::fs::write(path, json)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: BlkArgs,
    }

    fn args(v: &[&str]) -> BlkArgs {
        T::parse_from(std::iter::once("t").chain(v.iter().copied())).a
    }

    #[test]
    fn quick_picks_the_target_workloads_and_small_defaults() {
        let r = resolve(&args(&["--quick"])).unwrap();
        assert_eq!(r.size, 256 << 20);
        assert_eq!(r.reps, 1);
        let names: Vec<_> = r.workloads.iter().map(|w| w.name).collect();
        assert_eq!(names, QUICK);
        assert_eq!(r.engines, DEFAULT_ENGINES);
        let r = resolve(&args(&["--quick", "--size-mib", "16", "--reps", "2"])).unwrap();
        assert_eq!((r.size, r.reps), (16 << 20, 2));
    }

    #[test]
    fn workload_filters_are_forgiving_and_engines_deduplicated() {
        let r = resolve(&args(&[
            "--workloads",
            "4k-QD32,seq_read_1m_qd8",
            "--engines",
            "fio,xenio,fio",
        ]))
        .unwrap();
        let names: Vec<_> = r.workloads.iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            ["seq read 1M QD8", "rand read 4K QD32", "rand write 4K QD32"]
        );
        assert_eq!(r.engines, [Engine::Fio, Engine::Xenio]);
        assert!(resolve(&args(&["--workloads", "nothing"])).is_err());
        assert!(resolve(&args(&["--size-mib", "1"])).is_err());
    }

    #[test]
    fn notifications_per_request_adds_both_sides() {
        let s = Sample {
            xenio: Some(XenioCounters {
                front_notifications: 3,
                back_notifications: 7,
                requests: 100,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(s.notifications_per_request(), Some(0.1));
        assert_eq!(Sample::default().notifications_per_request(), None);
    }
}
