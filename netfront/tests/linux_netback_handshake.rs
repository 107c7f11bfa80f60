//! The frontend against a backend that follows Linux's xen-netback state machine:
//! it ignores a frontend in `Initialised` and connects only once the frontend says
//! `Connected` (Linux's xen-netfront goes straight from `Initialising` to
//! `Connected` with its keys). In the Xen lab the kernel's backend stayed in
//! `InitWait` while xenio's frontend waited in `Initialised`.

use std::sync::Arc;
use std::time::Duration;
use xenio_netfront::{NetFront, Options};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device};
use xenio_xenbus::platform::{InProcess, Platform};
use xenio_xenbus::{DomId, Result};

const T: Duration = Duration::from_secs(5);

#[test]
fn connects_to_a_backend_that_waits_for_the_frontend_to_say_connected() {
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = world.domain(DomId(1)).unwrap();
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let dir = paths.backend.clone();
    let backend = std::thread::spawn(move || -> Result<Vec<XenbusState>> {
        let mut ep = Endpoint::backend(dom0.store(), &dir)?;
        ep.switch(
            XenbusState::InitWait,
            &[
                ("feature-rx-copy", "1".into()),
                ("feature-sg", "1".into()),
                ("feature-split-event-channels", "1".into()),
            ],
        )?;
        let mut seen = Vec::new();
        // Linux's frontend_changed(): Initialised is ignored, Connected connects.
        let s = ep.wait_peer(T, |s| {
            s == XenbusState::Connected || s == XenbusState::Closing
        })?;
        seen.push(s);
        let has_rings =
            ep.peer_key("tx-ring-ref")?.is_some() && ep.peer_key("rx-ring-ref")?.is_some();
        assert!(
            has_rings,
            "the frontend said Connected without its ring keys"
        );
        ep.switch(XenbusState::Connected, &[])?;
        let s = ep.wait_peer(T, |s| s == XenbusState::Closing || s == XenbusState::Closed)?;
        seen.push(s);
        ep.switch(XenbusState::Closed, &[])?;
        Ok(seen)
    });
    let nf = NetFront::connect(
        Arc::new(guest),
        &paths.frontend,
        Options {
            timeout: T,
            ..Options::default()
        },
    )
    .expect("the frontend connects to a Linux-like backend");
    nf.close().unwrap();
    let seen = backend.join().unwrap().unwrap();
    assert_eq!(seen[0], XenbusState::Connected);
}
