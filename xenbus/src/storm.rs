//! Event storms (XSA-332, CVE-2020-27673: "a high rate of events to dom0"): a
//! peer that notifies an event channel in a tight loop without giving any work
//! makes its owner wake up, look, find nothing and sleep again, as fast as the
//! peer can notify. [`SpuriousEvents`] is Linux's answer ("lateeoi",
//! `drivers/xen/events/events_base.c`) for a driver's own wait loop: count the
//! events after which the owner found nothing to do, and after more than two
//! in a row hold off before looking at the channel again, doubling the pause
//! up to [`MAX_DELAY`]; an event that brings work, or a wait that ends without
//! any event, resets it. A well-behaved peer notifies only when the ring
//! protocol says it must, so it never meets the pause (at most one spurious
//! event follows each real one).

use std::time::Duration;

/// The longest pause (Linux: one second; shorter here so that a driver's
/// stop flag, checked between waits, is still seen promptly).
pub const MAX_DELAY: Duration = Duration::from_millis(100);

/// Spurious events in a row before the first pause (Linux: 2).
const TOLERATED: u32 = 2;

/// One event channel's count of spurious events.
#[derive(Clone, Debug, Default)]
pub struct SpuriousEvents {
    /// An event woke the owner and it has found no work since.
    woken: bool,
    /// Spurious events in a row.
    spurious: u32,
    /// Spurious events in all (for counters).
    total: u64,
}

impl SpuriousEvents {
    /// A new count.
    pub fn new() -> Self {
        Self::default()
    }

    /// An event woke the owner (a wait on the channel returned because the
    /// channel fired, not because it timed out).
    pub fn woken(&mut self) {
        self.woken = true;
    }

    /// The owner found work (requests, responses, completions): the events so
    /// far were not spurious.
    pub fn work(&mut self) {
        self.woken = false;
        self.spurious = 0;
    }

    /// The owner found nothing to do and is about to wait on the channel
    /// again: how long to pause first (zero unless the last events were
    /// spurious). The pause replaces nothing: after it, look for work and wait
    /// as usual (an event sent meanwhile is still pending: events coalesce).
    /// A wait that ended without an event (a timeout: the storm is over)
    /// resets the count.
    pub fn before_wait(&mut self) -> Duration {
        if std::mem::take(&mut self.woken) {
            self.spurious = self.spurious.saturating_add(1);
            self.total += 1;
        } else {
            self.spurious = 0;
        }
        if self.spurious <= TOLERATED {
            return Duration::ZERO;
        }
        let shift = (self.spurious - TOLERATED - 1).min(16);
        (Duration::from_millis(1) * (1u32 << shift)).min(MAX_DELAY)
    }

    /// Spurious events counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_backs_off_to_the_maximum_and_work_resets_it() {
        let mut s = SpuriousEvents::new();
        assert_eq!(s.before_wait(), Duration::ZERO, "no event yet");
        let mut pauses = Vec::new();
        for _ in 0..12 {
            s.woken();
            pauses.push(s.before_wait().as_millis());
        }
        assert_eq!(pauses, [0, 0, 1, 2, 4, 8, 16, 32, 64, 100, 100, 100]);
        assert_eq!(s.total(), 12);
        // Work resets it, and so does a wait that ended without an event.
        s.woken();
        s.work();
        assert_eq!(s.before_wait(), Duration::ZERO);
        for _ in 0..5 {
            s.woken();
            s.before_wait();
        }
        assert_eq!(
            s.before_wait(),
            Duration::ZERO,
            "a quiet wait ends the storm"
        );
        s.woken();
        assert_eq!(
            s.before_wait(),
            Duration::ZERO,
            "one spurious event is fine"
        );
    }

    #[test]
    fn events_that_bring_work_never_pause() {
        let mut s = SpuriousEvents::new();
        for _ in 0..1000 {
            s.woken();
            s.work();
            assert_eq!(s.before_wait(), Duration::ZERO);
        }
        // Each real event followed by one spurious one (the race the ring
        // protocol allows) never pauses either.
        for _ in 0..1000 {
            s.woken();
            s.work();
            assert_eq!(s.before_wait(), Duration::ZERO);
            s.woken();
            assert_eq!(s.before_wait(), Duration::ZERO);
        }
        assert_eq!(s.total(), 1000);
    }
}
