//! netfront against a hand-driven backend (raw ring entries over the
//! in-process platform): rx responses with an error status, an offset and size
//! past the page, an id that is not the slot's, or a packet over too many slots
//! are dropped and counted while good frames still arrive; a tx response for an
//! id not in flight and a response producer far ahead are errors, never a panic.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use xenio_netfront::{NetFront, Options};
use xenio_ring::BackRing;
use xenio_xen_sys::netif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device, frontend_ready};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::*;

const T: Duration = Duration::from_secs(10);

type Chan = <<InProcDomain as Platform>::Events as EventChannels>::Channel;

struct Back {
    tx: BackRing<NetifTxRequest, NetifTxResponse, Region>,
    rx: BackRing<NetifRxRequest, NetifRxResponse, Region>,
    ch: Chan,
    rx_refs: Vec<(u16, GrantRef)>,
}

/// Play the backend for one connection: features, then map and bind what the
/// frontend published, then Connected.
fn backend(dom0: &InProcDomain, dir: &str) -> Back {
    let mut ep = Endpoint::backend(dom0.store(), dir).unwrap();
    ep.switch(
        XenbusState::InitWait,
        &[
            ("feature-rx-copy", "1".into()),
            ("feature-sg", "1".into()),
            ("feature-split-event-channels", "0".into()),
        ],
    )
    .unwrap();
    ep.wait_peer(T, frontend_ready).unwrap();
    let key = |k: &str| -> u32 { ep.peer_key(k).unwrap().unwrap().trim().parse().unwrap() };
    let (txr, rxr, port) = (key("tx-ring-ref"), key("rx-ring-ref"), key("event-channel"));
    let m = dom0.mapper().unwrap();
    let tx = BackRing::attach(m.map(DomId(1), &[GrantRef(txr)]).unwrap()).unwrap();
    let mut rx: BackRing<NetifRxRequest, NetifRxResponse, Region> =
        BackRing::attach(m.map(DomId(1), &[GrantRef(rxr)]).unwrap()).unwrap();
    let ch = dom0
        .events()
        .bind_interdomain(DomId(1), Port(port))
        .unwrap();
    ep.switch(XenbusState::Connected, &[]).unwrap();
    // Take every posted buffer now (the frontend posts them before Initialised).
    let mut rx_refs = Vec::new();
    let t = Instant::now();
    while rx_refs.len() < 256 {
        match rx.take_request().unwrap() {
            Some(r) => rx_refs.push((r.id, GrantRef(r.gref))),
            None => {
                assert!(t.elapsed() < T, "{} rx buffers posted", rx_refs.len());
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    Back {
        tx,
        rx,
        ch,
        rx_refs,
    }
}

impl Back {
    /// Fill buffer `slot` with `data` (grant copy) and answer it with `rsp`.
    fn answer(&mut self, dom0: &InProcDomain, slot: usize, data: &[u8], rsp: NetifRxResponse) {
        let (_, gref) = self.rx_refs[slot];
        if !data.is_empty() {
            let mut ops = [GrantCopy {
                domid: DomId(1),
                gref,
                offset: 0,
                local: CopyBuf::ToGrant(data),
            }];
            for r in dom0.mapper().unwrap().copy(&mut ops).unwrap() {
                r.unwrap();
            }
        }
        self.rx.push_response(&rsp).unwrap();
    }

    fn publish(&mut self) {
        let _ = self.rx.push_responses_and_check_notify();
        self.ch.notify().unwrap();
    }
}

fn recv_all(f: &mut NetFront<InProcDomain>, want: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let t = Instant::now();
    let mut buf = Vec::new();
    while out.len() < want {
        if f.recv(&mut buf).unwrap() {
            out.push(std::mem::take(&mut buf));
        } else {
            f.wait(Duration::from_millis(10)).unwrap();
            assert!(t.elapsed() < T, "{} of {want} frames", out.len());
        }
    }
    // Nothing else arrives.
    for _ in 0..5 {
        assert!(
            !f.recv(&mut buf).unwrap(),
            "an unexpected frame: {} bytes",
            buf.len()
        );
        f.wait(Duration::from_millis(5)).unwrap();
    }
    out
}

fn world() -> (InProcess, InProcDomain, Arc<InProcDomain>, DevicePaths) {
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    create_device(dom0.store(), &paths, &[]).unwrap();
    (world, dom0, guest, paths)
}

#[test]
fn bad_rx_responses_are_dropped_and_counted_good_ones_arrive() {
    let (_w, dom0, guest, paths) = world();
    std::thread::scope(|s| {
        let b = s.spawn(|| backend(&dom0, &paths.backend));
        let mut f = NetFront::connect(guest.clone(), &paths.frontend, Options::default()).unwrap();
        let mut back = b.join().unwrap();
        let good = |n: usize, seed: u8| -> Vec<u8> { (0..n).map(|i| i as u8 ^ seed).collect() };
        let rsp = |id: u16, offset: u16, flags: u16, status: i16| NetifRxResponse {
            id,
            offset,
            flags,
            status,
        };
        // slot 0: good, 100 bytes.
        back.answer(&dom0, 0, &good(100, 1), rsp(0, 0, 0, 100));
        // slot 1: an error status.
        back.answer(&dom0, 1, &[], rsp(1, 0, 0, NETIF_RSP_ERROR));
        // slot 2: offset + size past the page.
        back.answer(&dom0, 2, &good(100, 2), rsp(2, 4000, 0, 200));
        // slot 3: the id of another slot.
        back.answer(&dom0, 3, &good(100, 3), rsp(9, 0, 0, 100));
        // slots 4..=5: a good two-slot packet (4096 + 50 bytes).
        back.answer(&dom0, 4, &good(4096, 4), rsp(4, 0, NETRXF_MORE_DATA, 4096));
        back.answer(&dom0, 5, &good(50, 5), rsp(5, 0, 0, 50));
        // slots 6..=30: a packet over 25 slots (more than 18 + extras).
        for k in 6..=30u16 {
            let flags = if k < 30 { NETRXF_MORE_DATA } else { 0 };
            back.answer(&dom0, k as usize, &good(10, 6), rsp(k, 0, flags, 10));
        }
        // slot 31: good again.
        back.answer(&dom0, 31, &good(60, 7), rsp(31, 0, 0, 60));
        back.publish();
        let got = recv_all(&mut f, 3);
        let mut two = good(4096, 4);
        two.extend(good(50, 5));
        assert_eq!(got, vec![good(100, 1), two, good(60, 7)]);
        assert_eq!(f.counters().rx_errors.load(Ordering::Relaxed), 4);
        // Every consumed buffer was posted again.
        let mut again = 0;
        let t = Instant::now();
        while again < 32 {
            match back.rx.take_request().unwrap() {
                Some(_) => again += 1,
                None => {
                    assert!(t.elapsed() < T, "{again} buffers posted again");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let _ = back.tx.take_request();
    });
}

#[test]
fn tx_response_for_an_id_not_in_flight_is_an_error() {
    let (_w, dom0, guest, paths) = world();
    std::thread::scope(|s| {
        let b = s.spawn(|| backend(&dom0, &paths.backend));
        let mut f = NetFront::connect(guest.clone(), &paths.frontend, Options::default()).unwrap();
        let mut back = b.join().unwrap();
        assert!(f.send(&[0u8; 60]).unwrap());
        assert!(f.send(&[1u8; 60]).unwrap());
        let t = Instant::now();
        let mut reqs = Vec::new();
        while reqs.len() < 2 {
            if let Some(r) = back.tx.take_request().unwrap() {
                reqs.push(r);
            }
            assert!(t.elapsed() < T);
        }
        // Both answered with the first one's id: the second is a duplicate.
        for _ in 0..2 {
            back.tx
                .push_response(&NetifTxResponse {
                    id: reqs[0].id,
                    status: NETIF_RSP_OKAY,
                })
                .unwrap();
        }
        let _ = back.tx.push_responses_and_check_notify();
        // The frontend looks at tx responses when it needs room: fill the ring.
        let mut err = None;
        for _ in 0..300 {
            match f.send(&[0u8; 60]) {
                Ok(_) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let e = err.expect("the bad tx response was noticed").to_string();
        assert!(e.contains("not in flight"), "{e}");
    });
}

#[test]
fn rx_response_producer_far_ahead_is_an_error() {
    let (_w, dom0, guest, paths) = world();
    std::thread::scope(|s| {
        let b = s.spawn(|| backend(&dom0, &paths.backend));
        let mut f = NetFront::connect(guest.clone(), &paths.frontend, Options::default()).unwrap();
        let back = b.join().unwrap();
        // rsp_prod (word 2 of the shared ring) 5000 ahead.
        back.rx.memory().write(8, &5000u32.to_ne_bytes()).unwrap();
        back.ch.notify().unwrap();
        let mut buf = Vec::new();
        let e = f.recv(&mut buf).unwrap_err().to_string();
        assert!(e.to_lowercase().contains("response"), "{e}");
    });
}
