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
//! [`args::BLK_ABOUT`] (`xenio-bench blk --help`) for every knob.
//!
//! This module only orchestrates (`run`). Pieces: [`xenio`] (the asynchronous
//! frontend driver against a backend process of [`crate::common::blkback`]),
//! [`fio`] (fio and qemu-nbd), [`report`] (tables, targets, JSON), [`args`]
//! (the command line and what it resolves to), [`types`] (engines, workloads,
//! samples, results), and [`crate::common::proc`] (children and scratch files
//! that never outlive the run).

pub mod args;
pub mod fio;
pub mod rbd;
pub mod report;
pub mod types;
pub mod xenio;

use crate::common::blkback::{XenioWorld, find_xenio};
use crate::common::error::{BenchError, Result};
use crate::common::image::precondition;
use crate::common::proc::{self, ScratchPath};
use args::{BlkArgs, remote_jobs, resolve};
use fio::{FioTarget, NbdServer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use types::{BlkResults, Engine, Plan};
use xenio_blkfront::Wait;

/// The first line `program arg` prints (its version), or `unknown version`.
fn first_line(program: &Path, arg: &str) -> String {
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
    for (e, why) in &r.skipped {
        eprintln!("xenio-bench blk: skipping {}: {why}", e.name());
    }
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
    let qcow2_image = uses(Engine::is_qcow2)
        .then(|| ScratchPath::new(a.dir.join(format!("xenio-bench-blk-{pid}.qcow2"))));

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
    if let Some(q) = &qcow2_image {
        // Every cluster allocated (the file is random data): a used disk.
        eprintln!(
            "xenio-bench blk: converting to {} (qemu-img convert -t none -O qcow2)",
            q.path().display()
        );
        let qemu_img = need("qemu-img", "qemu-utils")?;
        let out = std::process::Command::new(&qemu_img)
            // O_DIRECT both ways (-t/-T none): qemu-img's default
            // cache for the copy is `unsafe`, which left the whole copy dirty
            // in the page cache, written back during the first measurements
            // (and its O_DIRECT reads then met dirty pages).
            .args([
                "convert", "-t", "none", "-T", "none", "-f", "raw", "-O", "qcow2",
            ])
            .arg(image.path())
            .arg(q.path())
            .output()
            .map_err(|e| BenchError::io("running qemu-img convert", e))?;
        if !out.status.success() {
            return Err(BenchError::Tool {
                tool: "qemu-img",
                what: "convert -O qcow2 failed".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    if let Some(spec) = &r.rbd {
        eprintln!(
            "xenio-bench blk: writing the first {} MiB of {} once (fio --ioengine=rbd)",
            r.size >> 20,
            spec.target
        );
        rbd::precondition(
            fio.as_deref().ok_or_else(|| {
                BenchError::Usage("the rbd engines need fio (apt-get install fio)".into())
            })?,
            spec,
            r.size,
            scratch.path(),
        )?;
    }
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
            a.front_poll_us
                .map_or(Wait::Adaptive, |us| Wait::Fixed(Duration::from_micros(us))),
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
        rbd_target: r.rbd.as_ref().map(|s| s.target.clone()),
        skipped: r.skipped.clone(),
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
                } else if e.is_qcow2() {
                    qcow2_image.as_ref().map_or(image.path(), |s| s.path())
                } else {
                    image.path()
                };
                let label = format!("{} on {}", w.name, e.name());
                // fio's nbd and rbd engines: as many connections as xenio's
                // queues (multi-conn), the depth shared among them.
                let jobs = if matches!(e, Engine::Fio | Engine::FioShm) {
                    1
                } else {
                    remote_jobs(r.remote_jobs, w.qd).0
                };
                let run_fio = |target: FioTarget<'_>| {
                    fio::run(&fio::FioRun {
                        fio: fio.as_deref().expect("checked above"),
                        workload: w,
                        target,
                        size: r.size,
                        timing: r.timing,
                        seed: a.seed,
                        label: &label,
                        out: &fio_out,
                        jobs,
                    })
                };
                let direct = !e.shm() || shm_direct;
                let s = match e {
                    Engine::Xenio | Engine::XenioShm => {
                        let world = world.as_ref().expect("started when a xenio engine is");
                        let (s, storage) =
                            xenio::measure(world, w, file, r.timing, a.seed, &label)?;
                        if !e.shm() {
                            results.plan.backend_storage.get_or_insert(storage);
                        }
                        s
                    }
                    Engine::Fio | Engine::FioShm => {
                        run_fio(FioTarget::File { path: file, direct })?
                    }
                    Engine::XenioQcow2 => {
                        let world = world.as_ref().expect("started when a xenio engine is");
                        let disk = format!("format=qcow2,target={}", file.display());
                        xenio::measure_disk(world, w, &disk, None, r.timing, a.seed, &label)?.0
                    }
                    Engine::XenioNbd => {
                        let world = world.as_ref().expect("started when a xenio engine is");
                        let server = NbdServer::start_format(
                            qemu_nbd.as_deref().expect("checked above"),
                            file,
                            "raw",
                            scratch.path(),
                            a.nbd_aio,
                            a.queues,
                            &label,
                        )?;
                        let disk = format!("target={}", server.uri());
                        let s =
                            xenio::measure_disk(world, w, &disk, None, r.timing, a.seed, &label);
                        server.stop();
                        s?.0
                    }
                    Engine::XenioRbd => {
                        let world = world.as_ref().expect("started when a xenio engine is");
                        let spec = r.rbd.as_ref().expect("resolved with an rbd engine");
                        let disk = format!("target={}", spec.target);
                        xenio::measure_disk(
                            world,
                            w,
                            &disk,
                            Some(r.size),
                            r.timing,
                            a.seed,
                            &label,
                        )?
                        .0
                    }
                    Engine::FioRbd => {
                        let spec = r.rbd.as_ref().expect("resolved with an rbd engine");
                        run_fio(FioTarget::Rbd(spec))?
                    }
                    Engine::QemuNbd | Engine::QemuNbdShm | Engine::QemuNbdQcow2 => {
                        let server = NbdServer::start_format(
                            qemu_nbd.as_deref().expect("checked above"),
                            file,
                            if e.is_qcow2() { "qcow2" } else { "raw" },
                            scratch.path(),
                            a.nbd_aio,
                            a.queues,
                            &label,
                        )?;
                        let mut s = run_fio(FioTarget::Nbd { uri: server.uri() })?;
                        server.stop();
                        // fio's CPU alone: qemu-nbd's is not counted, so none.
                        s.cpu_us_per_op = None;
                        s
                    }
                };
                let mut notif = s
                    .notifications_per_request()
                    .map(|x| format!("  {x:.3} notif/req"))
                    .unwrap_or_default();
                if let Some(c) = &s.xenio {
                    // How the waits ended: the backend's (spun / spun +
                    // slept) and the frontend's share that ended spinning.
                    let share = |spun: u64, all: u64| {
                        if all == 0 {
                            "-".to_string()
                        } else {
                            format!("{:.0}%", 100.0 * spun as f64 / all as f64)
                        }
                    };
                    let f = c.front_waits;
                    if c.queues > 1 {
                        notif.push_str(&format!("  {} queues", c.queues));
                    }
                    notif.push_str(&format!(
                        "  cpu {:.1} us/op  spun back {} (missed {}), front {} (missed {})",
                        s.cpu_us_per_op.unwrap_or(f64::NAN),
                        share(c.spun, c.spun + c.sleeps),
                        share(c.spin_misses, c.spun + c.spin_misses),
                        share(f.spun, f.ended),
                        share(f.missed, f.spun + f.missed),
                    ));
                }
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
    let text = report::render(&results);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| BenchError::io("writing the report to stdout", e))?;
    if let Some(path) = &a.json {
        let json = report::to_json(&results).to_string() + "\n";
        std::fs::write(path, json)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
