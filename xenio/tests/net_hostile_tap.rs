//! The packet shapes of XSA-423 (CVE-2022-3643: headers split over slots),
//! XSA-432 (CVE-2023-34319: a packet in as many tiny pieces as the protocol
//! allows) and XSA-448 (CVE-2023-46838: zero-length fragments) through real
//! components: a hand-driven netif frontend (this process, domain 1, raw ring
//! entries on the local platform) against a `xenio netback` process attached
//! to a TAP device in a network namespace the test makes. Every slot gets the
//! answer `netback/tests/hostile.rs` expects of `serve` in one process
//! (`NETIF_RSP_OKAY`, and `NETIF_RSP_ERROR` for a packet over too many slots),
//! and the frames that reach the TAP, captured in the namespace with a packet
//! socket, are byte for byte what the frontend meant, and nothing else. Only
//! the wire protocol and the `xenio netback` command line are used. Needs
//! root (namespace, TAP, packet socket): without it the test says why and
//! passes vacuously.

mod common;

use common::*;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, setsockopt, socket,
    sockopt::ReceiveTimeout,
};
use nix::sys::time::TimeVal;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use xenio_xen_sys::netif::*;
use xenio_xenbus::{Platform, Store};

const FRONT_DIR: &str = "/local/domain/1/device/vif/0";
/// IEEE 802 local experimental EtherType: the kernel ignores these frames.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// A frame of `len` bytes: broadcast, from the frontend's MAC, EtherType
/// 0x88b5, then a pattern marked with `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x00, 0x16, 0x3e, 0x00, 0x00, 0x01]);
    f.extend_from_slice(&ETHERTYPE);
    f.extend((14..len).map(|i| (i as u8).wrapping_mul(7) ^ seed));
    f
}

/// Capture, in the namespace, frames with our EtherType on any interface
/// (the TAP is the only one besides lo, and the kernel sends no such frames
/// itself), until `last` arrives or 10 s pass.
fn capture(
    ns: &Netns,
    last: Vec<u8>,
) -> (mpsc::Receiver<()>, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    let (ready_tx, ready) = mpsc::channel();
    let h = ns.thread(move || {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .unwrap();
        setsockopt(&fd, ReceiveTimeout, &TimeVal::new(0, 200_000)).unwrap();
        ready_tx.send(()).unwrap();
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let Ok(n) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) else {
                continue;
            };
            if n < 14 || buf[12..14] != ETHERTYPE {
                continue;
            }
            let f = buf[..n].to_vec();
            let done = f == last;
            frames.push(f);
            if done {
                break;
            }
        }
        frames
    });
    (ready, h)
}

#[test]
fn xsa_423_432_448_shapes_reach_the_tap_byte_for_byte() {
    let Some(ns) = Netns::with_tap("xsa") else {
        return;
    };
    let w = World::new("xsa-tap", &[1]);
    let mut backend = w.netback(&ns, 1, &["--no-split-event-channels"]);
    let guest = w.platform(1);
    eventually(T, "the vif", || {
        guest
            .store()
            .read_opt(xenio_xenbus::Tx::NONE, &format!("{FRONT_DIR}/backend"))
            .unwrap()
            .is_some()
    });
    let mut f = RawNet::connect(&guest, FRONT_DIR, &[]).unwrap();

    // XSA-423: the first slot carries nothing, the second all 60 bytes.
    let a = frame(60, 1);
    f.put(1, 0, &a);
    // XSA-432: 18 slots of 4 bytes.
    let b = frame(72, 2);
    for k in 0..18 {
        f.put(2 + k, 100, &b[k * 4..k * 4 + 4]);
    }
    // XSA-448: all data in the first slot, then two empty ones (one at the
    // very end of its page).
    let d = frame(100, 3);
    f.put(20, 0, &d);
    // Too many slots (19 > XEN_NETIF_NR_SLOTS_MIN): answered with errors,
    // nothing sent.
    let bad = frame(190, 4);
    for k in 0..19 {
        f.put(21 + (k % 8), 200, &bad[k * 10..k * 10 + 10]);
    }
    // And an ordinary frame to end with.
    let last = frame(64, 5);
    f.put(30, 0, &last);

    let mut reqs = vec![
        tx_req(f.data_ref(0), 0, NETTXF_MORE_DATA, 1, 60),
        tx_req(f.data_ref(1), 0, 0, 2, 60),
    ];
    for k in 0..18u16 {
        let flags = if k < 17 { NETTXF_MORE_DATA } else { 0 };
        let size = if k == 0 { 72 } else { 4 };
        reqs.push(tx_req(f.data_ref(2 + k as usize), 100, flags, 10 + k, size));
    }
    reqs.push(tx_req(f.data_ref(20), 0, NETTXF_MORE_DATA, 40, 100));
    reqs.push(tx_req(f.data_ref(20), 0, NETTXF_MORE_DATA, 41, 0));
    reqs.push(tx_req(f.data_ref(20), 4096, 0, 42, 0));
    let bad_ids = 50..69u16;
    for k in bad_ids.clone() {
        let i = usize::from(k - 50);
        let flags = if i < 18 { NETTXF_MORE_DATA } else { 0 };
        let size = if i == 0 { 190 } else { 10 };
        reqs.push(tx_req(f.data_ref(21 + i % 8), 200, flags, k, size));
    }
    reqs.push(tx_req(f.data_ref(30), 0, 0, 99, 64));

    let (ready, capture) = capture(&ns, last.clone());
    ready.recv().unwrap();
    // Three batches: the XSA shapes, the bad packet, the last frame.
    f.send(&reqs[..23]);
    let mut rsps = f.responses(23, T);
    f.send(&reqs[23..42]);
    rsps.extend(f.responses(19, T));
    f.send(&reqs[42..]);
    rsps.extend(f.responses(1, T));
    let frames = capture.join().unwrap();

    let mut ids: Vec<u16> = rsps.iter().map(|r| r.id).collect();
    ids.sort();
    let mut want: Vec<u16> = reqs.iter().map(|r| r.id).collect();
    want.sort();
    assert_eq!(ids, want, "every slot answered once");
    for r in &rsps {
        let expected = if bad_ids.contains(&r.id) {
            NETIF_RSP_ERROR
        } else {
            NETIF_RSP_OKAY
        };
        assert_eq!(r.status, expected, "slot {}", r.id);
    }
    assert_eq!(
        frames.len(),
        4,
        "frames on the TAP: {:?}",
        frames.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(frames[0], a, "XSA-423 shape");
    assert_eq!(frames[1], b, "XSA-432 shape");
    assert_eq!(frames[2], d, "XSA-448 shape");
    assert_eq!(frames[3], last);
    assert!(backend.running(), "netback died");
    assert!(
        backend.stop().success(),
        "netback did not exit cleanly on SIGTERM"
    );
}

/// A frontend that posts no rx buffers while the host sends it more than
/// netback's rx queue holds (and more than it keeps reads armed on the TAP):
/// netback holds what fits, then (once the frontend has taken nothing for the
/// drain timeout) reads and drops the rest, counting them, and keeps serving;
/// its exit line says so, and how it read the TAP: through io_uring by
/// default, one `readv` per packet with `XENIO_TAP_IO=plain`.
#[test]
fn a_frontend_without_rx_buffers_gets_its_frames_dropped_and_counted() {
    without_rx_buffers("norx", None, "network I/O: reads io_uring");
}

#[test]
fn without_rx_buffers_on_the_plain_tap_path_too() {
    without_rx_buffers(
        "norxp",
        Some("plain"),
        "network I/O: reads readv per packet",
    );
}

fn without_rx_buffers(name: &str, tap_io: Option<&str>, io_line: &str) {
    let Some(ns) = Netns::with_tap(name) else {
        return;
    };
    ns.ip(&["addr", "add", "10.78.0.1/24", "dev", "xtap0"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.78.0.2",
        "lladdr",
        "00:16:3e:00:00:01",
        "dev",
        "xtap0",
    ]);
    let w = World::new(&format!("{name}-tap"), &[1]);
    let log = w.run_dir().join("netback.stderr");
    let mut c = ns.exec();
    c.arg(env!("CARGO_BIN_EXE_xenio"))
        .args(["netback", "--platform", "local", "--create-device"])
        .args(["--frontend", "1", "--tap", "xtap0"])
        .arg("--run-dir")
        .arg(w.run_dir())
        .arg("--no-split-event-channels")
        .stderr(std::fs::File::create(&log).unwrap());
    match tap_io {
        Some(v) => c.env("XENIO_TAP_IO", v),
        None => c.env_remove("XENIO_TAP_IO"),
    };
    let mut backend = Backend::spawn(c);
    let guest = w.platform(1);
    eventually(T, "the vif", || {
        guest
            .store()
            .read_opt(xenio_xenbus::Tx::NONE, &format!("{FRONT_DIR}/backend"))
            .unwrap()
            .is_some()
    });
    // Connected, and never a buffer posted on the rx ring.
    let _f = RawNet::connect(&guest, FRONT_DIR, &[]).unwrap();
    // Two waves of 400 datagrams, more than the rx queue (256) and the armed
    // reads (32) together, the second after the drain timeout (500 ms).
    let sent = ns
        .thread(|| {
            let s = std::net::UdpSocket::bind("10.78.0.1:0").unwrap();
            let mut n = 0u32;
            for wave in 0..2 {
                if wave == 1 {
                    std::thread::sleep(Duration::from_millis(1500));
                }
                for i in 0..400u32 {
                    if s.send_to(&i.to_be_bytes(), "10.78.0.2:9").is_ok() {
                        n += 1;
                    }
                }
            }
            n
        })
        .join()
        .unwrap();
    assert!(sent > 300, "datagrams sent: {sent}");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(backend.running(), "netback died");
    assert!(backend.stop().success(), "netback did not exit cleanly");
    let out = std::fs::read_to_string(&log).unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("dropped without buffers"))
        .unwrap_or_else(|| panic!("no exit line in:\n{out}"));
    let num_before = |what: &str| -> u64 {
        let i = line
            .find(what)
            .unwrap_or_else(|| panic!("{what} in {line}"));
        line[..i]
            .split_whitespace()
            .last()
            .and_then(|n| n.trim_start_matches('(').parse().ok())
            .unwrap_or_else(|| panic!("a number before {what} in {line}"))
    };
    eprintln!("{line}");
    assert_eq!(num_before(" packets /"), 0, "tx: {line}");
    let dropped = num_before(" dropped without buffers");
    assert!(dropped > 0, "nothing dropped: {line}");
    assert!(
        line.contains("rx 0 packets"),
        "delivered without buffers: {line}"
    );
    assert!(line.contains(io_line), "no {io_line:?} in: {line}");
}
