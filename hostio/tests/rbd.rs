//! The RBD queue against a one-node Ceph cluster started by
//! tests/servers/ceph.sh (about 25 s): QEMU's target spelling, verified I/O
//! checked against a model, flush, discard as zeroes, clear errors for a
//! missing image or pool, and the OSD SIGKILLed and restarted under a write
//! stream with every acknowledged write read back. Needs the feature `rbd`:
//!
//!     cargo test -p xenio-hostio --features rbd --test rbd
#![cfg(feature = "rbd")]

mod storage_common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_common::*;
use xenio_hostio::disk::{Completion, Io, IoSeg};
use xenio_hostio::rbd::{RbdImage, RbdOptions, RbdQueue, RbdTarget};
use xenio_xenbus::Region;

const MIB: usize = 1 << 20;

impl Queue for RbdQueue {
    fn submit(&mut self, tag: u64, io: Io) -> Result<(), String> {
        RbdQueue::submit(self, tag, io).map_err(|e| e.to_string())
    }
    fn flush_submissions(&mut self) {
        RbdQueue::flush_submissions(self).unwrap();
    }
    fn complete(&mut self, out: &mut Vec<Completion>, n: usize, t: Option<Duration>) {
        RbdQueue::complete(self, out, n, t).unwrap();
    }
}

/// The cluster of ceph.sh in a temporary directory, destroyed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    target: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(servers_dir().join("ceph.sh"))
            .arg("destroy")
            .arg(self.dir.path())
            .output();
    }
}

fn start() -> Option<Cluster> {
    if missing("ceph-mon", "ceph-mon")
        || missing("ceph-osd", "ceph-osd")
        || missing("rbd", "ceph-common")
    {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("xceph")
        .tempdir_in("/tmp")
        .unwrap();
    let t = Instant::now();
    let out = run(Command::new("bash")
        .arg(servers_dir().join("ceph.sh"))
        .arg("start")
        .arg(dir.path()));
    let target = out
        .lines()
        .find_map(|l| l.strip_prefix("RBD_TARGET="))
        .unwrap_or_else(|| panic!("no RBD_TARGET in {out}"))
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    eprintln!("cluster up in {:?}: {target}", t.elapsed());
    Some(Cluster { dir, target })
}

fn wait_all(q: &mut RbdQueue, n: usize) -> Vec<Completion> {
    let mut out = Vec::new();
    let t = Instant::now();
    while out.len() < n {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{} of {n} after 120 s",
            out.len()
        );
        let want = n - out.len();
        q.complete(&mut out, want, Some(Duration::from_secs(1)))
            .unwrap();
    }
    out
}

#[test]
fn rbd_verified_io_flush_and_osd_restart_under_writes() {
    let Some(c) = start() else { return };
    // No client cache: a write is acknowledged once the OSD has it (librbd's
    // writeback cache would acknowledge from memory after the first flush).
    let target: RbdTarget = format!("{}:rbd_cache=false", c.target).parse().unwrap();
    let opts = RbdOptions {
        discard_zeroes: true,
        ..RbdOptions::default()
    };
    let image = Arc::new(RbdImage::open(&target, &opts).unwrap());
    assert_eq!(image.size_bytes(), 1 << 30);
    let mut q = RbdQueue::new(image.clone(), 64).unwrap();

    // Verified I/O over the first 64 MiB of a fresh (zero) image.
    let mut model = vec![0u8; 64 * MIB];
    let t = script(&mut q, &mut model, 5, 60, 32, true);
    eprintln!("script: {t:?}");
    assert!(
        t.writes > 100 && t.reads > 100 && t.flushes > 0 && t.discards > 0,
        "{t:?}"
    );
    q.submit(1, Io::Flush).unwrap();
    wait_all(&mut q, 1)[0].result.as_ref().unwrap();

    // Clear errors: past the end, a missing image, a missing pool.
    let p = Arc::new(Region::anonymous(4096).unwrap());
    let e = q
        .submit(
            2,
            Io::Read {
                offset: 1 << 30,
                segs: vec![IoSeg::new(p.clone(), 0, 4096)],
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
    let mut t2 = target.clone();
    t2.image = "absent".into();
    let e = RbdImage::open(&t2, &opts).unwrap_err().to_string();
    assert!(
        e.contains("rbd:rbd/absent") && e.contains("No such file"),
        "{e}"
    );
    let mut t3 = target.clone();
    t3.pool = "nopool".into();
    let e = RbdImage::open(&t3, &opts).unwrap_err().to_string();
    assert!(e.contains("nopool"), "{e}");

    // The OSD SIGKILLed and restarted under a write stream (QD16, a unique
    // stamp per write, no two writes to one block in flight).
    let blocks = (256 * MIB / 4096) as u64;
    let dir = c.dir.path().to_path_buf();
    let pid_file = c.dir.path().join("run/osd.0.pid");
    let osd_pid = || {
        std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let old_pid = osd_pid();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        let t = Instant::now();
        eprintln!("restart-osd --kill");
        let out = Command::new("bash")
            .arg(servers_dir().join("ceph.sh"))
            .args(["restart-osd"])
            .arg(&dir)
            .arg("--kill")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restart-osd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "restart-osd: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        t.elapsed()
    });
    let mut rng = Rng(77);
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut inflight: HashMap<u64, (u64, Arc<Region>)> = HashMap::new();
    let mut busy = std::collections::HashSet::new();
    let mut stamp = 0u64;
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    let mut out = Vec::new();
    while !restarter.is_finished() || start.elapsed() < Duration::from_secs(3) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the OSD restart did not end"
        );
        while inflight.len() < 16 {
            let block = rng.range(0, blocks - 1);
            if !busy.insert(block) {
                continue;
            }
            stamp += 1;
            let pg = Arc::new(Region::anonymous(4096).unwrap());
            let mut d = vec![0u8; 4096];
            for (j, ch) in d.chunks_mut(8).enumerate() {
                ch.copy_from_slice(&(stamp ^ (block << 32) ^ j as u64).to_le_bytes());
            }
            pg.write(0, &d).unwrap();
            q.submit(
                stamp,
                Io::Write {
                    offset: block * 4096,
                    segs: vec![IoSeg::new(pg.clone(), 0, 4096)],
                },
            )
            .unwrap();
            inflight.insert(stamp, (block, pg));
        }
        out.clear();
        q.complete(&mut out, 1, Some(Duration::from_millis(200)))
            .unwrap();
        if !out.is_empty() {
            if last.elapsed() > Duration::from_millis(300) {
                eprintln!(
                    "stall of {:?} ending at {:?}",
                    last.elapsed(),
                    start.elapsed()
                );
            }
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        for c in &out {
            if let Err(e) = &c.result {
                panic!("write failed across the OSD restart: {e}");
            }
            let (block, _) = inflight.remove(&c.tag).unwrap();
            busy.remove(&block);
            acked.insert(block, c.tag);
        }
    }
    let restart_took = restarter.join().unwrap();
    for c in wait_all(&mut q, inflight.len()) {
        c.result.as_ref().unwrap();
        let (block, _) = inflight.remove(&c.tag).unwrap();
        acked.insert(block, c.tag);
    }
    eprintln!(
        "OSD restart took {restart_took:?}; {} blocks acknowledged; longest stall {longest:?}",
        acked.len()
    );
    let new_pid = osd_pid();
    eprintln!("OSD pid {old_pid} -> {new_pid}");
    assert!(
        !old_pid.is_empty() && old_pid != new_pid,
        "the OSD was not restarted"
    );
    if longest < Duration::from_millis(500) {
        eprintln!("note: the write stream did not stall across the OSD restart");
    }
    // Read every acknowledged block back, 32 at a time, through a new
    // connection.
    drop(q);
    drop(image);
    let image = Arc::new(RbdImage::open(&target, &opts).unwrap());
    let mut q = RbdQueue::new(image.clone(), 64).unwrap();
    let list: Vec<(u64, u64)> = acked.into_iter().collect();
    for chunk in list.chunks(32) {
        let pages: Vec<Arc<Region>> = chunk
            .iter()
            .map(|_| Arc::new(Region::anonymous(4096).unwrap()))
            .collect();
        for (i, &(block, _)) in chunk.iter().enumerate() {
            q.submit(
                i as u64,
                Io::Read {
                    offset: block * 4096,
                    segs: vec![IoSeg::new(pages[i].clone(), 0, 4096)],
                },
            )
            .unwrap();
        }
        for c in wait_all(&mut q, chunk.len()) {
            c.result.as_ref().unwrap();
            let (block, st) = chunk[c.tag as usize];
            let mut head = [0u8; 8];
            pages[c.tag as usize].read(0, &mut head).unwrap();
            assert_eq!(
                u64::from_le_bytes(head),
                st ^ (block << 32),
                "block {block} lost its acknowledged write"
            );
        }
    }
    drop(q);
    drop(image);
}
