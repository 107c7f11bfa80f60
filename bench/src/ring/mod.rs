//! `xenio-bench ring`, the ring micro-benchmark: two processes pinned to two
//! cores exchange blkif requests and responses over an [`xenio_ring`] ring in
//! shared memory, polling or with eventfd doorbells, and the numbers are set
//! against two baselines measured in the same run on the same cores (a
//! cache-line ping-pong and a pair of `rtrb` queues). See
//! [`args::RING_ABOUT`] (`xenio-bench ring --help`) for the knobs.
//!
//! One measurement = one configuration once: fresh shared memory, a fresh peer
//! process (or thread), an untimed warm-up, then a timed window of
//! `--duration-ms` (or `--ops` ops), then a clean stop in which the backend's
//! request count is checked against the frontend's. Repetitions interleave.
//!
//! This module only orchestrates: [`xenio`] (the ring's two loops),
//! [`baseline`] (ping-pong and rtrb), [`peer`] (the second process and the
//! control page), [`timing`] (round trips and pipelines), [`wait`] (spinning
//! and sleeping with a watch on the peer), [`content`] (what requests carry
//! and how each side checks them), [`report`], and the shared [`types`] and
//! [`args`].

pub mod args;
pub mod baseline;
pub mod content;
pub mod cpair;
pub mod peer;
pub mod report;
pub mod timing;
pub mod types;
pub mod wait;
pub mod xenio;

use crate::common::error::{BenchError, Result};
use crate::common::sys;
use args::{ModeFilter, PeerArgs, PeerRole, PeerWait, RingArgs};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use peer::{Control, ParentWatch, STATE_DONE, STATE_READY, inherited_bells};
use std::time::Duration;
use types::{Config, Plan, RunResults, Sample, Stop, WaitMode, Workload};
use wait::Liveness;
use xenio::Waiting;
use xenio_ring::{BlkifBackRing, MmapRegion};
use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse};

/// `xenio-bench ring`: run, print the report on stdout, write the JSON if asked.
pub fn run(args: &RingArgs) -> Result<()> {
    use std::io::Write;
    let results = measure_all(args)?;
    let text = report::render(&results);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| BenchError::io("writing the report to stdout", e))?;
    if let Some(path) = &args.json {
        let json = report::to_json(&results).to_string() + "\n";
        std::fs::write(path, json)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Measure `config` once (`c_pair`: the compiled C ring.h pair, for its
/// configurations).
pub fn measure(config: &Config, plan: &Plan, c_pair: Option<&cpair::CPair>) -> Result<Sample> {
    let name = config.name();
    match *config {
        Config::PingPong => baseline::measure_pingpong(plan, &name),
        Config::Rtrb(w) => baseline::measure_rtrb(plan, w, &name),
        Config::Ring(w, m) => xenio::measure_ring(plan, w, m, &name),
        Config::CRing(w) => match c_pair {
            Some(c) => c.measure(plan, w, &name),
            None => Err(BenchError::Usage(format!(
                "`{name}`: the C pair is not built"
            ))),
        },
    }
}

/// Every configuration of a run, in the order each repetition measures them.
pub fn configs(args: &RingArgs) -> Vec<Config> {
    let mut modes = Vec::new();
    if args.mode != ModeFilter::Event {
        modes.push(WaitMode::Polling);
    }
    if args.mode != ModeFilter::Polling {
        let mut spins = args.poll_us.clone();
        spins.sort_unstable();
        spins.dedup();
        modes.extend(spins.into_iter().map(|us| WaitMode::Event {
            spin: Duration::from_micros(us),
        }));
    }
    let mut out = vec![
        Config::PingPong,
        Config::Rtrb(Workload::Latency),
        Config::Rtrb(Workload::Throughput),
    ];
    if args.mode != ModeFilter::Event && !args.no_c_pair {
        out.push(Config::CRing(Workload::Latency));
        out.push(Config::CRing(Workload::Throughput));
    }
    for w in [Workload::Latency, Workload::Throughput] {
        out.extend(modes.iter().map(|&m| Config::Ring(w, m)));
    }
    out
}

/// Turn the arguments into a [`Plan`], checking what clap could not.
pub fn plan(args: &RingArgs) -> Result<Plan> {
    let allowed = sys::allowed_cpus()?;
    for core in [args.cores.front, args.cores.back] {
        if !allowed.contains(&core) {
            return Err(BenchError::Usage(format!(
                "--cores {},{}: CPU {core} is not available to this process (allowed: {allowed:?})",
                args.cores.front, args.cores.back
            )));
        }
    }
    let entry = xenio_xen_sys::ring::entry_size::<BlkifRequest, BlkifResponse>();
    let ring_size =
        xenio_xen_sys::ring::const_ring_size(xenio_xen_sys::ring::ring_bytes(args.order), entry);
    let warmup = Duration::from_millis(args.warmup_ms);
    let stop = match args.ops {
        Some(n) => Stop::Ops(n),
        None => Stop::After(Duration::from_millis(args.duration_ms)),
    };
    let worst = match stop {
        Stop::After(d) => d,
        Stop::Ops(n) => Duration::from_micros(n.saturating_mul(200)),
    };
    Ok(Plan {
        order: args.order,
        ring_size,
        warmup,
        stop,
        front_core: args.cores.front,
        back_core: args.cores.back,
        yield_cpu: args.cores.front == args.cores.back,
        peer_timeout: Duration::from_secs(60) + warmup + worst,
        corrupt_response: args.debug_corrupt_response,
    })
}

/// Run every configuration `args.reps` times, interleaved, with progress on stderr.
pub fn measure_all(args: &RingArgs) -> Result<RunResults> {
    let plan = plan(args)?;
    if plan.yield_cpu {
        eprintln!(
            "warning: both sides on CPU {}: spinning sides yield, and the numbers measure the scheduler",
            plan.front_core
        );
    }
    sys::pin_to_core(plan.front_core)?;
    let mut configs = configs(args);
    let c_pair = if configs.iter().any(|c| matches!(c, Config::CRing(_))) {
        match cpair::CPair::build() {
            Ok(c) => Some(c),
            Err(why) => {
                eprintln!("warning: the C ring.h pair is left out: {why}");
                configs.retain(|c| !matches!(c, Config::CRing(_)));
                None
            }
        }
    } else {
        None
    };
    let window = match plan.stop {
        Stop::After(d) => format!("{} ms", d.as_millis()),
        Stop::Ops(n) => format!("{n} ops"),
    };
    eprintln!(
        "xenio-bench ring: {} configurations x {} reps, {} each after {} ms warm-up, cores {},{}, ring order {} ({} entries)",
        configs.len(),
        args.reps,
        window,
        plan.warmup.as_millis(),
        plan.front_core,
        plan.back_core,
        plan.order,
        plan.ring_size
    );
    let width = configs.iter().map(|c| c.name().len()).max().unwrap_or(0);
    let mut samples = vec![Vec::with_capacity(args.reps as usize); configs.len()];
    for rep in 1..=args.reps {
        for (config, out) in configs.iter().zip(&mut samples) {
            let s = measure(config, &plan, c_pair.as_ref())?;
            let notif = match config.wait_mode() {
                WaitMode::Event { .. } => format!(
                    ", {:.3} notifications/request ({} by the frontend, {} by the backend)",
                    s.notifications_per_request(),
                    s.front_notifications,
                    s.back_notifications
                ),
                WaitMode::Polling => String::new(),
            };
            eprintln!(
                "[rep {rep}/{}] {:<width$}  {:>9.1} ns/op  {:>7.3} Mops/s  ({} ops){notif}",
                args.reps,
                config.name(),
                s.ns_per_op(),
                s.mops(),
                s.ops
            );
            out.push(s);
        }
    }
    Ok(RunResults {
        plan,
        reps: args.reps,
        configs,
        samples,
    })
}

/// Entry point of the hidden `ring-peer` subcommand.
pub fn run_peer(args: &PeerArgs) -> Result<()> {
    set_pdeathsig(Signal::SIGKILL).map_err(|e| BenchError::os("prctl(PR_SET_PDEATHSIG)", e))?;
    let mut watch = ParentWatch::new(args.parent_pid, args.timeout_s, &args.config);
    // The parent may have died before PR_SET_PDEATHSIG took effect.
    watch.check()?;
    sys::pin_to_core(args.core)?;
    let control = Control::open(&sys::open_inherited(args.control_fd)?)?;
    let wait = match args.wait {
        PeerWait::Polling => WaitMode::Polling,
        PeerWait::Event => WaitMode::Event {
            spin: Duration::from_micros(args.spin_us),
        },
    };
    match args.role {
        PeerRole::RingBackend => {
            let fd = args
                .ring_fd
                .ok_or_else(|| BenchError::Usage("the ring backend needs --ring-fd".to_string()))?;
            let file = sys::open_inherited(fd)?;
            let expected = xenio_xen_sys::ring::ring_bytes(args.order) as u64;
            let len = file
                .metadata()
                .map_err(|e| BenchError::io("stat of the ring file", e))?
                .len();
            if len != expected {
                return Err(BenchError::Usage(format!(
                    "the ring file has {len} bytes, but order {} means {expected}",
                    args.order
                )));
            }
            let mem =
                MmapRegion::from_file(&file).map_err(|e| BenchError::io("mapping the ring", e))?;
            let mut back = BlkifBackRing::attach(mem).map_err(BenchError::back)?;
            let bells = match wait {
                WaitMode::Polling => None,
                WaitMode::Event { .. } => Some(inherited_bells()?),
            };
            let waiting = Waiting::new(wait, bells.as_ref())?;
            control.set_state(STATE_READY);
            let stats = xenio::serve(
                &mut back,
                &control,
                waiting,
                &mut watch,
                args.yield_cpu,
                args.corrupt_response,
            )?;
            control.set_back_served(stats.served);
            control.set_back_notifications(stats.notifications);
            if let Some(first) = stats.tally.first {
                return Err(BenchError::Verification {
                    config: args.config.clone(),
                    side: "backend",
                    errors: stats.tally.errors,
                    first: first.to_string(),
                });
            }
        }
        PeerRole::PingPong => {
            control.set_state(STATE_READY);
            baseline::pingpong_peer(&control, &mut watch, args.yield_cpu)?;
        }
    }
    control.set_state(STATE_DONE);
    Ok(())
}
