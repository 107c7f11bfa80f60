//! The ring micro-benchmark: its configurations, the frontend's and the backend's
//! loops, and the driver that interleaves repetitions.
//!
//! One measurement = one configuration once: fresh shared memory, a fresh peer
//! process (or thread), an untimed warm-up, then a timed window of
//! `--duration-ms` (or `--ops` ops), then a clean stop in which the backend's
//! request count is checked against the frontend's.
//!
//! Hot loops allocate nothing (the response and request vectors are reused),
//! polling mode makes no system calls (a liveness check every `2^20` idle spins
//! is the only exception, and only on a stall), and event mode rings a doorbell
//! only when the ring's [`Notify`](xenio_ring::Notify) says `Required`.

use crate::baseline;
use crate::cli::{ModeFilter, PeerRole, RingArgs};
use crate::common::error::{BenchError, Result};
use crate::common::sys::{self, Bells};
use crate::content::{self, Tally, check_request, check_response};
use crate::peer::{Control, PeerProcess, PeerSpawn};
use crate::wait::{Liveness, Spinner, WaitMode, sleep_on, spin_for};
use std::time::{Duration, Instant};
use xenio_ring::{BlkifBackRing, BlkifFrontRing, MmapRegion, SharedMemory};
use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse};

/// What the frontend does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One request outstanding; an op is a round trip.
    Latency,
    /// The ring kept full; an op is a completed request.
    Throughput,
}

impl Workload {
    /// `latency` or `throughput`.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Latency => "latency",
            Workload::Throughput => "throughput",
        }
    }
}

/// One thing measured in each repetition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// Baseline: a cache line bounced between two processes.
    PingPong,
    /// Baseline: a pair of rtrb queues between two threads.
    Rtrb(Workload),
    /// The xenio blkif ring between two processes.
    Ring(Workload, WaitMode),
}

impl Config {
    /// A short unique name, e.g. `ring throughput event`.
    pub fn name(&self) -> String {
        match self {
            Config::PingPong => "pingpong latency".to_string(),
            Config::Rtrb(w) => format!("rtrb {}", w.label()),
            Config::Ring(w, m) => format!("ring {} {}", w.label(), m.label()),
        }
    }

    /// Its workload.
    pub fn workload(&self) -> Workload {
        match self {
            Config::PingPong => Workload::Latency,
            Config::Rtrb(w) | Config::Ring(w, _) => *w,
        }
    }

    /// How its sides wait (the baselines always spin).
    pub fn wait_mode(&self) -> WaitMode {
        match self {
            Config::Ring(_, m) => *m,
            _ => WaitMode::Polling,
        }
    }

    /// `pingpong`, `rtrb` or `ring`.
    pub fn kind(&self) -> &'static str {
        match self {
            Config::PingPong => "pingpong",
            Config::Rtrb(_) => "rtrb",
            Config::Ring(..) => "ring",
        }
    }
}

/// When a measurement's timed window ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many ops.
    Ops(u64),
}

/// Everything a measurement needs to know about the run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Ring page order.
    pub order: u32,
    /// Entries in a ring of that order (also the rtrb capacity).
    pub ring_size: u32,
    /// Untimed warm-up.
    pub warmup: Duration,
    /// End of the timed window.
    pub stop: Stop,
    /// Frontend's CPU.
    pub front_core: usize,
    /// Backend's CPU.
    pub back_core: usize,
    /// Both on one CPU: spinners yield.
    pub yield_cpu: bool,
    /// A peer's time limit.
    pub peer_timeout: Duration,
    /// Testing aid: the ring backend answers this request number with a wrong id.
    pub corrupt_response: Option<u64>,
}

/// The outcome of one measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Ops completed in the timed window.
    pub ops: u64,
    /// Length of the timed window.
    pub elapsed: Duration,
    /// Doorbells the frontend rang in the window.
    pub front_notifications: u64,
    /// Doorbells the backend rang in the window.
    pub back_notifications: u64,
}

impl Sample {
    /// Nanoseconds per op (round-trip time for latency, inverse rate for throughput).
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e9 / self.ops as f64
    }

    /// Millions of ops per second.
    pub fn mops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Doorbells rung in the window, both directions together.
    pub fn notifications(&self) -> u64 {
        self.front_notifications + self.back_notifications
    }

    /// Doorbells per request, both directions together.
    pub fn notifications_per_request(&self) -> f64 {
        self.notifications() as f64 / self.ops as f64
    }
}

/// The timed part of one run of a frontend loop.
#[derive(Clone, Copy, Debug)]
pub struct Timed {
    /// Ops in the timed window.
    pub ops: u64,
    /// Length of the window.
    pub elapsed: Duration,
    /// Requests issued in all (warm-up included): what the backend must have served.
    pub total: u64,
}

/// A frontend that does one round trip at a time.
pub trait RoundTrips {
    /// Send request `seq`, wait for its response, check it.
    fn round_trip(&mut self, seq: u64) -> Result<()>;
    /// The timed window starts now (snapshot counters).
    fn window_started(&mut self) {}
}

/// Round trips between time checks when spinning (keeps `Instant::now` out of
/// the per-op cost).
pub const POLLING_BATCH: u64 = 64;

/// Warm up, then time round trips until `plan.stop`.
pub fn time_round_trips<R: RoundTrips>(r: &mut R, plan: &Plan, batch: u64) -> Result<Timed> {
    let mut seq = 0;
    let start = Instant::now();
    while start.elapsed() < plan.warmup {
        for _ in 0..batch {
            r.round_trip(seq)?;
            seq += 1;
        }
    }
    r.window_started();
    let t0 = Instant::now();
    let seq0 = seq;
    match plan.stop {
        Stop::Ops(n) => {
            for _ in 0..n {
                r.round_trip(seq)?;
                seq += 1;
            }
        }
        Stop::After(d) => loop {
            for _ in 0..batch {
                r.round_trip(seq)?;
                seq += 1;
            }
            if t0.elapsed() >= d {
                break;
            }
        },
    }
    Ok(Timed {
        ops: seq - seq0,
        elapsed: t0.elapsed(),
        total: seq,
    })
}

/// A frontend that keeps many requests in flight.
pub trait Pipeline {
    /// How many may be outstanding.
    fn capacity(&self) -> u64;
    /// Write requests `first..first + n` (or as many as fit) and publish them at
    /// once; returns how many.
    fn issue(&mut self, first: u64, n: u64) -> Result<u64>;
    /// Take every response available, check them against `first..`, return how many.
    fn harvest(&mut self, first: u64) -> Result<u64>;
    /// Nothing to harvest: wait (one spin, or until the peer rings).
    fn wait(&mut self, spinner: &mut Spinner) -> Result<()>;
    /// The timed window starts now (snapshot counters).
    fn window_started(&mut self) {}
}

/// Warm up, then keep the pipeline full until `plan.stop`, then drain it. The
/// window ends when the last response is in.
pub fn time_pipeline<P: Pipeline>(p: &mut P, plan: &Plan) -> Result<Timed> {
    let cap = p.capacity();
    let (mut issued, mut completed) = (0u64, 0u64);
    let start = Instant::now();
    let mut window = None;
    let mut limit = u64::MAX;
    if plan.warmup.is_zero() {
        p.window_started();
        window = Some((start, 0));
        if let Stop::Ops(n) = plan.stop {
            limit = n;
        }
    }
    let mut spinner = Spinner::new(plan.yield_cpu);
    loop {
        let n = (cap - (issued - completed)).min(limit.saturating_sub(issued));
        if n > 0 {
            issued += p.issue(issued, n)?;
        }
        let got = p.harvest(completed)?;
        if got == 0 {
            if issued == completed && issued >= limit {
                break;
            }
            p.wait(&mut spinner)?;
            continue;
        }
        completed += got;
        spinner = Spinner::new(plan.yield_cpu);
        match window {
            None => {
                if start.elapsed() >= plan.warmup {
                    p.window_started();
                    window = Some((Instant::now(), completed));
                    if let Stop::Ops(n) = plan.stop {
                        limit = completed + n;
                    }
                }
            }
            Some((t0, _)) => {
                if let Stop::After(d) = plan.stop {
                    if limit == u64::MAX && t0.elapsed() >= d {
                        limit = issued;
                    }
                }
            }
        }
    }
    let (t0, c0) = window.unwrap_or((start, 0));
    Ok(Timed {
        ops: completed - c0,
        elapsed: t0.elapsed(),
        total: issued,
    })
}

/// How a ring side waits, with the doorbells it needs.
#[derive(Clone, Copy, Debug)]
pub enum Waiting<'a> {
    /// Spin.
    Polling,
    /// Spin for `spin`, final check, sleep on a doorbell.
    Event {
        /// The spin window.
        spin: Duration,
        /// Both doorbells.
        bells: &'a Bells,
    },
}

impl<'a> Waiting<'a> {
    /// Pair a [`WaitMode`] with its doorbells (required in event mode).
    pub fn new(mode: WaitMode, bells: Option<&'a Bells>) -> Result<Self> {
        match (mode, bells) {
            (WaitMode::Polling, _) => Ok(Waiting::Polling),
            (WaitMode::Event { spin }, Some(bells)) => Ok(Waiting::Event { spin, bells }),
            (WaitMode::Event { .. }, None) => {
                Err(BenchError::Usage("event mode needs doorbells".to_string()))
            }
        }
    }
}

/// The frontend side of a ring measurement.
struct RingFront<'a> {
    front: BlkifFrontRing<MmapRegion>,
    control: &'a Control,
    peer: &'a mut PeerProcess,
    waiting: Waiting<'a>,
    yield_cpu: bool,
    notifications: u64,
    notifications_at_window: u64,
    back_notifications_at_window: u32,
    tally: Tally,
    rsps: Vec<BlkifResponse>,
}

impl RingFront<'_> {
    /// Publish written requests; in event mode ring the backend if the ring says so.
    #[inline]
    fn publish(&mut self) -> Result<()> {
        match self.waiting {
            // Polling: nobody sleeps, so nobody needs telling (RING_PUSH_REQUESTS).
            Waiting::Polling => self.front.push_requests(),
            Waiting::Event { bells, .. } => {
                if self.front.push_requests_and_check_notify().is_required() {
                    bells.to_back.ring()?;
                    self.notifications += 1;
                }
            }
        }
        Ok(())
    }

    /// No response yet: spin once, or (event mode) spin for the window, do the final
    /// check and sleep until the backend rings.
    #[inline(always)]
    fn wait_responses(&mut self, spinner: &mut Spinner) -> Result<()> {
        match self.waiting {
            Waiting::Polling => spinner.spin(&mut *self.peer, "a response"),
            Waiting::Event { spin, bells } => self.sleep_for_responses(spin, bells),
        }
    }

    #[inline(never)]
    fn sleep_for_responses(&mut self, spin: Duration, bells: &Bells) -> Result<()> {
        let front = &mut self.front;
        if spin_for(spin, || {
            Ok(front.unconsumed_responses().map_err(BenchError::front)? > 0)
        })? {
            return Ok(());
        }
        if self
            .front
            .final_check_for_responses()
            .map_err(BenchError::front)?
        {
            return Ok(());
        }
        sleep_on(&bells.to_front, &mut *self.peer, "a response")
    }

    fn snapshot(&mut self) {
        self.notifications_at_window = self.notifications;
        self.back_notifications_at_window = self.control.back_notifications();
    }
}

impl RoundTrips for RingFront<'_> {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        self.front
            .push_request(&content::request(seq))
            .map_err(BenchError::front)?;
        self.publish()?;
        let mut spinner = Spinner::new(self.yield_cpu);
        loop {
            if let Some(rsp) = self.front.take_response().map_err(BenchError::front)? {
                self.tally.record(check_response(&rsp, seq));
                return Ok(());
            }
            self.wait_responses(&mut spinner)?;
        }
    }

    fn window_started(&mut self) {
        self.snapshot();
    }
}

impl Pipeline for RingFront<'_> {
    fn capacity(&self) -> u64 {
        u64::from(self.front.size())
    }

    #[inline]
    fn issue(&mut self, first: u64, n: u64) -> Result<u64> {
        for seq in first..first + n {
            self.front
                .push_request(&content::request(seq))
                .map_err(BenchError::front)?;
        }
        self.publish()?;
        Ok(n)
    }

    #[inline]
    fn harvest(&mut self, first: u64) -> Result<u64> {
        self.rsps.clear();
        let n = self
            .front
            .take_responses(&mut self.rsps)
            .map_err(BenchError::front)?;
        for (seq, rsp) in (first..).zip(&self.rsps) {
            self.tally.record(check_response(rsp, seq));
        }
        Ok(n as u64)
    }

    #[inline]
    fn wait(&mut self, spinner: &mut Spinner) -> Result<()> {
        self.wait_responses(spinner)
    }

    fn window_started(&mut self) {
        self.snapshot();
    }
}

/// What the backend did in one measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeStats {
    /// Requests answered.
    pub served: u64,
    /// Doorbells rung towards the frontend.
    pub notifications: u64,
    /// Requests that did not carry what they should have.
    pub tally: Tally,
}

/// The backend's loop: take every published request, check it, answer it, publish
/// all answers at once; when idle, spin (polling) or do the final check and sleep
/// (event). Returns when idle and `control` says stop.
pub fn serve<M: SharedMemory, L: Liveness>(
    back: &mut BlkifBackRing<M>,
    control: &Control,
    waiting: Waiting<'_>,
    peer: &mut L,
    yield_cpu: bool,
    corrupt_response: Option<u64>,
) -> Result<ServeStats> {
    let corrupt_at = corrupt_response.unwrap_or(u64::MAX);
    let mut reqs: Vec<BlkifRequest> = Vec::with_capacity(back.size() as usize);
    let mut stats = ServeStats::default();
    let mut spinner = Spinner::new(yield_cpu);
    loop {
        reqs.clear();
        let n = back.take_requests(&mut reqs).map_err(BenchError::back)?;
        if n == 0 {
            match waiting {
                Waiting::Polling => {
                    if control.stop_requested() {
                        break;
                    }
                    spinner.spin(peer, "a request")?;
                }
                Waiting::Event { spin, bells } => {
                    if spin_for(spin, || {
                        Ok(back.unconsumed_requests().map_err(BenchError::back)? > 0)
                    })? {
                        continue;
                    }
                    if back.final_check_for_requests().map_err(BenchError::back)? {
                        continue;
                    }
                    if control.stop_requested() {
                        break;
                    }
                    sleep_on(&bells.to_back, peer, "a request")?;
                }
            }
            continue;
        }
        spinner = Spinner::new(yield_cpu);
        for req in &reqs {
            let seq = stats.served;
            stats.tally.record(check_request(req, seq));
            let mut rsp = content::response(req);
            if seq == corrupt_at {
                rsp.id = rsp.id.wrapping_add(1);
            }
            back.push_response(&rsp).map_err(BenchError::back)?;
            stats.served += 1;
        }
        match waiting {
            Waiting::Polling => back.push_responses(),
            Waiting::Event { bells, .. } => {
                if back.push_responses_and_check_notify().is_required() {
                    bells.to_front.ring()?;
                    stats.notifications += 1;
                    control.set_back_notifications(stats.notifications);
                }
            }
        }
    }
    Ok(stats)
}

/// Measure the xenio ring once: `workload` in `mode` between this process and a
/// backend process.
pub fn measure_ring(
    plan: &Plan,
    workload: Workload,
    mode: WaitMode,
    config: &str,
) -> Result<Sample> {
    let ring_file = sys::shared_file(
        "xenio-bench-ring",
        xenio_xen_sys::ring::ring_bytes(plan.order) as u64,
    )?;
    let mem =
        MmapRegion::from_file(&ring_file).map_err(|e| BenchError::io("mapping the ring", e))?;
    let front = BlkifFrontRing::init(mem).map_err(BenchError::front)?;
    let (control_file, control) = Control::create()?;
    let bells = match mode {
        WaitMode::Polling => None,
        WaitMode::Event { .. } => Some(Bells::new()?),
    };
    let mut peer = PeerProcess::spawn(PeerSpawn {
        config,
        role: PeerRole::RingBackend,
        wait: mode,
        order: plan.order,
        core: plan.back_core,
        yield_cpu: plan.yield_cpu,
        timeout: plan.peer_timeout,
        ring: Some(&ring_file),
        control: &control_file,
        bells: bells.as_ref(),
        corrupt_response: plan.corrupt_response,
    })?;
    drop((ring_file, control_file));
    peer.wait_ready(&control)?;

    let size = front.size() as usize;
    let mut fe = RingFront {
        front,
        control: &control,
        peer: &mut peer,
        waiting: Waiting::new(mode, bells.as_ref())?,
        yield_cpu: plan.yield_cpu,
        notifications: 0,
        notifications_at_window: 0,
        back_notifications_at_window: 0,
        tally: Tally::default(),
        rsps: Vec::with_capacity(size),
    };
    let timed = match (workload, mode) {
        (Workload::Latency, WaitMode::Polling) => time_round_trips(&mut fe, plan, POLLING_BATCH),
        (Workload::Latency, WaitMode::Event { .. }) => time_round_trips(&mut fe, plan, 1),
        (Workload::Throughput, _) => time_pipeline(&mut fe, plan),
    };
    let front_notifications = fe.notifications - fe.notifications_at_window;
    let back_at_window = fe.back_notifications_at_window;
    let tally = fe.tally;
    drop(fe);

    // Stop the backend: it exits once idle and told so (woken if asleep). On error,
    // dropping `peer` kills it.
    control.request_stop();
    if let Some(b) = &bells {
        b.to_back.ring()?;
    }
    let timed = timed?;
    peer.finish()?;
    if let Some(first) = tally.first {
        return Err(BenchError::Verification {
            config: config.to_string(),
            side: "frontend",
            errors: tally.errors,
            first: first.to_string(),
        });
    }
    let served = control.back_served();
    if served != timed.total {
        return Err(BenchError::Verification {
            config: config.to_string(),
            side: "backend",
            errors: served.abs_diff(timed.total),
            first: format!(
                "it served {served} requests, the frontend sent {}",
                timed.total
            ),
        });
    }
    let back_notifications = u64::from(control.back_notifications().wrapping_sub(back_at_window));
    Ok(Sample {
        ops: timed.ops,
        elapsed: timed.elapsed,
        front_notifications,
        back_notifications,
    })
}

/// Measure `config` once.
pub fn measure(config: &Config, plan: &Plan) -> Result<Sample> {
    let name = config.name();
    match *config {
        Config::PingPong => baseline::measure_pingpong(plan, &name),
        Config::Rtrb(w) => baseline::measure_rtrb(plan, w, &name),
        Config::Ring(w, m) => measure_ring(plan, w, m, &name),
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
    for w in [Workload::Latency, Workload::Throughput] {
        out.extend(modes.iter().map(|&m| Config::Ring(w, m)));
    }
    out
}

/// Everything a run measured.
#[derive(Clone, Debug)]
pub struct RunResults {
    /// The plan every measurement followed.
    pub plan: Plan,
    /// Repetitions.
    pub reps: u32,
    /// The configurations, in measuring order.
    pub configs: Vec<Config>,
    /// `samples[i][r]`: configuration `i` in repetition `r`.
    pub samples: Vec<Vec<Sample>>,
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
pub fn run(args: &RingArgs) -> Result<RunResults> {
    let plan = plan(args)?;
    if plan.yield_cpu {
        eprintln!(
            "warning: both sides on CPU {}: spinning sides yield, and the numbers measure the scheduler",
            plan.front_core
        );
    }
    sys::pin_to_core(plan.front_core)?;
    let configs = configs(args);
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
            let s = measure(config, &plan)?;
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
