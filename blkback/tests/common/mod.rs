//! What the hand-driven frontends of blkback's integration tests share: the
//! two domains of the in-process platform with a device between them, a
//! frontend's side of the handshake with a one-page ring (native or 32-bit
//! layout), sending requests and waiting for their answers, and building
//! request segments. Each test file uses part of it.
#![allow(dead_code)]

use bytemuck::Pod;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xenio_ring::FrontRing;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::*;

/// How long a test waits for the backend (a state, a response).
pub const T: Duration = Duration::from_secs(10);

/// Stops the backend when the test's thread leaves the scope, panicking or not,
/// so a failed assertion fails the test instead of hanging it.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Domain 0 (the backend's), domain 1 (the guest's) and device 51712 (xvda)
/// of the guest, its store directories made.
pub fn domains(world: &InProcess) -> (InProcDomain, InProcDomain, DevicePaths) {
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = world.domain(DomId(1)).unwrap();
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    (dom0, guest, paths)
}

/// An image file of `bytes` zeros at `path`.
pub fn image(path: &std::path::Path, bytes: u64) {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
}

type Channel = <<InProcDomain as Platform>::Events as EventChannels>::Channel;
type RingGrant = <<InProcDomain as Platform>::Grants as GrantTable>::Granted;
/// The frontend's store endpoint.
pub type FrontEndpoint<'a> = Endpoint<'a, <InProcDomain as Platform>::Store>;

/// A frontend's ring, in the native layout unless the types say otherwise.
pub struct Front<Req = BlkifRequest, Rsp = BlkifResponse> {
    pub ring: FrontRing<Req, Rsp, Arc<Region>>,
    pub ch: Channel,
    /// The ring page's grant reference.
    pub ring_ref: GrantRef,
    _ring_grant: RingGrant,
}

impl<Req: Pod, Rsp: Pod> Front<Req, Rsp> {
    /// Push every request, publish once (the backend takes them as one batch).
    pub fn send(&mut self, reqs: &[Req]) {
        for r in reqs {
            self.ring.push_request(r).unwrap();
        }
        if self.ring.push_requests_and_check_notify().is_required() {
            self.ch.notify().unwrap();
        }
    }

    /// The next `n` responses, in the order they came.
    pub fn responses(&mut self, n: usize) -> Vec<Rsp> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(r) = self.ring.take_response().unwrap() {
                out.push(r);
            } else if !self.ring.final_check_for_responses().unwrap() {
                assert!(
                    self.ch.wait(Some(T)).unwrap(),
                    "no response after {} of {n}",
                    out.len()
                );
            }
        }
        out
    }
}

/// The frontend's side of the handshake: a one-page ring and an event channel
/// published with `protocol`, then wait for the backend to be `Connected`
/// (the front and its endpoint) or `Closing` (`None`: the backend refused the
/// connection).
pub fn connect_with<'a, Req: Pod, Rsp: Pod>(
    guest: &'a InProcDomain,
    paths: &DevicePaths,
    protocol: &str,
) -> Option<(Front<Req, Rsp>, FrontEndpoint<'a>)> {
    let mut ep = Endpoint::frontend(guest.store(), &paths.frontend).unwrap();
    ep.switch(XenbusState::Initialising, &[]).unwrap();
    ep.wait_peer(T, |s| s == XenbusState::InitWait).unwrap();
    let ring_grant = guest
        .grants()
        .unwrap()
        .grant(DomId(0), 1, Access::ReadWrite)
        .unwrap();
    let ring = FrontRing::init(ring_grant.region().clone()).unwrap();
    let ch = guest.events().alloc_unbound(DomId(0)).unwrap();
    let ring_ref = ring_grant.refs()[0];
    ep.switch(
        XenbusState::Initialised,
        &[
            ("ring-ref", ring_ref.0.to_string()),
            ("event-channel", ch.port().0.to_string()),
            ("protocol", protocol.into()),
        ],
    )
    .unwrap();
    let s = ep
        .wait_peer(T, |s| {
            matches!(s, XenbusState::Connected | XenbusState::Closing)
        })
        .unwrap();
    if s != XenbusState::Connected {
        return None;
    }
    let front = Front {
        ring,
        ch,
        ring_ref,
        _ring_grant: ring_grant,
    };
    Some((front, ep))
}

/// [`connect_with`] in the native layout (`x86_64-abi`); the backend must
/// connect.
pub fn connect<'a>(guest: &'a InProcDomain, paths: &DevicePaths) -> (Front, FrontEndpoint<'a>) {
    connect_with(guest, paths, "x86_64-abi").expect("the backend refused the connection (Closing)")
}

/// A segment: sectors `first..=last` of the page `gref`.
pub fn seg(gref: GrantRef, first: u8, last: u8) -> BlkifRequestSegment {
    BlkifRequestSegment {
        gref: gref.0,
        first_sect: first,
        last_sect: last,
        _pad: [0; 2],
    }
}

/// A read or write (`op`) request with `segs`.
pub fn rw(op: u8, id: u64, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
    let mut r = BlkifRequest {
        operation: op,
        nr_segments: segs.len() as u8,
        id,
        sector_number: sector,
        ..Default::default()
    };
    r.seg[..segs.len()].copy_from_slice(segs);
    r
}
