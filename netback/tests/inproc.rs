//! netfront <-> rings <-> netback <-> an in-memory network, both ends as threads
//! of one process (the in-process platform): every frame size both ways,
//! multi-slot packets, several queues, plain and split event channels, and
//! frames dropped and counted while the frontend posts no buffers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xenio_netback::{BackendConfig, Counters, MemNetwork, QueueConfig, serve};
use xenio_netfront::{NetFront, Options};
use xenio_xenbus::DomId;
use xenio_xenbus::Store;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
use xenio_xenbus::platform::{InProcess, Platform};

fn frame(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed) as u8)
        .collect()
}

struct Setup {
    config: BackendConfig,
    opts: Options,
    mtu: u32,
}

fn with_world(
    s: Setup,
    body: impl FnOnce(&mut NetFront<xenio_xenbus::platform::InProcDomain>, &MemNetwork, &Counters),
) {
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    create_device(dom0.store(), &paths, &[("mtu", s.mtu.to_string())]).unwrap();
    dom0.store()
        .write(
            xenio_xenbus::Tx::NONE,
            &format!("{}/mtu", paths.frontend),
            s.mtu.to_string().as_bytes(),
        )
        .unwrap();
    let net = MemNetwork::default();
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let b = sc.spawn(|| serve(&dom0, &paths.backend, &net, &s.config, &counters, &shutdown));
        let mut f = NetFront::connect(guest.clone(), &paths.frontend, s.opts).unwrap();
        body(&mut f, &net, &counters);
        f.close().unwrap();
        assert_eq!(b.join().unwrap().unwrap(), xenio_netback::Outcome::Closed);
    });
}

fn send_all(f: &mut NetFront<impl Platform>, frames: &[Vec<u8>]) {
    for fr in frames {
        let t = Instant::now();
        while !f.send(fr).unwrap() {
            f.wait(Duration::from_millis(10)).unwrap();
            assert!(t.elapsed() < Duration::from_secs(10), "tx ring stuck");
        }
    }
}

fn wait_sent(net: &MemNetwork, n: usize) -> Vec<Vec<u8>> {
    let t = Instant::now();
    loop {
        if net.frames.sent.lock().unwrap().len() >= n {
            return std::mem::take(&mut *net.frames.sent.lock().unwrap());
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "frames did not arrive"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn recv_n(f: &mut NetFront<impl Platform>, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let t = Instant::now();
    let mut buf = Vec::new();
    while out.len() < n {
        if f.recv(&mut buf).unwrap() {
            out.push(std::mem::take(&mut buf));
        } else {
            f.wait(Duration::from_millis(10)).unwrap();
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "received {} of {n} frames",
                out.len()
            );
        }
    }
    out
}

fn sweep(config: BackendConfig, opts: Options, mtu: u32) {
    let max = mtu as usize + 14;
    with_world(Setup { config, opts, mtu }, |f, net, counters| {
        // Every size from an Ethernet header to the MTU, frontend -> network.
        let frames: Vec<Vec<u8>> = (14..=max).map(|n| frame(n, n as u32)).collect();
        send_all(f, &frames);
        let got = wait_sent(net, frames.len());
        assert_eq!(got.len(), frames.len());
        // One queue keeps the order; several may interleave.
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(|g| g.len());
        assert!(got_sorted == frames, "tx frames differ");
        // And network -> frontend.
        {
            let mut inc = net.frames.incoming.lock().unwrap();
            for fr in &frames {
                inc.push_back(fr.clone());
            }
        }
        let mut got = recv_n(f, frames.len());
        got.sort_by_key(|g| g.len());
        assert!(got == frames, "rx frames differ");
        assert_eq!(counters.tx_rejected.load(Ordering::Relaxed), 0);
        assert_eq!(counters.rx_dropped_no_buffers.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn every_size_one_queue_split_channels() {
    sweep(
        BackendConfig {
            once: true,
            ..Default::default()
        },
        Options::default(),
        1500,
    );
}

#[test]
fn every_size_multi_slot_tx_shared_channel() {
    // 200-byte slots at an odd offset: a 1514-byte frame is 8 slots.
    sweep(
        BackendConfig {
            once: true,
            split_event_channels: false,
            ..Default::default()
        },
        Options {
            max_slot_bytes: 200,
            tx_offset: 3,
            ..Default::default()
        },
        1500,
    );
}

#[test]
fn jumbo_frames_span_rx_buffers_with_sg_and_four_queues() {
    let config = BackendConfig {
        once: true,
        max_queues: 4,
        ..Default::default()
    };
    let opts = Options {
        queues: 4,
        ..Default::default()
    };
    with_world(
        Setup {
            config,
            opts,
            mtu: 9000,
        },
        |f, net, _| {
            assert_eq!(f.info().queues, 4);
            let frames: Vec<Vec<u8>> = [4095, 4096, 4097, 8192, 8193, 9014]
                .iter()
                .map(|&n| frame(n, 7))
                .collect();
            send_all(f, &frames);
            let mut got = wait_sent(net, frames.len());
            got.sort_by_key(|g| g.len());
            assert!(got == frames);
            net.frames
                .incoming
                .lock()
                .unwrap()
                .extend(frames.iter().cloned());
            let mut got = recv_n(f, frames.len());
            got.sort_by_key(|g| g.len());
            assert!(got == frames);
        },
    );
}

#[test]
fn without_sg_big_rx_frames_are_dropped_and_counted() {
    let config = BackendConfig {
        once: true,
        ..Default::default()
    };
    let opts = Options {
        sg: false,
        ..Default::default()
    };
    with_world(
        Setup {
            config,
            opts,
            mtu: 9000,
        },
        |f, net, counters| {
            assert!(!f.info().sg);
            // A frame that needs two slots cannot be sent without sg.
            assert!(f.send(&frame(5000, 1)).is_err());
            net.frames
                .incoming
                .lock()
                .unwrap()
                .extend([frame(5000, 1), frame(4096, 2)]);
            let got = recv_n(f, 1);
            assert_eq!(got[0], frame(4096, 2));
            assert_eq!(counters.rx_dropped_too_big.load(Ordering::Relaxed), 1);
        },
    );
}

#[test]
fn frames_without_rx_buffers_are_dropped_and_counted_not_queued() {
    let config = BackendConfig {
        once: true,
        queue: QueueConfig {
            rx_queue: 8,
            rx_drain: Duration::from_millis(50),
            ..Default::default()
        },
        ..Default::default()
    };
    with_world(
        Setup {
            config,
            opts: Options::default(),
            mtu: 1500,
        },
        |f, net, counters| {
            // 256 buffers posted; 1000 frames arrive and the frontend does not read.
            net.frames
                .incoming
                .lock()
                .unwrap()
                .extend((0..1000).map(|i| frame(100, i)));
            let t = Instant::now();
            while !net.frames.incoming.lock().unwrap().is_empty() {
                assert!(t.elapsed() < Duration::from_secs(20));
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(50));
            let dropped = counters.rx_dropped_no_buffers.load(Ordering::Relaxed);
            let delivered = counters.rx_packets.load(Ordering::Relaxed);
            assert_eq!(delivered, 256, "one frame per posted buffer");
            assert_eq!(dropped, 1000 - 256 - 8, "the rest minus the queue");
            // Reading frees buffers: the 8 queued frames come next, in order.
            let got = recv_n(f, 256 + 8);
            assert_eq!(got[0], frame(100, 0));
            assert_eq!(got[255], frame(100, 255));
            assert_eq!(got[256], frame(100, 256));
        },
    );
}
