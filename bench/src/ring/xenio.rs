//! The xenio ring between two processes: the frontend's loop here, the
//! backend's loop ([`serve`]) in the peer process, over a blkif ring in a
//! shared memfd mapping, polling or with eventfd doorbells.
//!
//! Hot loops allocate nothing (the response and request vectors are reused),
//! polling mode makes no system calls (a liveness check every `2^20` idle spins
//! is the only exception, and only on a stall), and event mode rings a doorbell
//! only when the ring's [`Notify`](xenio_ring::Notify) says `Required`. Event
//! mode's spin window (`--poll-us`) is every poll window's loop,
//! [`xenio_ring::spin::spin_for`], which gives the CPU away every 10 us; with
//! no window a side goes straight to the final check.

use crate::common::error::{BenchError, Result};
use crate::common::sys::{self, Bells};
use crate::ring::args::PeerRole;
use crate::ring::content::{self, Tally, check_request, check_response};
use crate::ring::peer::{Control, PeerProcess, PeerSpawn};
use crate::ring::timing::{POLLING_BATCH, Pipeline, RoundTrips, time_pipeline, time_round_trips};
use crate::ring::types::{Plan, Sample, WaitMode, Workload};
use crate::ring::wait::{Liveness, WatchedSpin, sleep_on};
use std::time::Duration;
use xenio_ring::spin::spin_for;
use xenio_ring::{BlkifBackRing, BlkifFrontRing, MmapRegion, SharedMemory};
use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse};

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
    fn wait_responses(&mut self, spinner: &mut WatchedSpin) -> Result<()> {
        match self.waiting {
            Waiting::Polling => spinner.spin(&mut *self.peer, "a response"),
            Waiting::Event { spin, bells } => self.sleep_for_responses(spin, bells),
        }
    }

    #[inline(never)]
    fn sleep_for_responses(&mut self, spin: Duration, bells: &Bells) -> Result<()> {
        let front = &mut self.front;
        // No spin window, no look at the ring before the final check (the
        // ring's spin_for looks once even for a zero window).
        if !spin.is_zero()
            && spin_for(spin, || {
                Ok(front.unconsumed_responses().map_err(BenchError::front)? > 0)
            })?
        {
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
        let mut spinner = WatchedSpin::new(self.yield_cpu);
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
        let n = self
            .front
            .take_responses_into(&mut self.rsps)
            .map_err(BenchError::front)?;
        for (seq, rsp) in (first..).zip(&self.rsps[..n]) {
            self.tally.record(check_response(rsp, seq));
        }
        Ok(n as u64)
    }

    #[inline]
    fn wait(&mut self, spinner: &mut WatchedSpin) -> Result<()> {
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
    // A ring's worth of requests, kept from batch to batch.
    let mut reqs = vec![BlkifRequest::default(); back.size() as usize];
    let mut stats = ServeStats::default();
    let mut spinner = WatchedSpin::new(yield_cpu);
    loop {
        let n = back
            .take_requests_into(&mut reqs)
            .map_err(BenchError::back)?;
        if n == 0 {
            match waiting {
                Waiting::Polling => {
                    if control.stop_requested() {
                        break;
                    }
                    spinner.spin(peer, "a request")?;
                }
                Waiting::Event { spin, bells } => {
                    // As in the frontend: a zero window goes straight to the
                    // final check.
                    if !spin.is_zero()
                        && spin_for(spin, || {
                            Ok(back.unconsumed_requests().map_err(BenchError::back)? > 0)
                        })?
                    {
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
        spinner = WatchedSpin::new(yield_cpu);
        for req in &reqs[..n] {
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
        rsps: vec![BlkifResponse::default(); size],
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
