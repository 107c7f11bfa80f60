//! The two baselines every run measures next to the ring, on the same two cores:
//!
//! - **ping-pong**: two processes bounce one cache line of shared memory. Side A
//!   (this process) writes an odd value `i`, side B (a peer process) waits to see
//!   it and writes `i + 1`, A waits to see that. One round trip moves the line
//!   across and back: the floor for any cross-core request/response.
//! - **rtrb**: two threads and two `rtrb` single-producer single-consumer queues,
//!   one of 112-byte [`BlkifRequest`]s and one of 16-byte [`BlkifResponse`]s, with
//!   the ring's capacity. Latency keeps one request outstanding (`push`/`pop`);
//!   throughput keeps the queue full and, like the ring, moves whole batches
//!   (`write_chunk_uninit`/`read_chunk`, one index publication per batch), so it
//!   is the strongest rtrb, not a strawman.

use crate::common::error::{BenchError, Result};
use crate::common::sys;
use crate::ring::args::PeerRole;
use crate::ring::content::{self, Mismatch, Tally, check_request, check_response};
use crate::ring::peer::{Control, PeerProcess, PeerSpawn};
use crate::ring::timing::{POLLING_BATCH, Pipeline, RoundTrips, time_pipeline, time_round_trips};
use crate::ring::types::{Plan, Sample, WaitMode, Workload};
use crate::ring::wait::{Liveness, STALL_LIMIT, WatchedSpin};
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ScopedJoinHandle;
use xenio_ring::AtomicU32;
use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse};

/// Written by side A to stop side B. Never a ping value (those stay below 2^31 + 1).
pub const PING_STOP: u32 = u32::MAX;
const PING_MASK: u32 = 0x7fff_ffff;

struct PingPong<'a> {
    word: &'a AtomicU32,
    peer: &'a mut PeerProcess,
    next: u32,
    yield_cpu: bool,
    config: &'a str,
}

impl RoundTrips for PingPong<'_> {
    #[inline]
    fn round_trip(&mut self, _seq: u64) -> Result<()> {
        let ping = self.next;
        let pong = ping + 1;
        // Release/Acquire: plain moves on x86; the pair orders nothing else, it only
        // has to move the line.
        self.word.store(ping, Ordering::Release);
        let mut spinner = WatchedSpin::new(self.yield_cpu);
        loop {
            let v = self.word.load(Ordering::Acquire);
            if v == pong {
                break;
            }
            if v != ping {
                return Err(pingpong_mismatch(
                    self.config,
                    "side A",
                    u64::from(pong),
                    u64::from(v),
                ));
            }
            spinner.spin(&mut *self.peer, "the pong")?;
        }
        self.next = (ping + 2) & PING_MASK;
        Ok(())
    }
}

fn pingpong_mismatch(config: &str, side: &'static str, expected: u64, got: u64) -> BenchError {
    BenchError::Verification {
        config: config.to_string(),
        side,
        errors: 1,
        first: Mismatch {
            expected_id: expected,
            got_id: got,
            field: "id",
        }
        .to_string(),
    }
}

/// Measure the cache-line ping-pong once (side A here, side B in a peer process).
pub fn measure_pingpong(plan: &Plan, config: &str) -> Result<Sample> {
    let (control_file, control) = Control::create()?;
    let mut peer = PeerProcess::spawn(PeerSpawn {
        config,
        role: PeerRole::PingPong,
        wait: WaitMode::Polling,
        order: plan.order,
        core: plan.back_core,
        yield_cpu: plan.yield_cpu,
        timeout: plan.peer_timeout,
        ring: None,
        control: &control_file,
        bells: None,
        corrupt_response: None,
    })?;
    drop(control_file);
    peer.wait_ready(&control)?;
    let mut a = PingPong {
        word: control.ping(),
        peer: &mut peer,
        next: 1,
        yield_cpu: plan.yield_cpu,
        config,
    };
    let timed = time_round_trips(&mut a, plan, POLLING_BATCH);
    control.ping().store(PING_STOP, Ordering::Release);
    control.request_stop();
    let timed = timed?;
    peer.finish()?;
    Ok(Sample {
        ops: timed.ops,
        elapsed: timed.elapsed,
        front_notifications: 0,
        back_notifications: 0,
    })
}

/// Side B of the ping-pong (in the peer process): answer each odd value `i` with
/// `i + 1` until [`PING_STOP`].
pub fn pingpong_peer<L: Liveness>(
    control: &Control,
    parent: &mut L,
    yield_cpu: bool,
) -> Result<u64> {
    let word = control.ping();
    let mut last = 0;
    let mut expect = 1;
    let mut n = 0;
    let mut spinner = WatchedSpin::new(yield_cpu);
    loop {
        let v = word.load(Ordering::Acquire);
        if v == last {
            spinner.spin(parent, "the ping")?;
            continue;
        }
        if v == PING_STOP {
            return Ok(n);
        }
        if v != expect {
            return Err(pingpong_mismatch(
                parent.config(),
                "side B",
                u64::from(expect),
                u64::from(v),
            ));
        }
        last = v + 1;
        word.store(last, Ordering::Release);
        expect = (v + 2) & PING_MASK;
        n += 1;
        spinner = WatchedSpin::new(yield_cpu);
    }
}

/// Watches the rtrb backend thread from the frontend's waits.
struct ThreadWatch<'scope, 'h> {
    handle: &'h ScopedJoinHandle<'scope, Result<(u64, Tally)>>,
    config: &'h str,
}

impl Liveness for ThreadWatch<'_, '_> {
    fn check(&mut self) -> Result<()> {
        if self.handle.is_finished() {
            return Err(BenchError::Thread {
                config: self.config.to_string(),
                what: "ended before the measurement did",
            });
        }
        Ok(())
    }

    fn config(&self) -> &str {
        self.config
    }
}

struct RtrbFront<'scope, 'h> {
    tx: Producer<BlkifRequest>,
    rx: Consumer<BlkifResponse>,
    watch: ThreadWatch<'scope, 'h>,
    capacity: u64,
    yield_cpu: bool,
    tally: Tally,
}

fn chunk_error(config: &str) -> BenchError {
    BenchError::Thread {
        config: config.to_string(),
        what: "found fewer rtrb slots than counted",
    }
}

impl RoundTrips for RtrbFront<'_, '_> {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        self.tx
            .push(content::request(seq))
            .map_err(|_| chunk_error(self.watch.config))?;
        let mut spinner = WatchedSpin::new(self.yield_cpu);
        loop {
            if let Ok(rsp) = self.rx.pop() {
                self.tally.record(check_response(&rsp, seq));
                return Ok(());
            }
            spinner.spin(&mut self.watch, "a response")?;
        }
    }
}

impl Pipeline for RtrbFront<'_, '_> {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    #[inline]
    fn issue(&mut self, first: u64, n: u64) -> Result<u64> {
        // Never more than fit (the backend frees request slots before it answers, so
        // this only guards against a miscount).
        let n = n.min(self.tx.slots() as u64);
        if n == 0 {
            return Ok(0);
        }
        let chunk = self
            .tx
            .write_chunk_uninit(n as usize)
            .map_err(|_| chunk_error(self.watch.config))?;
        Ok(chunk.fill_from_iter((first..first + n).map(content::request)) as u64)
    }

    #[inline]
    fn harvest(&mut self, first: u64) -> Result<u64> {
        let n = self.rx.slots();
        if n == 0 {
            return Ok(0);
        }
        let chunk = self
            .rx
            .read_chunk(n)
            .map_err(|_| chunk_error(self.watch.config))?;
        for (seq, rsp) in (first..).zip(chunk) {
            self.tally.record(check_response(&rsp, seq));
        }
        Ok(n as u64)
    }

    #[inline]
    fn wait(&mut self, spinner: &mut WatchedSpin) -> Result<()> {
        spinner.spin(&mut self.watch, "a response")
    }
}

/// The rtrb backend thread: take every queued request, check it, answer the batch
/// with one chunk, until the frontend drops its producer.
fn rtrb_backend(
    mut rx: Consumer<BlkifRequest>,
    mut tx: Producer<BlkifResponse>,
    core: usize,
    yield_cpu: bool,
    config: &str,
    ready: &AtomicBool,
) -> Result<(u64, Tally)> {
    sys::pin_to_core(core)?;
    ready.store(true, Ordering::Release);
    let mut served = 0u64;
    let mut tally = Tally::default();
    let mut rsps: Vec<BlkifResponse> = Vec::with_capacity(rx.buffer().capacity());
    loop {
        let n = rx.slots().min(tx.slots());
        if n == 0 {
            if rx.is_abandoned() && rx.is_empty() {
                return Ok((served, tally));
            }
            if yield_cpu {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        // Like the ring's backend (which copies requests out of their slots before it
        // answers), free the request slots before publishing the responses, so a
        // frontend that sees a response can reuse its request's slot at once.
        rsps.clear();
        let chunk = rx.read_chunk(n).map_err(|_| chunk_error(config))?;
        for req in chunk {
            tally.record(check_request(&req, served));
            served += 1;
            rsps.push(content::response(&req));
        }
        tx.push_entire_slice(&rsps)
            .map_err(|_| chunk_error(config))?;
    }
}

fn wait_thread_ready(ready: &AtomicBool, watch: &mut ThreadWatch<'_, '_>) -> Result<()> {
    let start = std::time::Instant::now();
    while !ready.load(Ordering::Acquire) {
        watch.check()?;
        if start.elapsed() > STALL_LIMIT {
            return Err(BenchError::Thread {
                config: watch.config.to_string(),
                what: "did not start",
            });
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// Measure the rtrb pair once: the frontend here (already on the front core), the
/// backend in a thread pinned to the back core.
pub fn measure_rtrb(plan: &Plan, workload: Workload, config: &str) -> Result<Sample> {
    let size = plan.ring_size as usize;
    let (req_tx, req_rx) = RingBuffer::<BlkifRequest>::new(size);
    let (rsp_tx, rsp_rx) = RingBuffer::<BlkifResponse>::new(size);
    let ready = AtomicBool::new(false);
    std::thread::scope(|s| {
        let ready = &ready;
        let back = s.spawn(move || {
            rtrb_backend(
                req_rx,
                rsp_tx,
                plan.back_core,
                plan.yield_cpu,
                config,
                ready,
            )
        });
        let mut fe = RtrbFront {
            tx: req_tx,
            rx: rsp_rx,
            watch: ThreadWatch {
                handle: &back,
                config,
            },
            capacity: size as u64,
            yield_cpu: plan.yield_cpu,
            tally: Tally::default(),
        };
        // Like the ring's peer process, the backend must be up and pinned before the
        // clock starts.
        let timed = wait_thread_ready(ready, &mut fe.watch).and_then(|()| match workload {
            Workload::Latency => time_round_trips(&mut fe, plan, POLLING_BATCH),
            Workload::Throughput => time_pipeline(&mut fe, plan),
        });
        let tally = fe.tally;
        // Dropping the producer tells the backend thread to finish.
        drop(fe);
        let (served, back_tally) = match back.join() {
            Err(_) => {
                return Err(BenchError::Thread {
                    config: config.to_string(),
                    what: "panicked",
                });
            }
            Ok(r) => r?,
        };
        let timed = timed?;
        for (side, t) in [("frontend", tally), ("backend", back_tally)] {
            if let Some(first) = t.first {
                return Err(BenchError::Verification {
                    config: config.to_string(),
                    side,
                    errors: t.errors,
                    first: first.to_string(),
                });
            }
        }
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
        Ok(Sample {
            ops: timed.ops,
            elapsed: timed.elapsed,
            front_notifications: 0,
            back_notifications: 0,
        })
    })
}
