//! The shared types of `xenio-bench blk`: its engines and workloads, what one
//! measurement yields, and what a run holds.

use crate::common::blkback::{BackendKnobs, XenioCounters};
use clap::ValueEnum;
use std::path::PathBuf;
use std::time::Duration;

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
    /// blkfront -> rings -> `xenio blkback` with `format=qcow2` -> a qcow2
    /// copy of the file (imago).
    #[value(name = "xenio-qcow2")]
    XenioQcow2,
    /// fio's nbd engine -> `qemu-nbd -f qcow2` -> the same qcow2 copy.
    #[value(name = "qemu-nbd-qcow2")]
    QemuNbdQcow2,
    /// blkfront -> rings -> `xenio blkback` with `target=nbd+unix://...` ->
    /// qemu-nbd (as for the qemu-nbd engine) -> the file: xenio over an NBD
    /// export, against fio's nbd engine on the same server (`qemu-nbd`).
    #[value(name = "xenio-nbd")]
    XenioNbd,
    /// blkfront -> rings -> `xenio blkback` with `target=rbd:...` (librbd) ->
    /// a Ceph RBD image (`--rbd-target`; needs the cargo feature `rbd`).
    #[value(name = "xenio-rbd")]
    XenioRbd,
    /// fio's rbd engine (librbd) on the same image: xenio-rbd's baseline.
    #[value(name = "fio-rbd")]
    FioRbd,
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
            Engine::XenioQcow2 => "xenio-qcow2",
            Engine::QemuNbdQcow2 => "qemu-nbd-qcow2",
            Engine::XenioNbd => "xenio-nbd",
            Engine::XenioRbd => "xenio-rbd",
            Engine::FioRbd => "fio-rbd",
        }
    }

    /// Whether it runs on the /dev/shm copy.
    pub fn shm(self) -> bool {
        matches!(self, Engine::XenioShm | Engine::FioShm | Engine::QemuNbdShm)
    }

    /// Whether it is xenio (on the file or on the copy).
    pub fn is_xenio(self) -> bool {
        matches!(
            self,
            Engine::Xenio
                | Engine::XenioShm
                | Engine::XenioQcow2
                | Engine::XenioNbd
                | Engine::XenioRbd
        )
    }

    /// Whether it runs on the Ceph RBD image of `--rbd-target`.
    pub fn is_rbd(self) -> bool {
        matches!(self, Engine::XenioRbd | Engine::FioRbd)
    }

    /// Whether it runs on the qcow2 copy of the file.
    pub fn is_qcow2(self) -> bool {
        matches!(self, Engine::XenioQcow2 | Engine::QemuNbdQcow2)
    }

    /// Whether it needs qemu-nbd (fio's nbd engine against it, or xenio-nbd).
    pub fn is_nbd(self) -> bool {
        matches!(
            self,
            Engine::QemuNbd | Engine::QemuNbdShm | Engine::QemuNbdQcow2 | Engine::XenioNbd
        )
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

/// How the run was set up (for the header).
#[derive(Clone, Debug)]
pub struct Plan {
    /// Directory of the file.
    pub dir: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// Repetitions.
    pub reps: u32,
    /// Per measurement.
    pub timing: Timing,
    /// PRNG seed.
    pub seed: u64,
    /// Backend knobs.
    pub knobs: BackendKnobs,
    /// The frontend's spin window before sleeping (None: adaptive waiting).
    pub front_poll_us: Option<u64>,
    /// qemu-nbd's --aio.
    pub nbd_aio: NbdAio,
    /// Whether /dev/shm accepted O_DIRECT (fio-shm uses it then).
    pub shm_direct: bool,
    /// CPUs available.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// `fio --version`.
    pub fio_version: Option<String>,
    /// `qemu-nbd --version`, first line.
    pub nbd_version: Option<String>,
    /// The `xenio` command used.
    pub xenio_bin: Option<PathBuf>,
    /// How the backend opened the file on disk (its own words).
    pub backend_storage: Option<String>,
    /// The RBD image of the rbd engines (`--rbd-target`), when they run.
    pub rbd_target: Option<String>,
    /// Engines asked for but left out, and why (e.g. no `rbd` feature).
    pub skipped: Vec<(Engine, String)>,
}

/// Everything measured.
#[derive(Clone, Debug)]
pub struct BlkResults {
    /// Set-up.
    pub plan: Plan,
    /// Workloads, in report order.
    pub workloads: Vec<Workload>,
    /// Engines, in report order.
    pub engines: Vec<Engine>,
    /// `samples[workload][engine][repetition]`.
    pub samples: Vec<Vec<Vec<Sample>>>,
}

impl BlkResults {
    /// No samples yet.
    pub fn new(plan: Plan, workloads: Vec<Workload>, engines: Vec<Engine>) -> Self {
        let samples = vec![vec![Vec::new(); engines.len()]; workloads.len()];
        BlkResults {
            plan,
            workloads,
            engines,
            samples,
        }
    }

    /// The samples of `workload` on `engine`, if any were measured.
    pub fn get(&self, workload: &str, engine: Engine) -> Option<&[Sample]> {
        let w = self.workloads.iter().position(|w| w.name == workload)?;
        let e = self.engines.iter().position(|&x| x == engine)?;
        Some(&self.samples[w][e])
            .filter(|s| !s.is_empty())
            .map(|s| &s[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
