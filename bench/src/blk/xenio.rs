//! The xenio engine of `xenio-bench blk`: blkfront in this process (domain 1)
//! driven asynchronously against `xenio blkback` (a child process, see
//! [`crate::common::blkback`]): QD operations in flight through
//! `submit`/`poll`, buffers from the frontend's grant pool allocated once and
//! reused, CPU time read from the frontend thread's and the backend process's
//! clocks.

use crate::blk::types::{Sample, Timing, Workload};
use crate::common::blkback::XenioWorld;
use crate::common::error::{BenchError, Result};
use crate::common::rng::Rng;
use crate::common::stats::percentile;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use xenio_blkfront::{BlkFront, Op, Token};
use xenio_xenbus::platform::Platform;

/// No completion for this long while operations are in flight: the run stops.
const STALL: Duration = Duration::from_secs(30);

/// One measurement of `w` on `image` through `world` (a fresh backend
/// process and connection); also returns how the backend opened the file (its
/// log line, e.g. `... (1073741824 bytes, O_DIRECT)`).
pub fn measure(
    world: &XenioWorld,
    w: &Workload,
    image: &Path,
    timing: Timing,
    seed: u64,
    label: &str,
) -> Result<(Sample, String)> {
    measure_disk(
        world,
        w,
        &format!("format=raw,target={}", image.display()),
        None,
        timing,
        seed,
        label,
    )
}

/// [`measure`] on any disk `xenio blkback --disk` serves (`disk`: its
/// `format=...,target=...` part); `span`: use only the disk's first bytes
/// (the part fio uses too), None: all of it.
pub fn measure_disk(
    world: &XenioWorld,
    w: &Workload,
    disk: &str,
    span: Option<u64>,
    timing: Timing,
    seed: u64,
    label: &str,
) -> Result<(Sample, String)> {
    let pool_pages = w.bs.div_ceil(4096) * w.qd + 16;
    let mut session = world.open_disk(disk, pool_pages, label)?;
    let clocks = CpuClocks::new(session.backend_pid());
    let result = drive(&mut session.front, w, span, timing, seed, label, &clocks);
    let (counters, storage) = session.close_after(result.as_ref().err())?;
    let mut sample = result?;
    sample.xenio = Some(counters);
    Ok((sample, storage))
}

/// Keep `w.qd` operations in flight for the warm-up, then for the timed window;
/// then let the last ones complete. Operations completed inside the window count
/// towards the rate and the latency percentiles.
fn drive<P: Platform>(
    f: &mut BlkFront<P>,
    w: &Workload,
    span: Option<u64>,
    timing: Timing,
    seed: u64,
    label: &str,
    clocks: &CpuClocks,
) -> Result<Sample> {
    let fe = |err| BenchError::Frontend {
        config: label.to_string(),
        err,
    };
    let bs = w.bs as u64;
    if let Some(span) = span.filter(|&s| s > f.size()) {
        return Err(BenchError::Usage(format!(
            "`{label}`: the disk has {} bytes, fewer than the {span} to use (--size-mib)",
            f.size()
        )));
    }
    let blocks = f.size().min(span.unwrap_or(u64::MAX)) / bs;
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
        // blkfront waits as the world's frontend options say (adaptive by
        // default, or --front-poll-us).
        f.poll(&mut done, Some(Duration::from_millis(200)))
            .map_err(fe)?;
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
