//! The frontend against a backend that maps grants the way Linux's xen-blkback does
//! once persistent grants are negotiated: every grant read-write, indirect segment
//! pages included (`xen_blkbk_map` adds `GNTMAP_readonly` only without persistent
//! grants). In the Xen lab, indirect pages granted read-only made every indirect
//! request fail against the kernel's backend; here the in-process platform, which
//! refuses a read-write map of a read-only grant as Xen does, checks the grants.

use std::sync::Arc;
use std::time::Duration;
use xenio_blkfront::{BlkFront, Options};
use xenio_ring::BackRing;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device, frontend_ready};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::*;

const T: Duration = Duration::from_secs(10);
const SECTORS: u64 = 2048;
const PAGE: usize = 4096;

/// A Linux-like backend: maps ring, indirect pages and data pages read-write.
/// Returns how many indirect requests it served.
fn linux_like_backend(dom0: InProcDomain, backend_dir: String) -> Result<usize> {
    let store = dom0.store();
    let mut ep = Endpoint::backend(store, &backend_dir)?;
    ep.switch(
        XenbusState::InitWait,
        &[("feature-max-indirect-segments", "32".into())],
    )?;
    ep.wait_peer(T, frontend_ready)?;
    let key = |k: &str| -> Result<u32> {
        let v = ep.peer_key(k)?.unwrap_or_default();
        v.trim().parse().map_err(|_| Error::BadValue {
            what: k.into(),
            value: v,
        })
    };
    assert_eq!(
        key("feature-persistent")?,
        1,
        "the frontend offers persistent grants"
    );
    let (ring_ref, port) = (GrantRef(key("ring-ref")?), Port(key("event-channel")?));
    let front = ep.peer_id();
    let mapper = dom0.mapper()?;
    let mut ring =
        BackRing::<BlkifRequest, BlkifResponse, _>::attach(mapper.map(front, &[ring_ref])?)
            .map_err(|e| Error::Limit(e.to_string()))?;
    let ch = dom0.events().bind_interdomain(front, port)?;
    ep.switch(
        XenbusState::Connected,
        &[
            ("sectors", SECTORS.to_string()),
            ("sector-size", "512".into()),
            ("info", "0".into()),
            ("feature-persistent", "1".into()),
            ("feature-flush-cache", "0".into()),
        ],
    )?;
    let mut disk = vec![0u8; SECTORS as usize * 512];
    let mut indirect = 0;
    loop {
        if matches!(
            ep.peer_state()?,
            XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
        ) {
            ep.switch(XenbusState::Closed, &[])?;
            return Ok(indirect);
        }
        let mut served = false;
        while let Some(req) = ring
            .take_request()
            .map_err(|e| Error::Limit(e.to_string()))?
        {
            served = true;
            let (op, sector, segs) = if req.operation == BLKIF_OP_INDIRECT {
                indirect += 1;
                let ind = req.as_indirect();
                let n = usize::from(ind.nr_segments);
                let mut segs = Vec::new();
                for p in 0..n.div_ceil(PAGE / 8) {
                    // Read-write, as Linux maps it: fails on a read-only grant.
                    let page = mapper.map(front, &[GrantRef(ind.indirect_grefs[p])])?;
                    for i in 0..(n - p * (PAGE / 8)).min(PAGE / 8) {
                        let mut b = [0u8; 8];
                        page.read(i * 8, &mut b)?;
                        segs.push((u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), b[4], b[5]));
                    }
                }
                (ind.indirect_op, ind.sector_number, segs)
            } else {
                let n = usize::from(req.nr_segments);
                let segs = req.seg[..n]
                    .iter()
                    .map(|s| (s.gref, s.first_sect, s.last_sect))
                    .collect();
                (req.operation, req.sector_number, segs)
            };
            let mut at = sector as usize * 512;
            for (gref, first, last) in segs {
                let page = mapper.map(front, &[GrantRef(gref)])?;
                let (off, len) = (
                    usize::from(first) * 512,
                    usize::from(last - first + 1) * 512,
                );
                match op {
                    BLKIF_OP_WRITE => page.read(off, &mut disk[at..at + len])?,
                    BLKIF_OP_READ => page.write(off, &disk[at..at + len])?,
                    other => panic!("operation {other}"),
                }
                at += len;
            }
            ring.push_response(&BlkifResponse {
                id: req.id,
                operation: req.operation,
                status: BLKIF_RSP_OKAY,
                ..Default::default()
            })
            .map_err(|e| Error::Limit(e.to_string()))?;
        }
        if served {
            if ring.push_responses_and_check_notify().is_required() {
                ch.notify()?;
            }
        } else {
            ch.wait(Some(Duration::from_millis(50)))?;
        }
    }
}

#[test]
fn indirect_requests_work_with_a_backend_that_maps_every_grant_read_write() {
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = world.domain(DomId(1)).unwrap();
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let dir = paths.backend.clone();
    let backend = std::thread::spawn(move || linux_like_backend(dom0, dir));
    let mut front = BlkFront::connect(
        Arc::new(guest),
        &paths.frontend,
        Options {
            max_ring_page_order: 0,
            queues: 1,
            indirect_segments: 32,
            persistent: true,
            pool_pages: 64,
            timeout: T,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(front.info().max_segments, 32);
    // 31 pages and a half: more than 11 segments, so an indirect request.
    let data: Vec<u8> = (0..(31 * PAGE + 2048)).map(|i| (i % 251) as u8).collect();
    front.write_at(4096, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    front.read_at(4096, &mut back).unwrap();
    assert!(back == data, "read back differs");
    front.close().unwrap();
    let indirect = backend.join().unwrap().unwrap();
    assert!(indirect >= 2, "{indirect} indirect requests");
}
