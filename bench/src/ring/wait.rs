//! How one side waits for the other: by spinning on shared memory
//! ([`WatchedSpin`]), or by sleeping on a [`Doorbell`] ([`sleep_on`]) after an
//! optional spin window (event mode's window is every poll window's loop,
//! [`xenio_ring::spin::spin_for`]).
//!
//! Waits never block forever: every `2^20` spins (a few milliseconds), or every
//! [`SLEEP_SLICE`] asleep, the waiter asks its [`Liveness`] whether the other side
//! is still there, so a crashed peer ends the run with an error instead of a hang.

use crate::common::error::{BenchError, Result};
use crate::common::sys::Doorbell;
use std::time::{Duration, Instant};

/// Spins between two liveness checks.
pub const SLOW_PATH_SPINS: u32 = 1 << 20;
/// How long one sleep on a doorbell lasts before a liveness check.
pub const SLEEP_SLICE: Duration = Duration::from_millis(100);
/// How long the parent waits without progress before it calls the peer stuck.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// The other side of a measurement, as seen by a waiter: is it still there?
pub trait Liveness {
    /// `Err` if the other side is gone, failed, or ran out of time.
    fn check(&mut self) -> Result<()>;
    /// The configuration being measured (for error messages).
    fn config(&self) -> &str;
    /// How long a wait may see no progress before it is an error (`None`: forever,
    /// as long as [`Liveness::check`] passes).
    fn stall_limit(&self) -> Option<Duration> {
        Some(STALL_LIMIT)
    }
}

/// An unbounded busy-wait's bookkeeping: it spins until the awaited thing
/// happens, checking on the peer now and then (not a poll window: that is
/// [`xenio_ring::spin::spin_for`], which ends when its window does). Create one
/// per wait; the fast path is one increment, one test and a `spin_loop` hint
/// (or a yield, when both sides share a CPU).
#[derive(Debug)]
pub struct WatchedSpin {
    spins: u32,
    since: Option<Instant>,
    yield_cpu: bool,
}

impl WatchedSpin {
    /// A fresh wait. With `yield_cpu` (both sides pinned to one core) each spin
    /// yields the CPU to the other side instead of burning it.
    #[inline]
    pub fn new(yield_cpu: bool) -> Self {
        WatchedSpin {
            spins: 0,
            since: None,
            yield_cpu,
        }
    }

    /// One spin; now and then, check on `peer`.
    #[inline]
    pub fn spin<L: Liveness + ?Sized>(&mut self, peer: &mut L, what: &'static str) -> Result<()> {
        self.spins = self.spins.wrapping_add(1);
        if self.spins % SLOW_PATH_SPINS == 0 {
            self.slow(peer, what)?;
        }
        if self.yield_cpu {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        Ok(())
    }

    #[cold]
    fn slow<L: Liveness + ?Sized>(&mut self, peer: &mut L, what: &'static str) -> Result<()> {
        peer.check()?;
        let since = *self.since.get_or_insert_with(Instant::now);
        check_stall(peer, since, what)
    }
}

fn check_stall<L: Liveness + ?Sized>(peer: &L, since: Instant, what: &'static str) -> Result<()> {
    match peer.stall_limit() {
        Some(limit) if since.elapsed() > limit => Err(BenchError::Stalled {
            config: peer.config().to_string(),
            what,
            secs: limit.as_secs(),
        }),
        _ => Ok(()),
    }
}

/// Sleep on `bell` until it rings, checking on `peer` every [`SLEEP_SLICE`].
pub fn sleep_on<L: Liveness + ?Sized>(
    bell: &Doorbell,
    peer: &mut L,
    what: &'static str,
) -> Result<()> {
    let since = Instant::now();
    loop {
        if bell.wait(SLEEP_SLICE)? {
            return Ok(());
        }
        peer.check()?;
        check_stall(peer, since, what)?;
    }
}
