//! Helpers shared by the store tests: a daemon in a fresh temporary run
//! directory (tests run in parallel), clients as dom0 or a domain.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};
use xenio_xenstore::Client;
use xenio_xenstore::daemon::{Daemon, DaemonConfig, Quotas};
use xenio_xenstore::{DomId, Watch, WatchEvent};

pub struct TestDaemon {
    pub daemon: Daemon,
    // Dropped after the daemon (field order), which removes its sockets first.
    pub dir: tempfile::TempDir,
}

impl TestDaemon {
    pub fn start(domains: &[u16]) -> TestDaemon {
        Self::with_quotas(domains, Quotas::default())
    }

    pub fn with_quotas(domains: &[u16], quotas: Quotas) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("xs")
            .tempdir()
            .expect("temporary directory");
        let daemon = Daemon::start(DaemonConfig {
            quotas,
            domains: domains.iter().map(|&d| DomId(d)).collect(),
            ..DaemonConfig::new(dir.path())
        })
        .expect("daemon starts");
        TestDaemon { daemon, dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.daemon.socket_path()
    }

    pub fn domain_socket(&self, d: u16) -> PathBuf {
        self.daemon.domain_socket_path(DomId(d))
    }

    pub fn dom0(&self) -> Client {
        let c = Client::connect(self.socket()).expect("dom0 connects");
        c.set_timeout(Duration::from_secs(10));
        c
    }

    pub fn domain(&self, d: u16) -> Client {
        let c = Client::connect(self.domain_socket(d)).expect("domain connects");
        c.set_timeout(Duration::from_secs(10));
        c
    }
}

pub const WAIT: Duration = Duration::from_secs(5);

/// The next event, failing the test after [`WAIT`].
pub fn next<W: Watch>(w: &mut W) -> WatchEvent {
    match w.next_event(Some(WAIT)) {
        Ok(Some(e)) => e,
        Ok(None) => panic!("no watch event within {WAIT:?}"),
        Err(e) => panic!("watch failed: {e}"),
    }
}

/// The paths of the next `n` events.
pub fn paths<W: Watch>(w: &mut W, n: usize) -> Vec<String> {
    (0..n).map(|_| next(w).path).collect()
}

/// Assert nothing more arrives for a short while.
pub fn quiet<W: Watch>(w: &mut W) {
    if let Ok(Some(e)) = w.next_event(Some(Duration::from_millis(150))) {
        panic!("unexpected watch event {e:?}");
    }
}

/// Poll `f` until it holds or [`WAIT`] passes.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The store's error name of a result, for asserting on failures.
pub fn errno<T: std::fmt::Debug>(r: xenio_xenstore::Result<T>) -> String {
    match r {
        Err(xenio_xenstore::Error::Store { errno, .. }) => errno.name().to_string(),
        other => panic!("expected a store error, got {other:?}"),
    }
}
