//! XSA-349 on the client side, as a backend meets it: the frontend (domain 1,
//! through its own store connection) writes its `state` tens of thousands of
//! times while the backend's [`Endpoint`] is busy elsewhere and reads none of
//! the watch events. The store client's queue overflows (it holds at most
//! `WATCH_QUEUE` events and then replaces its backlog with one event for the
//! watched path); the backend, which re-reads the state on every event, acts
//! on the last state the frontend wrote.

use std::time::{Duration, Instant};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device};
use xenio_xenbus::{DomId, Store, Tx};
use xenio_xenstore::daemon::{Daemon, DaemonConfig};
use xenio_xenstore::{Client, WATCH_QUEUE};

#[test]
fn a_backend_whose_watch_overflowed_acts_on_the_last_state() {
    let run = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(run.path())
    })
    .unwrap();
    let dom0 = Client::connect(daemon.socket_path()).unwrap();
    let guest = Client::connect(daemon.domain_socket_path(DomId(1))).unwrap();
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(&dom0, &paths, &[]).unwrap();
    let mut backend = Endpoint::backend(&dom0, &paths.backend).unwrap();
    backend.switch(XenbusState::InitWait, &[]).unwrap();

    // The frontend flips between states 3 * WATCH_QUEUE times and ends Closing.
    let state = format!("{}/state", paths.frontend);
    let flips = [XenbusState::Initialising, XenbusState::Initialised];
    for i in 0..3 * WATCH_QUEUE {
        guest
            .write(Tx::NONE, &state, flips[i % 2].to_string().as_bytes())
            .unwrap();
    }
    guest
        .write(
            Tx::NONE,
            &state,
            XenbusState::Closing.to_string().as_bytes(),
        )
        .unwrap();

    let t = Instant::now();
    let s = backend
        .wait_peer(Duration::from_secs(10), |s| s == XenbusState::Closing)
        .unwrap();
    assert_eq!(s, XenbusState::Closing);
    // A change made while the backend waits reaches it through the watch,
    // after what is left of the backlog.
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        guest
            .write(Tx::NONE, &state, XenbusState::Closed.to_string().as_bytes())
            .unwrap();
        Instant::now()
    });
    let s = backend
        .wait_peer(Duration::from_secs(10), |s| s == XenbusState::Closed)
        .unwrap();
    let seen = Instant::now();
    assert_eq!(s, XenbusState::Closed);
    let written = later.join().unwrap();
    assert!(
        seen.saturating_duration_since(written) < Duration::from_secs(2),
        "the backend saw Closed {:?} after it was written",
        seen.saturating_duration_since(written)
    );
    eprintln!("the backend followed the frontend in {:?}", seen - t);
}
