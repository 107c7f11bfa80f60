//! A hand-driven netif frontend (raw ring entries over the in-process
//! platform) against netback with an in-memory network: packets Linux netback
//! had trouble with (XSA-423, XSA-432, XSA-448) are delivered intact; packets
//! that are merely bad (too short, too long, too many slots, bad grant
//! references) are answered with errors while the ring keeps serving; protocol
//! violations (a fragment past its page or bigger than the packet, an endless
//! chain, a bad extra info, a producer index far ahead) disconnect the
//! frontend without harming the backend. With a network that takes offloads,
//! the GSO extra and `NETTXF_csum_blank` get the same treatment: an MSS of 0
//! disconnects (as in Linux), an MSS below the minimum, above the packet or
//! making segments longer than the MTU, a GSO packet that is not TCP, headers
//! that claim more than the slots carry and a checksum field past the end are
//! answered with errors, and good large segments reach the network whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xenio_netback::{BackendConfig, Checksum, Counters, MemNetwork, Offloads, Outcome, serve};
use xenio_ring::FrontRing;
use xenio_xen_sys::netif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device, read_state};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::*;

const T: Duration = Duration::from_secs(10);

type Grant = <<InProcDomain as Platform>::Grants as GrantTable>::Granted;
type Chan = <<InProcDomain as Platform>::Events as EventChannels>::Channel;

struct Front {
    tx: FrontRing<NetifTxRequest, NetifTxResponse, Arc<Region>>,
    rx: FrontRing<NetifRxRequest, NetifRxResponse, Arc<Region>>,
    tx_grant: Grant,
    ch: Chan,
    /// 32 pages of frame data, granted read-only.
    data: Grant,
    /// 8 rx buffers.
    bufs: Grant,
    _rx_grant: Grant,
}

impl Front {
    fn data_ref(&self, page: usize) -> u32 {
        self.data.refs()[page].0
    }

    fn put(&self, page: usize, offset: usize, bytes: &[u8]) {
        self.data
            .region()
            .write(page * 4096 + offset, bytes)
            .unwrap();
    }

    fn send(&mut self, reqs: &[NetifTxRequest]) {
        for r in reqs {
            self.tx.push_request(r).unwrap();
        }
        if self.tx.push_requests_and_check_notify().is_required() {
            self.ch.notify().unwrap();
        }
    }

    fn responses(&mut self, n: usize) -> Vec<NetifTxResponse> {
        let mut out = Vec::new();
        let t = Instant::now();
        while out.len() < n {
            if let Some(r) = self.tx.take_response().unwrap() {
                out.push(r);
            } else if !self.tx.final_check_for_responses().unwrap() {
                self.ch.wait(Some(Duration::from_millis(50))).unwrap();
                assert!(t.elapsed() < T, "{} of {n} responses", out.len());
            }
        }
        out
    }
}

fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> NetifTxRequest {
    NetifTxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

/// Run `body` against a connected backend; returns what `serve` returned.
fn scenario(body: impl FnOnce(&mut Front, &MemNetwork, &Counters, &dyn Fn() -> XenbusState)) {
    scenario_with(Offloads::NONE, body)
}

/// [`scenario`] with a network that takes `offloads`.
fn scenario_with(
    offloads: Offloads,
    body: impl FnOnce(&mut Front, &MemNetwork, &Counters, &dyn Fn() -> XenbusState),
) {
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = world.domain(DomId(1)).unwrap();
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let net = MemNetwork {
        offloads,
        ..Default::default()
    };
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    let config = BackendConfig {
        once: true,
        split_event_channels: false,
        ..Default::default()
    };
    std::thread::scope(|s| {
        let b = s.spawn(|| serve(&dom0, &paths.backend, &net, &config, &counters, &shutdown));
        let mut ep = Endpoint::frontend(guest.store(), &paths.frontend).unwrap();
        ep.wait_peer(T, |s| s == XenbusState::InitWait).unwrap();
        let g = guest.grants().unwrap();
        let tx_grant = g.grant(DomId(0), 1, Access::ReadWrite).unwrap();
        let rx_grant = g.grant(DomId(0), 1, Access::ReadWrite).unwrap();
        let mut f = Front {
            tx: FrontRing::init(tx_grant.region().clone()).unwrap(),
            rx: FrontRing::init(rx_grant.region().clone()).unwrap(),
            ch: guest.events().alloc_unbound(DomId(0)).unwrap(),
            data: g.grant(DomId(0), 32, Access::ReadOnly).unwrap(),
            bufs: g.grant(DomId(0), 8, Access::ReadWrite).unwrap(),
            tx_grant,
            _rx_grant: rx_grant,
        };
        ep.switch(
            XenbusState::Initialised,
            &[
                ("tx-ring-ref", f.tx_grant.refs()[0].0.to_string()),
                ("rx-ring-ref", f._rx_grant.refs()[0].0.to_string()),
                ("event-channel", f.ch.port().0.to_string()),
                ("request-rx-copy", "1".into()),
                ("feature-rx-notify", "1".into()),
                ("feature-sg", "1".into()),
            ],
        )
        .unwrap();
        ep.wait_peer(T, |s| s == XenbusState::Connected).unwrap();
        ep.switch(XenbusState::Connected, &[]).unwrap();
        let backend_state =
            || read_state(guest.store(), &format!("{}/state", paths.backend)).unwrap();
        body(&mut f, &net, &counters, &backend_state);
        ep.switch(XenbusState::Closing, &[]).unwrap();
        ep.wait_peer(T, |s| s == XenbusState::Closing || s == XenbusState::Closed)
            .unwrap();
        ep.switch(XenbusState::Closed, &[]).unwrap();
        assert_eq!(b.join().unwrap().unwrap(), Outcome::Closed);
    });
}

fn sent(net: &MemNetwork) -> Vec<Vec<u8>> {
    std::mem::take(&mut *net.frames.sent.lock().unwrap())
}

fn wait_disconnect(state: &dyn Fn() -> XenbusState) {
    let t = Instant::now();
    while state() == XenbusState::Connected {
        assert!(t.elapsed() < T, "the backend did not disconnect");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(state(), XenbusState::Closing);
}

#[test]
fn xsa_423_432_448_shapes_are_delivered_whole() {
    scenario(|f, net, c, _| {
        // XSA-423: the first fragment is empty, the headers are in the second.
        let a = pattern(60, 1);
        f.put(1, 0, &a);
        // XSA-432: 18 fragments of 4 bytes, far less than any header copy area.
        let b = pattern(72, 2);
        for k in 0..18 {
            f.put(2 + k, 100, &b[k * 4..k * 4 + 4]);
        }
        // XSA-448: all data in the first fragment, then zero-length ones.
        let d = pattern(100, 3);
        f.put(20, 0, &d);
        let mut reqs = vec![
            req(f.data_ref(0), 0, NETTXF_MORE_DATA, 1, 60),
            req(f.data_ref(1), 0, 0, 2, 60),
        ];
        for k in 0..18u16 {
            let flags = if k < 17 { NETTXF_MORE_DATA } else { 0 };
            let size = if k == 0 { 72 } else { 4 };
            reqs.push(req(f.data_ref(2 + k as usize), 100, flags, 10 + k, size));
        }
        reqs.push(req(f.data_ref(20), 0, NETTXF_MORE_DATA, 40, 100));
        reqs.push(req(f.data_ref(21), 0, NETTXF_MORE_DATA, 41, 0));
        reqs.push(req(f.data_ref(22), 4096, 0, 42, 0));
        f.send(&reqs);
        let rsps = f.responses(reqs.len());
        assert!(rsps.iter().all(|r| r.status == NETIF_RSP_OKAY), "{rsps:?}");
        let mut ids: Vec<u16> = rsps.iter().map(|r| r.id).collect();
        ids.sort();
        let mut want: Vec<u16> = reqs.iter().map(|r| r.id).collect();
        want.sort();
        assert_eq!(ids, want, "every slot answered once");
        assert_eq!(sent(net), vec![a, b, d]);
        assert_eq!(c.tx_packets.load(Ordering::Relaxed), 3);
    });
}

#[test]
fn bad_packets_get_errors_and_the_ring_goes_on() {
    scenario(|f, net, c, state| {
        let good = pattern(64, 9);
        f.put(0, 0, &good);
        let mut reqs = vec![
            // Shorter than an Ethernet header.
            req(f.data_ref(0), 0, 0, 1, 13),
            // Longer than the MTU allows (1518), in 1 slot.
            req(f.data_ref(0), 0, NETTXF_MORE_DATA, 2, 2000),
            req(f.data_ref(1), 0, 0, 3, 1000),
            // A grant that does not exist, and one never granted.
            req(99_999, 0, 0, 4, 64),
            req(f.bufs.refs()[7].0 + 1000, 0, 0, 5, 64),
        ];
        // 19 data slots: more than XEN_NETIF_NR_SLOTS_MIN, fewer than fatal.
        reqs.push(req(f.data_ref(0), 0, NETTXF_MORE_DATA, 6, 19 * 10));
        for k in 1..19u16 {
            let flags = if k < 18 { NETTXF_MORE_DATA } else { 0 };
            reqs.push(req(f.data_ref(0), 0, flags, 6 + k, 10));
        }
        // And then a good one.
        reqs.push(req(f.data_ref(0), 0, 0, 99, 64));
        f.send(&reqs);
        let rsps = f.responses(reqs.len());
        for r in &rsps {
            let want = if r.id == 99 {
                NETIF_RSP_OKAY
            } else {
                NETIF_RSP_ERROR
            };
            assert_eq!(r.status, want, "{r:?}");
        }
        assert_eq!(sent(net), vec![good]);
        assert_eq!(c.tx_rejected.load(Ordering::Relaxed), 3);
        assert_eq!(c.tx_grant_errors.load(Ordering::Relaxed), 2);
        assert_eq!(state(), XenbusState::Connected);
    });
}

#[test]
fn rx_buffers_with_bad_grants_get_errors() {
    scenario(|f, net, c, _| {
        f.rx.push_request(&NetifRxRequest {
            id: 0,
            pad: 0,
            gref: 99_999,
        })
        .unwrap();
        f.rx.push_request(&NetifRxRequest {
            id: 1,
            pad: 0,
            gref: f.bufs.refs()[1].0,
        })
        .unwrap();
        if f.rx.push_requests_and_check_notify().is_required() {
            f.ch.notify().unwrap();
        }
        net.frames
            .incoming
            .lock()
            .unwrap()
            .extend([pattern(100, 1), pattern(200, 2)]);
        let mut got = Vec::new();
        let t = Instant::now();
        while got.len() < 2 {
            match f.rx.take_response().unwrap() {
                Some(r) => got.push(r),
                None => {
                    f.ch.wait(Some(Duration::from_millis(20))).unwrap();
                    assert!(t.elapsed() < T);
                }
            }
        }
        assert_eq!(got[0].status, NETIF_RSP_ERROR);
        assert_eq!(got[1].status, 200);
        let mut buf = vec![0u8; 200];
        f.bufs.region().read(4096, &mut buf).unwrap();
        assert_eq!(buf, pattern(200, 2));
        assert_eq!(c.rx_grant_errors.load(Ordering::Relaxed), 1);
    });
}

fn fatal(reqs: impl FnOnce(&Front) -> Vec<NetifTxRequest>) {
    scenario(|f, net, _, state| {
        let r = reqs(f);
        f.send(&r);
        wait_disconnect(state);
        assert!(sent(net).is_empty());
    });
}

#[test]
fn fragment_past_its_page_disconnects() {
    fatal(|f| vec![req(f.data_ref(0), 4000, 0, 1, 200)]);
    fatal(|f| {
        vec![
            req(f.data_ref(0), 0, NETTXF_MORE_DATA, 1, 300),
            req(f.data_ref(1), 4000, 0, 2, 200),
        ]
    });
}

#[test]
fn fragment_bigger_than_the_packet_disconnects() {
    fatal(|f| {
        vec![
            req(f.data_ref(0), 0, NETTXF_MORE_DATA, 1, 100),
            req(f.data_ref(1), 0, 0, 2, 200),
        ]
    });
}

#[test]
fn endless_chain_disconnects() {
    fatal(|f| {
        let mut v = vec![req(f.data_ref(0), 0, NETTXF_MORE_DATA, 0, 1000)];
        v.extend((1..30u16).map(|k| req(f.data_ref(0), 0, NETTXF_MORE_DATA, k, 0)));
        v
    });
}

#[test]
fn bad_extra_info_disconnects() {
    fatal(|f| {
        let bad = NetifExtraInfo {
            type_: 9,
            ..Default::default()
        };
        vec![req(f.data_ref(0), 0, NETTXF_EXTRA_INFO, 1, 60), bad.into()]
    });
}

#[test]
fn producer_far_ahead_disconnects() {
    scenario(|f, net, _, state| {
        // req_prod (word 0 of the shared ring) a thousand entries ahead.
        f.tx_grant
            .region()
            .write(0, &1000u32.to_ne_bytes())
            .unwrap();
        f.ch.notify().unwrap();
        wait_disconnect(state);
        assert!(sent(net).is_empty());
    });
}

#[test]
fn rx_producer_far_ahead_disconnects() {
    scenario(|f, net, _, state| {
        // A frame waits; the frontend's rx req_prod claims 5000 buffers.
        net.frames
            .incoming
            .lock()
            .unwrap()
            .push_back(pattern(100, 5));
        f._rx_grant
            .region()
            .write(0, &5000u32.to_ne_bytes())
            .unwrap();
        f.ch.notify().unwrap();
        wait_disconnect(state);
        assert!(f.rx.take_response().map_or(true, |r| r.is_none()));
    });
}

/// An Ethernet + IPv4 + TCP packet with `payload` bytes; the IPv4 total
/// length says `claim` more bytes than there are, the TCP data offset is
/// `doff` words, the protocol `proto`.
fn tcp4(payload: usize, claim: usize, doff: u8, proto: u8) -> Vec<u8> {
    let mut f = pattern(14 + 20 + 20 + payload, 0x5a);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[15] = 0;
    let total = (20 + 20 + payload + claim) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[20..22].copy_from_slice(&[0x40, 0]);
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&[192, 0, 2, 2]);
    f[30..34].copy_from_slice(&[192, 0, 2, 1]);
    f[46] = doff << 4;
    f
}

fn gso_extra(size: u16, type_: u8) -> NetifTxRequest {
    NetifExtraInfo {
        type_: XEN_NETIF_EXTRA_TYPE_GSO,
        flags: 0,
        u: NetifExtraInfoU {
            gso: NetifExtraGso {
                size,
                type_,
                pad: 0,
                features: 0,
            },
        },
    }
    .into()
}

/// Put `pkt` into pages `first..` (4096 bytes each) and describe it as one
/// packet with id base `id`, a GSO extra of `mss` (if any) and `flags`.
fn gso_packet(
    f: &Front,
    first: usize,
    id: u16,
    pkt: &[u8],
    flags: u16,
    extra: Option<NetifTxRequest>,
) -> Vec<NetifTxRequest> {
    let chunks: Vec<&[u8]> = pkt.chunks(4096).collect();
    let mut v = Vec::new();
    for (k, c) in chunks.iter().enumerate() {
        f.put(first + k, 0, c);
        let more = if k + 1 < chunks.len() {
            NETTXF_MORE_DATA
        } else {
            0
        };
        if k == 0 {
            let x = if extra.is_some() {
                NETTXF_EXTRA_INFO
            } else {
                0
            };
            v.push(req(
                f.data_ref(first),
                0,
                flags | more | x,
                id,
                pkt.len() as u16,
            ));
            v.extend(extra);
        } else {
            v.push(req(
                f.data_ref(first + k),
                0,
                more,
                id + k as u16,
                c.len() as u16,
            ));
        }
    }
    v
}

#[test]
fn gso_and_checksum_offload_shapes_get_errors_and_good_ones_pass_whole() {
    let blank = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
    scenario_with(Offloads::ALL, |f, net, c, state| {
        let good = tcp4(10_000, 0, 5, 6);
        let cases: Vec<(Vec<u8>, Option<NetifTxRequest>, u16, &str)> = vec![
            // Good: a 10,054-byte TCP segment to cut at 1448.
            (
                good.clone(),
                Some(gso_extra(1448, XEN_NETIF_GSO_TYPE_TCPV4)),
                blank,
                "good",
            ),
            // An MSS above the packet's length.
            (
                good.clone(),
                Some(gso_extra(60_000, XEN_NETIF_GSO_TYPE_TCPV4)),
                blank,
                "mss > packet",
            ),
            // An MSS below the minimum: thousands of segments.
            (
                good.clone(),
                Some(gso_extra(40, XEN_NETIF_GSO_TYPE_TCPV4)),
                blank,
                "mss 40",
            ),
            // Segments longer than the MTU allows (54 + 2000 > 1518).
            (
                good.clone(),
                Some(gso_extra(2000, XEN_NETIF_GSO_TYPE_TCPV4)),
                blank,
                "mss over mtu",
            ),
            // IPv6 GSO for an IPv4 packet.
            (
                good.clone(),
                Some(gso_extra(1448, XEN_NETIF_GSO_TYPE_TCPV6)),
                blank,
                "wrong kind",
            ),
            // GSO for UDP.
            (
                tcp4(10_000, 0, 5, 17),
                Some(gso_extra(1448, XEN_NETIF_GSO_TYPE_TCPV4)),
                blank,
                "udp",
            ),
            // The IPv4 header claims 20,000 more bytes than the slots carry.
            (
                tcp4(10_000, 20_000, 5, 6),
                Some(gso_extra(1448, XEN_NETIF_GSO_TYPE_TCPV4)),
                blank,
                "ip claims more",
            ),
            // csum_blank: a TCP header (data offset 15 words) past the end, so
            // the checksum field is outside the packet.
            (tcp4(4, 0, 15, 6), None, blank, "tcp header past the end"),
            // csum_blank with an IPv4 total length past the end.
            (tcp4(100, 3000, 5, 6), None, blank, "csum, ip claims more"),
            // Good: csum_blank on a small TCP segment.
            (tcp4(100, 0, 5, 6), None, blank, "good csum"),
        ];
        let mut reqs = Vec::new();
        let mut page = 0;
        let mut id = 100;
        for (pkt, extra, flags, _) in &cases {
            reqs.extend(gso_packet(f, page, id, pkt, *flags, *extra));
            page += pkt.len().div_ceil(4096);
            id += 10;
        }
        assert!(page <= 32);
        f.send(&reqs);
        let rsps = f.responses(reqs.len());
        for (k, (_, extra, _, what)) in cases.iter().enumerate() {
            let first = 100 + 10 * k as u16;
            let r = rsps
                .iter()
                .find(|r| r.id == first && r.status != NETIF_RSP_NULL)
                .unwrap();
            let want = if what.starts_with("good") {
                NETIF_RSP_OKAY
            } else {
                NETIF_RSP_ERROR
            };
            assert_eq!(r.status, want, "{what}");
            if extra.is_some() {
                assert!(rsps.iter().any(|r| r.status == NETIF_RSP_NULL));
            }
        }
        let out = sent(net);
        let meta = std::mem::take(&mut *net.frames.sent_meta.lock().unwrap());
        assert_eq!(out.len(), 2, "only the two good packets reach the network");
        assert_eq!(out[0].len(), good.len(), "the large segment goes whole");
        let g = meta[0].gso.expect("with its GSO metadata");
        assert_eq!((g.size, g.hdr_len), (1448, 54));
        assert_eq!(
            meta[0].checksum,
            Checksum::Partial {
                start: 34,
                offset: 16
            }
        );
        assert_eq!(
            meta[1].checksum,
            Checksum::Partial {
                start: 34,
                offset: 16
            }
        );
        // Everything but the checksum field is the frontend's bytes; the field
        // holds the pseudo-header sum.
        assert_eq!(out[0][..50], good[..50]);
        assert_eq!(out[0][52..], good[52..]);
        let mut s: u32 = [0xc000u32, 0x0202, 0xc000, 0x0201, 6, 10_020].iter().sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(u16::from_be_bytes([out[0][50], out[0][51]]), s as u16);
        assert_eq!(c.tx_rejected.load(Ordering::Relaxed), 8);
        assert_eq!(c.tx_gso_packets.load(Ordering::Relaxed), 1);
        assert_eq!(state(), XenbusState::Connected);
    });
}

#[test]
fn gso_of_a_kind_not_offered_gets_an_error() {
    // A network that takes no offloads: no GSO is offered, and a frontend
    // that sends some anyway gets an error, the ring going on.
    scenario(|f, net, c, state| {
        let pkt = tcp4(10_000, 0, 5, 6);
        let reqs = gso_packet(
            f,
            0,
            1,
            &pkt,
            NETTXF_CSUM_BLANK,
            Some(gso_extra(1448, XEN_NETIF_GSO_TYPE_TCPV4)),
        );
        f.send(&reqs);
        let rsps = f.responses(reqs.len());
        assert!(rsps.iter().all(|r| r.status != NETIF_RSP_OKAY), "{rsps:?}");
        assert!(sent(net).is_empty());
        assert_eq!(c.tx_rejected.load(Ordering::Relaxed), 1);
        assert_eq!(state(), XenbusState::Connected);
    });
}

#[test]
fn gso_size_zero_disconnects() {
    scenario_with(Offloads::ALL, |f, net, _, state| {
        let pkt = tcp4(10_000, 0, 5, 6);
        let reqs = gso_packet(
            f,
            0,
            1,
            &pkt,
            NETTXF_CSUM_BLANK,
            Some(gso_extra(0, XEN_NETIF_GSO_TYPE_TCPV4)),
        );
        f.send(&reqs);
        wait_disconnect(state);
        assert!(sent(net).is_empty());
    });
}
