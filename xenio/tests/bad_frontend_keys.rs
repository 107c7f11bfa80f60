//! A frontend that publishes keys that make no sense: unsupported `protocol`,
//! `ring-page-order` above the maximum, `multi-queue-num-queues` of 0, above
//! the offer or not a number, a `ring-ref` or `event-channel` that is not a
//! number, a ring-ref it never granted, a port it never allocated, and for
//! the network `request-rx-copy` 0. Each is refused for that device alone: the
//! backend goes to Closing, writes the reason where Linux's
//! `xenbus_dev_fatal` does (`/local/domain/0/error/backend/<type>/<fe>/<devid>/error`,
//! "<errno> <message>"), goes on serving a second device in the same process
//! (its frontend doing verified I/O all along), and serves the same frontend
//! once it comes back with good keys.
//!
//! Two devices in one process means the library's `serve`, as `xenio blkback`
//! and `xenio netback` call it, on two threads over one local-platform
//! connection; the frontends are this process too (raw for the bad device,
//! xenio's own for the good one), on the local platform's files and FIFOs.
//! The network half needs root (TAPs in a network namespace) and is skipped
//! without it.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use xenio_blkback::{BackendConfig, Counters, FileStorage};
use xenio_hostio::disk::Direct;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device};
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::{DomId, Granted, Store, Tx};

/// A bad key set: what it is, the keys, what the error must mention.
type Case = (&'static str, Vec<(&'static str, String)>, &'static str);

/// Where the backend reports a fatal error of the device whose backend
/// directory is `backend` (Linux: `error/<nodename>/error` below the backend
/// domain's home).
fn error_node(backend: &str) -> String {
    let rest = backend.strip_prefix("/local/domain/0/").unwrap();
    format!("/local/domain/0/error/{rest}/error")
}

/// After a refusal: the error node (which domain 0 reads) names the problem;
/// the frontend `p` then goes Closed and waits for the backend's Closed,
/// ready to come back.
fn refused(dom0: &LocalPlatform, p: &LocalPlatform, paths: &DevicePaths, what: &str, expect: &str) {
    let node = error_node(&paths.backend);
    let msg = dom0
        .store()
        .read_string(Tx::NONE, &node)
        .unwrap_or_default();
    assert!(
        msg.contains(expect),
        "{what}: the error node {node} says {msg:?}, not {expect:?}"
    );
    assert!(
        msg.split_once(' ')
            .is_some_and(|(n, _)| n.parse::<i32>().is_ok_and(|n| n > 0)),
        "{what}: {msg:?} does not start with an errno"
    );
    eprintln!("{what}: {msg}");
    let mut ep = Endpoint::frontend(p.store(), &paths.frontend).unwrap();
    ep.switch(XenbusState::Closed, &[]).unwrap();
    ep.wait_peer(T, |s| s == XenbusState::Closed).unwrap();
}

/// The good device's frontend: verified I/O until `stop`; the pairs done.
fn blk_io_loop(
    run: std::path::PathBuf,
    dir: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> u64 {
    let p = Arc::new(LocalPlatform::connect(run, DomId(2)).unwrap());
    let opts = xenio_blkfront::Options {
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let mut d = xenio_blkfront::BlkFront::connect(p, &dir, opts).unwrap();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let data = [k as u8; 8192];
        d.write_at((k % 32) * 8192, &data).unwrap();
        let mut back = [0u8; 8192];
        d.read_at((k % 32) * 8192, &mut back).unwrap();
        assert_eq!(back, data, "the good device returned other data");
        k += 1;
        done.store(k, Ordering::Relaxed);
    }
    d.close().unwrap();
    k
}

#[test]
fn blkback_refuses_bad_keys_for_that_device_alone() {
    let w = World::new("badkeys-blk", &[1, 2]);
    let dom0 = w.platform(0);
    let bad = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    let good = DevicePaths::new(DomId(0), DomId(2), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &bad, &[]).unwrap();
    create_device(dom0.store(), &good, &[]).unwrap();
    let bad_disk = FileStorage::open(w.image("bad.img", 4 << 20), false, Direct::Auto).unwrap();
    let good_disk = FileStorage::open(w.image("good.img", 4 << 20), false, Direct::Auto).unwrap();
    let config = BackendConfig {
        max_ring_page_order: 2,
        max_queues: 2,
        ..Default::default()
    };
    let (c1, c2) = (Counters::default(), Counters::default());
    let shutdown = AtomicBool::new(false);
    let guest = w.platform(1);
    std::thread::scope(|s| {
        let b1 = s.spawn(|| {
            xenio_blkback::serve(&dom0, &bad.backend, &bad_disk, &config, &c1, &shutdown)
        });
        let b2 = s.spawn(|| {
            xenio_blkback::serve(&dom0, &good.backend, &good_disk, &config, &c2, &shutdown)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let io = {
            let (run, dir, stop) = (w.run_dir(), good.frontend.clone(), stop.clone());
            let done = done.clone();
            std::thread::spawn(move || blk_io_loop(run, dir, stop, done))
        };
        // The good device serves before the bad keys come (under load its
        // frontend can take longer to connect than all the cases take).
        let t = Instant::now();
        while done.load(Ordering::Relaxed) == 0 && !io.is_finished() && t.elapsed() < T {
            std::thread::sleep(Duration::from_millis(10));
        }
        let cases: Vec<Case> = vec![
            (
                "protocol unknown",
                vec![("protocol", "sparc64-abi".into())],
                "protocol",
            ),
            (
                "ring-page-order 3 > 2",
                vec![("ring-page-order", "3".into())],
                "ring-page-order",
            ),
            (
                "ring-page-order 2^32-1",
                vec![("ring-page-order", u32::MAX.to_string())],
                "ring-page-order",
            ),
            (
                "ring-page-order not a number",
                vec![("ring-page-order", "four".into())],
                "ring-page-order",
            ),
            (
                "0 queues",
                vec![("multi-queue-num-queues", "0".into())],
                "multi-queue-num-queues",
            ),
            (
                "3 queues > 2",
                vec![("multi-queue-num-queues", "3".into())],
                "multi-queue-num-queues",
            ),
            (
                "queues not a number",
                vec![("multi-queue-num-queues", "2x".into())],
                "multi-queue-num-queues",
            ),
            (
                "ring-ref not a number",
                vec![("ring-ref", "ref".into())],
                "ring-ref",
            ),
            (
                "ring-ref negative",
                vec![("ring-ref", "-8".into())],
                "ring-ref",
            ),
            (
                "ring-ref never granted",
                vec![("ring-ref", "9999".into())],
                "9999",
            ),
            (
                "event-channel not a number",
                vec![("event-channel", "0x10".into())],
                "event-channel",
            ),
            (
                "event-channel never allocated",
                vec![("event-channel", "4000".into())],
                "4000",
            ),
            (
                "feature-persistent not a number",
                vec![("feature-persistent", "yes".into())],
                "feature-persistent",
            ),
        ];
        // A failed check must still stop the threads (or the test would hang).
        let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // "Meanwhile" means it: the good device is serving before the
            // first bad key set (on a loaded machine it can take a while).
            eventually(Duration::from_secs(60), "the good device serving", || {
                c2.requests.load(Ordering::Relaxed) > 0
            });
            for (what, keys, expect) in &cases {
                match RawBlk::connect(&guest, &bad.frontend, keys) {
                    Ok(_) => panic!("{what}: the backend connected"),
                    Err(s) => assert!(
                        matches!(s, XenbusState::Closing | XenbusState::Closed),
                        "{what}: backend {s:?}"
                    ),
                }
                refused(&dom0, &guest, &bad, what, expect);
                // A frontend that tries again writes its keys afresh.
                for (k, _) in keys {
                    guest
                        .store()
                        .rm(Tx::NONE, &format!("{}/{k}", bad.frontend))
                        .unwrap();
                }
            }
            // Back with good keys: served.
            let mut f = RawBlk::connect(&guest, &bad.frontend, &[]).unwrap();
            f.data.region().fill(0, 4096, 0x3c).unwrap();
            f.send(&[f.request(BLKIF_OP_WRITE, 1, 8, 0)]);
            f.send(&[f.request(BLKIF_OP_READ, 2, 8, 1)]);
            let r = f.responses(2, T);
            assert!(r.iter().all(|r| r.status == BLKIF_RSP_OKAY), "{r:?}");
            let mut page = [0u8; 4096];
            f.data.region().read(4096, &mut page).unwrap();
            assert_eq!(page, [0x3c; 4096]);
            f
        }));
        stop.store(true, Ordering::Relaxed);
        let pairs = io.join();
        shutdown.store(true, Ordering::Relaxed);
        let served = [b1.join(), b2.join()];
        let f = body.unwrap_or_else(|p| std::panic::resume_unwind(p));
        let pairs = pairs.unwrap();
        eprintln!(
            "{} bad key sets refused; the other device did {pairs} write+read pairs meanwhile",
            cases.len()
        );
        assert!(pairs > 0);
        assert_eq!(
            c2.errors.load(Ordering::Relaxed),
            0,
            "the good device saw errors"
        );
        for b in served {
            b.unwrap().unwrap();
        }
        drop(f);
    });
}

#[test]
fn netback_refuses_bad_keys_for_that_device_alone() {
    let Some(ns) = Netns::with_tap("badkeys") else {
        return;
    };
    ns.ip(&["tuntap", "add", "dev", "xtap1", "mode", "tap"]);
    ns.ip(&["link", "set", "xtap1", "up"]);
    let w = World::new("badkeys-net", &[1, 2]);
    let dom0 = w.platform(0);
    let bad = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    let good = DevicePaths::new(DomId(0), DomId(2), DeviceKind::Vif, 0);
    create_device(dom0.store(), &bad, &[]).unwrap();
    create_device(dom0.store(), &good, &[]).unwrap();
    // The TAPs are opened in the namespace; the descriptors work anywhere.
    let (tap0, tap1) = ns
        .thread(|| {
            (
                xenio_netback::TapNetwork::open("xtap0", false).unwrap(),
                xenio_netback::TapNetwork::open("xtap1", false).unwrap(),
            )
        })
        .join()
        .unwrap();
    let config = xenio_netback::BackendConfig {
        max_queues: 2,
        ..Default::default()
    };
    let (c1, c2) = (
        xenio_netback::Counters::default(),
        xenio_netback::Counters::default(),
    );
    let shutdown = AtomicBool::new(false);
    let guest = w.platform(1);
    let guest2 = w.platform(2);
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        let b1 =
            s.spawn(|| xenio_netback::serve(&dom0, &bad.backend, &tap0, &config, &c1, &shutdown));
        let b2 =
            s.spawn(|| xenio_netback::serve(&dom0, &good.backend, &tap1, &config, &c2, &shutdown));
        // The good device's frontend sends frames all along.
        let io = s.spawn(|| {
            let mut f = RawNet::connect(&guest2, &good.frontend, &[]).unwrap();
            let mut frame = vec![0xff; 6];
            frame.extend_from_slice(&[0x00, 0x16, 0x3e, 0x00, 0x00, 0x02, 0x88, 0xb5]);
            frame.resize(100, 0x77);
            f.put(0, 0, &frame);
            let mut id = 0u16;
            while !stop.load(Ordering::Relaxed) {
                f.send(&[tx_req(f.data_ref(0), 0, 0, id, 100)]);
                let r = f.responses(1, T);
                assert_eq!(r[0].status, xenio_xen_sys::netif::NETIF_RSP_OKAY);
                sent.fetch_add(1, Ordering::Relaxed);
                id = id.wrapping_add(1) % 256;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let cases: Vec<Case> = vec![
            (
                "0 queues",
                vec![("multi-queue-num-queues", "0".into())],
                "multi-queue-num-queues",
            ),
            (
                "3 queues > 2",
                vec![("multi-queue-num-queues", "3".into())],
                "multi-queue-num-queues",
            ),
            (
                "queues not a number",
                vec![("multi-queue-num-queues", "many".into())],
                "multi-queue-num-queues",
            ),
            (
                "tx-ring-ref not a number",
                vec![("tx-ring-ref", "tx".into())],
                "tx-ring-ref",
            ),
            (
                "rx-ring-ref never granted",
                vec![("rx-ring-ref", "9999".into())],
                "9999",
            ),
            (
                "event-channel not a number",
                vec![("event-channel", "-1".into())],
                "event-channel",
            ),
            (
                "event-channel never allocated",
                vec![("event-channel", "4000".into())],
                "4000",
            ),
            (
                "request-rx-copy 0",
                vec![("request-rx-copy", "0".into())],
                "request-rx-copy",
            ),
            (
                "feature-sg not a number",
                vec![("feature-sg", "on".into())],
                "feature-sg",
            ),
        ];
        let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (what, keys, expect) in &cases {
                match RawNet::connect(&guest, &bad.frontend, keys) {
                    Ok(_) => panic!("{what}: the backend connected"),
                    Err(s) => assert!(
                        matches!(s, XenbusState::Closing | XenbusState::Closed),
                        "{what}: backend {s:?}"
                    ),
                }
                refused(&dom0, &guest, &bad, what, expect);
                // A frontend that tries again writes its keys afresh.
                for (k, _) in keys {
                    guest
                        .store()
                        .rm(Tx::NONE, &format!("{}/{k}", bad.frontend))
                        .unwrap();
                }
            }
            // Back with good keys: a frame goes out.
            let mut f = RawNet::connect(&guest, &bad.frontend, &[]).unwrap();
            let mut frame = vec![0xff; 6];
            frame.extend_from_slice(&[0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x88, 0xb5]);
            frame.resize(64, 0x11);
            f.put(0, 0, &frame);
            f.send(&[tx_req(f.data_ref(0), 0, 0, 1, 64)]);
            assert_eq!(
                f.responses(1, T)[0].status,
                xenio_xen_sys::netif::NETIF_RSP_OKAY
            );
            f
        }));
        stop.store(true, Ordering::Relaxed);
        let io = io.join();
        shutdown.store(true, Ordering::Relaxed);
        let served = [b1.join(), b2.join()];
        let f = body.unwrap_or_else(|p| std::panic::resume_unwind(p));
        io.unwrap();
        eprintln!(
            "{} bad key sets refused; the other device sent {} frames meanwhile",
            cases.len(),
            sent.load(Ordering::Relaxed)
        );
        assert!(sent.load(Ordering::Relaxed) > 0);
        assert_eq!(
            c2.tx_packets.load(Ordering::Relaxed),
            sent.load(Ordering::Relaxed)
        );
        for b in served {
            b.unwrap().unwrap();
        }
        drop(f);
    });
}
