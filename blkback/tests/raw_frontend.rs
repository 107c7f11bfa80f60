//! A hand-driven frontend (raw ring requests over the in-process platform)
//! against blkback serving a real file: read-only grants, every operation
//! including barriers, hostile requests answered with errors while the ring
//! keeps serving, and a producer index far ahead disconnecting the frontend
//! without harming the backend.

use std::sync::atomic::{AtomicBool, Ordering};
use xenio_blkback::storage::FileStorage;
use xenio_blkback::{BackendConfig, Counters, Outcome, serve};
use xenio_hostio::disk::Direct;
use xenio_ring::SharedMemory;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DevicePaths, Endpoint};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::*;

mod common;
use common::{Front, T, domains, rw, seg};

const SECTORS: u64 = 8192; // 4 MiB

fn setup(
    world: &InProcess,
    image: &std::path::Path,
) -> (InProcDomain, InProcDomain, DevicePaths, FileStorage) {
    let (dom0, guest, paths) = domains(world);
    common::image(image, SECTORS * 512);
    let storage = FileStorage::open(image, false, Direct::Auto).unwrap();
    (dom0, guest, paths, storage)
}

/// Handshake as a frontend with a one-page ring and no persistent grants; the
/// backend offers the whole disk and barriers.
fn connect(guest: &InProcDomain, paths: &DevicePaths) -> Front {
    let (front, ep) = common::connect(guest, paths);
    assert_eq!(
        ep.peer_key("sectors").unwrap().as_deref(),
        Some(SECTORS.to_string().as_str())
    );
    assert_eq!(
        ep.peer_key("feature-barrier").unwrap().as_deref(),
        Some("1")
    );
    front
}

#[test]
fn operations_readonly_grants_and_hostile_requests() {
    let image = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("raw-{}.img", std::process::id()));
    let world = InProcess::new().unwrap();
    let (dom0, guest, paths, storage) = setup(&world, &image);
    let config = BackendConfig {
        once: true,
        persistent: false,
        ..Default::default()
    };
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    std::thread::scope(|s| {
        let backend = s.spawn(|| {
            serve(
                &dom0,
                &paths.backend,
                &storage,
                &config,
                &counters,
                &shutdown,
            )
        });
        let mut f = connect(&guest, &paths);
        let grants = guest.grants().unwrap();
        let data = grants.grant(DomId(0), 2, Access::ReadOnly).unwrap();
        let pattern: Vec<u8> = (0..8192).map(|i| (i * 7 % 251) as u8).collect();
        data.region().write(0, &pattern).unwrap();
        let dst = grants.grant(DomId(0), 2, Access::ReadWrite).unwrap();
        let (ro0, ro1) = (data.refs()[0], data.refs()[1]);
        let (rw0, rw1) = (dst.refs()[0], dst.refs()[1]);

        // A write from read-only granted pages (two segments, the second a sub-page).
        f.send(&[rw(
            BLKIF_OP_WRITE,
            1,
            100,
            &[seg(ro0, 0, 7), seg(ro1, 2, 5)],
        )]);
        let r = f.responses(1);
        assert_eq!((r[0].id, r[0].status), (1, BLKIF_RSP_OKAY));
        // Read back into read-write pages, then a read into read-only pages: refused.
        f.send(&[
            rw(BLKIF_OP_READ, 2, 100, &[seg(rw0, 0, 7), seg(rw1, 0, 3)]),
            rw(BLKIF_OP_READ, 3, 100, &[seg(ro0, 0, 7)]),
        ]);
        let mut r = f.responses(2);
        r.sort_by_key(|r| r.id);
        assert_eq!(r[0].status, BLKIF_RSP_OKAY);
        assert_eq!(
            r[1].status, BLKIF_RSP_ERROR,
            "a read into a read-only grant must fail"
        );
        let mut got = vec![0u8; 4096 + 2048];
        dst.region().read(0, &mut got).unwrap();
        assert_eq!(&got[..4096], &pattern[..4096]);
        assert_eq!(
            &got[4096..],
            &pattern[4096 + 1024..4096 + 3072],
            "segment 2 covered sectors 2..=5 of its page"
        );
        let mut ro_now = vec![0u8; 8192];
        data.region().read(0, &mut ro_now).unwrap();
        assert_eq!(ro_now, pattern, "a read-only grant was written");

        // Flush and a barrier write, then hostile requests, each answered, the ring alive.
        let discard = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            id: 12,
            sector_number: 0,
            nr_sectors: SECTORS + 1,
            ..Default::default()
        };
        let mut bad_segs = rw(BLKIF_OP_WRITE, 13, 0, &[seg(ro0, 0, 7)]);
        bad_segs.nr_segments = 12;
        let hostile = [
            BlkifRequest {
                operation: BLKIF_OP_FLUSH_DISKCACHE,
                id: 4,
                ..Default::default()
            },
            rw(BLKIF_OP_WRITE_BARRIER, 5, 200, &[seg(ro0, 0, 7)]),
            rw(9, 6, 0, &[seg(rw0, 0, 7)]), // unknown operation
            rw(BLKIF_OP_RESERVED_1, 7, 0, &[seg(rw0, 0, 7)]), // reserved
            rw(BLKIF_OP_READ, 8, 0, &[seg(rw0, 0, 8)]), // last_sect 8
            rw(BLKIF_OP_READ, 9, 0, &[seg(rw0, 5, 2)]), // first > last
            rw(BLKIF_OP_READ, 10, SECTORS - 4, &[seg(rw0, 0, 7)]), // past the end
            rw(BLKIF_OP_READ, 11, 0, &[seg(GrantRef(9999), 0, 7)]), // never granted
            BlkifRequest::from(discard),    // discard past the end
            bad_segs,                       // 12 segments
            rw(BLKIF_OP_READ, 14, u64::MAX - 2, &[seg(rw0, 0, 7)]), // sector overflow
        ];
        f.send(&hostile);
        let mut r = f.responses(hostile.len());
        r.sort_by_key(|r| r.id);
        let status: Vec<(u64, i16)> = r.iter().map(|r| (r.id, r.status)).collect();
        assert_eq!(status[0], (4, BLKIF_RSP_OKAY), "flush");
        assert_eq!(status[1], (5, BLKIF_RSP_OKAY), "barrier write");
        for (id, st) in &status[2..] {
            assert!(
                *st == BLKIF_RSP_ERROR || *st == BLKIF_RSP_EOPNOTSUPP,
                "hostile request {id} got {st}"
            );
        }
        // Response padding is zero on the wire (XSA-216): check the raw slot bytes.
        for r in &r {
            let b = bytemuck::bytes_of(r);
            assert_eq!(b[9], 0);
            assert_eq!(&b[12..], &[0; 4]);
        }
        // Still serving after all that.
        f.send(&[rw(BLKIF_OP_READ, 20, 200, &[seg(rw0, 0, 7)])]);
        assert_eq!(f.responses(1)[0].status, BLKIF_RSP_OKAY);
        let mut b = vec![0u8; 4096];
        dst.region().read(0, &mut b).unwrap();
        assert_eq!(b, &pattern[..4096], "the barrier write landed");
        assert!(counters.rejected.load(Ordering::Relaxed) >= 6);

        // A producer index far ahead breaks the ring: the backend disconnects.
        f.ring.memory().words()[0].store(1_000_000, std::sync::atomic::Ordering::Release);
        f.ch.notify().unwrap();
        let mut ep = Endpoint::frontend(guest.store(), &paths.frontend).unwrap();
        ep.wait_peer(T, |s| s == XenbusState::Closing).unwrap();
        ep.switch(XenbusState::Closed, &[]).unwrap();
        assert_eq!(backend.join().unwrap().unwrap(), Outcome::Closed);
    });
    let file = std::fs::read(&image).unwrap();
    std::fs::remove_file(&image).unwrap();
    let pattern: Vec<u8> = (0..8192).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        &file[100 * 512..][..4096],
        &pattern[..4096],
        "the write is in the file"
    );
    assert_eq!(
        &file[108 * 512..][..2048],
        &pattern[4096 + 1024..][..2048],
        "its sub-page segment too"
    );
    assert_eq!(
        &file[200 * 512..][..4096],
        &pattern[..4096],
        "and the barrier write"
    );
}
