//! Helpers of the tests that put hostile frontends in front of `xenio blkback`
//! and `xenio netback` processes: a store daemon in a fresh run directory,
//! backends as child processes (killed if a test fails), what `/proc` says
//! about a process (CPU time, descriptors, threads, mappings of a domain's
//! grant pool), and a hand-driven blkif frontend on the local platform.
#![allow(dead_code)]

pub mod cfront;
pub mod toolstack;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_ring::FrontRing;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{Endpoint, read_state};
use xenio_xenbus::local::{LocalChannel, LocalGranted, MAPTRACK_SLOTS, NR_GRANT_ENTRIES};
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::*;
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

pub const T: Duration = Duration::from_secs(10);

/// A store daemon in a fresh run directory under the target directory.
pub struct World {
    pub dir: tempfile::TempDir,
    _daemon: Daemon,
}

impl World {
    /// Domains `domains` introduced.
    pub fn new(tag: &str, domains: &[u16]) -> World {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{tag}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let daemon = Daemon::start(DaemonConfig {
            domains: domains.iter().map(|&d| DomId(d)).collect(),
            ..DaemonConfig::new(dir.path().join("run"))
        })
        .unwrap();
        World {
            dir,
            _daemon: daemon,
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// A zeroed image file of `bytes` in the world's directory.
    pub fn image(&self, name: &str, bytes: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
        p
    }

    /// This process acting as `domid`.
    pub fn platform(&self, domid: u16) -> LocalPlatform {
        LocalPlatform::connect(self.run_dir(), DomId(domid)).unwrap()
    }

    /// `xenio blkback --create-device` serving `image` as `vdev` to `frontend`.
    pub fn blkback(&self, frontend: u16, vdev: &str, image: &Path, extra: &[&str]) -> Backend {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xenio"));
        c.arg("blkback")
            .args(["--platform", "local", "--create-device"])
            .args(["--frontend", &frontend.to_string()])
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--disk")
            .arg(format!(
                "format=raw,vdev={vdev},access=rw,target={}",
                image.display()
            ))
            .args(extra);
        Backend::spawn(c)
    }
}

/// A backend child process, killed when dropped (a failed test leaves none).
pub struct Backend {
    pub child: Child,
}

impl Backend {
    pub fn spawn(mut c: Command) -> Backend {
        let child = c.stdout(Stdio::null()).spawn().unwrap();
        Backend { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs (a crash shows here).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, and its exit status within 15 s.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "backend ignores SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `/proc` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStats {
    /// Open file descriptors.
    pub fds: usize,
    /// Threads.
    pub threads: usize,
    /// Mappings of grant pool pages (lines of `maps` naming a domain's `pool`).
    pub pool_maps: usize,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let count = |d: String| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    ProcStats {
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
        pool_maps: maps
            .lines()
            .filter(|l| l.contains("/domains/") && l.contains("/pool"))
            .count(),
    }
}

/// User plus system CPU time of a process so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Grants of domain `domid` that process `pid` has mapped, per the domain's
/// map track (`docs/local-platform.md`, Grants).
pub fn maptrack_entries(run_dir: &Path, domid: u16, pid: u32) -> usize {
    let path = run_dir
        .join("domains")
        .join(domid.to_string())
        .join("maptrack");
    let Ok(bytes) = std::fs::read(&path) else {
        return 0;
    };
    assert_eq!(
        bytes.len(),
        NR_GRANT_ENTRIES as usize * MAPTRACK_SLOTS * 8,
        "{}",
        path.display()
    );
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .filter(|&v| (v >> 32) as u32 == pid && (v as u32) > 0)
        .count()
}

/// Poll `f` until it holds, for at most `within`.
pub fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state of the node at `path`, for everyone (missing reads as Unknown).
pub fn state_of<S: Store>(store: &S, path: &str) -> XenbusState {
    read_state(store, path).unwrap()
}

/// A hand-driven blkif frontend: one one-page ring, `DATA` pages of data.
pub struct RawBlk {
    pub ring: FrontRing<BlkifRequest, BlkifResponse, Arc<Region>>,
    pub ch: LocalChannel,
    pub ring_grant: LocalGranted,
    pub data: LocalGranted,
}

pub const DATA: usize = 16;

impl RawBlk {
    /// The handshake as a frontend, publishing `keys` (ring-ref and
    /// event-channel are added unless `keys` has them); `Ok` once the backend
    /// and this end are Connected, `Err(state)` if the backend answers with
    /// another state (Closing, Closed) instead.
    pub fn connect(
        p: &LocalPlatform,
        dir: &str,
        keys: &[(&str, String)],
    ) -> Result<RawBlk, XenbusState> {
        let mut ep = Endpoint::frontend(p.store(), dir).unwrap();
        ep.switch(XenbusState::Initialising, &[]).unwrap();
        ep.wait_peer(T, |s| s == XenbusState::InitWait).unwrap();
        let backend = ep.peer_id();
        let grants = p.grants().unwrap();
        let ring_grant = grants.grant(backend, 1, Access::ReadWrite).unwrap();
        let data = grants.grant(backend, DATA, Access::ReadWrite).unwrap();
        let ring = FrontRing::init(ring_grant.region().clone()).unwrap();
        let ch = p.events().alloc_unbound(backend).unwrap();
        let mut all: Vec<(&str, String)> = keys.to_vec();
        if !keys.iter().any(|(k, _)| k.starts_with("ring-ref")) {
            all.push(("ring-ref", ring_grant.refs()[0].0.to_string()));
        }
        if !keys.iter().any(|(k, _)| *k == "event-channel") {
            all.push(("event-channel", ch.port().0.to_string()));
        }
        if !keys.iter().any(|(k, _)| *k == "protocol") {
            all.push(("protocol", "x86_64-abi".into()));
        }
        ep.switch(XenbusState::Initialised, &all).unwrap();
        let s = ep
            .wait_peer(T, |s| {
                matches!(
                    s,
                    XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
                )
            })
            .unwrap();
        if s != XenbusState::Connected {
            return Err(s);
        }
        ep.switch(XenbusState::Connected, &[]).unwrap();
        Ok(RawBlk {
            ring,
            ch,
            ring_grant,
            data,
        })
    }

    /// A one-page request on data page `page` at `sector`.
    pub fn request(&self, op: u8, id: u64, sector: u64, page: usize) -> BlkifRequest {
        let mut r = BlkifRequest {
            operation: op,
            nr_segments: 1,
            id,
            sector_number: sector,
            ..Default::default()
        };
        r.seg[0] = BlkifRequestSegment {
            gref: self.data.refs()[page].0,
            first_sect: 0,
            last_sect: 7,
            _pad: [0; 2],
        };
        r
    }

    /// Push `reqs` and notify if the backend asked.
    pub fn send(&mut self, reqs: &[BlkifRequest]) {
        for r in reqs {
            self.ring.push_request(r).unwrap();
        }
        if self.ring.push_requests_and_check_notify().is_required() {
            self.ch.notify().unwrap();
        }
    }

    /// Wait for `n` responses (at most `within`).
    pub fn responses(&mut self, n: usize, within: Duration) -> Vec<BlkifResponse> {
        let mut out = Vec::new();
        let t = Instant::now();
        while out.len() < n {
            if let Some(r) = self.ring.take_response().unwrap() {
                out.push(r);
            } else if !self.ring.final_check_for_responses().unwrap() {
                assert!(
                    t.elapsed() < within,
                    "{} of {n} responses after {within:?}",
                    out.len()
                );
                self.ch.wait(Some(Duration::from_millis(20))).unwrap();
            }
        }
        out
    }

    /// Revoke the grants, waiting (at most `within`) for the backend to unmap
    /// them: `Err` names what is still mapped then.
    pub fn release(mut self, within: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            let a = self.ring_grant.revoke();
            let b = self.data.revoke();
            match (a, b) {
                (Ok(()), Ok(())) => return Ok(()),
                (a, b) if t.elapsed() > within => {
                    return Err(format!("ring: {a:?}, data: {b:?}"));
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

// ---------------------------------------------------------------- network

/// A network namespace of the test's own (deleted when dropped), with a TAP
/// device `xtap0`, up, for `xenio netback` to attach to.
pub struct Netns {
    pub name: String,
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// `None` (with the reason printed) when namespaces cannot be made here
    /// (not root).
    pub fn with_tap(tag: &str) -> Option<Netns> {
        let name = format!("xenio-{tag}-{}", std::process::id());
        let _ = sh(Command::new("ip").args(["netns", "del", &name]));
        if let Err(e) = sh(Command::new("ip").args(["netns", "add", &name])) {
            eprintln!(
                "SKIPPED: cannot create a network namespace ({e}); this test needs root (CI runs it as root)"
            );
            return None;
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["tuntap", "add", "dev", "xtap0", "mode", "tap"]);
        ns.ip(&["link", "set", "xtap0", "up"]);
        Some(ns)
    }

    pub fn ip(&self, args: &[&str]) {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        sh(&mut c).unwrap();
    }

    /// A command run inside the namespace.
    pub fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]);
        c
    }

    /// Run `f` on a thread that entered the namespace.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

impl World {
    /// `xenio netback --create-device` on `xtap0` of `ns` for domain
    /// `frontend` (the process's pid is xenio's: `ip netns exec` execs it).
    pub fn netback(&self, ns: &Netns, frontend: u16, extra: &[&str]) -> Backend {
        let mut c = ns.exec();
        c.arg(env!("CARGO_BIN_EXE_xenio"))
            .args(["netback", "--platform", "local", "--create-device"])
            .args(["--frontend", &frontend.to_string()])
            .args(["--tap", "xtap0"])
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(extra);
        Backend::spawn(c)
    }
}

/// A hand-driven netif frontend: one queue, one event channel, `TX_PAGES`
/// data pages granted read-only, `RX_BUFS` rx buffers.
pub struct RawNet {
    pub tx: FrontRing<
        xenio_xen_sys::netif::NetifTxRequest,
        xenio_xen_sys::netif::NetifTxResponse,
        Arc<Region>,
    >,
    pub rx: FrontRing<
        xenio_xen_sys::netif::NetifRxRequest,
        xenio_xen_sys::netif::NetifRxResponse,
        Arc<Region>,
    >,
    pub ch: LocalChannel,
    pub rings: (LocalGranted, LocalGranted),
    pub data: LocalGranted,
    pub bufs: LocalGranted,
}

pub const TX_PAGES: usize = 32;
pub const RX_BUFS: usize = 8;

impl RawNet {
    /// The handshake as a frontend publishing `keys` (the rings, the channel,
    /// request-rx-copy, feature-rx-notify and feature-sg are added unless
    /// `keys` names them); `Err(state)` if the backend answers with another
    /// state than Connected.
    pub fn connect(
        p: &LocalPlatform,
        dir: &str,
        keys: &[(&str, String)],
    ) -> Result<RawNet, XenbusState> {
        let mut ep = Endpoint::frontend(p.store(), dir).unwrap();
        ep.switch(XenbusState::Initialising, &[]).unwrap();
        ep.wait_peer(T, |s| s == XenbusState::InitWait).unwrap();
        let backend = ep.peer_id();
        let g = p.grants().unwrap();
        let tx_grant = g.grant(backend, 1, Access::ReadWrite).unwrap();
        let rx_grant = g.grant(backend, 1, Access::ReadWrite).unwrap();
        let f = RawNet {
            tx: FrontRing::init(tx_grant.region().clone()).unwrap(),
            rx: FrontRing::init(rx_grant.region().clone()).unwrap(),
            ch: p.events().alloc_unbound(backend).unwrap(),
            data: g.grant(backend, TX_PAGES, Access::ReadOnly).unwrap(),
            bufs: g.grant(backend, RX_BUFS, Access::ReadWrite).unwrap(),
            rings: (tx_grant, rx_grant),
        };
        let mut all: Vec<(&str, String)> = keys.to_vec();
        let defaults = [
            ("tx-ring-ref", f.rings.0.refs()[0].0.to_string()),
            ("rx-ring-ref", f.rings.1.refs()[0].0.to_string()),
            ("event-channel", f.ch.port().0.to_string()),
            ("request-rx-copy", "1".into()),
            ("feature-rx-notify", "1".into()),
            ("feature-sg", "1".into()),
        ];
        for (k, v) in defaults {
            if !keys.iter().any(|(have, _)| *have == k) {
                all.push((k, v));
            }
        }
        ep.switch(XenbusState::Initialised, &all).unwrap();
        let s = ep
            .wait_peer(T, |s| {
                matches!(
                    s,
                    XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
                )
            })
            .unwrap();
        if s != XenbusState::Connected {
            return Err(s);
        }
        ep.switch(XenbusState::Connected, &[]).unwrap();
        Ok(f)
    }

    /// The grant reference of data page `page`.
    pub fn data_ref(&self, page: usize) -> u32 {
        self.data.refs()[page].0
    }

    /// Write `bytes` at `offset` of data page `page`.
    pub fn put(&self, page: usize, offset: usize, bytes: &[u8]) {
        self.data
            .region()
            .write(page * 4096 + offset, bytes)
            .unwrap();
    }

    /// Push tx requests and notify if the backend asked.
    pub fn send(&mut self, reqs: &[xenio_xen_sys::netif::NetifTxRequest]) {
        for r in reqs {
            self.tx.push_request(r).unwrap();
        }
        if self.tx.push_requests_and_check_notify().is_required() {
            self.ch.notify().unwrap();
        }
    }

    /// Wait for `n` tx responses (at most `within`).
    pub fn responses(
        &mut self,
        n: usize,
        within: Duration,
    ) -> Vec<xenio_xen_sys::netif::NetifTxResponse> {
        let mut out = Vec::new();
        let t = Instant::now();
        while out.len() < n {
            if let Some(r) = self.tx.take_response().unwrap() {
                out.push(r);
            } else if !self.tx.final_check_for_responses().unwrap() {
                assert!(
                    t.elapsed() < within,
                    "{} of {n} tx responses after {within:?}",
                    out.len()
                );
                self.ch.wait(Some(Duration::from_millis(20))).unwrap();
            }
        }
        out
    }

    /// Revoke every grant, waiting (at most `within`) for the backend to let
    /// go of them.
    pub fn release(mut self, within: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            let r = [
                self.rings.0.revoke(),
                self.rings.1.revoke(),
                self.data.revoke(),
                self.bufs.revoke(),
            ];
            if r.iter().all(|r| r.is_ok()) {
                return Ok(());
            }
            if t.elapsed() > within {
                return Err(format!("{r:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A netif tx request.
pub fn tx_req(
    gref: u32,
    offset: u16,
    flags: u16,
    id: u16,
    size: u16,
) -> xenio_xen_sys::netif::NetifTxRequest {
    xenio_xen_sys::netif::NetifTxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
}
