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

use xenio_ring::wait::{Wait, WaitPolicy, WaitStats};

/// Waits over which the depth is the most requests in flight.
pub(crate) const DEPTH_WINDOW: u32 = 256;

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
        }
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
    /// progress, else the one for `requests` in flight against the depth.
    pub(crate) fn begin(&mut self, requests: usize) -> &mut WaitPolicy {
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
        self.policy(kind)
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
            format!("depth {}", self.depth),
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
            let _ = w.begin(n).spin(|| Ok::<_, ()>(false));
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
        let p = w.begin(0);
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
            w.report().starts_with("depth 1; turnaround:"),
            "{}",
            w.report()
        );
    }
}
