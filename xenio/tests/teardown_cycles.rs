//! XSA-350 (CVE-2020-29569: "the frontend quickly toggles between the states
//! connect and disconnect ... the block backend may re-use a pointer after it
//! was freed") against the real backends: a `xenio blkback` process, and a
//! `xenio netback` process on a TAP in a network namespace (root only), each
//! faced with 120 frontend incarnations that connect, put I/O on the ring and
//! leave while it is in flight: orderly (Closing, Closed), by going straight
//! back to Initialising, by Closing and Initialising at once, by jumping to
//! Closed, or by being killed (a child process, SIGKILL). Afterwards the
//! backend process still serves a frontend with verified I/O, its descriptors
//! and threads are what they were after the first connection, it maps no page
//! of the frontend's pool (`/proc/<pid>/maps`), the frontend's map track names
//! it nowhere, every frontend could revoke its grants (the backend let go of
//! them), and it exits cleanly on SIGTERM.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::Endpoint;
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::{DomId, Granted, Store};

const CYCLES: usize = 120;
const BLK_DIR: &str = "/local/domain/1/device/vbd/51712";
const NET_DIR: &str = "/local/domain/1/device/vif/0";
/// Set in a child started by [`killed_frontend`]: `<kind> <run dir>`.
const CHILD_ENV: &str = "XENIO_TEARDOWN_CHILD";

/// How a frontend incarnation leaves.
#[derive(Clone, Copy, Debug)]
enum Leave {
    /// Closing, wait for the backend, Closed, wait for the backend.
    Orderly,
    /// Straight back to Initialising (a guest that reconnects).
    Reinitialise,
    /// Closing and at once Initialising, waiting for nothing.
    Toggle,
    /// Closed at once, without Closing.
    Closed,
    /// SIGKILL (a child process), then the next incarnation comes.
    Killed,
}

fn leave_for(cycle: usize) -> Leave {
    match cycle % 10 {
        9 => Leave::Killed,
        k if k % 4 == 0 => Leave::Orderly,
        k if k % 4 == 1 => Leave::Reinitialise,
        k if k % 4 == 2 => Leave::Toggle,
        _ => Leave::Closed,
    }
}

/// Leave as `how` says (not `Killed`).
fn leave(p: &LocalPlatform, dir: &str, how: Leave) {
    let mut ep = Endpoint::frontend(p.store(), dir).unwrap();
    match how {
        Leave::Orderly => {
            ep.switch(XenbusState::Closing, &[]).unwrap();
            ep.wait_peer(T, |s| {
                matches!(s, XenbusState::Closing | XenbusState::Closed)
            })
            .unwrap();
            ep.switch(XenbusState::Closed, &[]).unwrap();
            ep.wait_peer(T, |s| s == XenbusState::Closed).unwrap();
        }
        Leave::Reinitialise => ep.switch(XenbusState::Initialising, &[]).unwrap(),
        Leave::Toggle => {
            ep.switch(XenbusState::Closing, &[]).unwrap();
            ep.switch(XenbusState::Initialising, &[]).unwrap();
        }
        Leave::Closed => ep.switch(XenbusState::Closed, &[]).unwrap(),
        Leave::Killed => unreachable!("a killed frontend does nothing"),
    }
}

/// 16 requests of one page each on a raw blkif ring: writes and reads.
fn blk_io(f: &mut RawBlk, cycle: usize) {
    f.data.region().fill(0, DATA * 4096, cycle as u8).unwrap();
    let reqs: Vec<BlkifRequest> = (0..16)
        .map(|i| {
            let op = if i % 2 == 0 {
                BLKIF_OP_WRITE
            } else {
                BLKIF_OP_READ
            };
            f.request(
                op,
                i as u64,
                (cycle as u64 * 16 + i as u64) * 8 % 16000,
                i % DATA,
            )
        })
        .collect();
    f.send(&reqs);
}

/// Tx packets and rx buffers on a raw netif ring.
fn net_io(f: &mut RawNet, cycle: usize) {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x88, 0xb5]);
    frame.resize(1000, cycle as u8);
    for page in 0..8 {
        f.put(page, 0, &frame);
    }
    for id in 0..RX_BUFS as u16 {
        f.rx.push_request(&xenio_xen_sys::netif::NetifRxRequest {
            id,
            pad: 0,
            gref: f.bufs.refs()[usize::from(id)].0,
        })
        .unwrap();
    }
    let _ = f.rx.push_requests_and_check_notify();
    let reqs: Vec<_> = (0..8u16)
        .map(|i| tx_req(f.data_ref(usize::from(i)), 0, 0, i, 1000))
        .collect();
    f.send(&reqs);
}

/// A frontend incarnation in a child process: connect, put I/O on the ring,
/// say so, wait to be killed. Runs only when started by [`killed_frontend`].
#[test]
fn child_frontend() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (kind, run) = spec.split_once(' ').unwrap();
    let p = LocalPlatform::connect(run, DomId(1)).unwrap();
    let _keep: Box<dyn std::any::Any> = match kind {
        "blkback" => {
            let mut f = RawBlk::connect(&p, BLK_DIR, &[]).unwrap();
            blk_io(&mut f, 7);
            Box::new(f)
        }
        _ => {
            let mut f = RawNet::connect(&p, NET_DIR, &[]).unwrap();
            net_io(&mut f, 7);
            Box::new(f)
        }
    };
    println!("in flight");
    std::thread::sleep(Duration::from_secs(60));
}

/// Run [`child_frontend`] as a process, wait until its I/O is on the ring,
/// SIGKILL it.
fn killed_frontend(w: &World, kind: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_frontend",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{kind} {}", w.run_dir().display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("in flight") {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "the child frontend ended before its I/O was in flight"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// What must not grow: the backend's descriptors, threads and mappings of the
/// frontend's pool, and the frontend's map track entries naming it.
fn settled(w: &World, backend: &Backend) -> (ProcStats, usize) {
    (
        proc_stats(backend.pid()),
        maptrack_entries(&w.run_dir(), 1, backend.pid()),
    )
}

/// The backend's state once it is waiting for a frontend again.
fn wait_idle(p: &LocalPlatform, backend_dir: &str) {
    eventually(T, "the backend waiting for a frontend", || {
        matches!(
            state_of(p.store(), &format!("{backend_dir}/state")),
            XenbusState::Closed | XenbusState::InitWait
        )
    });
}

fn cycles(
    w: &World,
    backend: &mut Backend,
    kind: &str,
    dir: &str,
    mut one: impl FnMut(&LocalPlatform, usize, Leave) -> Result<(), String>,
) {
    let backend_dir = {
        let p = w.platform(1);
        p.store()
            .read_string(xenio_xenbus::Tx::NONE, &format!("{dir}/backend"))
            .unwrap()
    };
    // The first connection sets up what stays (the store connection, the
    // mapper's handle on the frontend's pool): the baseline is after it.
    {
        let p = w.platform(1);
        one(&p, 0, Leave::Orderly).unwrap();
        wait_idle(&p, &backend_dir);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (base, base_track) = settled(w, backend);
    assert_eq!(
        base.pool_maps, 0,
        "{kind}: pages still mapped after an orderly close"
    );
    assert_eq!(base_track, 0);
    let t = Instant::now();
    let mut kinds = [0usize; 5];
    for cycle in 1..=CYCLES {
        let how = leave_for(cycle);
        kinds[how as usize] += 1;
        if let Leave::Killed = how {
            killed_frontend(w, kind);
            continue;
        }
        // A new incarnation of the guest: a fresh grant table and pool.
        let p = w.platform(1);
        if let Err(e) = one(&p, cycle, how) {
            panic!("{kind} cycle {cycle} ({how:?}): {e}");
        }
        assert!(
            backend.running(),
            "{kind}: the backend died in cycle {cycle}"
        );
    }
    eprintln!(
        "{kind}: {CYCLES} cycles in {:?} (orderly, reinitialise, toggle, closed, killed: \
         {kinds:?}); after the first: {base:?}, {base_track} map track entries",
        t.elapsed()
    );
    // The last incarnation leaves in order; everything must be let go.
    let p = w.platform(1);
    one(&p, 0, Leave::Orderly).unwrap();
    wait_idle(&p, &backend_dir);
    let mut now = settled(w, backend);
    let t = Instant::now();
    while now != (base, base_track) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        now = settled(w, backend);
    }
    assert_eq!(
        now,
        (base, base_track),
        "{kind}: (descriptors, threads, pool mappings), map track entries: after {CYCLES} cycles, against after the first"
    );
    assert!(backend.running(), "{kind}: the backend died");
}

#[test]
fn blkback_survives_frontends_leaving_with_io_in_flight() {
    let w = World::new("xsa350-blk", &[1]);
    let image = w.image("disk.img", 8 << 20);
    let mut backend = w.blkback(1, "xvda", &image, &[]);
    {
        let p = w.platform(1);
        eventually(T, "the device", || {
            p.store()
                .read_opt(xenio_xenbus::Tx::NONE, &format!("{BLK_DIR}/backend"))
                .unwrap()
                .is_some()
        });
    }
    cycles(&w, &mut backend, "blkback", BLK_DIR, |p, cycle, how| {
        let mut f = RawBlk::connect(p, BLK_DIR, &[]).map_err(|s| format!("backend went {s:?}"))?;
        if matches!(how, Leave::Orderly) && cycle == 0 {
            // Verified I/O: the backend serves.
            f.data.region().fill(0, 4096, 0xa5).unwrap();
            f.send(&[f.request(BLKIF_OP_WRITE, 1, 64, 0)]);
            assert_eq!(f.responses(1, T)[0].status, BLKIF_RSP_OKAY);
            f.send(&[f.request(BLKIF_OP_READ, 2, 64, 1)]);
            assert_eq!(f.responses(1, T)[0].status, BLKIF_RSP_OKAY);
            let mut page = [0u8; 4096];
            f.data.region().read(4096, &mut page).unwrap();
            assert_eq!(page, [0xa5; 4096], "read back what was written");
        }
        blk_io(&mut f, cycle);
        leave(p, BLK_DIR, how);
        f.release(T)
            .map_err(|e| format!("grants still mapped by the backend: {e}"))
    });
    assert!(backend.stop().success(), "blkback did not exit cleanly");
}

#[test]
fn netback_survives_frontends_leaving_with_io_in_flight() {
    let Some(ns) = Netns::with_tap("xsa350") else {
        return;
    };
    let w = World::new("xsa350-net", &[1]);
    let mut backend = w.netback(&ns, 1, &[]);
    {
        let p = w.platform(1);
        eventually(T, "the vif", || {
            p.store()
                .read_opt(xenio_xenbus::Tx::NONE, &format!("{NET_DIR}/backend"))
                .unwrap()
                .is_some()
        });
    }
    cycles(&w, &mut backend, "netback", NET_DIR, |p, cycle, how| {
        let mut f = RawNet::connect(p, NET_DIR, &[]).map_err(|s| format!("backend went {s:?}"))?;
        if matches!(how, Leave::Orderly) && cycle == 0 {
            net_io(&mut f, cycle);
            let r = f.responses(8, T);
            assert!(
                r.iter()
                    .all(|r| r.status == xenio_xen_sys::netif::NETIF_RSP_OKAY)
            );
        } else {
            net_io(&mut f, cycle);
        }
        leave(p, NET_DIR, how);
        f.release(T)
            .map_err(|e| format!("grants still mapped by the backend: {e}"))
    });
    assert!(backend.stop().success(), "netback did not exit cleanly");
    drop(ns);
}
