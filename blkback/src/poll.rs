//! How a queue waits when it has nothing to do: spin or sleep, as
//! [`xenio_ring::wait`] decides.
//!
//! A queue waits for different things, with different rhythms, so it keeps a
//! [`WaitPolicy`] for each, chosen by how many requests it has in flight
//! against how many the frontend has lately kept in flight (its depth, the
//! most in flight over the last [`DEPTH_WINDOW`] waits):
//!
//! - **turnaround**: fewer in flight than the depth. The frontend has
//!   requests to queue (it reaps the responses just published and sends
//!   more): tens of microseconds at any depth, on any disk. This is the wait
//!   that spinning shortens most.
//! - **completions**: as many in flight as the depth: everything the
//!   frontend keeps in flight is with the storage, and the next event is its
//!   completion. Microseconds for memory, tens of microseconds for one 4 KiB
//!   read on a fast disk, hundreds for a burst of 32, milliseconds for 1 MiB.
//! - **requests**: nothing in flight and no depth: an idle device, or a
//!   frontend that paused. Long, usually.
//!
//! Each learns from its own history, so a queue spins for the frontend's
//! turnaround and sleeps through a long burst on the same disk.
//!
//! A turnaround is spun only while it is worth it against the storage's
//! service time (submission to completion, averaged over the queue's
//! operations): spinning through it saves the queue one wake-up (tens of
//! microseconds) before the next requests reach the storage, which matters
//! for 4 KiB operations (hundreds of microseconds at QD32) but not for 1 MiB
//! ones (milliseconds), where the spin is pure CPU: up to its budget for
//! every request. So a turnaround is slept through when the service time is
//! more than [`TURNAROUND_SHARE`] times what the spin could save: its budget,
//! or a wake-up ([`WAKE_UP`]) if that is longer (1.6 ms or more).

use std::time::Duration;
use xenio_ring::wait::{Wait, WaitPolicy, WaitStats};

/// Waits over which the depth is the most requests in flight.
pub(crate) const DEPTH_WINDOW: u32 = 256;

/// A turnaround is spun only while what the spin saves (its budget, at least
/// a [`WAKE_UP`]) is at least this share (1/32) of the storage's mean service
/// time: sleeping through it then adds at most about 3% to an operation's
/// time.
pub(crate) const TURNAROUND_SHARE: u32 = 32;

/// What a sleep costs in latency, for [`TURNAROUND_SHARE`]: the wake-ups
/// measured on small VMs took 13-36 us, 50 us under load.
pub(crate) const WAKE_UP: Duration = Duration::from_micros(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Turnaround,
    Completions,
    Requests,
}

/// One queue's waits.
#[derive(Debug)]
pub(crate) struct Waits {
    turnaround: WaitPolicy,
    completions: WaitPolicy,
    requests: WaitPolicy,
    /// The wait in progress.
    current: Option<Kind>,
    /// The most requests in flight over the current and the last window.
    depth: usize,
    window_max: usize,
    window_waits: u32,
    /// Mean service time of the storage's operations, in ns (1/8 per
    /// operation; 0: none yet).
    service_ns: u64,
    /// Turnarounds slept through because the storage is slow
    /// ([`TURNAROUND_SHARE`]).
    slow_turnarounds: u64,
    /// The spin cap of the wait in progress.
    cap: Duration,
}

impl Waits {
    pub(crate) fn new(mode: Wait) -> Self {
        Waits {
            turnaround: WaitPolicy::new(mode),
            completions: WaitPolicy::new(mode),
            requests: WaitPolicy::new(mode),
            current: None,
            depth: 0,
            window_max: 0,
            window_waits: 0,
            service_ns: 0,
            slow_turnarounds: 0,
            cap: Duration::MAX,
        }
    }

    /// A storage operation took `d` from submission to completion.
    pub(crate) fn io_took(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.service_ns = if self.service_ns == 0 {
            ns
        } else {
            // old + (new - old) / 8, with the new one at most twice the mean:
            // an outlier (a disk stalled for 10 ms under a 4 KiB read) moves
            // the mean by at most 1/8, so that one slow operation does not
            // make a fast queue sleep through its turnarounds; a queue whose
            // operations all take long still gets there (12% per operation).
            let old = i128::from(self.service_ns);
            let new = i128::from(ns).min(2 * old);
            (old + ((new - old) >> 3)) as u64
        };
    }

    fn policy(&mut self, k: Kind) -> &mut WaitPolicy {
        match k {
            Kind::Turnaround => &mut self.turnaround,
            Kind::Completions => &mut self.completions,
            Kind::Requests => &mut self.requests,
        }
    }

    /// Requests are in flight now (taken from the ring, not answered yet):
    /// part of the depth.
    pub(crate) fn in_flight(&mut self, requests: usize) {
        self.window_max = self.window_max.max(requests);
        self.depth = self.depth.max(requests);
    }

    /// The policy of the wait that begins now, or goes on: the one in
    /// progress, else the one for `requests` in flight against the depth;
    /// and the longest it may spin ([`WaitPolicy::spin_at_most`]): zero for
    /// an adaptive turnaround on storage too slow for the spin to pay
    /// ([`TURNAROUND_SHARE`]), no limit otherwise.
    pub(crate) fn begin(&mut self, requests: usize) -> (&mut WaitPolicy, Duration) {
        let going_on = self.current.filter(|&k| self.policy(k).waiting());
        let kind = match going_on {
            Some(k) => k,
            None => {
                self.in_flight(requests);
                self.window_waits += 1;
                if self.window_waits >= DEPTH_WINDOW {
                    // The depth of the last window and this one, so that a
                    // frontend that goes shallower is followed.
                    self.depth = self.window_max.max(requests);
                    self.window_max = requests;
                    self.window_waits = 0;
                }
                if requests < self.depth {
                    Kind::Turnaround
                } else if requests > 0 {
                    Kind::Completions
                } else {
                    Kind::Requests
                }
            }
        };
        self.current = Some(kind);
        let slow = kind == Kind::Turnaround
            && going_on.is_none()
            && self.turnaround.mode() == Wait::Adaptive
            && {
                let budget = self.turnaround.spin_budget();
                !budget.is_zero()
                    && u128::from(self.service_ns)
                        > budget.max(WAKE_UP).as_nanos() * u128::from(TURNAROUND_SHARE)
            };
        if slow {
            self.slow_turnarounds += 1;
        }
        if going_on.is_none() {
            self.cap = if slow { Duration::ZERO } else { Duration::MAX };
        }
        let cap = self.cap;
        (self.policy(kind), cap)
    }

    /// Work was found: the wait in progress is over.
    pub(crate) fn ended(&mut self) {
        if let Some(k) = self.current.take() {
            self.policy(k).ended();
        }
    }

    /// How each kind of wait went, for the log.
    pub(crate) fn report(&self) -> String {
        let line = |name: &str, s: WaitStats| format!("{name}: {s}");
        [
            format!(
                "depth {}, storage service {} us, {} turnarounds slept for it",
                self.depth,
                self.service_ns / 1000,
                self.slow_turnarounds
            ),
            line("turnaround", self.turnaround.stats()),
            line("completions", self.completions.stats()),
            line("requests", self.requests.stats()),
        ]
        .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_wait_is_chosen_by_the_requests_in_flight_against_the_depth() {
        let mut w = Waits::new(Wait::Fixed(Duration::ZERO));
        let kind = |w: &mut Waits, n: usize| {
            let _ = w.begin(n).0.spin(|| Ok::<_, ()>(false));
            let k = w.current;
            w.ended();
            k
        };
        // Nothing in flight, no depth yet: requests.
        assert_eq!(kind(&mut w, 0), Some(Kind::Requests));
        // A frontend at depth 4: waits with all 4 in flight are for the
        // storage, waits with fewer for the frontend.
        w.in_flight(4);
        assert_eq!(kind(&mut w, 4), Some(Kind::Completions));
        assert_eq!(kind(&mut w, 1), Some(Kind::Turnaround));
        assert_eq!(kind(&mut w, 0), Some(Kind::Turnaround));
        // A wait that goes on (a sleep that found nothing) keeps its kind.
        let (p, _) = w.begin(0);
        assert_eq!(p.spin(|| Ok::<_, ()>(false)), Ok(false));
        w.begin(4);
        assert_eq!(w.current, Some(Kind::Turnaround));
        w.ended();
        // The frontend goes to depth 1: after two windows, the depth is 1.
        for _ in 0..2 * DEPTH_WINDOW {
            kind(&mut w, 1);
        }
        assert_eq!(kind(&mut w, 1), Some(Kind::Completions));
        assert_eq!(kind(&mut w, 0), Some(Kind::Turnaround));
        assert!(
            w.report().starts_with("depth 1, storage service 0 us"),
            "{}",
            w.report()
        );
    }

    #[test]
    fn turnarounds_are_slept_through_on_slow_storage() {
        let us = Duration::from_micros;
        let mut w = Waits::new(Wait::Adaptive);
        w.in_flight(8);
        for _ in 0..20 {
            w.turnaround.record(us(30));
        }
        let budget = w.turnaround.spin_budget();
        assert!(!budget.is_zero() && budget < us(100), "{budget:?}");
        // 4 KiB at QD32 on a disk: ~400 us per operation, the spin pays;
        // at 1 ms too (a wake-up is 5% of it), though the budget is 1/25.
        for d in [us(400), us(1000)] {
            for _ in 0..50 {
                w.io_took(d);
            }
            assert_eq!(w.begin(4).1, Duration::MAX, "{d:?}");
            w.ended();
        }
        // 1 MiB: ~5 ms per operation, the turnaround is slept through ...
        for _ in 0..50 {
            w.io_took(Duration::from_millis(5));
        }
        let (p, cap) = w.begin(4);
        assert_eq!(cap, Duration::ZERO);
        assert_eq!(p.spin_at_most(cap, || Ok::<_, ()>(false)), Ok(false));
        assert_eq!(p.stats().missed, 0, "no spin, so no missed spin");
        // ... also when the wait goes on after a sleep that found nothing.
        assert_eq!(w.begin(4).1, Duration::ZERO);
        w.ended();
        // One stalled operation on a fast queue does not make it sleep.
        let mut q = Waits::new(Wait::Adaptive);
        q.in_flight(8);
        for _ in 0..20 {
            q.turnaround.record(us(30));
        }
        for _ in 0..50 {
            q.io_took(us(100));
        }
        q.io_took(Duration::from_millis(20));
        assert_eq!(q.begin(4).1, Duration::MAX, "{}", q.report());
        // Waits for completions are not capped.
        assert_eq!(w.begin(8).1, Duration::MAX);
        w.ended();
        assert!(
            w.report().contains("storage service 49")
                && w.report().contains(", 1 turnarounds slept for it"),
            "{}",
            w.report()
        );
        // A fixed window is spun as told.
        let mut f = Waits::new(Wait::Fixed(us(50)));
        f.in_flight(8);
        for _ in 0..50 {
            f.io_took(Duration::from_millis(5));
        }
        assert_eq!(f.begin(4).1, Duration::MAX);
    }
}
