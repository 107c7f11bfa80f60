//! The xenio engine of `xenio-bench blk`: the local platform's store daemon in
//! this process, `xenio blkback` as a child process (domain 0) serving the file,
//! and blkfront in this process (domain 1) driven asynchronously: QD operations
//! in flight through `submit`/`poll`, buffers from the frontend's grant pool
//! allocated once and reused.
//!
//! Each measurement is one connection: the backend is started with
//! `--create-device --once`, the frontend connects, warms up, measures, closes,
//! the backend exits and prints its counters, and the device is removed from the
//! store so that the next measurement starts from scratch.

use crate::blk::{
    BlkArgs, DirectArg, GrantModeArg, ReorderArg, Rng, Sample, Timing, Workload, XenioCounters,
    percentile,
};
use crate::blk_proc::{self, Proc};
use crate::{BenchError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_blkfront::{BlkFront, Op, Options, Token};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::DomId;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, destroy_device, read_state};
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

/// `vdev=xvda`.
const DEVID: u32 = 51712;
/// How long the backend may take to come up, and to exit after the frontend closed.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(20);
/// No completion for this long while operations are in flight: the run stops.
const STALL: Duration = Duration::from_secs(30);

/// The knobs passed to `xenio blkback` (and the frontend's matching requests).
#[derive(Clone, Debug, PartialEq)]
pub struct BackendKnobs {
    /// `--max-ring-page-order`, and the order the frontend asks for.
    pub ring_order: u32,
    /// `--max-queues`, and the queues the frontend asks for.
    pub queues: u32,
    /// `--max-indirect-segments`, and the frontend's indirect segments.
    pub indirect: u32,
    /// Persistent grants offered by both sides.
    pub persistent: bool,
    /// `--grant-mode`.
    pub grant_mode: GrantModeArg,
    /// `--reorder`.
    pub reorder: ReorderArg,
    /// `--poll-us`.
    pub poll_us: u64,
    /// `--io-depth`.
    pub io_depth: u32,
    /// `--batch`.
    pub batch: usize,
    /// `--direct`.
    pub direct: DirectArg,
    /// Verbatim extra arguments.
    pub extra: Vec<String>,
}

impl BackendKnobs {
    /// From the command line.
    pub fn from_args(a: &BlkArgs) -> Self {
        BackendKnobs {
            ring_order: a.ring_order,
            queues: a.queues,
            indirect: a.indirect,
            persistent: !a.no_persistent,
            grant_mode: a.grant_mode,
            reorder: a.reorder,
            poll_us: a.poll_us,
            io_depth: a.io_depth,
            batch: a.batch,
            direct: a.direct,
            extra: a.backend_arg.clone(),
        }
    }

    /// The `xenio blkback` arguments these knobs stand for.
    pub fn args(&self) -> Vec<String> {
        let mut v = vec![
            format!("--max-ring-page-order={}", self.ring_order),
            format!("--max-queues={}", self.queues),
            format!("--max-indirect-segments={}", self.indirect),
            format!(
                "--grant-mode={}",
                match self.grant_mode {
                    GrantModeArg::Map => "map",
                    GrantModeArg::Copy => "copy",
                }
            ),
            format!(
                "--reorder={}",
                match self.reorder {
                    ReorderArg::Off => "off",
                    ReorderArg::Sort => "sort",
                    ReorderArg::Merge => "merge",
                }
            ),
            format!("--poll-us={}", self.poll_us),
            format!("--io-depth={}", self.io_depth),
            format!("--batch={}", self.batch),
            format!(
                "--direct={}",
                match self.direct {
                    DirectArg::Auto => "auto",
                    DirectArg::On => "on",
                    DirectArg::Off => "off",
                }
            ),
        ];
        if !self.persistent {
            v.push("--no-persistent".into());
        }
        v.extend(self.extra.iter().cloned());
        v
    }
}

/// The store daemon and what a measurement needs to start a backend.
pub struct XenioWorld {
    xenio: PathBuf,
    run_dir: PathBuf,
    log: PathBuf,
    knobs: BackendKnobs,
    front_poll: Duration,
    dom0: LocalPlatform,
    paths: DevicePaths,
    _daemon: Daemon,
}

fn platform<E: Into<xenio_xenbus::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> BenchError {
    let what = what.into();
    move |err| BenchError::Platform {
        what,
        err: err.into(),
    }
}

impl XenioWorld {
    /// Start the store daemon with domain 1 introduced, under `scratch/run`.
    /// `front_poll`: how long the driver spins on the ring before sleeping.
    pub fn start(
        xenio: &Path,
        scratch: &Path,
        knobs: BackendKnobs,
        front_poll: Duration,
    ) -> Result<Self> {
        let run_dir = scratch.join("run");
        let daemon = Daemon::start(DaemonConfig {
            domains: vec![DomId(1)],
            ..DaemonConfig::new(&run_dir)
        })
        .map_err(platform("starting the store daemon"))?;
        let dom0 = LocalPlatform::connect(&run_dir, DomId(0))
            .map_err(platform("connecting to the store as domain 0"))?;
        Ok(XenioWorld {
            xenio: xenio.to_path_buf(),
            log: scratch.join("blkback.log"),
            run_dir,
            knobs,
            front_poll,
            dom0,
            paths: DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, DEVID),
            _daemon: daemon,
        })
    }

    fn backend_error(&self, label: &str, what: String) -> BenchError {
        BenchError::Tool {
            tool: "xenio blkback",
            what: format!("`{label}`: {what}"),
            detail: blk_proc::log_tail(&self.log, 30),
        }
    }

    /// The knobs new connections use.
    pub fn knobs(&self) -> &BackendKnobs {
        &self.knobs
    }

    /// Use `knobs` for the connections opened from now on.
    pub fn set_knobs(&mut self, knobs: BackendKnobs) {
        self.knobs = knobs;
    }

    /// One measurement of `w` on `image`; also returns how the backend opened
    /// the file (its log line, e.g. `... (1073741824 bytes, O_DIRECT)`).
    pub fn measure(
        &self,
        w: &Workload,
        image: &Path,
        timing: Timing,
        seed: u64,
        label: &str,
    ) -> Result<(Sample, String)> {
        let pool_pages = w.bs.div_ceil(4096) * w.qd + 16;
        let mut session = self.open(image, pool_pages, label)?;
        let clocks = CpuClocks::new(session.backend.pid());
        let result = drive(
            &mut session.front,
            w,
            timing,
            seed,
            self.front_poll,
            label,
            &clocks,
        );
        let (counters, storage) = session.close_after(result.as_ref().err())?;
        let mut sample = result?;
        sample.xenio = Some(counters);
        Ok((sample, storage))
    }

    /// Start `xenio blkback` on `image` (with the current knobs) and connect a
    /// frontend with a grant pool of `pool_pages` pages. [`Session::close`]
    /// ends both and collects the backend's counters.
    pub fn open(&self, image: &Path, pool_pages: usize, label: &str) -> Result<Session<'_>> {
        let store = self.dom0.store();
        destroy_device(store, &self.paths).map_err(platform("removing the old device"))?;
        let log = std::fs::File::create(&self.log)
            .map_err(|e| BenchError::io(format!("creating {}", self.log.display()), e))?;
        let mut cmd = blk_proc::command(&self.xenio);
        cmd.arg("blkback")
            .args(["--platform", "local", "--frontend", "1", "--once"])
            .arg("--create-device")
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--disk")
            .arg(format!(
                "format=raw,vdev=xvda,access=rw,target={}",
                image.display()
            ))
            .args(self.knobs.args())
            .env("RUST_LOG", "warn,xenio_blkback::backend=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut backend = Proc::spawn(&mut cmd, "xenio blkback")?;

        // Wait for the backend to create the device and offer its features.
        let state = format!("{}/state", self.paths.backend);
        let start = Instant::now();
        loop {
            if let Some(st) = backend.try_wait()? {
                return Err(self.backend_error(label, format!("exited ({st}) before serving")));
            }
            match read_state(store, &state) {
                Ok(XenbusState::InitWait) => break,
                Ok(_) => {}
                Err(e) => return Err(platform("reading the backend's state")(e)),
            }
            if start.elapsed() > BACKEND_TIMEOUT {
                return Err(self.backend_error(
                    label,
                    format!(
                        "not in InitWait after {} s; killed",
                        BACKEND_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }

        let fe = |err| BenchError::Frontend {
            config: label.to_string(),
            err,
        };
        let k = &self.knobs;
        let options = Options {
            max_ring_page_order: k.ring_order,
            queues: k.queues,
            indirect_segments: k.indirect,
            persistent: k.persistent,
            pool_pages,
            timeout: BACKEND_TIMEOUT,
            // The driver loop below spins itself (`front_poll`).
            poll: Duration::ZERO,
        };
        let dom1 = LocalPlatform::connect(&self.run_dir, DomId(1))
            .map_err(platform("connecting to the store as domain 1"))?;
        let front =
            BlkFront::connect(Arc::new(dom1), &self.paths.frontend, options).map_err(|e| {
                match backend.try_wait() {
                    Ok(Some(st)) => {
                        self.backend_error(label, format!("exited ({st}) during the handshake"))
                    }
                    _ => fe(e),
                }
            })?;
        Ok(Session {
            world: self,
            front,
            backend,
            label: label.to_string(),
        })
    }

    /// How long the frontend driver spins on the ring before sleeping.
    pub fn front_poll(&self) -> Duration {
        self.front_poll
    }
}

/// One connection: a `xenio blkback` child serving the file and the frontend
/// connected to it. Dropping it kills the backend.
pub struct Session<'w> {
    world: &'w XenioWorld,
    /// The connected frontend (domain 1, this process).
    pub front: BlkFront<LocalPlatform>,
    backend: Proc,
    label: String,
}

impl Session<'_> {
    /// Close the frontend, wait for the backend to exit, remove the device;
    /// returns the connection's counters and the backend's storage line.
    pub fn close(self) -> Result<(XenioCounters, String)> {
        self.close_after(None)
    }

    /// [`Session::close`]; when the measurement already failed (`failed`), the
    /// backend is killed instead, and the caller reports the first error.
    fn close_after(mut self, failed: Option<&BenchError>) -> Result<(XenioCounters, String)> {
        let world = self.world;
        let label = self.label.as_str();
        if failed.is_some() {
            self.backend.kill();
            return Ok((XenioCounters::default(), String::new()));
        }
        let fe = |err| BenchError::Frontend {
            config: label.to_string(),
            err,
        };
        let front_notifications = self.front.notifications();
        self.front.close().map_err(fe)?;
        let Some(status) = self.backend.wait_timeout(BACKEND_TIMEOUT)? else {
            return Err(world.backend_error(
                label,
                format!(
                    "still running {} s after the frontend closed; killed",
                    BACKEND_TIMEOUT.as_secs()
                ),
            ));
        };
        if !status.success() {
            return Err(world.backend_error(label, format!("exited with {status}")));
        }
        let store = world.dom0.store();
        destroy_device(store, &world.paths).map_err(platform("removing the device"))?;
        let text = std::fs::read_to_string(&world.log)
            .map_err(|e| BenchError::io(format!("reading {}", world.log.display()), e))?;
        let mut c = parse_counters(&text).ok_or_else(|| {
            world.backend_error(label, "no counters line on its stderr".to_string())
        })?;
        c.front_notifications = front_notifications;
        Ok((c, storage_line(&text).unwrap_or_default()))
    }
}

/// Keep `w.qd` operations in flight for the warm-up, then for the timed window;
/// then let the last ones complete. Operations completed inside the window count
/// towards the rate and the latency percentiles.
fn drive<P: Platform>(
    f: &mut BlkFront<P>,
    w: &Workload,
    timing: Timing,
    seed: u64,
    spin: Duration,
    label: &str,
    clocks: &CpuClocks,
) -> Result<Sample> {
    let fe = |err| BenchError::Frontend {
        config: label.to_string(),
        err,
    };
    let bs = w.bs as u64;
    let blocks = f.size() / bs;
    if blocks == 0 {
        return Err(BenchError::Usage(format!(
            "`{label}`: the disk is smaller than one {bs}-byte operation"
        )));
    }
    let mut rng = Rng::new(seed);
    let mut free = Vec::with_capacity(w.qd);
    let mut fill = vec![0u8; w.bs];
    for _ in 0..w.qd {
        let b = f.alloc(w.bs).map_err(fe)?;
        if w.write {
            rng.fill(&mut fill);
            f.buf_write(&b, 0, &fill).map_err(fe)?;
        }
        free.push(b);
    }
    let mut next_block = 0u64;
    let mut in_flight: HashMap<Token, Instant> = HashMap::with_capacity(w.qd * 2);
    let mut done = Vec::with_capacity(w.qd);
    let mut lat_ns: Vec<u64> = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let window = start + timing.warmup;
    let end = window + timing.runtime;
    let mut ops = 0u64;
    let mut last = start;
    let (mut cpu_start, mut cpu_end) = (None, None);
    loop {
        let t = Instant::now();
        if t >= window && cpu_start.is_none() {
            cpu_start = Some(clocks.now());
        }
        if t >= end && cpu_end.is_none() {
            cpu_end = Some(clocks.now());
        }
        if t < end {
            while let Some(buf) = free.pop() {
                let block = if w.random {
                    rng.below(blocks)
                } else {
                    let b = next_block;
                    next_block = (next_block + 1) % blocks;
                    b
                };
                let offset = block * bs;
                let op = if w.write {
                    Op::Write { offset, buf }
                } else {
                    Op::Read { offset, buf }
                };
                let t = Instant::now();
                let token = f.submit(op).map_err(fe)?;
                in_flight.insert(token, t);
            }
        } else if in_flight.is_empty() {
            break;
        }
        done.clear();
        if !spin.is_zero() {
            xenio_ring::spin::spin_for(spin, || {
                f.poll(&mut done, None).map_err(fe)?;
                Ok::<_, BenchError>(!done.is_empty())
            })?;
        }
        if done.is_empty() {
            f.poll(&mut done, Some(Duration::from_millis(200)))
                .map_err(fe)?;
        }
        let now = Instant::now();
        if done.is_empty() {
            if now - last > STALL {
                return Err(BenchError::Stalled {
                    config: label.to_string(),
                    what: "a completion from the backend",
                    secs: STALL.as_secs(),
                });
            }
            continue;
        }
        last = now;
        let counted = now >= window && now < end;
        for d in done.drain(..) {
            d.result.map_err(fe)?;
            let t = in_flight
                .remove(&d.token)
                .ok_or_else(|| BenchError::Stalled {
                    config: label.to_string(),
                    what: "a completion with a token that was submitted",
                    secs: 0,
                })?;
            if let Some(b) = d.buf {
                free.push(b);
            }
            if counted {
                ops += 1;
                lat_ns.push((now - t).as_nanos() as u64);
            }
        }
    }
    for b in free {
        f.free(b);
    }
    lat_ns.sort_unstable();
    let us = |p| percentile(&lat_ns, p).map_or(f64::NAN, |ns| ns as f64 / 1e3);
    let secs = timing.runtime.as_secs_f64();
    let cpu_us_per_op = match (cpu_start.flatten(), cpu_end.flatten()) {
        (Some(a), Some(b)) if ops > 0 && b >= a => Some((b - a) as f64 / 1e3 / ops as f64),
        _ => None,
    };
    Ok(Sample {
        mbs: (ops * bs) as f64 / secs / 1e6,
        iops: ops as f64 / secs,
        p50_us: us(0.5),
        p99_us: us(0.99),
        ops,
        cpu_us_per_op,
        xenio: None,
    })
}

/// The CPU clocks a xenio measurement reads: the frontend's thread (the one
/// driving the rings) and the backend process (all its threads).
struct CpuClocks {
    backend: Option<nix::time::ClockId>,
}

impl CpuClocks {
    fn new(backend_pid: u32) -> Self {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(backend_pid).unwrap_or(0));
        CpuClocks {
            backend: nix::time::clock_getcpuclockid(pid).ok(),
        }
    }

    /// Nanoseconds of CPU the two have used so far (None if unreadable, e.g.
    /// the backend exited).
    fn now(&self) -> Option<u64> {
        use nix::time::{ClockId, clock_gettime};
        let ns = |c: ClockId| {
            clock_gettime(c)
                .ok()
                .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        };
        Some(ns(ClockId::CLOCK_THREAD_CPUTIME_ID)? + ns(self.backend?)?)
    }
}

/// The counters of `xenio blkback`'s exit line:
/// `blkback: ...: N requests in N batches, ... N merged, ... N notifications, N sleeps`.
/// The frontend's notifications are not in it (left 0).
pub fn parse_counters(log: &str) -> Option<XenioCounters> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("blkback: ") && l.contains(" requests in "))?;
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|t| t.trim_end_matches(','))
        .collect();
    let before = |word: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    Some(XenioCounters {
        front_notifications: 0,
        back_notifications: before("notifications")?,
        requests: before("requests")?,
        batches: before("batches")?,
        sleeps: before("sleeps")?,
        merged: before("merged")?,
    })
}

/// What the backend said about the file (`... serving file PATH (N bytes, O_DIRECT)`).
pub fn storage_line(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(": serving "))?;
    let at = line.find(": serving ")? + ": serving ".len();
    Some(strip_ansi(&line[at..]))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_backend_exit_line() {
        let log = "2026-11-25T23:00:00Z  INFO xenio_blkback::backend: /local/domain/0/backend/vbd/1/51712: serving file /var/tmp/x.img (16777216 bytes, O_DIRECT)\n\
                   blkback: Closed: 1200 requests in 300 batches, 0 errors (0 rejected), 1100 I/Os, 100 merged, 5 reordered, 40 notifications, 35 sleeps\n";
        let c = parse_counters(log).unwrap();
        assert_eq!(
            c,
            XenioCounters {
                front_notifications: 0,
                back_notifications: 40,
                requests: 1200,
                batches: 300,
                sleeps: 35,
                merged: 100,
            }
        );
        assert_eq!(
            storage_line(log).as_deref(),
            Some("file /var/tmp/x.img (16777216 bytes, O_DIRECT)")
        );
        assert_eq!(parse_counters("nothing here"), None);
        assert_eq!(strip_ansi("\x1b[2mtext\x1b[0m"), "text");
    }

    #[test]
    fn knobs_become_blkback_arguments() {
        let k = BackendKnobs {
            ring_order: 2,
            queues: 4,
            indirect: 0,
            persistent: false,
            grant_mode: GrantModeArg::Copy,
            reorder: ReorderArg::Sort,
            poll_us: 50,
            io_depth: 64,
            batch: 32,
            direct: DirectArg::On,
            extra: vec!["--max-merge-kib=512".into()],
        };
        assert_eq!(
            k.args().join(" "),
            "--max-ring-page-order=2 --max-queues=4 --max-indirect-segments=0 --grant-mode=copy \
             --reorder=sort --poll-us=50 --io-depth=64 --batch=32 --direct=on --no-persistent \
             --max-merge-kib=512"
        );
    }
}
