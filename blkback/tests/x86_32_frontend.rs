//! A frontend that speaks the 32-bit x86 layout (`protocol = x86_32-abi`:
//! 108-byte requests with `id` at offset 4, 12-byte responses) against blkback
//! serving a real file, over the in-process platform: plain, indirect, flush,
//! barrier and discard requests, each answered in the 32-bit layout, the data
//! on disk; an unknown protocol is refused. The same frontend runs against
//! `xenio blkd` as a separate process in `xenio/tests/blkd.rs`.

use std::sync::atomic::AtomicBool;
use xenio_blkback::storage::FileStorage;
use xenio_blkback::{BackendConfig, Counters, Outcome, serve};
use xenio_hostio::disk::Direct;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::blkif_x86_32::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DevicePaths, Endpoint};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::*;

mod common;
use common::{Front, StopOnDrop, T, domains, rw, seg};

const SECTORS: u64 = 8192;

type Front32 = Front<BlkifX86_32Request, BlkifX86_32Response>;

/// Send requests (written in the 32-bit layout) and wait for as many answers,
/// sorted by id.
fn run(f: &mut Front32, reqs: &[BlkifRequest]) -> Vec<BlkifX86_32Response> {
    let raw: Vec<BlkifX86_32Request> = reqs.iter().map(BlkifX86_32Request::from).collect();
    f.send(&raw);
    let mut out = f.responses(reqs.len());
    out.sort_by_key(|r| r.id);
    out
}

/// The handshake with `protocol`: `None` when the backend refuses it.
fn connect(guest: &InProcDomain, paths: &DevicePaths, protocol: &str) -> Option<Front32> {
    common::connect_with(guest, paths, protocol).map(|(f, _)| f)
}

#[test]
fn a_32_bit_frontend_is_served_in_its_own_layout() {
    let image = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("x86-32-{}.img", std::process::id()));
    common::image(&image, SECTORS * 512);
    let world = InProcess::new().unwrap();
    let (dom0, guest, paths) = domains(&world);
    let storage = FileStorage::open(&image, false, Direct::Auto).unwrap();
    let config = BackendConfig {
        once: true,
        persistent: false,
        ..Default::default()
    };
    let (counters, shutdown) = (Counters::default(), AtomicBool::new(false));
    let pattern: Vec<u8> = (0..3 * 4096).map(|i| (i * 13 % 251) as u8).collect();
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
        let _stop = StopOnDrop(&shutdown);
        let mut f = connect(&guest, &paths, "x86_32-abi").expect("connected");
        // A one-page 32-bit ring holds 32 slots of 108 bytes, like the native one.
        assert_eq!(f.ring.size(), 32);
        let grants = guest.grants().unwrap();
        let src = grants.grant(DomId(0), 3, Access::ReadOnly).unwrap();
        src.region().write(0, &pattern).unwrap();
        let dst = grants.grant(DomId(0), 3, Access::ReadWrite).unwrap();
        let (s, d) = (src.refs(), dst.refs());
        // Ids with bits in both halves: a backend reading the native layout would
        // take the id from offset 8 and answer garbage.
        let id = |n: u64| 0xfeed_0000_0000_0000 | n;
        let r = run(
            &mut f,
            &[rw(
                BLKIF_OP_WRITE,
                id(1),
                16,
                &[seg(s[0], 0, 7), seg(s[1], 0, 7), seg(s[2], 0, 3)],
            )],
        );
        assert_eq!(
            (r[0].id, r[0].operation, r[0].status),
            (id(1), BLKIF_OP_WRITE, 0)
        );
        let r = run(
            &mut f,
            &[
                rw(
                    BLKIF_OP_READ,
                    id(2),
                    16,
                    &[seg(d[0], 0, 7), seg(d[1], 0, 7)],
                ),
                rw(BLKIF_OP_FLUSH_DISKCACHE, id(3), 0, &[]),
            ],
        );
        assert_eq!(
            r.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
            [(id(2), 0), (id(3), 0)]
        );
        let mut got = vec![0u8; 8192];
        dst.region().read(0, &mut got).unwrap();
        assert_eq!(got, pattern[..8192]);
        // An indirect write: its segments in a granted page, the slot in the
        // 32-bit indirect layout (grefs at 24, the i386 pad at 56).
        let ind = grants.grant(DomId(0), 1, Access::ReadOnly).unwrap();
        let segs: Vec<u8> = [seg(s[2], 0, 7), seg(s[1], 0, 7)]
            .iter()
            .flat_map(|x| bytemuck::bytes_of(x).to_vec())
            .collect();
        ind.region().write(0, &segs).unwrap();
        let mut grefs = [0u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
        grefs[0] = ind.refs()[0].0;
        let indirect: BlkifRequest = BlkifRequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_WRITE,
            nr_segments: 2,
            id: id(4),
            sector_number: 1024,
            indirect_grefs: grefs,
            ..bytemuck::Zeroable::zeroed()
        }
        .into();
        let discard: BlkifRequest = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            id: id(5),
            sector_number: 4096,
            nr_sectors: 8,
            ..bytemuck::Zeroable::zeroed()
        }
        .into();
        let barrier = rw(BLKIF_OP_WRITE_BARRIER, id(6), 2048, &[seg(s[0], 0, 0)]);
        let r = run(&mut f, &[indirect, discard, barrier]);
        assert_eq!(
            r.iter()
                .map(|r| (r.id, r.operation, r.status))
                .collect::<Vec<_>>(),
            [
                (id(4), BLKIF_OP_WRITE, 0),
                (id(5), BLKIF_OP_DISCARD, 0),
                (id(6), BLKIF_OP_WRITE_BARRIER, 0)
            ],
            "an indirect request is answered with its indirect_op"
        );
        // A request past the end is an error, in the 32-bit layout too.
        let r = run(
            &mut f,
            &[rw(BLKIF_OP_READ, id(7), SECTORS, &[seg(d[0], 0, 7)])],
        );
        assert_eq!(r[0].status, BLKIF_RSP_ERROR);
        let mut ep = Endpoint::frontend(guest.store(), &paths.frontend).unwrap();
        ep.switch(XenbusState::Closing, &[]).unwrap();
        ep.wait_peer(T, |s| s == XenbusState::Closing || s == XenbusState::Closed)
            .unwrap();
        ep.switch(XenbusState::Closed, &[]).unwrap();
        assert_eq!(backend.join().unwrap().unwrap(), Outcome::Closed);
    });
    let file = std::fs::read(&image).unwrap();
    assert_eq!(
        &file[16 * 512..16 * 512 + 2 * 4096 + 2048],
        &pattern[..2 * 4096 + 2048]
    );
    assert_eq!(&file[1024 * 512..][..4096], &pattern[2 * 4096..3 * 4096]);
    assert_eq!(&file[1024 * 512 + 4096..][..4096], &pattern[4096..2 * 4096]);
    assert_eq!(&file[2048 * 512..][..512], &pattern[..512]);
    std::fs::remove_file(&image).unwrap();
}

#[test]
fn a_protocol_protocols_h_does_not_define_is_refused() {
    let image = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("x86-32-bad-{}.img", std::process::id()));
    common::image(&image, 1 << 20);
    let world = InProcess::new().unwrap();
    let (dom0, guest, paths) = domains(&world);
    let storage = FileStorage::open(&image, false, Direct::Auto).unwrap();
    let config = BackendConfig {
        once: true,
        ..Default::default()
    };
    let (counters, shutdown) = (Counters::default(), AtomicBool::new(false));
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
        let _stop = StopOnDrop(&shutdown);
        assert!(connect(&guest, &paths, "sparc-abi").is_none());
        let ep = Endpoint::frontend(guest.store(), &paths.frontend).unwrap();
        ep.switch(XenbusState::Closed, &[]).unwrap();
        assert_eq!(backend.join().unwrap().unwrap(), Outcome::Closed);
    });
    std::fs::remove_file(&image).unwrap();
}
