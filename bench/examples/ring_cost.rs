//! What the ring benchmark's blkif loops cost in code alone: both ends on one
//! thread, so no cache line ever crosses cores. The frontend fills the ring (32
//! requests built by `content::request`), the backend takes them, checks each
//! and answers it, the frontend takes and checks the responses; the best of 15
//! runs of 640 000 requests is printed in ns per request, with the mean of each
//! phase. `ring_cost.c` next to this file is the same loop written with Xen's
//! `io/ring.h` macros (what `xenio-bench ring`'s C pair does per request):
//!
//! ```text
//! cargo run --release -p xenio-bench --example ring_cost
//! cc -O2 -o /tmp/ring_cost_c bench/examples/ring_cost.c && /tmp/ring_cost_c
//! ```
//!
//! Pin both to one idle CPU (`taskset -c 1`) and alternate them: a loaded
//! machine moves the numbers, the best of 15 much less than the mean.

use std::time::Instant;
use xenio_bench::ring::content::{self, Tally, check_request, check_response};
use xenio_ring::{BlkifBackRing, BlkifFrontRing, MmapRegion};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = tempfile::tempfile()?;
    file.set_len(4096)?;
    let mut front = BlkifFrontRing::init(MmapRegion::from_file(&file)?)?;
    let mut back = BlkifBackRing::attach(MmapRegion::from_file(&file)?)?;
    let size = u64::from(front.size());
    let mut reqs = vec![Default::default(); front.size() as usize];
    let mut rsps = vec![Default::default(); front.size() as usize];
    let (mut issued, mut served, mut completed) = (0u64, 0u64, 0u64);
    let (mut front_tally, mut back_tally) = (Tally::default(), Tally::default());
    let mut best = f64::MAX;
    let mut phases = [0u128; 3];
    for _ in 0..15 {
        let t = Instant::now();
        let n0 = completed;
        for _ in 0..20_000 {
            let t0 = Instant::now();
            for seq in issued..issued + size {
                front.push_request(&content::request(seq))?;
            }
            issued += size;
            front.push_requests();
            let t1 = Instant::now();
            let n = back.take_requests_into(&mut reqs)?;
            for req in &reqs[..n] {
                back_tally.record(check_request(req, served));
                back.push_response(&content::response(req))?;
                served += 1;
            }
            back.push_responses();
            let t2 = Instant::now();
            let n = front.take_responses_into(&mut rsps)?;
            for (seq, rsp) in (completed..).zip(&rsps[..n]) {
                front_tally.record(check_response(rsp, seq));
            }
            completed += n as u64;
            phases[0] += (t1 - t0).as_nanos();
            phases[1] += (t2 - t1).as_nanos();
            phases[2] += t2.elapsed().as_nanos();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (completed - n0) as f64);
    }
    if let Some(m) = front_tally.first.or(back_tally.first) {
        return Err(format!("verification failed: {m}").into());
    }
    let per = |ns: u128| ns as f64 / completed as f64;
    println!(
        "xenio ring, one thread: {best:.1} ns/request (best of 15); mean per request: issue {:.1}, serve {:.1}, harvest {:.1} ns",
        per(phases[0]),
        per(phases[1]),
        per(phases[2])
    );
    Ok(())
}
