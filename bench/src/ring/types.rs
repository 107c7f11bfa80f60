//! The ring benchmark's shared types: what is measured (configurations,
//! workloads, wait modes), the plan every measurement follows, and what comes
//! out of it.

use std::time::Duration;

/// How the two sides of a measurement wait for each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// Both sides spin on the ring; no system calls, no notifications.
    Polling,
    /// A side that finds no work spins for `spin`, then does the ring's final check
    /// and sleeps on its eventfd; pushes notify the peer only when the ring says so.
    Event {
        /// The spin window before sleeping (zero: sleep at once).
        spin: Duration,
    },
}

impl WaitMode {
    /// A short label: `polling`, `event` or `event+spin<N>us`.
    pub fn label(self) -> String {
        match self {
            WaitMode::Polling => "polling".to_string(),
            WaitMode::Event { spin } if spin.is_zero() => "event".to_string(),
            WaitMode::Event { spin } => format!("event+spin{}us", spin.as_micros()),
        }
    }
}

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
    /// Baseline: the same ring layout and workload in C with Xen's `io/ring.h`
    /// macros, polling (`ring/c/ringpair.c`).
    CRing(Workload),
}

impl Config {
    /// A short unique name, e.g. `ring throughput event`.
    pub fn name(&self) -> String {
        match self {
            Config::PingPong => "pingpong latency".to_string(),
            Config::Rtrb(w) => format!("rtrb {}", w.label()),
            Config::Ring(w, m) => format!("ring {} {}", w.label(), m.label()),
            Config::CRing(w) => format!("c-ring.h {} polling", w.label()),
        }
    }

    /// Its workload.
    pub fn workload(&self) -> Workload {
        match self {
            Config::PingPong => Workload::Latency,
            Config::Rtrb(w) | Config::Ring(w, _) | Config::CRing(w) => *w,
        }
    }

    /// How its sides wait (the baselines always spin).
    pub fn wait_mode(&self) -> WaitMode {
        match self {
            Config::Ring(_, m) => *m,
            _ => WaitMode::Polling,
        }
    }

    /// `pingpong`, `rtrb`, `ring` or `c-ring.h`.
    pub fn kind(&self) -> &'static str {
        match self {
            Config::PingPong => "pingpong",
            Config::Rtrb(_) => "rtrb",
            Config::Ring(..) => "ring",
            Config::CRing(_) => "c-ring.h",
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
