//! `xenio backendd` (a child process, domain 0) with the test toolstack of
//! `common/toolstack.rs` writing disks as libxl does, on the local platform:
//!
//! - a hostile frontend on one device (requests the backend must refuse, then
//!   a request producer index far past the ring: `RING_REQUEST_PROD_OVERFLOW`)
//!   while three devices of xenio blkfronts keep doing verified I/O and the C
//!   frontend (`tests/c/cfront.c`, Xen's headers and libc only) attaches to a
//!   fourth, writes, reads back and closes: the hostile device alone is
//!   refused, on its error node;
//! - a soak: four devices with mixed verified I/O (writes and reads of 512 B to
//!   128 KiB, flushes, discards) and a fifth attached and detached over and
//!   over, while the daemon's resident memory, descriptors and threads are
//!   sampled; at the end everything is detached and they are back where they
//!   started. `XENIO_SOAK_SECS` sets its length (default 15 s; the documented
//!   long soak is 1800: see docs/TESTING.md).

mod common;

use common::cfront::*;
use common::toolstack::*;
use common::*;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use xenio_blkfront::{BlkFront, Options};
use xenio_ring::SharedMemory;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::{EventChannel, Granted, Store, Tx};

const DEVID: u32 = 51712;
const DEVID2: u32 = 51728;

/// Attach `params` as `vdev` of `fe` and run the hotplug script, as `xl
/// block-attach` does; the device must reach InitWait.
fn attach(ts: &Toolstack, fe: u16, vdev: &str, devid: u32, params: &std::path::Path) {
    let st = ts.attach(fe, vdev, devid, &[("params", params.display().to_string())]);
    assert_eq!(st, XenbusState::InitWait, "{fe}/{devid}");
    assert!(
        ts.hotplug("vbd", "add", fe, devid),
        "block-xenio add {fe}/{devid}"
    );
}

#[test]
fn a_hostile_frontend_is_refused_alone_beside_three_devices_and_the_c_frontend() {
    let w = World::new("isolation", &[1, 2, 3, 4]);
    let ts = Toolstack::new(&w);
    let mut daemon = backendd(
        &w,
        None,
        &["--max-queues", "2", "--max-ring-page-order", "2"],
    );
    let s = ts.store();

    // Three devices of xenio blkfronts in two domains, verified I/O.
    let (a, b, c) = (
        w.image("a.img", 4 * MIB),
        w.image("b.img", 4 * MIB),
        w.image("d.img", 4 * MIB),
    );
    attach(&ts, 2, "xvda", DEVID, &a);
    attach(&ts, 3, "xvda", DEVID, &b);
    attach(&ts, 3, "xvdb", DEVID2, &c);
    let (dom2, dom3) = (Arc::new(w.platform(2)), Arc::new(w.platform(3)));
    let ios = [
        io_loop(&dom2, DEVID, 0x2a),
        io_loop(&dom3, DEVID, 0x3a),
        io_loop(&dom3, DEVID2, 0x3b),
    ];
    let progress = |what: &str| {
        for io in &ios {
            io.wait_progress(what);
        }
    };
    progress("the three devices' I/O");

    // The C frontend, domain 1, on a device attached first (as a domU's disks
    // are there before it boots: a frontend this quick, started before the
    // attach, connects before the toolstack's wait for InitWait looks and
    // is done by then); its image holds the pattern it expects (8 MiB, seed 0).
    let cimg = w.dir.path().join("cfront.img");
    std::fs::write(&cimg, (0..8 * MIB).map(|o| pat(o, 0)).collect::<Vec<u8>>()).unwrap();
    attach(&ts, 1, "xvda", DEVID, &cimg);
    let mut cfront = Proc::spawn(
        "cfront",
        Command::new(compiled())
            .arg(w.run_dir())
            .args(["1", &DEVID.to_string()]),
        w.dir.path(),
    );

    // The hostile frontend, domain 4: connects properly, then misbehaves.
    let h = w.image("h.img", 4 * MIB);
    attach(&ts, 4, "xvda", DEVID, &h);
    let dom4 = w.platform(4);
    let mut raw = RawBlk::connect(&dom4, "/local/domain/4/device/vbd/51712", &[])
        .expect("the hostile frontend connected");
    let sectors = 4 * MIB / 512;
    let mut too_many = raw.request(BLKIF_OP_READ, 1, 0, 0);
    too_many.nr_segments = 12;
    let mut never_granted = raw.request(BLKIF_OP_WRITE, 2, 0, 0);
    never_granted.seg[0].gref = 9999;
    let mut backwards = raw.request(BLKIF_OP_READ, 4, 0, 0);
    (backwards.seg[0].first_sect, backwards.seg[0].last_sect) = (5, 2);
    let hostile = [
        too_many,
        never_granted,
        raw.request(BLKIF_OP_READ, 3, sectors - 4, 0), // past the end
        backwards,
        raw.request(9, 5, 0, 0), // no such operation
        raw.request(BLKIF_OP_READ, 6, u64::MAX - 2, 0),
    ];
    raw.send(&hostile);
    let mut r = raw.responses(hostile.len(), T);
    r.sort_by_key(|r| r.id);
    for (r, want) in r.iter().zip(1..) {
        assert_eq!(r.id, want);
        assert!(
            r.status == BLKIF_RSP_ERROR || r.status == BLKIF_RSP_EOPNOTSUPP,
            "hostile request {} got {}",
            r.id,
            r.status
        );
    }
    // Refused one by one, the device still serves its frontend.
    raw.send(&[raw.request(BLKIF_OP_READ, 7, 8, 1)]);
    let ok = raw.responses(1, T);
    assert_eq!((ok[0].id, ok[0].status), (7, BLKIF_RSP_OKAY));
    let back4 = Toolstack::backend("vbd", 4, DEVID);
    assert_eq!(
        state_of(s, &format!("{back4}/state")),
        XenbusState::Connected
    );
    progress("the others' I/O after the refused requests");

    // A request producer a hundred requests past a 32-slot ring: the ring is
    // broken for good, the backend gives up on that device (its error node,
    // Closing), as Linux's blkback halts such a ring.
    let req_prod = &raw.ring_grant.region().words()[0];
    req_prod.store(
        req_prod.load(Ordering::Relaxed).wrapping_add(100),
        Ordering::Release,
    );
    raw.ch.notify().unwrap();
    eventually(
        Duration::from_secs(10),
        "the hostile device Closing",
        || state_of(s, &format!("{back4}/state")) == XenbusState::Closing,
    );
    let err = s
        .read_string(Tx::NONE, "/local/domain/0/error/backend/vbd/4/51712/error")
        .unwrap();
    eprintln!("the hostile device's error node: {err}");
    assert!(err.contains("req_prod") || err.contains("ring"), "{err}");
    progress("the others' I/O after the broken ring");

    // The C frontend did its verified writes and reads and closed.
    match cfront.wait(Duration::from_secs(60)) {
        Ok(st) if st.success() => {}
        other => panic!("the C frontend: {other:?}\n{}", cfront.output()),
    }
    let out = std::fs::read_to_string(&cfront.stdout).unwrap();
    assert!(
        out.lines().any(|l| l.starts_with("cfront: OK")),
        "{}",
        cfront.output()
    );
    let writes = out.lines().filter(|l| l.starts_with("write ")).count();
    assert!(writes >= 17, "only {writes} writes:\n{out}");
    progress("the others' I/O after the C frontend");
    assert!(daemon.running(), "the daemon died");

    // The toolstack detaches the hostile device, whose frontend never
    // closes: the device, Closing and waiting for its frontend, says Closed
    // within libxl's 10 s (`detach` waits for it), not after its own 30 s
    // wait; the error node goes once the device's thread has ended. The rest
    // detach cleanly.
    ts.detach("vbd", 4, DEVID);
    eventually(Duration::from_secs(10), "the error node removed", || {
        s.read_opt(Tx::NONE, "/local/domain/0/error/backend/vbd/4/51712/error")
            .unwrap()
            .is_none()
    });
    drop(raw);
    for io in ios {
        io.stop.store(true, Ordering::Relaxed);
        assert!(io.thread.join().unwrap().is_none(), "a device's I/O failed");
    }
    ts.detach("vbd", 1, DEVID);
    ts.detach("vbd", 2, DEVID);
    ts.detach("vbd", 3, DEVID);
    ts.detach("vbd", 3, DEVID2);
    let left = s.directory(Tx::NONE, "/local/domain/0/backend");
    assert!(left.as_ref().map_or(true, |l| l.is_empty()), "{left:?}");
    let status = daemon.stop();
    assert!(status.success(), "the daemon exited with {status}");
}

/// A tiny xorshift: the soak's choices, reproducible from the seed printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Mixed verified I/O on one device until `stop`: writes and reads of 1 to
/// 256 sectors at random places, checked against a shadow of the disk; a
/// flush now and then; discards, after which those sectors are unknown until
/// written again (blkif promises no content for discarded sectors). Returns
/// operations done.
fn mixed_io(p: Arc<LocalPlatform>, devid: u32, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let dir = format!("/local/domain/{}/device/vbd/{devid}", p.domid());
    let opts = Options {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut d = BlkFront::connect(p, &dir, opts).unwrap();
    let size = d.size() as usize;
    let sectors = size / 512;
    let mut shadow = vec![0u8; size];
    let mut known = vec![true; sectors];
    let mut rng = Rng(seed | 1);
    let mut ops = 0u64;
    let mut buf = vec![0u8; 256 * 512];
    while !stop.load(Ordering::Relaxed) {
        let n = 1 + rng.below(256) as usize;
        let at = rng.below((sectors - n) as u64) as usize;
        let (off, len) = (at * 512, n * 512);
        match rng.below(16) {
            0..=6 => {
                let tag = rng.next() as u8;
                for (i, x) in buf[..len].iter_mut().enumerate() {
                    *x = tag ^ (i as u8) ^ (at as u8);
                }
                d.write_at(off as u64, &buf[..len]).unwrap();
                shadow[off..off + len].copy_from_slice(&buf[..len]);
                known[at..at + n].fill(true);
            }
            7..=13 => {
                d.read_at(off as u64, &mut buf[..len]).unwrap();
                for s in (at..at + n).filter(|&s| known[s]) {
                    let (o, b) = (s * 512, (s - at) * 512);
                    assert!(
                        buf[b..b + 512] == shadow[o..o + 512],
                        "{dir}: sector {s} differs from what was written (seed {seed})"
                    );
                }
            }
            14 => d.flush().unwrap(),
            _ => {
                d.discard(off as u64, len as u64).unwrap();
                known[at..at + n].fill(false);
            }
        }
        ops += 1;
    }
    d.close().unwrap();
    ops
}

/// Resident set of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn soak_four_devices_and_attach_detach_churn_keep_the_daemon_flat() {
    let secs: u64 = std::env::var("XENIO_SOAK_SECS")
        .ok()
        .map(|v| v.parse().expect("XENIO_SOAK_SECS: seconds"))
        .unwrap_or(15);
    let seed = 0x5eed ^ std::process::id() as u64;
    eprintln!("soak: {secs} s, seed {seed:#x}");
    let w = World::new("soak", &[1, 2, 3, 4]);
    let ts = Toolstack::new(&w);
    let mut daemon = backendd(
        &w,
        None,
        &["--max-queues", "2", "--max-ring-page-order", "2"],
    );
    let pid = daemon.pid();
    let base = proc_stats(pid);
    let doms: Vec<Arc<LocalPlatform>> = (1..=4).map(|d| Arc::new(w.platform(d))).collect();

    let devices = [
        (1, "xvda", DEVID),
        (1, "xvdb", DEVID2),
        (2, "xvda", DEVID),
        (3, "xvda", DEVID),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (i, &(fe, vdev, devid)) in devices.iter().enumerate() {
        let img = w.image(&format!("soak{i}.img"), 16 * MIB);
        attach(&ts, fe, vdev, devid, &img);
        let (p, st) = (doms[fe as usize - 1].clone(), stop.clone());
        let s = seed.wrapping_mul(i as u64 + 3);
        workers.push(std::thread::spawn(move || mixed_io(p, devid, s, st)));
    }

    // Churn: domain 4's disk attached, used, detached, again and again.
    let churn_img = w.image("churn.img", 4 * MIB);
    let cycles = Arc::new(AtomicU64::new(0));
    let churn = {
        let (st, n, p4) = (stop.clone(), cycles.clone(), doms[3].clone());
        let churn_ts = Toolstack::new(&w);
        let img = churn_img.clone();
        std::thread::scope(|sc| {
            let h = sc.spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    attach(&churn_ts, 4, "xvda", DEVID, &img);
                    let io = io_loop(&p4, DEVID, n.load(Ordering::Relaxed) as u8);
                    while io.pairs.load(Ordering::Relaxed) < 20 {
                        std::thread::sleep(Duration::from_millis(5));
                        assert!(!io.thread.is_finished(), "the churn device's I/O ended");
                    }
                    io.stop.store(true, Ordering::Relaxed);
                    assert!(io.thread.join().unwrap().is_none(), "churn I/O failed");
                    churn_ts.detach("vbd", 4, DEVID);
                    n.fetch_add(1, Ordering::Relaxed);
                }
            });
            // Sample the daemon while it all runs.
            let t = Instant::now();
            let every = Duration::from_secs((secs / 20).clamp(1, 30));
            let mut samples = Vec::new();
            while t.elapsed() < Duration::from_secs(secs) {
                std::thread::sleep(every);
                assert!(!h.is_finished(), "the churn thread ended early");
                let p = proc_stats(pid);
                samples.push((t.elapsed().as_secs(), rss_kib(pid), p.fds, p.threads));
            }
            stop.store(true, Ordering::Relaxed);
            h.join().expect("the churn thread");
            samples
        })
    };
    let ops: u64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    for &(fe, _, devid) in &devices {
        ts.detach("vbd", fe, devid);
    }
    assert!(daemon.running(), "the daemon died");

    // Flat: after all devices are gone the daemon is back to its threads and
    // grant mappings (descriptors: see toolstack_daemon.rs for the local
    // platform's pool files kept per domain), and its memory did not grow from
    // the first quarter of the run to the end beyond allocator noise.
    let at = |p: ProcStats| (p.threads, p.pool_maps);
    eventually(Duration::from_secs(30), "threads, mappings back", || {
        at(proc_stats(pid)) == at(base)
    });
    let rss: Vec<u64> = churn.iter().map(|s| s.1).collect();
    let warm = rss[..rss.len().div_ceil(4)].iter().copied().max().unwrap();
    let (last, peak) = (*rss.last().unwrap(), *rss.iter().max().unwrap());
    let fds: Vec<usize> = churn.iter().map(|s| s.2).collect();
    let threads: Vec<usize> = churn.iter().map(|s| s.3).collect();
    eprintln!(
        "soak: {secs} s, {ops} verified operations on 4 devices, {} attach/detach cycles; \
         daemon RSS KiB first {} warm max {warm} peak {peak} last {last}; \
         fds {}..{}; threads {}..{}; samples (s, rss KiB, fds, threads): {churn:?}",
        cycles.load(Ordering::Relaxed),
        rss[0],
        fds.iter().min().unwrap(),
        fds.iter().max().unwrap(),
        threads.iter().min().unwrap(),
        threads.iter().max().unwrap(),
    );
    assert!(cycles.load(Ordering::Relaxed) >= 2, "too few churn cycles");
    assert!(
        last <= warm + warm / 10 + 4096,
        "the daemon's memory grew: {warm} KiB after warm-up, {last} KiB at the end"
    );
    // Descriptors and threads: bounded by what five devices hold, not growing
    // with cycles (the last quarter within the first quarter's range + one
    // device's worth).
    let q = fds.len().div_ceil(4);
    let (f0, f1) = (
        fds[..q].iter().max().unwrap(),
        fds[fds.len() - q..].iter().max().unwrap(),
    );
    assert!(*f1 <= f0 + 8, "descriptors grew: {fds:?}");
    let (t0, t1) = (
        threads[..q].iter().max().unwrap(),
        threads[threads.len() - q..].iter().max().unwrap(),
    );
    assert!(*t1 <= t0 + 4, "threads grew: {threads:?}");
    let status = daemon.stop();
    assert!(status.success(), "the daemon exited with {status}");
}
