//! Adaptive waiting: whether to spin before sleeping, learned from how long
//! the recent waits of one queue took.
//!
//! A side of a ring that has nothing to do either spins (looks again and again,
//! see [`crate::spin`]) or sleeps on its event channel. A sleep costs a wake-up
//! (13-36 us across cores on small VMs, two context switches on one core) on
//! top of the wait itself; a spin costs the CPU for as long as it lasts. So a
//! spin pays only for waits that end soon. [`WaitPolicy`] learns, per queue,
//! how long waits take, and spins only while that history says the next event
//! is likely to come within the spin:
//!
//! - Every wait that ends is recorded: its length from the moment the side
//!   found nothing to do until it found work, however it ended (found while
//!   spinning, by the final check, or after a sleep; a sleep's wake-up is part
//!   of its length).
//! - A wait of at most [`SPIN_LIMIT`] is *short*. The policy keeps
//!   exponentially weighted (1/8 per wait) averages of the short waits' length
//!   and of its deviation from that mean; the spin budget is the mean plus
//!   three deviations plus [`SPIN_MARGIN`] (at least [`MIN_SPIN`], at most
//!   [`SPIN_LIMIT`]), measured from the start of the wait: long enough to
//!   catch a typical short wait and most of its spread, never long enough to
//!   burn a whole long one.
//! - It also keeps the share of recent waits that ended within the budget
//!   (the ones a spin would have caught), and spins only while that is at
//!   least two thirds: a spin that misses burns its whole budget and then
//!   sleeps anyway, so a mix of short and long waits (a disk that completes a
//!   burst of writes in pieces), or short ones too spread out for the budget,
//!   sleeps. Three long waits in a row stop a queue that spun on every wait.
//! - A spin during which the thread was kept off its CPU for longer than
//!   [`CONTENDED`](crate::spin::CONTENDED) (the CPU is shared with other runnable threads, the peer
//!   perhaps) counts as a long wait: spinning there buys nothing but the
//!   scheduler's round trips, and it steals the CPU from whoever shares it.
//!   Enough of those and the policy sleeps at once, as with a slow disk.
//!   And a spin ends (the side sleeps) as soon as one of its yields ran
//!   another thread: on a shared CPU a spinner that yielded gets the CPU back
//!   only when the others' time slices end, while a sleeper is woken by the
//!   event itself ([`spin_until_alone`]).
//! - It starts out sleeping at once (nothing learned yet), and a queue that
//!   was idle (a wait of [`IDLE`] or more) goes back to that; nine caught
//!   waits in a row turn spinning on again.
//!
//! This is the idea of Linux's hybrid block polling and KVM's halt-polling (poll
//! only when history says the wait will be short), reduced to what a ring
//! needs: the decision is per queue and per kind of wait (a backend keeps one
//! policy for "waiting for requests" and one for "waiting for I/O
//! completions"), and learning is a few integer operations per wait.
//!
//! [`Wait::Fixed`] replaces the learning with a constant spin, the old poll
//! windows (`--poll-us`); `Fixed(Duration::ZERO)` is pure event-driven waiting.

use crate::spin::{Spun, spin_until, spin_until_alone};
use std::time::{Duration, Instant};

/// Waits expected to end within this are spun; longer ones slept. Set between
/// the waits measured on a 2-vCPU VM with a virtio disk: a 4 KiB read at one
/// request in flight answers in 35-60 us, a burst of 32 in 300-450 us, a 1 MiB
/// read in milliseconds; memory-backed I/O in a few microseconds.
pub const SPIN_LIMIT: Duration = Duration::from_micros(150);
/// Added to the mean short wait and three deviations to make the spin budget.
pub const SPIN_MARGIN: Duration = Duration::from_micros(5);
/// The shortest spin the policy chooses when it spins at all.
pub const MIN_SPIN: Duration = Duration::from_micros(10);

/// A wait this long means the queue was idle: what was learned about
/// spinning starts over (the share of short waits drops to zero).
pub const IDLE: Duration = Duration::from_millis(10);

/// Weights are in units of 1/1024.
const ONE: u32 = 1024;
/// Spin while the share of short waits is at least this.
const SPIN_SHARE: u32 = ONE * 2 / 3;
/// Each new wait weighs 1/2^SHIFT in the averages.
const SHIFT: u32 = 3;

/// How a side waits when it has nothing to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Learn from the recent waits whether to spin, and how long
    /// ([`WaitPolicy`]). The default.
    #[default]
    Adaptive,
    /// Always spin this long before sleeping (zero: never spin, purely
    /// event-driven).
    Fixed(Duration),
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::Adaptive => f.write_str("adaptive"),
            Wait::Fixed(d) if d.is_zero() => f.write_str("event-driven"),
            Wait::Fixed(d) => write!(f, "spin {} us", d.as_micros()),
        }
    }
}

/// One queue's waiting: how long to spin before sleeping, learned from the
/// waits recorded so far (see the [module docs](self)).
///
/// The core is pure arithmetic on durations ([`spin_budget`](Self::spin_budget),
/// [`record`](Self::record), [`record_contended`](Self::record_contended));
/// [`spin`](Self::spin) and [`ended`](Self::ended) run a wait on the real clock
/// around it.
#[derive(Clone, Debug)]
pub struct WaitPolicy {
    mode: Wait,
    /// Share of waits within the budget, in 1/1024.
    caught: u32,
    /// Mean length of the short waits, in ns.
    mean_ns: u64,
    /// Mean absolute deviation of the short waits from `mean_ns`, in ns.
    dev_ns: u64,
    /// When the wait in progress began ([`spin`](Self::spin)).
    began: Option<Instant>,
    /// The wait in progress was already counted (as contended).
    counted: bool,
    /// How the waits went.
    stats: WaitStats,
}

/// How a [`WaitPolicy`]'s waits went (for reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitStats {
    /// Waits that ended (through [`WaitPolicy::spin`] or
    /// [`WaitPolicy::ended`]).
    pub ended: u64,
    /// Of those, the ones that ended while spinning.
    pub spun: u64,
    /// Spins that found nothing (the caller went on to sleep).
    pub missed: u64,
    /// How long the waits took: how many ended within each of
    /// [`HISTOGRAM_US`] microseconds (and the last: longer).
    pub histogram: [u64; HISTOGRAM_US.len() + 1],
}

/// The upper bounds of [`WaitStats::histogram`]'s buckets, in microseconds.
pub const HISTOGRAM_US: [u64; 12] = [5, 10, 20, 50, 100, 150, 200, 300, 400, 500, 700, 1000];

impl std::fmt::Display for WaitStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} waits, {} ended spinning, {} spins missed; us:",
            self.ended, self.spun, self.missed
        )?;
        for (i, n) in self.histogram.iter().enumerate() {
            match HISTOGRAM_US.get(i) {
                Some(us) => write!(f, " <={us}:{n}")?,
                None => write!(f, " more:{n}")?,
            }
        }
        Ok(())
    }
}

impl WaitPolicy {
    /// A policy that waits as `mode` says; an adaptive one has learned nothing
    /// yet (it sleeps at once until short waits show up).
    pub fn new(mode: Wait) -> Self {
        WaitPolicy {
            mode,
            caught: 0,
            mean_ns: 0,
            dev_ns: 0,
            began: None,
            counted: false,
            stats: WaitStats::default(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Wait {
        self.mode
    }

    /// How long a wait starting now should spin before it sleeps.
    pub fn spin_budget(&self) -> Duration {
        match self.mode {
            Wait::Fixed(d) => d,
            Wait::Adaptive if self.caught < SPIN_SHARE => Duration::ZERO,
            Wait::Adaptive => self.learned_budget(),
        }
    }

    /// The budget the short waits learned so far call for (spinning or not).
    fn learned_budget(&self) -> Duration {
        if self.mean_ns == 0 {
            return SPIN_LIMIT;
        }
        (Duration::from_nanos(self.mean_ns + 3 * self.dev_ns) + SPIN_MARGIN)
            .clamp(MIN_SPIN, SPIN_LIMIT)
    }

    /// A wait ended after `waited` (from finding nothing to do until finding
    /// work, however it ended).
    pub fn record(&mut self, waited: Duration) {
        let us = waited.as_micros() as u64;
        let bucket = HISTOGRAM_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(HISTOGRAM_US.len());
        self.stats.histogram[bucket] += 1;
        if self.mode != Wait::Adaptive {
            return;
        }
        if waited >= IDLE {
            self.caught = 0;
            return;
        }
        let within = waited <= self.learned_budget();
        self.caught = ewma32(self.caught, if within { ONE } else { 0 });
        if waited <= SPIN_LIMIT {
            let ns = waited.as_nanos() as u64;
            if self.mean_ns == 0 {
                (self.mean_ns, self.dev_ns) = (ns, ns / 2);
            } else {
                self.dev_ns = ewma64(self.dev_ns, ns.abs_diff(self.mean_ns));
                self.mean_ns = ewma64(self.mean_ns, ns);
            }
        }
    }

    /// A spin ran on a contended CPU (see [`CONTENDED`](crate::spin::CONTENDED)):
    /// counted as a wait the spin did not catch.
    pub fn record_contended(&mut self) {
        if self.mode == Wait::Adaptive {
            self.caught = ewma32(self.caught, 0);
        }
    }

    /// Share of recent waits that a spin would have caught, from 0 to 1 (for
    /// reports).
    pub fn caught_share(&self) -> f64 {
        f64::from(self.caught) / f64::from(ONE)
    }

    /// Begin a wait (unless one is already in progress) and spin for what is
    /// left of its budget, calling `found` on every turn until it says
    /// `Ok(true)`. Returns whether it found something; then the wait is over
    /// and recorded. When it returns `false` the caller arms its event channel
    /// (the ring's final check), sleeps, and calls [`ended`](Self::ended) once
    /// it finds work, or [`abandon`](Self::abandon) if it gives up waiting.
    /// `found` runs at least once. A wait already longer than its budget (a
    /// sleep that timed out and is being resumed) does not spin again.
    pub fn spin<E>(&mut self, found: impl FnMut() -> Result<bool, E>) -> Result<bool, E> {
        self.spin_at_most(Duration::MAX, found)
    }

    /// [`spin`](Self::spin), but for no longer than `cap` (a caller's
    /// deadline).
    pub fn spin_at_most<E>(
        &mut self,
        cap: Duration,
        found: impl FnMut() -> Result<bool, E>,
    ) -> Result<bool, E> {
        let now = Instant::now();
        if self.began.is_none() {
            self.counted = false;
        }
        let began = *self.began.get_or_insert(now);
        let left = self
            .spin_budget()
            .saturating_sub(now.saturating_duration_since(began))
            .min(cap);
        let Spun {
            found: hit,
            contended,
        } = match self.mode {
            Wait::Adaptive => spin_until_alone(now + left, found)?,
            Wait::Fixed(_) => spin_until(now + left, found)?,
        };
        if contended && !self.counted {
            // Counted as a long wait, however it ends.
            self.record_contended();
            self.counted = true;
        }
        if hit {
            self.stats.spun += 1;
            self.ended();
        } else if !left.is_zero() {
            self.stats.missed += 1;
        }
        Ok(hit)
    }

    /// The wait in progress (begun by [`spin`](Self::spin)) is over: record
    /// its length (unless a contended spin already counted it). Nothing
    /// happens when no wait is in progress.
    pub fn ended(&mut self) {
        if let Some(b) = self.began.take() {
            self.stats.ended += 1;
            if !self.counted {
                self.record(b.elapsed());
            }
        }
    }

    /// Forget the wait in progress without recording it (the caller stopped
    /// waiting for a reason of its own).
    pub fn abandon(&mut self) {
        self.began = None;
    }

    /// The caller stops waiting before the event came (its deadline passed):
    /// the wait is recorded if it already lasted longer than [`SPIN_LIMIT`]
    /// (it was long, whatever comes next), forgotten otherwise (a short
    /// deadline says nothing about the wait).
    pub fn gave_up(&mut self) {
        if let Some(b) = self.began {
            self.gave_up_after(b.elapsed());
        }
    }

    /// [`gave_up`](Self::gave_up) after waiting `waited`.
    fn gave_up_after(&mut self, waited: Duration) {
        if self.began.take().is_some() && waited > SPIN_LIMIT && !self.counted {
            self.stats.ended += 1;
            self.record(waited);
        }
    }

    /// How the waits went so far.
    pub fn stats(&self) -> WaitStats {
        self.stats
    }

    /// Whether a wait is in progress.
    pub fn waiting(&self) -> bool {
        self.began.is_some()
    }
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy::new(Wait::Adaptive)
    }
}

fn ewma32(old: u32, sample: u32) -> u32 {
    // old + (sample - old) / 8, in integers that cannot overflow.
    let (old, sample) = (i64::from(old), i64::from(sample));
    (old + ((sample - old) >> SHIFT)) as u32
}

fn ewma64(old: u64, sample: u64) -> u64 {
    let (old, sample) = (old as i128, sample as i128);
    (old + ((sample - old) >> SHIFT)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);
    const MS: Duration = Duration::from_millis(1);

    fn adaptive() -> WaitPolicy {
        WaitPolicy::new(Wait::Adaptive)
    }

    #[test]
    fn it_sleeps_at_once_until_it_has_seen_short_waits() {
        let mut p = adaptive();
        assert_eq!(p.spin_budget(), Duration::ZERO, "nothing learned yet");
        let mut spins = Vec::new();
        for _ in 0..10 {
            p.record(20 * US);
            spins.push(!p.spin_budget().is_zero());
        }
        assert_eq!(
            spins,
            [[false; 8].as_slice(), &[true, true]].concat(),
            "nine caught waits turn spinning on"
        );
        let b = p.spin_budget();
        assert!(
            b > 25 * US && b < 45 * US,
            "{b:?}: the mean (20 us), three deviations, the margin"
        );
    }

    #[test]
    fn the_budget_follows_the_short_waits_within_its_bounds() {
        let mut p = adaptive();
        for _ in 0..40 {
            p.record(2 * US);
        }
        assert_eq!(p.spin_budget(), MIN_SPIN, "never shorter than MIN_SPIN");
        for i in 0..40 {
            p.record(if i % 2 == 0 { 100 * US } else { 150 * US });
        }
        assert_eq!(p.spin_budget(), SPIN_LIMIT, "never longer than SPIN_LIMIT");
        for _ in 0..40 {
            p.record(30 * US);
        }
        let b = p.spin_budget();
        assert!(
            b > 35 * US && b < 50 * US,
            "{b:?}: the mean moved back to 30 us"
        );
    }

    #[test]
    fn long_waits_turn_spinning_off_and_short_ones_back_on() {
        // A queue at one request in flight on a disk (40 us waits) ...
        let mut p = adaptive();
        for _ in 0..30 {
            p.record(40 * US);
        }
        assert!(!p.spin_budget().is_zero());
        // ... then 32 in flight: every wait is a burst of 400 us.
        let mut n = 0;
        while !p.spin_budget().is_zero() {
            p.record(400 * US);
            n += 1;
        }
        assert_eq!(n, 3, "three long waits in a row stop the spinning");
        // Idle for a second: what was learned about spinning starts over.
        p.record(Duration::from_secs(1));
        assert_eq!(p.caught_share(), 0.0);
        // Back to short waits: spinning resumes, with the old mean remembered.
        let mut m = 0;
        while p.spin_budget().is_zero() {
            p.record(40 * US);
            m += 1;
        }
        assert_eq!(m, 9, "nine caught waits to resume");
        let b = p.spin_budget();
        assert!(b >= 45 * US && b < 60 * US, "{b:?}");
    }

    #[test]
    fn a_mix_spins_only_while_most_waits_would_be_caught() {
        // Three short waits to one long one: spin (even right after the long
        // one).
        let mut p = adaptive();
        for i in 0..200 {
            p.record(if i % 4 == 3 { MS } else { 20 * US });
        }
        assert!(!p.spin_budget().is_zero(), "{}", p.caught_share());
        // One short wait to one long one (a burst completed in pieces):
        // sleep.
        let mut q = adaptive();
        for i in 0..200 {
            q.record(if i % 2 == 0 { 20 * US } else { 400 * US });
        }
        assert_eq!(q.spin_budget(), Duration::ZERO, "{}", q.caught_share());
        // Short waits spread out: the budget the 10 us ones taught (about 20
        // us) misses the 120 us ones at first, but the deviation grows with
        // the spread, and with it the budget.
        let mut r = adaptive();
        for _ in 0..50 {
            r.record(10 * US);
        }
        let mut budgets = Vec::new();
        for i in 0..400 {
            r.record(if i % 4 == 0 { 10 * US } else { 120 * US });
            budgets.push(r.learned_budget());
        }
        assert_eq!(r.learned_budget(), SPIN_LIMIT);
        assert!(!r.spin_budget().is_zero(), "{}", r.caught_share());
        assert!(budgets[0] < 30 * US, "{:?}", budgets[0]);
    }

    #[test]
    fn contended_spins_fall_back_to_sleeping() {
        let mut p = adaptive();
        for _ in 0..30 {
            p.record(20 * US);
        }
        assert!(!p.spin_budget().is_zero());
        // The CPU is shared: each spin ends with the event, but only after the
        // scheduler ran someone else. A contended spin counts as a wait the
        // spin did not catch, however the wait ends.
        for _ in 0..6 {
            p.record_contended();
        }
        assert_eq!(p.spin_budget(), Duration::ZERO, "{}", p.caught_share());
    }

    #[test]
    fn the_histogram_counts_every_recorded_wait() {
        let mut p = adaptive();
        for us in [3, 7, 15, 40, 90, 140, 180, 250, 350, 450, 600, 900, 5000] {
            p.record(us * US);
        }
        assert_eq!(p.stats().histogram, [1; 13]);
        let text = p.stats().to_string();
        assert!(text.contains("<=5:1") && text.ends_with("more:1"), "{text}");
    }

    #[test]
    fn fixed_modes_never_learn() {
        let mut p = WaitPolicy::new(Wait::Fixed(50 * US));
        let mut z = WaitPolicy::new(Wait::Fixed(Duration::ZERO));
        for _ in 0..50 {
            p.record(Duration::from_secs(1));
            p.record_contended();
            z.record(US);
        }
        assert_eq!(p.spin_budget(), 50 * US);
        assert_eq!(z.spin_budget(), Duration::ZERO);
        assert_eq!(Wait::default(), Wait::Adaptive);
        assert_eq!(z.mode().to_string(), "event-driven");
        assert_eq!(p.mode().to_string(), "spin 50 us");
    }

    #[test]
    fn a_wait_spins_once_for_its_budget_and_records_how_long_it_took() {
        let mut p = WaitPolicy::new(Wait::Fixed(Duration::from_millis(20)));
        // Found on the third look: the wait is over.
        let mut turns = 0;
        assert_eq!(
            p.spin(|| {
                turns += 1;
                Ok::<_, ()>(turns == 3)
            }),
            Ok(true)
        );
        assert!(!p.waiting());
        // Not found: the whole budget is spun, the wait stays open ...
        let t = Instant::now();
        assert_eq!(p.spin(|| Ok::<_, ()>(false)), Ok(false));
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(p.waiting());
        assert_eq!(
            (p.stats().ended, p.stats().spun, p.stats().missed),
            (1, 1, 1)
        );
        // ... and resuming it (after a sleep that found nothing) does not spin
        // again, but still looks once.
        let mut looks = 0;
        assert_eq!(
            p.spin(|| {
                looks += 1;
                Ok::<_, ()>(false)
            }),
            Ok(false)
        );
        assert_eq!(looks, 1);
        p.ended();
        assert!(!p.waiting());
        assert_eq!(
            (p.stats().spun, p.stats().ended),
            (1, 2),
            "one spun, one slept"
        );
        // Errors end the spin.
        assert_eq!(p.spin(|| Err::<bool, _>("broken ring")), Err("broken ring"));
        p.abandon();
        assert!(!p.waiting());
        // A caller's deadline caps the spin (a budget of 100 s).
        let mut q = WaitPolicy::new(Wait::Fixed(Duration::from_secs(100)));
        let t = Instant::now();
        assert_eq!(
            q.spin_at_most(Duration::from_millis(2), || Ok::<_, ()>(false)),
            Ok(false)
        );
        assert!(t.elapsed() < Duration::from_secs(50));
        q.gave_up();
        assert!(!q.waiting());
    }

    #[test]
    fn giving_up_records_only_waits_known_to_be_long() {
        let mut p = adaptive();
        for _ in 0..20 {
            p.record(10 * US);
        }
        let share = p.caught_share();
        // A short deadline: forgotten.
        assert_eq!(p.spin_at_most(US, || Ok::<_, ()>(false)), Ok(false));
        p.gave_up_after(20 * US);
        assert!(!p.waiting());
        assert_eq!(p.caught_share(), share);
        // A deadline past the limit: a long wait.
        assert_eq!(p.spin_at_most(US, || Ok::<_, ()>(false)), Ok(false));
        p.gave_up_after(SPIN_LIMIT * 2);
        assert!(!p.waiting());
        assert!(p.caught_share() < share);
    }

    #[test]
    fn ended_waits_are_recorded() {
        let mut p = adaptive();
        for _ in 0..9 {
            // Nothing learned: no spin, one look; the "sleep" ends at once.
            assert_eq!(p.spin(|| Ok::<_, ()>(false)), Ok(false));
            p.ended();
        }
        let s = p.stats();
        assert_eq!((s.ended, s.spun), (9, 0));
        assert_eq!(s.histogram.iter().sum::<u64>(), 9, "every wait recorded");
    }
}
