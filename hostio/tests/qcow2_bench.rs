//! Raw `DiskQueue` against `Qcow2Queue` at 4 KiB random I/O, queue depth 32,
//! O_DIRECT, on the same disk in one run (issue 16's goal: qcow2 >= 0.8x raw).
//! Not part of the normal test run:
//!
//!     cargo test --release -p xenio-hostio --test qcow2_bench -- --ignored --nocapture
//!
//! `XENIO_BENCH_SECS` (default 2) per measurement, `XENIO_BENCH_REPS` (default 5)
//! interleaved repetitions. Prints IOPS and the median [min..max] of the
//! per-repetition ratios.

mod storage_common;

use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_common::*;
use xenio_hostio::disk::{BlockFile, Direct, DiskOpen, DiskQueue, Io, IoSeg};
use xenio_hostio::qcow2::{Qcow2Image, Qcow2Open, Qcow2Queue, Qcow2QueueOptions};
use xenio_xenbus::Region;

const QD: usize = 32;
const BS: usize = 4096;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// IOPS of 4 KiB random reads or writes at QD32 over `size` bytes for `secs`.
fn drive(q: &mut dyn Queue, size: u64, write: bool, secs: f64, seed: u64) -> f64 {
    let mut rng = Rng(seed | 1);
    let pages: Vec<Arc<Region>> = (0..QD)
        .map(|_| Arc::new(Region::anonymous(BS).unwrap()))
        .collect();
    for p in &pages {
        let mut b = vec![0u8; BS];
        rng.fill(&mut b);
        p.write(0, &b).unwrap();
    }
    let blocks = size / BS as u64;
    let submit = |q: &mut dyn Queue, slot: usize, rng: &mut Rng| {
        let offset = rng.range(0, blocks - 1) * BS as u64;
        let segs = vec![IoSeg::new(pages[slot].clone(), 0, BS)];
        let io = if write {
            Io::Write { offset, segs }
        } else {
            Io::Read { offset, segs }
        };
        q.submit(slot as u64, io).unwrap();
    };
    for slot in 0..QD {
        submit(q, slot, &mut rng);
    }
    q.flush_submissions();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut done = 0u64;
    let mut out = Vec::new();
    loop {
        out.clear();
        q.complete(&mut out, 1, Some(Duration::from_secs(30)));
        assert!(!out.is_empty(), "no completion in 30 s");
        let now = Instant::now();
        for c in &out {
            c.result.as_ref().unwrap();
            done += 1;
            if now < end {
                submit(q, c.tag as usize, &mut rng);
            }
        }
        if now >= end {
            break;
        }
        q.flush_submissions();
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Drain.
    let mut left = QD - out.len();
    while left > 0 {
        out.clear();
        q.complete(&mut out, left, Some(Duration::from_secs(30)));
        left -= out.len();
    }
    done as f64 / elapsed
}

fn stats(ratios: &mut [f64]) -> String {
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{:.2}x [{:.2}..{:.2}]",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    )
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
fn qcow2_against_raw_4k_qd32() {
    if missing("qemu-img", "qemu-utils") {
        return;
    }
    let secs = env("XENIO_BENCH_SECS", 2) as f64;
    let reps = env("XENIO_BENCH_REPS", 5) as usize;
    let size: u64 = env("XENIO_BENCH_MIB", 512) << 20;
    let dir = disk_dir();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    // Fully written images: a raw file of data and its qcow2 conversion (every
    // cluster allocated), and a fresh overlay over that qcow2 base.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(d.join("disk.raw")).unwrap();
        let mut rng = Rng(7);
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..size >> 20 {
            rng.fill(&mut chunk);
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &p("disk.raw"),
        &p("disk.qcow2"),
    ]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "disk.qcow2",
        "-F",
        "qcow2",
        &p("overlay.qcow2"),
    ]);

    let raw = Arc::new(
        BlockFile::open(
            d.join("disk.raw"),
            DiskOpen {
                readonly: false,
                direct: Direct::On,
            },
        )
        .unwrap(),
    );
    let open = |name: &str| {
        let img = Qcow2Image::open(
            d.join(name),
            &Qcow2Open {
                readonly: false,
                direct: Direct::On,
            },
        )
        .unwrap();
        Qcow2Queue::new(
            Arc::new(img),
            &Qcow2QueueOptions {
                depth: QD as u32,
                threads: 0,
            },
        )
        .unwrap()
    };
    let mut rq = DiskQueue::new(raw, QD as u32).unwrap();
    let mut qq = open("disk.qcow2");
    let mut oq = open("overlay.qcow2");
    eprintln!(
        "4 KiB random, QD{QD}, O_DIRECT, {} MiB, {reps} x {secs} s each, {} worker threads",
        size >> 20,
        qq.threads()
    );
    for write in [false, true] {
        let what = if write { "write" } else { "read" };
        let (mut r_q, mut r_o) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            let seed = rep as u64 * 3 + u64::from(write);
            let a = drive(&mut rq, size, write, secs, seed);
            let b = drive(&mut qq, size, write, secs, seed);
            let c = drive(&mut oq, size, write, secs, seed);
            let a2 = drive(&mut rq, size, write, secs, seed + 1);
            let raw = (a + a2) / 2.0;
            eprintln!(
                "{what} rep {rep}: raw {a:.0} / {a2:.0} IOPS, qcow2 {b:.0} IOPS, overlay {c:.0} IOPS"
            );
            r_q.push(b / raw);
            r_o.push(c / raw);
        }
        eprintln!(
            "RESULT {what}: qcow2/raw {}, fresh overlay/raw {}",
            stats(&mut r_q),
            stats(&mut r_o)
        );
    }
    drop((qq, oq));
    let out = qemu_img(&["check", &p("overlay.qcow2")]);
    assert!(out.contains("No errors were found"), "{out}");
}
