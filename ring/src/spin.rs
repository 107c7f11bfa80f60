//! Polite busy-waiting, for poll windows.
//!
//! A poll window spins on the ring instead of sleeping on the event channel,
//! because a sleep and its wake-up cost 13-36 us on small VMs. That pays only
//! while the peer runs on another CPU. When the scheduler has put both sides on
//! the same CPU (it likes to: they wake each other), a plain spin holds the
//! CPU the peer needs to make the progress the spinner waits for, until the
//! scheduler's tick preempts it. [`Spinner`] gives the CPU away
//! (`sched_yield`) every [`YIELD_EVERY`] of spinning: on a CPU of its own that
//! is one cheap system call per 10 us, on a shared one the peer runs within
//! 10 us.
//!
//! Measured with `xenio-bench blk`, 50 us-500 us poll windows on both sides
//! (2026-11-26, 2-vCPU VM): memory-backed 4 KiB QD32 reads went from ~210k to
//! ~350-420k IOPS, QD1 p50 from 12-15 us to 8.3-8.6 us; on the disk, QD1 p50 and
//! QD32 IOPS did not move beyond the noise. Yielding on every turn instead cost
//! 4-6 us of QD1 latency on the disk (a system call in each turn).

use std::time::{Duration, Instant};

/// How long a [`Spinner`] spins between two yields, while its yields find
/// nothing else to run.
pub const YIELD_EVERY: Duration = Duration::from_micros(10);
/// A yield that took longer than this ran another thread: the CPU is shared,
/// perhaps with the peer the spin waits for, and the spinner yields on every
/// turn until a yield finds nothing else to run again.
pub const SHARED: Duration = Duration::from_micros(5);
/// A yield that kept the spinning thread off its CPU for longer than this
/// means the CPU is contended: other runnable threads (the peer, perhaps, or
/// unrelated work) wanted it.
pub const CONTENDED: Duration = Duration::from_micros(50);

/// One spin loop's pacing: call [`relax`](Spinner::relax) once per turn.
#[derive(Debug)]
pub struct Spinner {
    last_yield: Instant,
    /// How long to spin until the next yield.
    every: Duration,
    /// A yield kept this thread off the CPU for longer than
    /// [`CONTENDED`].
    contended: bool,
    /// The last yield ran another thread (it took longer than [`SHARED`]).
    shared: bool,
}

impl Default for Spinner {
    fn default() -> Self {
        Spinner::new()
    }
}

impl Spinner {
    /// A spinner whose first yield comes [`YIELD_EVERY`] from now.
    pub fn new() -> Self {
        Spinner {
            last_yield: Instant::now(),
            every: YIELD_EVERY,
            contended: false,
            shared: false,
        }
    }

    /// Whether one of this spinner's yields kept the thread off the CPU for
    /// longer than [`CONTENDED`]: other threads wanted
    /// this CPU (the peer, perhaps, or unrelated work).
    pub fn contended(&self) -> bool {
        self.contended
    }

    /// Whether the last yield ran another thread (it kept this one off the
    /// CPU for longer than [`SHARED`]): the CPU is shared right now.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// End one turn of a spin loop at `now` (the loop's own clock reading, so
    /// that a turn reads the clock once): a CPU hint, or, once [`YIELD_EVERY`]
    /// has passed since the last, a yield to any other runnable thread. A
    /// yield that ran another thread (it took longer than [`SHARED`]) makes
    /// the next turns yield at once, so that a peer sharing the CPU runs as
    /// soon as it can make progress, not 10 us later; a yield that found
    /// nothing to run goes back to yielding every [`YIELD_EVERY`].
    pub fn relax(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_yield) >= self.every {
            std::thread::yield_now();
            self.last_yield = Instant::now();
            let off = self.last_yield.saturating_duration_since(now);
            if off > CONTENDED {
                self.contended = true;
            }
            self.shared = off > SHARED;
            self.every = if self.shared {
                Duration::ZERO
            } else {
                YIELD_EVERY
            };
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Spin for up to `window`, calling `found` on every turn, until it says
/// `Ok(true)` (returned) or the window passes (`Ok(false)`); an error ends the
/// spin and is returned. `found` runs at least once, even for a zero window.
/// The turns are paced by a [`Spinner`]. This is every poll window's loop.
pub fn spin_for<E>(window: Duration, found: impl FnMut() -> Result<bool, E>) -> Result<bool, E> {
    Ok(spin_until(Instant::now() + window, found)?.found)
}

/// How a spin ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spun {
    /// `found` said yes (else the deadline passed).
    pub found: bool,
    /// A yield kept the thread off the CPU for longer than
    /// [`CONTENDED`] (see [`Spinner::contended`]).
    pub contended: bool,
}

/// [`spin_for`] until `deadline`, also telling whether the CPU was contended.
/// `found` runs at least once, even for a deadline in the past.
pub fn spin_until<E>(deadline: Instant, found: impl FnMut() -> Result<bool, E>) -> Result<Spun, E> {
    spin_loop(deadline, false, found)
}

/// [`spin_until`], but give up as soon as a yield ran another thread and
/// `found` still says no: the CPU is shared (with the peer, or with unrelated
/// work), and a thread that goes on spinning there gets the CPU back only when
/// the others' time slices end (milliseconds on a loaded machine), while one
/// that sleeps on its event channel is woken, and usually run at once, when
/// the event comes. This is the adaptive policy's spin
/// ([`WaitPolicy`](crate::wait::WaitPolicy)); fixed windows spin on.
pub fn spin_until_alone<E>(
    deadline: Instant,
    found: impl FnMut() -> Result<bool, E>,
) -> Result<Spun, E> {
    spin_loop(deadline, true, found)
}

fn spin_loop<E>(
    deadline: Instant,
    alone: bool,
    mut found: impl FnMut() -> Result<bool, E>,
) -> Result<Spun, E> {
    let mut spin = Spinner::new();
    loop {
        if found()? {
            return Ok(Spun {
                found: true,
                contended: spin.contended(),
            });
        }
        let now = Instant::now();
        if now >= deadline || (alone && spin.shared()) {
            return Ok(Spun {
                found: false,
                contended: spin.contended(),
            });
        }
        spin.relax(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Two threads pinned to one CPU pass a token back and forth `handoffs`
    /// times, each spinning until it is its turn, ending each turn with
    /// `relax`; the time per hand-off.
    fn handoff_time(handoffs: u32, relax: fn(&mut Spinner)) -> Option<Duration> {
        let pid = nix::unistd::Pid::from_raw(0);
        let cpus = nix::sched::sched_getaffinity(pid).ok()?;
        let cpu = (0..nix::sched::CpuSet::count()).find(|&c| cpus.is_set(c).unwrap_or(false))?;
        let turn = Arc::new(AtomicU32::new(0));
        let player = |me: u32| {
            let turn = turn.clone();
            move || {
                let mut one = nix::sched::CpuSet::new();
                one.set(cpu).unwrap();
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();
                let mut spin = Spinner::new();
                let mut t = me;
                while t < handoffs {
                    while turn.load(Ordering::Acquire) != t {
                        relax(&mut spin);
                    }
                    turn.store(t + 1, Ordering::Release);
                    t += 2;
                }
            }
        };
        let started = Instant::now();
        let a = std::thread::spawn(player(0));
        let b = std::thread::spawn(player(1));
        a.join().unwrap();
        b.join().unwrap();
        Some(started.elapsed() / handoffs)
    }

    /// With a plain spin, a thread waiting for a peer on its own CPU holds the
    /// CPU until the scheduler preempts it (a time slice, ~1 ms): every
    /// hand-off costs that. A [`Spinner`] yields within [`YIELD_EVERY`], so
    /// the peer runs at once. Compared in the same run, three rounds each,
    /// alternating, and the fastest round of each counts: on a loaded machine
    /// a yield also hands the CPU to other processes, which slows single
    /// rounds of the yielding pair far more than the spinning one.
    #[test]
    #[cfg_attr(miri, ignore = "Miri emulates threads and their scheduling")]
    fn a_spinner_lets_a_thread_on_the_same_cpu_run() {
        let (mut plain, mut polite) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            let Some(p) = handoff_time(200, |_| std::hint::spin_loop()) else {
                eprintln!("SKIPPED: no CPU affinity here");
                return;
            };
            plain = plain.min(p);
            polite = polite.min(handoff_time(200, |s| s.relax(Instant::now())).unwrap());
        }
        eprintln!(
            "per hand-off on one CPU, fastest of 3 rounds: {polite:?} yielding every \
             {YIELD_EVERY:?}, {plain:?} spinning"
        );
        assert!(
            polite * 5 < plain,
            "per hand-off between two spinners on one CPU: {polite:?} yielding, {plain:?} not"
        );
    }

    #[test]
    fn spin_for_stops_at_what_it_finds_at_the_window_or_at_an_error() {
        let mut turns = 0;
        let r: Result<bool, ()> = spin_for(Duration::from_secs(5), || {
            turns += 1;
            Ok(turns == 3)
        });
        assert_eq!((r, turns), (Ok(true), 3));
        let t = Instant::now();
        let r: Result<bool, ()> = spin_for(Duration::from_millis(20), || Ok(false));
        assert_eq!(r, Ok(false));
        assert!(t.elapsed() >= Duration::from_millis(20));
        let mut once = 0;
        let r: Result<bool, ()> = spin_for(Duration::ZERO, || {
            once += 1;
            Ok(false)
        });
        assert_eq!((r, once), (Ok(false), 1));
        let r: Result<bool, &str> = spin_for(Duration::from_secs(5), || Err("broken ring"));
        assert_eq!(r, Err("broken ring"));
    }

    #[test]
    fn relax_yields_only_after_the_interval() {
        let mut s = Spinner::new();
        let t0 = s.last_yield;
        s.relax(t0 + YIELD_EVERY / 2);
        assert_eq!(s.last_yield, t0, "yielded before the interval");
        s.relax(t0 + YIELD_EVERY);
        assert!(s.last_yield > t0, "did not yield after the interval");
    }

    #[test]
    fn a_yield_that_ran_another_thread_makes_the_next_turns_yield() {
        let mut s = Spinner::new();
        // A turn whose clock reading is 15 us old when it yields: to the
        // spinner, the yield took at least that long (another thread ran).
        let now = Instant::now();
        s.last_yield = now - 3 * YIELD_EVERY;
        s.relax(now - SHARED * 3);
        assert_eq!(s.every, Duration::ZERO, "yields on every turn");
        // A yield that returns at once (as seen from a turn whose clock
        // reading is ahead of it): back to the interval.
        s.relax(Instant::now() + Duration::from_secs(1));
        assert_eq!(s.every, YIELD_EVERY);
    }

    /// A spin that must share its CPU with a busy thread gives up long before
    /// its deadline ([`spin_until_alone`]): both pinned to one CPU, the busy
    /// thread runs until the spin has returned.
    #[test]
    #[cfg_attr(miri, ignore = "Miri emulates threads and their scheduling")]
    fn a_spin_alone_gives_up_on_a_shared_cpu() {
        let pid = nix::unistd::Pid::from_raw(0);
        let Some(cpu) = nix::sched::sched_getaffinity(pid).ok().and_then(|cpus| {
            (0..nix::sched::CpuSet::count()).find(|&c| cpus.is_set(c).unwrap_or(false))
        }) else {
            eprintln!("SKIPPED: no CPU affinity here");
            return;
        };
        let pin = move || {
            let mut one = nix::sched::CpuSet::new();
            one.set(cpu).unwrap();
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();
        };
        let done = Arc::new(AtomicU32::new(0));
        let busy = {
            let done = done.clone();
            std::thread::spawn(move || {
                pin();
                while done.load(Ordering::Relaxed) == 0 {
                    std::hint::spin_loop();
                }
            })
        };
        pin();
        let deadline = Instant::now() + Duration::from_secs(30);
        let spun = spin_until_alone(deadline, || Ok::<_, ()>(false)).unwrap();
        let ended = Instant::now();
        done.store(1, Ordering::Relaxed);
        busy.join().unwrap();
        assert!(!spun.found);
        assert!(
            ended < deadline,
            "the spin ran to its deadline on a CPU it shared with a busy thread"
        );
    }
}
