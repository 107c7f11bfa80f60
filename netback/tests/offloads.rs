//! Offloads end to end in one process: netfront <-> rings <-> netback <-> an
//! in-memory network that takes them. A large TCP segment from the network
//! reaches a frontend that negotiated GSO whole (its GSO extra and
//! `csum_blank`), and a frontend that did not (smoltcp's kind) as MSS-sized
//! frames cut by netback with every checksum right; a partial checksum is
//! finished for a frontend without checksum offload; a large segment sent
//! through the raw-packet API reaches the network whole with its metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xenio_netback::{
    BackendConfig, Checksum, Counters, Gso, GsoKind, MemNetwork, Meta, Offloads, serve,
};
use xenio_netfront::{NetFront, Options, PacketMeta};
use xenio_xenbus::DomId;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};

fn with_world(
    opts: Options,
    body: impl FnOnce(&mut NetFront<InProcDomain>, &MemNetwork, &Counters),
) {
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let net = MemNetwork {
        offloads: Offloads::ALL,
        ..Default::default()
    };
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    let config = BackendConfig {
        once: true,
        ..Default::default()
    };
    std::thread::scope(|sc| {
        let b = sc.spawn(|| serve(&dom0, &paths.backend, &net, &config, &counters, &shutdown));
        let mut f = NetFront::connect(guest.clone(), &paths.frontend, opts).unwrap();
        body(&mut f, &net, &counters);
        f.close().unwrap();
        b.join().unwrap().unwrap();
    });
}

/// Ethernet + IPv4 (192.0.2.1 -> 192.0.2.2) + TCP with `payload` bytes, the
/// checksum field holding the pseudo-header sum (a partial checksum).
fn tcp4(payload: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..54 + payload)
        .map(|i| (i as u8).wrapping_mul(13) ^ 0x3c)
        .collect();
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[15] = 0;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&[0x12, 0x34]);
    f[20..22].copy_from_slice(&[0x40, 0]);
    f[22] = 64;
    f[23] = 6;
    f[24..26].copy_from_slice(&[0, 0]);
    f[26..30].copy_from_slice(&[192, 0, 2, 1]);
    f[30..34].copy_from_slice(&[192, 0, 2, 2]);
    f[38..42].copy_from_slice(&1000u32.to_be_bytes()); // seq
    f[46] = 5 << 4;
    f[47] = 0x18; // PSH | ACK
    let ipc = !fold(sum(0, &f[14..34]));
    f[24..26].copy_from_slice(&ipc.to_be_bytes());
    let pseudo = fold(pseudo4(&f, 20 + payload));
    f[50..52].copy_from_slice(&pseudo.to_be_bytes());
    f
}

fn sum(mut s: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo4(f: &[u8], l4_len: usize) -> u32 {
    sum(sum(0, &f[26..34]), &[0, 6]) + l4_len as u32
}

/// Whether a whole frame's IPv4 header and TCP checksums verify.
fn checksums_ok(f: &[u8]) -> bool {
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    fold(sum(0, &f[14..34])) == 0xffff
        && fold(sum(pseudo4(f, total - 20), &f[34..14 + total])) == 0xffff
}

fn recv_meta(f: &mut NetFront<InProcDomain>, n: usize) -> Vec<(Vec<u8>, PacketMeta)> {
    let mut out = Vec::new();
    let t = Instant::now();
    let mut buf = Vec::new();
    while out.len() < n {
        match f.recv_packet(&mut buf).unwrap() {
            Some(m) => out.push((std::mem::take(&mut buf), m)),
            None => {
                f.wait(Duration::from_millis(10)).unwrap();
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "{} of {n}",
                    out.len()
                );
            }
        }
    }
    out
}

fn large() -> (Vec<u8>, Meta) {
    let pkt = tcp4(30_000);
    let meta = Meta {
        checksum: Checksum::Partial {
            start: 34,
            offset: 16,
        },
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1448,
            hdr_len: 54,
        }),
    };
    (pkt, meta)
}

#[test]
fn a_large_segment_reaches_a_gso_frontend_whole() {
    let opts = Options {
        csum_offload: true,
        gso: true,
        ..Default::default()
    };
    with_world(opts, |f, net, c| {
        assert!(f.info().gso_tcpv4 && f.info().csum_offload);
        let (pkt, meta) = large();
        net.frames
            .incoming_meta
            .lock()
            .unwrap()
            .push_back((pkt.clone(), meta));
        let got = recv_meta(f, 1);
        assert_eq!(got[0].0, pkt);
        let m = got[0].1;
        assert!(m.csum_blank && m.data_validated, "{m:?}");
        let g = m.gso.unwrap();
        assert_eq!((g.kind, g.mss), (xenio_netfront::GsoKind::TcpV4, 1448));
        assert_eq!(c.rx_gso_packets.load(Ordering::Relaxed), 1);
        // 30,054 bytes: 8 data slots and the extra.
        assert_eq!(c.rx_slots.load(Ordering::Relaxed), 9);
    });
}

#[test]
fn a_large_segment_is_cut_for_a_frontend_without_gso() {
    with_world(Options::default(), |f, net, c| {
        assert!(!f.info().gso_tcpv4 && !f.info().csum_offload);
        let (pkt, meta) = large();
        net.frames
            .incoming_meta
            .lock()
            .unwrap()
            .push_back((pkt.clone(), meta));
        // 30,000 bytes at 1448: 20 full segments and one of 1040.
        let got = recv_meta(f, 21);
        let mut payload = Vec::new();
        for (k, (fr, m)) in got.iter().enumerate() {
            assert!(fr.len() <= 1514, "segment {k}: {} bytes", fr.len());
            assert!(checksums_ok(fr), "segment {k}: bad checksum");
            assert!(m.gso.is_none() && !m.csum_blank);
            let seq = u32::from_be_bytes([fr[38], fr[39], fr[40], fr[41]]);
            assert_eq!(seq, 1000 + payload.len() as u32);
            // PSH on the last segment only.
            assert_eq!(fr[47] & 0x08 != 0, k == 20, "segment {k}");
            payload.extend_from_slice(&fr[54..]);
        }
        assert_eq!(payload, pkt[54..]);
        assert_eq!(c.rx_segmented.load(Ordering::Relaxed), 1);
        assert_eq!(c.rx_packets.load(Ordering::Relaxed), 21);
        // The time counters saw the reads and the grant copies of those frames.
        assert!(c.ns_rx_read.load(Ordering::Relaxed) > 0);
        assert!(c.ns_rx_copy.load(Ordering::Relaxed) > 0);
        assert!(
            c.summary().contains("ms in network reads "),
            "{}",
            c.summary()
        );
    });
}

#[test]
fn a_partial_checksum_is_finished_for_a_frontend_without_checksum_offload() {
    with_world(Options::default(), |f, net, _| {
        let pkt = tcp4(500);
        let meta = Meta {
            checksum: Checksum::Partial {
                start: 34,
                offset: 16,
            },
            gso: None,
        };
        net.frames
            .incoming_meta
            .lock()
            .unwrap()
            .push_back((pkt.clone(), meta));
        let got = recv_meta(f, 1);
        assert!(checksums_ok(&got[0].0));
        assert_eq!(got[0].0[..50], pkt[..50]);
        assert!(got[0].1.data_validated && !got[0].1.csum_blank);
    });
}

#[test]
fn a_large_segment_from_the_raw_api_reaches_the_network_whole() {
    let opts = Options {
        csum_offload: true,
        gso: true,
        ..Default::default()
    };
    with_world(opts, |f, net, c| {
        let pkt = tcp4(60_000);
        let meta = PacketMeta {
            csum_blank: true,
            data_validated: false,
            gso: Some(xenio_netfront::Gso {
                kind: xenio_netfront::GsoKind::TcpV4,
                mss: 1448,
            }),
        };
        while !f.send_packet(&pkt, &meta).unwrap() {
            f.wait(Duration::from_millis(10)).unwrap();
        }
        let t = Instant::now();
        while net.frames.sent.lock().unwrap().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(net.frames.sent.lock().unwrap()[0], pkt);
        let m = net.frames.sent_meta.lock().unwrap()[0];
        assert_eq!(
            m.gso,
            Some(Gso {
                kind: GsoKind::TcpV4,
                size: 1448,
                hdr_len: 54
            })
        );
        assert_eq!(c.tx_gso_packets.load(Ordering::Relaxed), 1);
        // A GSO packet without the offload negotiated is refused at once.
        let err = {
            let m2 = PacketMeta {
                gso: Some(xenio_netfront::Gso {
                    kind: xenio_netfront::GsoKind::TcpV6,
                    mss: 0,
                }),
                ..meta
            };
            f.send_packet(&pkt, &m2).unwrap_err()
        };
        assert!(err.to_string().contains("GSO"), "{err}");
    });
}
