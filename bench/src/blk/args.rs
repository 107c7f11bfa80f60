//! The command line of `xenio-bench blk`, and what it resolves to (quick-mode
//! defaults applied, filters checked).

use crate::blk::rbd::RbdSpec;
use crate::blk::types::{Engine, NbdAio, QUICK, Timing, WORKLOADS, Workload};
use crate::common::blkback::{BackendKnobs, DirectArg, GrantModeArg, ReorderArg};
use crate::common::error::{BenchError, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

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
  Storage beyond a raw file (not in the default set; name them in --engines):
  xenio-qcow2   xenio with --disk format=qcow2 on a qcow2 copy of the file
                (qemu-img convert -t none -O qcow2 next to it: every cluster
                allocated, nothing left dirty in the page cache).
  qemu-nbd-qcow2
                fio's nbd engine -> qemu-nbd -f qcow2 (flags as for qemu-nbd) on
                the same qcow2 copy.
  xenio-nbd     xenio with --disk target=nbd+unix:///?socket=... -> qemu-nbd (the
                qemu-nbd engine's server and flags) -> the file: the rings in
                front of an NBD export, against fio's nbd engine on the same
                server (the qemu-nbd engine).
  xenio-rbd     xenio with --disk target=RBD (--rbd-target, QEMU's spelling) ->
                librbd -> a Ceph RBD image, e.g. on the one-node cluster of
                `bash tests/servers/ceph.sh start DIR` (root; its RBD_TARGET line).
  fio-rbd       fio --ioengine=rbd (librbd) on the same image (CEPH_CONF from
                the target's conf=, --clientname from its id=): xenio-rbd's
                baseline. The image's first --size-mib MiB are written once
                (fio, 1 MiB writes) before anything is measured.
                Both rbd engines need this benchmark built with the cargo
                feature rbd (which also builds `xenio` with it under cargo run)
                and --rbd-target; without either they are skipped with the
                reason, and the rest runs.

Multi-queue and multi-conn: with --queues N > 1, every qemu-nbd server is
started with --shared=2N+2, which makes qemu-nbd offer multi-conn, so
xenio-nbd's NBD client opens one connection per queue; fio's nbd and rbd
engines then run min(N, QD) jobs (--numjobs, one connection each, QD/jobs
deep, rounded up; --group_reporting) so both keep the same I/Os in flight over
the same number of connections. The file engines (fio, fio-shm) stay one job.

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

Targets (issue 18, fast by default; PASS/MISS on the median of the
per-repetition ratios; a MISS does not fail the run), all with default
settings against fio on the same file:
  random 4 KiB QD32 read and write   >= 0.95x fio's IOPS
  random 4 KiB QD1 read and write    p50 latency <= 1.1x fio's
  sequential 1 MiB QD8 read and write >= 0.95x fio's MB/s
  CPU time per operation             <= 1.5x fio's at 4 KiB QD32 and 1 MiB QD8
  memory-backed 4 KiB QD32           xenio-shm >= 0.6x fio-shm IOPS (when the
                                     *-shm engines ran)
and random 4 KiB QD32 >= 4x qemu-nbd (on the file and memory-backed);
notifications per request <= 0.1 at QD32; when the storage engines ran,
random 4 KiB QD32 xenio-qcow2 >= 2x qemu-nbd-qcow2 and >= 0.8x xenio (raw),
xenio-nbd >= 0.9x qemu-nbd. Context ratios (xenio against fio on the file and
on /dev/shm and against qemu-nbd for every workload, CPU per op elsewhere;
xenio-qcow2, xenio-nbd and xenio-rbd against their baselines, xenio-rbd /
fio-rbd having no target) follow.

The backend knobs (--ring-order ... --backend-arg) are passed to `xenio
blkback`; --ring-order, --queues, --indirect and --no-persistent are also what
the frontend asks for. No process outlives the run: children are killed on
exit, on error and on SIGINT/SIGTERM, and killed by the kernel should this
process die (setpriv --pdeathsig). Progress goes to stderr, the report to
stdout.";

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
    /// offered by the backend (multi-queue-max-queues). Above 1, qemu-nbd
    /// offers multi-conn, xenio-nbd opens one NBD connection per queue, and
    /// fio's nbd and rbd engines run as many jobs (see "Multi-queue" above).
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
    /// before sleeping (0: purely event-driven). Without it the backend waits
    /// adaptively, its default: it spins only while its recent waits say the
    /// next request or completion is due within 150 us, and sleeps otherwise
    /// (and for the frontend's next requests when the disk is slow against the
    /// spin, as with 1 MiB reads: see `xenio blkback --help`).
    /// With 500 and --front-poll-us 100, 4 KiB QD32 on a disk reached fio's
    /// IOPS at ~3x its CPU per I/O. Spins yield the CPU every 10 us, so two
    /// spinners on one CPU still take turns.
    #[arg(long, value_name = "US")]
    pub poll_us: Option<u64>,

    /// Frontend (this benchmark's driver): spin this many microseconds polling
    /// the ring for responses before sleeping on the event channel (0: purely
    /// event-driven, like fio's io_uring engine without --hipri; yields the CPU
    /// every 10 us like the backend's spin). Without it the frontend waits
    /// adaptively, blkfront's default (as the backend does).
    #[arg(long, value_name = "US")]
    pub front_poll_us: Option<u64>,

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

    /// The Ceph RBD image of the xenio-rbd and fio-rbd engines, as QEMU and
    /// `xenio blkback --disk target=` spell it:
    /// `rbd:POOL/IMAGE[:conf=CEPH.CONF][:id=CLIENT]`, e.g. the RBD_TARGET that
    /// `bash tests/servers/ceph.sh start DIR` prints. Its first --size-mib MiB
    /// are overwritten. The conf must name the client's keyring (fio's rbd
    /// engine reads only the conf).
    #[arg(long, value_name = "TARGET")]
    pub rbd_target: Option<String>,

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

const DEFAULT_ENGINES: [Engine; 6] = [
    Engine::Xenio,
    Engine::Fio,
    Engine::QemuNbd,
    Engine::XenioShm,
    Engine::FioShm,
    Engine::QemuNbdShm,
];

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
    /// Engines asked for but left out, and why.
    pub skipped: Vec<(Engine, String)>,
    /// The RBD image, when an rbd engine runs.
    pub rbd: Option<RbdSpec>,
    /// fio's jobs (connections) on the nbd and rbd engines: min(--queues, QD)
    /// of each workload is taken from this.
    pub remote_jobs: u32,
}

/// Why the rbd engines cannot run with these arguments (None: they can).
/// `rbd_feature`: whether this benchmark was built with the feature `rbd`.
fn rbd_unavailable(a: &BlkArgs, rbd_feature: bool) -> Option<String> {
    if !rbd_feature {
        return Some(
            "this xenio-bench was built without the cargo feature rbd \
             (cargo run --release -p xenio-bench --features rbd -- blk ...; needs librbd-dev)"
                .into(),
        );
    }
    if a.rbd_target.is_none() {
        return Some(
            "no --rbd-target (a cluster: `bash tests/servers/ceph.sh start DIR` as root, \
             then --rbd-target \"$RBD_TARGET\" from its output)"
                .into(),
        );
    }
    None
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
    resolve_engines(a, engines, cfg!(feature = "rbd")).map(|(engines, skipped, rbd)| Resolved {
        size,
        reps,
        timing: Timing { warmup, runtime },
        workloads,
        engines,
        skipped,
        rbd,
        remote_jobs: a.queues,
    })
}

type Engines = (Vec<Engine>, Vec<(Engine, String)>, Option<RbdSpec>);

/// Leave out the engines that cannot run (with the reason); read
/// --rbd-target when an rbd engine stays.
fn resolve_engines(a: &BlkArgs, mut engines: Vec<Engine>, rbd_feature: bool) -> Result<Engines> {
    let mut skipped = Vec::new();
    if let Some(why) = rbd_unavailable(a, rbd_feature) {
        engines.retain(|&e| {
            if e.is_rbd() {
                skipped.push((e, why.clone()));
            }
            !e.is_rbd()
        });
    }
    if engines.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|(e, w)| format!("{}: {w}", e.name()))
            .collect();
        return Err(BenchError::Usage(format!(
            "no engine can run ({})",
            why.join("; ")
        )));
    }
    let rbd = match &a.rbd_target {
        Some(t) if engines.iter().any(|e| e.is_rbd()) => {
            Some(RbdSpec::parse(t).map_err(BenchError::Usage)?)
        }
        _ => None,
    };
    Ok((engines, skipped, rbd))
}

/// fio's jobs and per-job depth for `qd` in flight over `jobs` connections
/// (the nbd and rbd engines): min(jobs, qd) jobs, qd/jobs deep rounded up.
pub fn remote_jobs(jobs: u32, qd: usize) -> (u32, usize) {
    let j = (jobs.max(1) as usize).min(qd.max(1));
    (j as u32, qd.div_ceil(j))
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
    fn rbd_engines_are_skipped_with_the_reason_and_their_target_checked() {
        let rbd = [Engine::XenioRbd, Engine::FioRbd];
        // Without the feature: skipped whatever the target, the rest runs.
        let a = args(&[
            "--engines",
            "xenio,xenio-rbd,fio-rbd",
            "--rbd-target",
            "rbd:rbd/disk",
        ]);
        let (e, skipped, spec) = resolve_engines(&a, a.engines.clone(), false).unwrap();
        assert_eq!(e, [Engine::Xenio]);
        assert_eq!(skipped.iter().map(|s| s.0).collect::<Vec<_>>(), rbd);
        assert!(skipped[0].1.contains("feature rbd"), "{skipped:?}");
        assert_eq!(spec, None);
        // With it, but no target: skipped, naming ceph.sh.
        let a = args(&["--engines", "xenio,xenio-rbd,fio-rbd"]);
        let (e, skipped, _) = resolve_engines(&a, a.engines.clone(), true).unwrap();
        assert_eq!(e, [Engine::Xenio]);
        assert!(skipped[1].1.contains("ceph.sh"), "{skipped:?}");
        // Only rbd engines, none can run: an error with the reason.
        let a = args(&["--engines", "xenio-rbd"]);
        let err = resolve_engines(&a, a.engines.clone(), false).unwrap_err();
        assert!(err.to_string().contains("feature rbd"), "{err}");
        // Feature and target: they run, the target is read.
        let a = args(&[
            "--engines",
            "xenio-rbd,fio-rbd",
            "--rbd-target",
            "rbd:pool/img:conf=/c/ceph.conf:id=admin",
        ]);
        let (e, skipped, spec) = resolve_engines(&a, a.engines.clone(), true).unwrap();
        assert_eq!(e, rbd);
        assert!(skipped.is_empty());
        let spec = spec.unwrap();
        assert_eq!((spec.pool.as_str(), spec.image.as_str()), ("pool", "img"));
        // A bad target is a usage error, not a skip.
        let a = args(&["--engines", "fio-rbd", "--rbd-target", "rbd:pool"]);
        assert!(resolve_engines(&a, a.engines.clone(), true).is_err());
        // No rbd engine: the target is not even read.
        let a = args(&["--engines", "fio", "--rbd-target", "junk"]);
        assert!(resolve_engines(&a, a.engines.clone(), true).is_ok());
    }

    #[test]
    fn remote_jobs_split_the_depth_over_the_connections() {
        assert_eq!(remote_jobs(1, 32), (1, 32));
        assert_eq!(remote_jobs(4, 32), (4, 8));
        assert_eq!(remote_jobs(3, 32), (3, 11));
        assert_eq!(remote_jobs(4, 1), (1, 1));
        assert_eq!(remote_jobs(0, 8), (1, 8));
        let r = resolve(&args(&["--queues", "4"])).unwrap();
        assert_eq!(r.remote_jobs, 4);
    }
}
