//! `xenio-bench study`: the disk study of Youseff et al., *Paravirtualization
//! for HPC Systems* (2006), rerun with xenio's rings. See
//! [`args::STUDY_ABOUT`] (`xenio-bench study --help`).
//!
//! This module only orchestrates: [`run`] is the study in named steps (plan,
//! sitting, measure loop, report). Pieces: [`work`] (Bonnie's patterns and
//! fio-style workloads), [`dev`] (the native and the xenio path),
//! [`checkpoint`] (every finished measurement on disk, resuming, sittings),
//! [`stats`] (mean, sd, t-tests), [`compare`] (one configuration against
//! another), [`report`] (tables, findings, CSV/JSON), [`plot`],
//! [`resolve`](mod@resolve) (the arguments turned into configurations), and
//! the shared [`types`] and [`args`].

pub mod args;
pub mod checkpoint;
pub mod compare;
pub mod dev;
pub mod plot;
pub mod report;
pub mod resolve;
pub mod stats;
pub mod types;
pub mod work;

use crate::common::blkback::{XenioWorld, find_xenio};
use crate::common::error::{BenchError, Result};
use crate::common::image::precondition;
use crate::common::proc::{self, ScratchPath};
use args::{NativeIo, StudyArgs, StudyTarget};
use checkpoint::{Checkpoint, Entry, add_machine, load_entries, record};
use dev::{NativeDev, XenioDev};
use resolve::resolve;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use types::{Config, Counters, Dev, FIO, Params, Phase, Plan, Resolved, StudyResults};

/// Run the study: progress on stderr, the report on stdout and in --out.
pub fn run(a: &StudyArgs) -> Result<()> {
    let mut study = plan(a)?;
    if a.report_only {
        return report_only(a, study);
    }
    let mut sitting = open_sitting(a, &mut study)?;
    let started = measure_loop(a, &mut study, &mut sitting)?;
    finish(a, study, sitting, started)
}

/// What the study will measure, and the results it fills in.
struct Study {
    /// The settings, with the configurations.
    r: Resolved,
    /// The checkpoint's first line.
    fp: serde_json::Value,
    /// This machine: CPUs, kernel, filesystem of --dir.
    machine: String,
    /// The results, filled from the checkpoint and by the measurements.
    res: StudyResults,
    /// The configurations measured on each size (native and the base on every
    /// size, the sweeps on the sweep size).
    per_size: Vec<Vec<usize>>,
    /// Measurements in the whole study.
    measurements: usize,
}

/// The plan step: resolve the arguments, and the empty results.
fn plan(a: &StudyArgs) -> Result<Study> {
    let r = resolve(a)?;
    let fp = checkpoint::fingerprint(&r, a);
    let machine = format!(
        "{} CPUs, Linux {}, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        fs_of(&a.dir)
    );
    let res = StudyResults {
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
    Ok(Study {
        r,
        fp,
        machine,
        res,
        per_size,
        measurements,
    })
}

/// `--report-only`: the report of an unfinished study's checkpoint, else of a
/// finished study's measurements, measuring nothing.
fn report_only(a: &StudyArgs, mut study: Study) -> Result<()> {
    let Some(path) = [checkpoint::FILE, checkpoint::FINISHED]
        .iter()
        .map(|f| a.out.join(f))
        .find(|p| p.exists())
    else {
        return Err(BenchError::Usage(format!(
            "--report-only: neither {} nor {} exists in {} (no study measured there)",
            checkpoint::FILE,
            checkpoint::FINISHED,
            a.out.display()
        )));
    };
    let entries = checkpoint::load(&path, &study.fp, &study.r)?;
    let done = load_entries(&mut study.res, entries);
    let measurements = study.measurements;
    if done < measurements {
        study.res.plan.partial = Some(format!(
            "{done} of {measurements} measurements (the study was not finished; --resume continues it)"
        ));
    }
    eprintln!(
        "xenio-bench study: reporting {done} of {measurements} measurements from {}",
        path.display()
    );
    write_all(&study.res, &a.out, a.no_plots, a.font.as_deref())
}

/// One sitting of a study: from a start or a `--resume` to the end or an
/// interruption. It measures what the checkpoint does not hold yet.
struct Sitting {
    /// Where each finished measurement goes.
    checkpoint: Checkpoint,
    /// (size, configuration, run) of the measurements already in it.
    done: BTreeSet<(usize, usize, usize)>,
    /// How many there are.
    loaded: usize,
    /// 1 for the first start, 2 for the first resume, ...
    number: u32,
    /// Wall time of the sittings before this one.
    elapsed_before: f64,
    /// The run directory and logs (removed at the end).
    scratch: ScratchPath,
    /// The test file (removed at the end).
    image: ScratchPath,
    /// The store daemon and what starts a backend.
    world: XenioWorld,
}

/// The sittings/checkpoint step: open (or, with `--resume`, continue) the
/// checkpoint, put what it holds into the results, and set up this sitting's
/// scratch directory, test file and xenio world.
fn open_sitting(a: &StudyArgs, study: &mut Study) -> Result<Sitting> {
    let Study {
        r,
        fp,
        machine,
        res,
        ..
    } = study;
    proc::install_signal_cleanup()?;
    let xenio_bin = find_xenio(a.xenio.as_deref())?;
    match a.target {
        StudyTarget::File => {}
        StudyTarget::Qcow2 => {
            need("qemu-img")?;
        }
        StudyTarget::Nbd => {
            need("qemu-nbd")?;
        }
    }
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
    let (checkpoint, entries) = Checkpoint::open(&a.out, fp, r, a.resume)?;
    let done: BTreeSet<(usize, usize, usize)> =
        entries.iter().map(|e| (e.si, e.ci, e.run)).collect();
    let loaded = load_entries(res, entries);
    // This sitting follows the checkpoint's, and its time adds to theirs.
    let number = res.plan.sittings + 1;
    let elapsed_before = res.plan.elapsed_secs;
    res.plan.sittings = number;
    add_machine(&mut res.plan, machine);
    let pid = std::process::id();
    let scratch = ScratchPath::new(a.scratch.join(format!("xenio-bench-study-{pid}")));
    std::fs::create_dir_all(scratch.path())
        .map_err(|e| BenchError::io(format!("creating {}", scratch.path().display()), e))?;
    let image = ScratchPath::new(a.dir.join(format!("xenio-bench-study-{pid}.img")));
    let world = XenioWorld::start(
        &xenio_bin,
        scratch.path(),
        r.configs[1].xenio.clone().expect("the base is xenio").0,
        r.configs[1].xenio.as_ref().expect("the base is xenio").1,
    )?;
    Ok(Sitting {
        checkpoint,
        done,
        loaded,
        number,
        elapsed_before,
        scratch,
        image,
        world,
    })
}

/// The measure loop: every measurement the checkpoint does not hold yet, run
/// by run (the order of the configurations rotating from one run to the
/// next), each appended to the checkpoint as it ends; progress and the ETA on
/// stderr. Returns when this sitting's measuring started.
fn measure_loop(a: &StudyArgs, study: &mut Study, sitting: &mut Sitting) -> Result<Instant> {
    let Study {
        r,
        machine,
        res,
        per_size,
        measurements,
        ..
    } = study;
    let measurements = *measurements;
    let Sitting {
        checkpoint,
        done,
        loaded,
        number: sitting,
        elapsed_before,
        image,
        world,
        scratch,
        ..
    } = sitting;
    let (loaded, sitting, elapsed_before) = (*loaded, *sitting, *elapsed_before);
    let work_of = |si: usize, ci: usize| work(&r.configs[ci], r.sizes[si], &r.params);
    let total_work: u64 = per_size
        .iter()
        .enumerate()
        .map(|(si, cs)| cs.iter().map(|&ci| work_of(si, ci)).sum::<u64>() * u64::from(r.runs))
        .sum();
    let loaded_work: u64 = done.iter().map(|&(si, ci, _)| work_of(si, ci)).sum();
    announce(a, r, measurements, loaded, sitting);
    let pb = progress_bar(a, total_work, loaded_work)?;

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
        // What the xenio configurations serve at this size (kept until the next).
        let served = Served::start(a.target, image.path(), scratch.path())?;
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
                let (values, counters, storage) = measure(
                    c,
                    image.path(),
                    &served.disk,
                    &r.params,
                    a,
                    Some(&mut *world),
                )
                .inspect_err(|_| {
                    pb.abandon();
                    eprintln!("xenio-bench study: failed during `{label}`");
                })?;
                let e = Entry {
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
                record(res, &e);
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
    Ok(started)
}

/// Say what this sitting will do (stderr).
fn announce(a: &StudyArgs, r: &Resolved, measurements: usize, loaded: usize, sitting: u32) {
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
            a.out.join(checkpoint::FILE).display()
        );
    }
    if r.runs < 2 {
        eprintln!("xenio-bench study: one run: no t-test (use --runs 2 or more)");
    }
}

/// The progress bar over the whole study's work, starting at what the
/// checkpoint already holds (hidden with --no-progress).
fn progress_bar(
    a: &StudyArgs,
    total_work: u64,
    loaded_work: u64,
) -> Result<indicatif::ProgressBar> {
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
    Ok(pb)
}

/// The report step of a sitting that measured everything: stop the xenio
/// world, write the report, and keep the checkpoint as the finished study's
/// measurements.
fn finish(a: &StudyArgs, mut study: Study, sitting: Sitting, started: Instant) -> Result<()> {
    let Sitting {
        checkpoint,
        elapsed_before,
        scratch: _scratch,
        image: _image,
        world,
        ..
    } = sitting;
    drop(world);
    let res = &mut study.res;
    res.plan.elapsed_secs = elapsed_before + started.elapsed().as_secs_f64();
    eprintln!(
        "xenio-bench study: measured in {:.1} s",
        res.plan.elapsed_secs
    );
    write_all(res, &a.out, a.no_plots, a.font.as_deref())?;
    let kept = checkpoint.finish()?;
    eprintln!(
        "xenio-bench study: the measurements stay in {} (`--report-only` writes the report again from them)",
        kept.display()
    );
    Ok(())
}

/// The report step: write report.md, samples.csv, summary.csv, results.json
/// and the plots into `dir`, and the report to stdout.
fn write_all(r: &StudyResults, dir: &Path, no_plots: bool, font: Option<&Path>) -> Result<()> {
    use std::io::Write;
    let text = report::render(r);
    let put = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
    };
    put("report.md", &text)?;
    put("samples.csv", &report::samples_csv(r))?;
    put("summary.csv", &report::summary_csv(r))?;
    put(
        "results.json",
        &(serde_json::to_string_pretty(&report::to_json(r)).unwrap_or_default() + "\n"),
    )?;
    let mut written = vec!["report.md", "samples.csv", "summary.csv", "results.json"];
    if !no_plots {
        match plot::plots(r, dir, font) {
            Ok(files) => written.extend(files),
            Err(e) => eprintln!("xenio-bench study: no plots: {e}"),
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| BenchError::io("writing the report to stdout", e))?;
    eprintln!(
        "xenio-bench study: wrote {} in {}",
        written.join(", "),
        dir.display()
    );
    Ok(())
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
                let f = &FIO[*i];
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
            Phase::Fio(i) => FIO[*i].bs * FIO[*i].qd,
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
        let r = work::run_phase(dev, ph, p)?;
        out.push((ph, r.value, r.secs));
    }
    Ok(out)
}

/// Each phase's (metric, seconds), xenio's counters, how the file was opened.
type Measured = (Vec<(Phase, f64, f64)>, Option<Counters>, String);

/// What `--target` makes the xenio configurations serve at one file size:
/// `disk` is the `format=...,target=...` part of `xenio blkback --disk`; the
/// qcow2 copy or the qemu-nbd server lives as long as this.
struct Served {
    disk: String,
    _qcow2: Option<ScratchPath>,
    _nbd: Option<crate::blk::fio::NbdServer>,
}

impl Served {
    /// Make the qcow2 copy of `image` or start qemu-nbd on it (in `scratch`).
    fn start(target: StudyTarget, image: &Path, scratch: &Path) -> Result<Served> {
        let mut served = Served {
            disk: format!("format=raw,target={}", image.display()),
            _qcow2: None,
            _nbd: None,
        };
        match target {
            StudyTarget::File => {}
            StudyTarget::Qcow2 => {
                let copy = ScratchPath::new(image.with_extension("qcow2"));
                let qemu_img = need("qemu-img")?;
                eprintln!(
                    "xenio-bench study: converting to {} (qemu-img convert -t none -O qcow2)",
                    copy.path().display()
                );
                let out = std::process::Command::new(&qemu_img)
                    // O_DIRECT both ways (-t/-T none): qemu-img's default
                    // cache for the copy is `unsafe`, which left the whole copy dirty
                    // in the page cache, written back during the first measurements
                    // (and its O_DIRECT reads then met dirty pages).
                    .args([
                        "convert", "-t", "none", "-T", "none", "-f", "raw", "-O", "qcow2",
                    ])
                    .arg(image)
                    .arg(copy.path())
                    .output()
                    .map_err(|e| BenchError::io("running qemu-img convert", e))?;
                if !out.status.success() {
                    return Err(BenchError::Tool {
                        tool: "qemu-img",
                        what: "convert -O qcow2 failed".into(),
                        detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                    });
                }
                served.disk = format!("format=qcow2,target={}", copy.path().display());
                served._qcow2 = Some(copy);
            }
            StudyTarget::Nbd => {
                let nbd = crate::blk::fio::NbdServer::start(
                    &need("qemu-nbd")?,
                    image,
                    scratch,
                    crate::blk::types::NbdAio::IoUring,
                    "study --target nbd",
                )?;
                served.disk = format!("target={}", nbd.uri());
                served._nbd = Some(nbd);
            }
        }
        Ok(served)
    }
}

/// `program` of qemu-utils, or the error naming the package.
fn need(program: &str) -> Result<std::path::PathBuf> {
    proc::find_program(program).ok_or_else(|| BenchError::Tool {
        tool: "xenio-bench study",
        what: format!("`{program}` is not installed"),
        detail: " (apt-get install qemu-utils; or use --target file)".into(),
    })
}

/// One measurement of configuration `c`: the native path on `file`, the xenio
/// path on `disk` (an `xenio blkback --disk` spec without vdev and access).
fn measure(
    c: &Config,
    file: &Path,
    disk: &str,
    p: &Params,
    a: &StudyArgs,
    world: Option<&mut XenioWorld>,
) -> Result<Measured> {
    match (&c.xenio, world) {
        (None, _) => {
            let mut dev = NativeDev::open(file, a.buffered, a.native_io == NativeIo::Psync, 64)?;
            let r = run_phases(&mut dev, c, p)?;
            Ok((r, None, dev.describe()))
        }
        (Some((knobs, wait)), Some(world)) => {
            world.set_knobs(knobs.clone());
            world.set_front_wait(*wait);
            let mut session = world.open_disk(disk, pool_pages(c, p), &c.name)?;
            let r = {
                let mut dev = XenioDev::new(&mut session.front, &c.name);
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

/// The filesystem `dir` is on: `ext4 on /dev/vda1 (/)`.
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
