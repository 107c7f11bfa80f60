//! The poll window: how long a queue spins looking for work before it sleeps
//! on its event channel or its storage's completion descriptor.
//!
//! A sleep and the wake-up that ends it cost 13-36 us on small VMs, more than a
//! fast disk's I/O, so spinning a little can halve a request's latency; but a
//! spin that finds nothing is a core taken from the frontend and the disk. The
//! adaptive window does what KVM's halt-polling does for idle vCPUs: it grows
//! (doubling, from [`START`]) while the work that woke a sleep came soon enough
//! that a longer spin would have caught it, and drops to zero when it did not
//! (the queue was idle for longer than the largest window). With a fixed window
//! it always spins the configured time.

use std::time::Duration;

/// Where an adaptive window starts growing from.
pub const START: Duration = Duration::from_micros(10);

/// One queue's poll window.
#[derive(Clone, Debug)]
pub struct PollWindow {
    max: Duration,
    current: Duration,
    adaptive: bool,
}

impl PollWindow {
    /// A window of at most `max` (zero: never spin); `adaptive`: grow and shrink
    /// with what the sleeps show, else always `max`.
    pub fn new(max: Duration, adaptive: bool) -> Self {
        PollWindow {
            max,
            current: if adaptive { START.min(max) } else { max },
            adaptive,
        }
    }

    /// How long to spin now.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The spin found nothing and the queue slept for `slept` before it was woken
    /// (or its sleep timed out).
    pub fn slept(&mut self, slept: Duration) {
        if !self.adaptive || self.max.is_zero() {
            return;
        }
        self.current = if slept <= self.max {
            // A spin this much longer would have caught it: grow.
            (self.current * 2).max(START).min(self.max)
        } else {
            // Idle for longer than any window: spinning was wasted.
            Duration::ZERO
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn fixed_windows_never_move() {
        let mut w = PollWindow::new(50 * US, false);
        assert_eq!(w.current(), 50 * US);
        w.slept(US);
        w.slept(Duration::from_secs(1));
        assert_eq!(w.current(), 50 * US);
        let mut z = PollWindow::new(Duration::ZERO, true);
        z.slept(US);
        assert_eq!(z.current(), Duration::ZERO);
    }

    #[test]
    fn adaptive_grows_on_short_sleeps_and_resets_on_long_ones() {
        let mut w = PollWindow::new(100 * US, true);
        assert_eq!(w.current(), START);
        let mut seen = vec![w.current()];
        for _ in 0..6 {
            w.slept(30 * US);
            seen.push(w.current());
        }
        assert_eq!(
            seen,
            [10, 20, 40, 80, 100, 100, 100].map(|n| n * US),
            "doubling up to the maximum"
        );
        w.slept(101 * US);
        assert_eq!(w.current(), Duration::ZERO, "an idle queue stops spinning");
        w.slept(5 * US);
        assert_eq!(w.current(), START, "and starts again from START");
    }

    #[test]
    fn a_maximum_below_start_is_respected() {
        let mut w = PollWindow::new(4 * US, true);
        assert_eq!(w.current(), 4 * US);
        w.slept(US);
        assert_eq!(w.current(), 4 * US);
    }
}
