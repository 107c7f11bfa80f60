//! fio's nbd engine against `NbdQueue` at 4 KiB random I/O, queue depth 32, on
//! the same qemu-nbd export (a raw file of data) in one run, interleaved (issue
//! 16's goal for the whole path later: >= 0.9x of fio). Not part of the normal
//! test run:
//!
//!     cargo test --release -p xenio-hostio --test nbd_bench -- --ignored --nocapture
//!
//! `XENIO_BENCH_SECS` (default 2), `XENIO_BENCH_REPS` (default 5),
//! `XENIO_BENCH_MIB` (default 256). Prints IOPS and the median [min..max] of
//! the per-repetition ratios xenio/fio.
#![cfg(feature = "nbd")]

mod storage_common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_common::*;
use xenio_hostio::disk::{Io, IoSeg};
use xenio_hostio::nbd::{NbdExport, NbdOptions, NbdQueue};
use xenio_xenbus::Region;

const QD: usize = 32;
const BS: usize = 4096;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn xenio(q: &mut NbdQueue, size: u64, write: bool, secs: f64, seed: u64) -> f64 {
    let mut rng = Rng(seed | 1);
    let pages: Vec<Arc<Region>> = (0..QD)
        .map(|_| Arc::new(Region::anonymous(BS).unwrap()))
        .collect();
    let blocks = size / BS as u64;
    let submit = |q: &mut NbdQueue, slot: usize, rng: &mut Rng| {
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
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (mut done, mut inflight) = (0u64, QD);
    let mut out = Vec::new();
    while inflight > 0 {
        out.clear();
        q.complete(&mut out, 1, Some(Duration::from_secs(30)))
            .unwrap();
        assert!(!out.is_empty());
        let now = Instant::now();
        for c in &out {
            c.result.as_ref().unwrap();
            inflight -= 1;
            if now < end {
                done += 1;
                submit(q, c.tag as usize, &mut rng);
                inflight += 1;
            }
        }
    }
    done as f64 / secs
}

fn fio(uri: &str, size: u64, write: bool, secs: f64) -> f64 {
    let out = run(Command::new("fio")
        .args([
            "--name=bench",
            "--ioengine=nbd",
            "--bs=4k",
            "--iodepth=32",
            "--time_based",
            "--output-format=json",
        ])
        .arg(format!("--uri={uri}"))
        .arg(format!(
            "--rw={}",
            if write { "randwrite" } else { "randread" }
        ))
        .arg(format!("--size={size}"))
        .arg(format!("--runtime={secs}")));
    // fio's nbd engine prints "fio: connected to NBD server" before the JSON.
    let json = &out[out.find('{').unwrap_or(0)..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let job = &v["jobs"][0][if write { "write" } else { "read" }];
    job["iops"].as_f64().unwrap()
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
fn nbd_queue_against_fio_nbd_engine_4k_qd32() {
    if missing("qemu-nbd", "qemu-utils") || missing("fio", "fio") {
        return;
    }
    let secs = env("XENIO_BENCH_SECS", 2) as f64;
    let reps = env("XENIO_BENCH_REPS", 5) as usize;
    let size: u64 = env("XENIO_BENCH_MIB", 256) << 20;
    let dir = disk_dir();
    let mut data = vec![0u8; size as usize];
    Rng(3).fill(&mut data);
    let img = write_file(dir.path(), "bench.raw", &data);
    drop(data);
    for transport in ["--unix", "--tcp"] {
        let mut args = vec![transport];
        if transport == "--tcp" {
            args.push("auto");
        }
        let img_s = img.to_str().unwrap().to_string();
        args.extend(["--image", &img_s]);
        let srv = Server::start("qemu-nbd.sh", &args);
        let export = NbdExport::connect(&srv.uri, &NbdOptions::default()).unwrap();
        let mut q = export.queue().unwrap();
        eprintln!(
            "{}: 4 KiB random, QD{QD}, {} MiB, {reps} x {secs} s each, interleaved",
            srv.uri,
            size >> 20
        );
        for write in [false, true] {
            let what = if write { "write" } else { "read" };
            let mut ratios = Vec::new();
            for rep in 0..reps {
                let f1 = fio(&srv.uri, size, write, secs);
                let x = xenio(&mut q, size, write, secs, rep as u64);
                let f2 = fio(&srv.uri, size, write, secs);
                let f = (f1 + f2) / 2.0;
                eprintln!("{what} rep {rep}: fio {f1:.0} / {f2:.0} IOPS, xenio {x:.0} IOPS");
                ratios.push(x / f);
            }
            ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
            eprintln!(
                "RESULT {transport} {what}: xenio/fio {:.2}x [{:.2}..{:.2}]",
                ratios[ratios.len() / 2],
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
    }
}
