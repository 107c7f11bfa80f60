//! XSA-332 (CVE-2020-27673, "a high rate of events to dom0"): a frontend
//! that notifies the backend's event channel in a tight loop without putting
//! a request on the ring. The backend is a `xenio blkback` process on the
//! local platform; the frontend is this test process (domain 1), hand-driven.
//! Over a few seconds of storm the backend's CPU time (from `/proc`) must stay
//! under a tenth of a CPU, the stormed device must keep answering its
//! requests, and a second device of another backend process must keep
//! serving. The same for a `xenio netback` process on a TAP in a network
//! namespace (root only; skipped otherwise). A resource check, not a timing
//! benchmark: the bounds are loose.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use xenio_blkfront::{BlkFront, Options};
use xenio_xen_sys::blkif::*;
use xenio_xenbus::{Granted, Platform, Store};

const STORM: Duration = Duration::from_secs(3);

#[test]
fn a_notification_storm_costs_the_backend_little_cpu_and_starves_nobody() {
    let w = World::new("storm", &[1, 2]);
    let image = w.image("a.img", 8 << 20);
    let other_image = w.image("b.img", 8 << 20);
    let backend = w.blkback(1, "xvda", &image, &[]);
    let other = w.blkback(2, "xvda", &other_image, &[]);
    let guest = w.platform(1);
    // Wait for the device the backend creates.
    eventually(T, "the device", || {
        guest
            .store()
            .read_opt(xenio_xenbus::Tx::NONE, "device/vbd/51712/backend")
            .unwrap()
            .is_some()
    });
    let mut f = RawBlk::connect(&guest, "/local/domain/1/device/vbd/51712", &[]).unwrap();
    f.data.region().fill(0, 4096, 0x42).unwrap();
    f.send(&[f.request(BLKIF_OP_WRITE, 1, 0, 0)]);
    assert_eq!(f.responses(1, T)[0].status, BLKIF_RSP_OKAY);

    // The other device: blkfront in a thread of its own, verified writes and
    // reads in a loop until the storm ends.
    let stop = Arc::new(AtomicBool::new(false));
    let other_ops = Arc::new(AtomicU64::new(0));
    let other_io = {
        let (stop, ops) = (stop.clone(), other_ops.clone());
        let run = w.run_dir();
        std::thread::spawn(move || {
            let p = Arc::new(
                xenio_xenbus::LocalPlatform::connect(run, xenio_xenbus::DomId(2)).unwrap(),
            );
            let opts = Options {
                timeout: Duration::from_secs(5),
                ..Default::default()
            };
            let dir = "/local/domain/2/device/vbd/51712";
            let t = Instant::now();
            let mut d = loop {
                match BlkFront::connect(p.clone(), dir, opts.clone()) {
                    Ok(d) => break d,
                    Err(e) if t.elapsed() < T => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("the other device: {e}"),
                }
            };
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let data = [k as u8; 4096];
                d.write_at((k % 64) * 4096, &data).unwrap();
                let mut back = [0u8; 4096];
                d.read_at((k % 64) * 4096, &mut back).unwrap();
                assert_eq!(back, data);
                ops.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            d.close().unwrap();
        })
    };

    // Idle first: what the backend costs doing nothing.
    let before = cpu_time(backend.pid());
    std::thread::sleep(Duration::from_secs(1));
    let idle = cpu_time(backend.pid()) - before;

    // The storm, from a thread of this process; the stormed device is used
    // meanwhile, one request at a time.
    let storming = AtomicBool::new(true);
    let notifies = AtomicU64::new(0);
    let ops_before = other_ops.load(Ordering::Relaxed);
    let start_cpu = cpu_time(backend.pid());
    let t0 = Instant::now();
    let mut served = 0u64;
    let mut slowest = Duration::ZERO;
    // The backend's end of the channel: its FIFO, which a notification writes
    // a byte into (docs/local-platform.md, Event channels).
    let (dom, port) =
        f.ch.remote()
            .unwrap()
            .expect("the backend bound the channel");
    let fifo = w
        .run_dir()
        .join(format!("domains/{}/evtchn/{}", dom.0, port.0));
    std::thread::scope(|s| {
        s.spawn(|| storm(&fifo, &storming, &notifies));
        let mut id = 100;
        while t0.elapsed() < STORM {
            let t = Instant::now();
            f.send(&[f.request(BLKIF_OP_READ, id, 0, 1)]);
            let r = f.responses(1, Duration::from_secs(5));
            assert_eq!((r[0].id, r[0].status), (id, BLKIF_RSP_OKAY));
            slowest = slowest.max(t.elapsed());
            served += 1;
            id += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        storming.store(false, Ordering::Relaxed);
    });
    let elapsed = t0.elapsed();
    let busy = cpu_time(backend.pid()) - start_cpu;
    let other_served = other_ops.load(Ordering::Relaxed) - ops_before;
    stop.store(true, Ordering::Relaxed);
    other_io.join().unwrap();
    let mut page = [0u8; 4096];
    f.data.region().read(4096, &mut page).unwrap();
    assert_eq!(
        page, [0x42; 4096],
        "the reads during the storm returned the data"
    );
    eprintln!(
        "storm of {} notifications in {elapsed:?}: the backend used {busy:?} of CPU \
         (idle: {idle:?} per second); {served} requests of the stormed device served, \
         the slowest in {slowest:?}; {other_served} write+read pairs on the other device",
        notifies.load(Ordering::Relaxed)
    );
    assert!(
        notifies.load(Ordering::Relaxed) > 100_000,
        "the storm was too weak to mean anything"
    );
    assert!(
        busy < elapsed / 10,
        "the backend spent {busy:?} of CPU in {elapsed:?} of notifications without requests"
    );
    assert!(
        served >= 10,
        "the stormed device served only {served} requests"
    );
    assert!(
        other_served >= 10,
        "the other device served only {other_served} write+read pairs"
    );
    let mut backend = backend;
    assert!(backend.running(), "the stormed backend died");
    drop(other);
}

/// Write into a peer's event channel FIFO as fast as possible until `storming`
/// clears; counts the writes in `notifies`.
fn storm(fifo: &std::path::Path, storming: &AtomicBool, notifies: &AtomicU64) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut peer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(fifo)
        .unwrap();
    while storming.load(Ordering::Relaxed) {
        for _ in 0..1000 {
            // Full means an event is pending already: go on.
            let _ = peer.write(&[1]);
        }
        notifies.fetch_add(1000, Ordering::Relaxed);
    }
}

#[test]
fn a_notification_storm_costs_netback_little_cpu_and_frames_still_go_out() {
    let Some(ns) = Netns::with_tap("storm") else {
        return;
    };
    let w = World::new("storm-net", &[1]);
    let mut backend = w.netback(&ns, 1, &["--no-split-event-channels"]);
    let guest = w.platform(1);
    let dir = "/local/domain/1/device/vif/0";
    eventually(T, "the vif", || {
        guest
            .store()
            .read_opt(xenio_xenbus::Tx::NONE, &format!("{dir}/backend"))
            .unwrap()
            .is_some()
    });
    let mut f = RawNet::connect(&guest, dir, &[]).unwrap();
    // A broadcast frame of an EtherType nobody answers, sent again and again.
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x88, 0xb5]);
    frame.resize(64, 0x5a);
    f.put(0, 0, &frame);

    let before = cpu_time(backend.pid());
    std::thread::sleep(Duration::from_secs(1));
    let idle = cpu_time(backend.pid()) - before;

    let (dom, port) =
        f.ch.remote()
            .unwrap()
            .expect("the backend bound the channel");
    let fifo = w
        .run_dir()
        .join(format!("domains/{}/evtchn/{}", dom.0, port.0));
    let storming = AtomicBool::new(true);
    let notifies = AtomicU64::new(0);
    let start_cpu = cpu_time(backend.pid());
    let t0 = Instant::now();
    let mut sent = 0u16;
    std::thread::scope(|s| {
        s.spawn(|| storm(&fifo, &storming, &notifies));
        while t0.elapsed() < STORM {
            f.send(&[tx_req(f.data_ref(0), 0, 0, sent % 256, 64)]);
            let r = f.responses(1, Duration::from_secs(5));
            assert_eq!(r[0].status, xenio_xen_sys::netif::NETIF_RSP_OKAY);
            sent += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        storming.store(false, Ordering::Relaxed);
    });
    let elapsed = t0.elapsed();
    let busy = cpu_time(backend.pid()) - start_cpu;
    eprintln!(
        "storm of {} notifications in {elapsed:?}: netback used {busy:?} of CPU \
         (idle: {idle:?} per second); {sent} frames sent meanwhile",
        notifies.load(Ordering::Relaxed)
    );
    assert!(
        notifies.load(Ordering::Relaxed) > 100_000,
        "the storm was too weak to mean anything"
    );
    assert!(
        busy < elapsed / 10,
        "netback spent {busy:?} of CPU in {elapsed:?} of notifications without requests"
    );
    assert!(sent >= 10, "only {sent} frames went out");
    assert!(backend.running(), "netback died");
}
