//! A backend that takes over a connection another left (`inflight_dir`):
//! stopped in "leave" mode the device stays `Connected`; a backend that "died"
//! holding requests (one answered and published, one answered but not
//! published, one not answered) is succeeded by one that serves exactly the
//! unpublished ones again, each answered once, without the device ever leaving
//! `Connected`. The dead backend is played by the test on the frontend's own
//! ring (in-process platform, a real file); `xenio/tests/blkd.rs` kills real
//! backend processes with SIGKILL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xenio_blkback::inflight::{self, Inflight};
use xenio_blkback::storage::FileStorage;
use xenio_blkback::{BackendConfig, Counters, Outcome, serve};
use xenio_hostio::disk::Direct;
use xenio_ring::BackRing;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{Endpoint, read_state};
use xenio_xenbus::platform::{InProcess, Platform};
use xenio_xenbus::*;

mod common;
use common::{Front, StopOnDrop, T, connect, domains, rw, seg};

/// The next `n` responses, and then nothing more: every request was answered
/// exactly once.
fn exactly(f: &mut Front, n: usize) -> Vec<BlkifResponse> {
    let out = f.responses(n);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        f.ring.take_response().unwrap().is_none(),
        "an extra response"
    );
    out
}

fn write(id: u64, sector: u64, gref: GrantRef) -> BlkifRequest {
    rw(BLKIF_OP_WRITE, id, sector, &[seg(gref, 0, 7)])
}

#[test]
fn a_successor_serves_exactly_what_a_dead_backend_left_unanswered() {
    let tmp = tempfile::Builder::new()
        .prefix("resume-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let image = tmp.path().join("disk.img");
    common::image(&image, 4 << 20);
    let records = tmp.path().join("inflight");
    let world = InProcess::new().unwrap();
    let (dom0, guest, paths) = domains(&world);
    let storage = FileStorage::open(&image, false, Direct::Auto).unwrap();
    let config = BackendConfig {
        once: true,
        persistent: false,
        max_queues: 1,
        inflight_dir: Some(records.clone()),
        close_on_shutdown: false,
        ..Default::default()
    };
    let counters = Counters::default();
    let state = |p: &str| read_state(dom0.store(), &format!("{p}/state")).unwrap();
    // Four data pages, one per request, each filled with its own byte.
    let data = guest
        .grants()
        .unwrap()
        .grant(DomId(0), 4, Access::ReadOnly)
        .unwrap();
    for i in 0..4 {
        data.region()
            .write(i * 4096, &[0x10 + i as u8; 4096])
            .unwrap();
    }
    let page = |i: usize| data.refs()[i];

    // 1. A first backend serves a write, then stops in "leave" mode.
    let stop_a = AtomicBool::new(false);
    let mut f = std::thread::scope(|s| {
        let a = s.spawn(|| serve(&dom0, &paths.backend, &storage, &config, &counters, &stop_a));
        let _stop = StopOnDrop(&stop_a);
        let (mut f, ep) = connect(&guest, &paths);
        ep.switch(XenbusState::Connected, &[]).unwrap();
        f.send(&[write(10, 0, page(0))]);
        assert_eq!(exactly(&mut f, 1)[0].status, BLKIF_RSP_OKAY);
        stop_a.store(true, Ordering::Relaxed);
        assert_eq!(a.join().unwrap().unwrap(), Outcome::Shutdown);
        f
    });
    assert_eq!(
        state(&paths.backend),
        XenbusState::Connected,
        "leave mode wrote nothing"
    );
    assert!(
        inflight::path(&records, &paths.backend, 0).exists(),
        "the record stays"
    );

    // 2. The frontend queues three writes; a backend takes them and dies having
    // published the answer to 12 (without writing its data: a lie the
    // successor must not repeat) and written, not published, the answer to 13.
    f.send(&[
        write(11, 8, page(1)),
        write(12, 16, page(2)),
        write(13, 24, page(3)),
    ]);
    {
        let mut dead =
            BackRing::<BlkifRequest, BlkifResponse, _>::attach(f.ring.memory().clone()).unwrap();
        let path = inflight::path(&records, &paths.backend, 0);
        let id = inflight::identity(&[
            "1",
            "x86_64-abi",
            "0",
            "1",
            "0",
            &f.ring_ref.0.to_string(),
            &f.ch.port().0.to_string(),
        ]);
        let left = Inflight::read(&path, 32, id)
            .unwrap()
            .expect("the first backend's record");
        let mut rec = Inflight::recover(&path, 32, id, &left, dead.rsp_prod_pvt())
            .unwrap()
            .unwrap();
        let first = dead.req_cons();
        let mut batch = Vec::new();
        dead.take_requests(&mut batch).unwrap();
        let slots: Vec<u32> = batch
            .iter()
            .enumerate()
            .map(|(i, r)| rec.take(first.wrapping_add(i as u32), r))
            .collect();
        rec.consumed(dead.req_cons());
        rec.answering(slots[1], dead.rsp_prod_pvt());
        dead.push_response(&BlkifResponse::new(12, BLKIF_OP_WRITE, BLKIF_RSP_OKAY))
            .unwrap();
        dead.push_responses();
        rec.published();
        rec.answering(slots[2], dead.rsp_prod_pvt());
        dead.push_response(&BlkifResponse::new(13, BLKIF_OP_WRITE, BLKIF_RSP_OKAY))
            .unwrap();
        // ...and it is gone.
    }

    // 3. The successor resumes: the device never leaves Connected, 11 and 13
    // are written and answered once, 12 is not redone.
    let stop_b = AtomicBool::new(false);
    std::thread::scope(|s| {
        let b = s.spawn(|| serve(&dom0, &paths.backend, &storage, &config, &counters, &stop_b));
        let _stop = StopOnDrop(&stop_b);
        let mut got: Vec<u64> = exactly(&mut f, 3).iter().map(|r| r.id).collect();
        got.sort_unstable();
        assert_eq!(got, [11, 12, 13]);
        assert_eq!(state(&paths.backend), XenbusState::Connected);
        // And it goes on serving new requests.
        f.send(&[write(14, 32, page(0))]);
        assert_eq!(exactly(&mut f, 1)[0].id, 14);
        // The frontend closes: the connection's records go.
        let mut ep = Endpoint::frontend(guest.store(), &paths.frontend).unwrap();
        ep.switch(XenbusState::Closing, &[]).unwrap();
        ep.wait_peer(T, |s| {
            matches!(s, XenbusState::Closing | XenbusState::Closed)
        })
        .unwrap();
        ep.switch(XenbusState::Closed, &[]).unwrap();
        assert_eq!(b.join().unwrap().unwrap(), Outcome::Closed);
    });
    assert!(
        !inflight::path(&records, &paths.backend, 0).exists(),
        "records left behind"
    );
    let file = std::fs::read(&image).unwrap();
    let sector = |s: usize| &file[s * 512..s * 512 + 4096];
    assert!(sector(0).iter().all(|&b| b == 0x10));
    assert!(sector(8).iter().all(|&b| b == 0x11), "11 was served again");
    assert!(
        sector(16).iter().all(|&b| b == 0),
        "12 was answered before: not redone"
    );
    assert!(sector(24).iter().all(|&b| b == 0x13), "13 was served again");
    assert!(sector(32).iter().all(|&b| b == 0x10));
}
