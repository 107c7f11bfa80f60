//! `xenio-bench blk`: fio-style block workloads through blkfront -> rings ->
//! blkback (a separate process) -> a file, against fio itself (io_uring,
//! O_DIRECT) on the same file and against qemu-nbd driven by fio's nbd engine,
//! all measured in the same run, engines interleaved within each repetition.

use crate::stats::summarize;
use clap::Args;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xenio_blkback::reorder::ReorderMode;
use xenio_blkback::{BackendConfig, Counters, FileStorage, GrantMode, QueueConfig, serve};
use xenio_blkfront::{BlkFront, Op, Options};
use xenio_xenbus::DomId;
use xenio_xenbus::disk::Direct;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::xenstored::{Daemon, DaemonConfig};

type R<T = ()> = std::result::Result<T, String>;

/// Options of `xenio-bench blk`.
#[derive(Args, Debug, Clone)]
pub struct BlkArgs {
    /// Directory for the test file (must support O_DIRECT for a fair comparison).
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Test file size in MiB (the file is written fully once before measuring).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub size_mib: u64,
    /// Repetitions; engines are interleaved within each repetition.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub reps: usize,
    /// Seconds per measurement.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub runtime_secs: f64,
    /// About one minute: 128 MiB file, 1 repetition, 2 s runs, 5 workloads.
    #[arg(long)]
    pub quick: bool,
    /// Also measure both paths on a copy of the file in /dev/shm (memory-backed).
    #[arg(long)]
    pub shm: bool,
    /// Skip the qemu-nbd peer.
    #[arg(long)]
    pub no_nbd: bool,
    /// Ring page order the frontend asks for (the backend offers up to 4).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub ring_order: u32,
    /// Queues (rings).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub queues: u32,
    /// Indirect segments per request (0: none).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub indirect: u32,
    /// No persistent grants.
    #[arg(long)]
    pub no_persistent: bool,
    /// Backend grant mode: map or copy.
    #[arg(long, value_name = "MODE", default_value = "map")]
    pub grant_mode: GrantMode,
    /// Backend reordering: off, sort, merge.
    #[arg(long, value_name = "MODE", default_value = "merge")]
    pub reorder: ReorderMode,
    /// Backend poll window in microseconds before sleeping.
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub poll_us: u64,
    /// Only run workloads whose name contains this (e.g. "rand read 4K QD32").
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Skip fio on the file (measure xenio alone, e.g. for profiling).
    #[arg(long)]
    pub no_fio: bool,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Hidden: the backend process of a measurement.
#[derive(Args, Debug, Clone)]
pub struct BlkBackendArgs {
    /// Run directory of the store.
    pub run_dir: PathBuf,
    /// The image.
    pub image: PathBuf,
    /// Grant mode.
    pub grant_mode: GrantMode,
    /// Reordering.
    pub reorder: ReorderMode,
    /// Poll window (us).
    pub poll_us: u64,
    /// Offer persistent grants (true/false).
    #[arg(action = clap::ArgAction::Set)]
    pub persistent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Workload {
    name: &'static str,
    write: bool,
    random: bool,
    bs: usize,
    qd: usize,
}

const fn w(name: &'static str, write: bool, random: bool, bs: usize, qd: usize) -> Workload {
    Workload {
        name,
        write,
        random,
        bs,
        qd,
    }
}

const FULL: &[Workload] = &[
    w("seq read 1M QD1", false, false, 1 << 20, 1),
    w("seq read 1M QD8", false, false, 1 << 20, 8),
    w("seq read 1M QD32", false, false, 1 << 20, 32),
    w("seq write 1M QD1", true, false, 1 << 20, 1),
    w("seq write 1M QD8", true, false, 1 << 20, 8),
    w("seq write 1M QD32", true, false, 1 << 20, 32),
    w("rand read 4K QD1", false, true, 4096, 1),
    w("rand read 4K QD32", false, true, 4096, 32),
    w("rand write 4K QD1", true, true, 4096, 1),
    w("rand write 4K QD32", true, true, 4096, 32),
    w("rand read 64K QD8", false, true, 65536, 8),
];

const QUICK: &[Workload] = &[FULL[1], FULL[4], FULL[6], FULL[7], FULL[9]];

/// One measurement.
#[derive(Clone, Debug, Default)]
struct Sample {
    mbs: f64,
    iops: f64,
    p50_us: f64,
    p99_us: f64,
    notif_per_req: Option<f64>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------- fio

fn fio(
    wl: &Workload,
    filename: Option<&Path>,
    uri: Option<&str>,
    size: u64,
    secs: f64,
) -> R<Sample> {
    let rw = match (wl.write, wl.random) {
        (false, false) => "read",
        (true, false) => "write",
        (false, true) => "randread",
        (true, true) => "randwrite",
    };
    let out = std::env::temp_dir().join(format!("xenio-bench-fio-{}.json", std::process::id()));
    let mut c = Command::new("fio");
    c.arg("--name=xenio")
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={}", wl.bs))
        .arg(format!("--iodepth={}", wl.qd));
    c.arg(format!("--size={size}"))
        .arg(format!("--runtime={secs}"))
        .arg("--time_based")
        .arg("--randrepeat=0")
        .arg("--norandommap");
    c.arg("--output-format=json")
        .arg(format!("--output={}", out.display()));
    match (filename, uri) {
        (Some(f), _) => {
            c.arg("--ioengine=io_uring")
                .arg("--direct=1")
                .arg(format!("--filename={}", f.display()));
        }
        (None, Some(u)) => {
            c.arg("--ioengine=nbd").arg(format!("--uri={u}"));
        }
        _ => return Err("fio needs a file or a URI".into()),
    }
    let st = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running fio (apt-get install fio): {e}"))?;
    if !st.status.success() {
        return Err(format!(
            "fio failed: {}",
            String::from_utf8_lossy(&st.stderr)
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("reading fio's output: {e}"))?;
    let _ = std::fs::remove_file(&out);
    let v: Value = serde_json::from_str(&text[text.find('{').unwrap_or(0)..])
        .map_err(|e| format!("fio JSON: {e}"))?;
    let j = &v["jobs"][0][if wl.write { "write" } else { "read" }];
    let pct = |p: &str| j["clat_ns"]["percentile"][p].as_f64().unwrap_or(f64::NAN) / 1000.0;
    Ok(Sample {
        mbs: j["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        iops: j["iops"].as_f64().unwrap_or(0.0),
        p50_us: pct("50.000000"),
        p99_us: pct("99.000000"),
        notif_per_req: None,
    })
}

// ---------------------------------------------------------------- qemu-nbd

struct Nbd {
    child: Child,
    socket: PathBuf,
}

impl Nbd {
    fn start(image: &Path) -> R<Nbd> {
        let socket =
            std::env::temp_dir().join(format!("xenio-bench-nbd-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("qemu-nbd")
            .args(["-f", "raw", "--cache=none", "--aio=io_uring", "-t", "-k"])
            .arg(&socket)
            .arg(image)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting qemu-nbd (apt-get install qemu-utils): {e}"))?;
        let t = Instant::now();
        while !socket.exists() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err("qemu-nbd did not create its socket".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nbd { child, socket })
    }
    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }
}

impl Drop for Nbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

// ---------------------------------------------------------------- xenio

/// The hidden backend process: serve the image to domain 1 once, then print the
/// backend's notification and request counters.
pub fn backend_main(a: &BlkBackendArgs) -> R {
    let p = LocalPlatform::connect(&a.run_dir, DomId(0)).map_err(|e| e.to_string())?;
    let storage = FileStorage::open(&a.image, false, Direct::Auto).map_err(|e| e.to_string())?;
    let config = BackendConfig {
        once: true,
        persistent: a.persistent,
        queue: QueueConfig {
            grant_mode: a.grant_mode,
            reorder: a.reorder,
            poll: Duration::from_micros(a.poll_us),
            persistent: a.persistent,
            ..Default::default()
        },
        ..Default::default()
    };
    let counters = Counters::default();
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    serve(
        &p,
        &paths.backend,
        &storage,
        &config,
        &counters,
        &AtomicBool::new(false),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "{{\"requests\":{},\"notifications\":{}}}",
        counters.requests.load(Ordering::Relaxed),
        counters.notifications.load(Ordering::Relaxed)
    );
    Ok(())
}

struct Xenio<'a> {
    args: &'a BlkArgs,
    run_dir: PathBuf,
    _daemon: Daemon,
    dom0: LocalPlatform,
}

impl<'a> Xenio<'a> {
    fn new(args: &'a BlkArgs) -> R<Self> {
        let run_dir = std::env::temp_dir().join(format!("xenio-bench-blk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        let daemon = Daemon::start(DaemonConfig {
            domains: vec![DomId(1)],
            ..DaemonConfig::new(&run_dir)
        })
        .map_err(|e| e.to_string())?;
        let dom0 = LocalPlatform::connect(&run_dir, DomId(0)).map_err(|e| e.to_string())?;
        Ok(Xenio {
            args,
            run_dir,
            _daemon: daemon,
            dom0,
        })
    }

    fn measure(&self, wl: &Workload, image: &Path, secs: f64) -> R<Sample> {
        let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
        let _ = xenio_xenbus::handshake::destroy_device(self.dom0.store(), &paths);
        create_device(self.dom0.store(), &paths, &[]).map_err(|e| e.to_string())?;
        let a = self.args;
        let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .arg("blk-backend")
            .arg(&self.run_dir)
            .arg(image)
            .arg(match a.grant_mode {
                GrantMode::Map => "map",
                GrantMode::Copy => "copy",
            })
            .arg(a.reorder.as_str())
            .arg(a.poll_us.to_string())
            .arg((!a.no_persistent).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the backend: {e}"))?;
        let result = self.drive(wl, &paths, secs);
        if result.is_err() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let mut s = result?;
        let counters: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("backend counters: {e}"))?;
        let (reqs, bnotif) = (
            counters["requests"].as_f64().unwrap_or(0.0),
            counters["notifications"].as_f64().unwrap_or(0.0),
        );
        if let Some(front_notif) = s.notif_per_req {
            s.notif_per_req = Some(if reqs > 0.0 {
                (front_notif + bnotif) / reqs
            } else {
                f64::NAN
            });
        }
        Ok(s)
    }

    fn drive(&self, wl: &Workload, paths: &DevicePaths, secs: f64) -> R<Sample> {
        let a = self.args;
        let p =
            Arc::new(LocalPlatform::connect(&self.run_dir, DomId(1)).map_err(|e| e.to_string())?);
        let pool = (wl.bs / 4096).max(1) * wl.qd + 64;
        let opts = Options {
            max_ring_page_order: a.ring_order,
            queues: a.queues,
            indirect_segments: a.indirect,
            persistent: !a.no_persistent,
            pool_pages: pool,
            timeout: Duration::from_secs(30),
        };
        let mut f = BlkFront::connect(p, &paths.frontend, opts).map_err(|e| e.to_string())?;
        let size = f.size();
        let blocks = size / wl.bs as u64;
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut next_seq = 0u64;
        let mut offset = || {
            if wl.random {
                (rng.next() % blocks) * wl.bs as u64
            } else {
                let o = next_seq;
                next_seq = (next_seq + wl.bs as u64) % (blocks * wl.bs as u64);
                o
            }
        };
        let mut free: Vec<_> = (0..wl.qd)
            .map(|_| f.alloc(wl.bs))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut started = std::collections::HashMap::new();
        let mut lat = Vec::new();
        let mut done = Vec::new();
        let (mut ops, mut warm) = (0u64, true);
        let warmup = Duration::from_millis(300);
        let t0 = Instant::now();
        let mut t_start = t0;
        let notif0 = f.notifications();
        let mut notif_start = notif0;
        let end = warmup + Duration::from_secs_f64(secs);
        while t0.elapsed() < end || !started.is_empty() {
            while t0.elapsed() < end {
                let Some(buf) = free.pop() else { break };
                let op = if wl.write {
                    Op::Write {
                        offset: offset(),
                        buf,
                    }
                } else {
                    Op::Read {
                        offset: offset(),
                        buf,
                    }
                };
                let tok = f.submit(op).map_err(|e| e.to_string())?;
                started.insert(tok, Instant::now());
            }
            done.clear();
            f.poll(&mut done, Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            for d in done.drain(..) {
                d.result.map_err(|e| e.to_string())?;
                let st = started.remove(&d.token).ok_or("unknown completion")?;
                if let Some(b) = d.buf {
                    free.push(b);
                }
                if warm && t0.elapsed() >= warmup {
                    warm = false;
                    t_start = Instant::now();
                    notif_start = f.notifications();
                    ops = 0;
                    lat.clear();
                }
                if !warm {
                    ops += 1;
                    lat.push(st.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        let elapsed = t_start.elapsed().as_secs_f64();
        let front_notif = (f.notifications() - notif_start) as f64;
        for b in free {
            f.free(b);
        }
        f.close().map_err(|e| e.to_string())?;
        lat.sort_by(|a, b| a.total_cmp(b));
        Ok(Sample {
            mbs: ops as f64 * wl.bs as f64 / elapsed / 1e6,
            iops: ops as f64 / elapsed,
            p50_us: percentile(&lat, 0.5),
            p99_us: percentile(&lat, 0.99),
            // Turned into (front + back) per request by `measure`.
            notif_per_req: Some(front_notif),
        })
    }
}

impl Drop for Xenio<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

// ---------------------------------------------------------------- the run

fn precondition(path: &Path, size: u64) -> R {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut rng = Rng(42);
    let chunk: Vec<u8> = (0..(4 << 20)).map(|_| rng.next() as u8).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// Run the benchmark; prints the report on stdout, progress on stderr.
pub fn run(a: &BlkArgs) -> R {
    let (size_mib, reps, secs, workloads) = if a.quick {
        (a.size_mib.min(128), 1, a.runtime_secs.min(2.0), QUICK)
    } else {
        (a.size_mib, a.reps.max(1), a.runtime_secs, FULL)
    };
    let workloads: Vec<Workload> = workloads
        .iter()
        .copied()
        .filter(|w| a.only.as_deref().is_none_or(|o| w.name.contains(o)))
        .collect();
    let workloads = &workloads[..];
    if workloads.is_empty() {
        return Err(format!("no workload matches {:?}", a.only));
    }
    let size = size_mib << 20;
    let image = a
        .dir
        .join(format!("xenio-bench-blk-{}.img", std::process::id()));
    struct Rm(Vec<PathBuf>);
    impl Drop for Rm {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let mut cleanup = Rm(vec![image.clone()]);
    eprintln!(
        "xenio-bench blk: preconditioning {} ({size_mib} MiB)",
        image.display()
    );
    precondition(&image, size)?;
    let shm = PathBuf::from("/dev/shm").join(format!("xenio-bench-blk-{}.img", std::process::id()));
    if a.shm {
        precondition(&shm, size)?;
        cleanup.0.push(shm.clone());
    }
    let xenio = Xenio::new(a)?;
    let nbd = if a.no_nbd {
        None
    } else {
        Some(Nbd::start(&image)?)
    };
    let mut engines: Vec<&str> = if a.no_fio {
        vec!["xenio"]
    } else {
        vec!["fio", "xenio"]
    };
    if nbd.is_some() {
        engines.push("qemu-nbd");
    }
    if a.shm {
        engines.extend(["fio shm", "xenio shm"]);
    }
    // results[workload][engine] = samples
    let mut results: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); engines.len()]; workloads.len()];
    let total = reps * workloads.len() * engines.len();
    let mut n = 0;
    for rep in 0..reps {
        for (wi, wl) in workloads.iter().enumerate() {
            for (ei, e) in engines.iter().enumerate() {
                n += 1;
                let s = match *e {
                    "fio" => fio(wl, Some(&image), None, size, secs)?,
                    "xenio" => xenio.measure(wl, &image, secs)?,
                    "qemu-nbd" => fio(
                        wl,
                        None,
                        nbd.as_ref().map(|n| n.uri()).as_deref(),
                        size,
                        secs,
                    )?,
                    "fio shm" => fio(wl, Some(&shm), None, size, secs).or_else(|_| {
                        // tmpfs may refuse O_DIRECT: fall back to buffered fio.
                        fio(wl, Some(&shm), None, size, secs)
                    })?,
                    _ => xenio.measure(wl, &shm, secs)?,
                };
                eprintln!(
                    "[{n}/{total}] rep {}: {:<20} {:<10} {:>9.1} MB/s {:>9.0} IOPS  p50 {:>8.1} us{}",
                    rep + 1,
                    wl.name,
                    e,
                    s.mbs,
                    s.iops,
                    s.p50_us,
                    s.notif_per_req
                        .map(|x| format!("  {x:.3} notif/req"))
                        .unwrap_or_default()
                );
                results[wi][ei].push(s);
            }
        }
    }
    drop(nbd);
    report(a, workloads, &engines, &results, size_mib, reps, secs)
}

fn med(v: &[f64]) -> f64 {
    summarize(v).map(|s| s.median).unwrap_or(f64::NAN)
}

fn report(
    a: &BlkArgs,
    workloads: &[Workload],
    engines: &[&str],
    results: &[Vec<Vec<Sample>>],
    size_mib: u64,
    reps: usize,
    secs: f64,
) -> R {
    println!(
        "xenio-bench blk: {size_mib} MiB file in {}, {reps} rep(s) x {secs} s; xenio: ring order {}, {} queue(s), indirect {}, persistent {}, grants {:?}, reorder {}, poll {} us",
        a.dir.display(),
        a.ring_order,
        a.queues,
        a.indirect,
        !a.no_persistent,
        a.grant_mode,
        a.reorder.as_str(),
        a.poll_us
    );
    println!("median [min..max] over repetitions\n");
    println!(
        "{:<20} {:<10} {:>24} {:>12} {:>10} {:>10} {:>10}",
        "workload", "engine", "MB/s", "IOPS", "p50 us", "p99 us", "notif/req"
    );
    let mut json_rows = Vec::new();
    for (wi, wl) in workloads.iter().enumerate() {
        for (ei, e) in engines.iter().enumerate() {
            let r = &results[wi][ei];
            let mbs: Vec<f64> = r.iter().map(|s| s.mbs).collect();
            let sm = summarize(&mbs);
            let iops = med(&r.iter().map(|s| s.iops).collect::<Vec<_>>());
            let p50 = med(&r.iter().map(|s| s.p50_us).collect::<Vec<_>>());
            let p99 = med(&r.iter().map(|s| s.p99_us).collect::<Vec<_>>());
            let notif: Vec<f64> = r.iter().filter_map(|s| s.notif_per_req).collect();
            let nstr = if notif.is_empty() {
                "-".into()
            } else {
                format!("{:.3}", med(&notif))
            };
            let mstr = sm
                .map(|s| format!("{:.1} [{:.1}..{:.1}]", s.median, s.min, s.max))
                .unwrap_or_default();
            println!(
                "{:<20} {:<10} {:>24} {:>12.0} {:>10.1} {:>10.1} {:>10}",
                wl.name, e, mstr, iops, p50, p99, nstr
            );
            json_rows.push(json!({"workload": wl.name, "engine": e, "mbs": mbs, "iops_median": iops, "p50_us": p50, "p99_us": p99, "notifications_per_request": notif}));
        }
    }
    // Ratios per repetition, then their median [min..max].
    let idx = |name: &str| workloads.iter().position(|w| w.name == name);
    let eng = |name: &str| engines.iter().position(|e| *e == name);
    let ratio = |wl: &str, a_eng: &str, b_eng: &str, f: fn(&Sample) -> f64| -> Option<Vec<f64>> {
        let (w, x, y) = (idx(wl)?, eng(a_eng)?, eng(b_eng)?);
        Some(
            results[w][x]
                .iter()
                .zip(&results[w][y])
                .map(|(p, q)| f(p) / f(q))
                .collect(),
        )
    };
    println!("\ntargets (median [min..max] of per-repetition ratios):");
    let mut json_targets = Vec::new();
    let mut line = |what: &str, v: Option<Vec<f64>>, pass: fn(f64) -> bool, target: &str| match v
        .and_then(|v| summarize(&v).map(|s| (s, v)))
    {
        Some((s, v)) => {
            let verdict = if pass(s.median) { "PASS" } else { "MISS" };
            println!(
                "  {what:<52} {:>7.2}x [{:.2}..{:.2}]  target {target:<8} {verdict}",
                s.median, s.min, s.max
            );
            json_targets.push(
                json!({"target": what, "ratios": v, "median": s.median, "pass": pass(s.median)}),
            );
        }
        None => println!("  {what:<52} not measured in this run"),
    };
    line(
        "seq read 1M QD8: xenio / fio MB/s",
        ratio("seq read 1M QD8", "xenio", "fio", |s| s.mbs),
        |r| r >= 0.95,
        ">= 0.95",
    );
    line(
        "seq write 1M QD8: xenio / fio MB/s",
        ratio("seq write 1M QD8", "xenio", "fio", |s| s.mbs),
        |r| r >= 0.95,
        ">= 0.95",
    );
    line(
        "rand read 4K QD32: xenio / fio IOPS",
        ratio("rand read 4K QD32", "xenio", "fio", |s| s.iops),
        |r| r >= 0.90,
        ">= 0.90",
    );
    line(
        "rand write 4K QD32: xenio / fio IOPS",
        ratio("rand write 4K QD32", "xenio", "fio", |s| s.iops),
        |r| r >= 0.90,
        ">= 0.90",
    );
    line(
        "rand read 4K QD1: xenio / fio p50 latency",
        ratio("rand read 4K QD1", "xenio", "fio", |s| s.p50_us),
        |r| r <= 1.3,
        "<= 1.3",
    );
    line(
        "rand read 4K QD32: xenio / qemu-nbd IOPS",
        ratio("rand read 4K QD32", "xenio", "qemu-nbd", |s| s.iops),
        |r| r >= 4.0,
        ">= 4",
    );
    let notif = idx("rand read 4K QD32").and_then(|w| {
        eng("xenio").map(|e| {
            results[w][e]
                .iter()
                .filter_map(|s| s.notif_per_req)
                .collect::<Vec<_>>()
        })
    });
    match notif.as_deref().and_then(summarize) {
        Some(s) => println!(
            "  {:<52} {:>8.3} [{:.3}..{:.3}]  target <= 0.1    {}",
            "notifications per request, rand read 4K QD32",
            s.median,
            s.min,
            s.max,
            if s.median <= 0.1 { "PASS" } else { "MISS" }
        ),
        None => println!("  notifications per request: not measured"),
    }
    if let Some(path) = &a.json {
        let v = json!({"benchmark": "blk", "size_mib": size_mib, "reps": reps, "runtime_secs": secs, "rows": json_rows, "targets": json_targets});
        std::fs::write(path, v.to_string() + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
