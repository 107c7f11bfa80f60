//! The two ways a frontend is timed, whatever it talks to (the xenio ring, the
//! ping-pong, the rtrb pair): one round trip at a time ([`RoundTrips`]), or the
//! queue kept full ([`Pipeline`]); each warms up, then times a window.

use crate::common::error::Result;
use crate::ring::types::{Plan, Stop};
use crate::ring::wait::WatchedSpin;
use std::time::{Duration, Instant};

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
    fn wait(&mut self, spinner: &mut WatchedSpin) -> Result<()>;
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
    let mut spinner = WatchedSpin::new(plan.yield_cpu);
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
        spinner = WatchedSpin::new(plan.yield_cpu);
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
