//! `xenio backendd` (a child process, domain 0) serving the disks a test
//! toolstack creates, on the local platform: the toolstack writes each disk's
//! nodes as libxl does (lab/recordings/01-phy-attach.txt: one transaction,
//! frontend directory `n<fe> r0`, backend directory `n0 r<fe>`, the same keys
//! in the same order), waits for InitWait, runs tools/hotplug/block-xenio
//! `add` (through xenstore-utils, as libxl would), and detaches as
//! 02-phy-detach.txt does (`online = 0` + `state = 5`, a wait for Closed,
//! `remove`, the directories and their empty parents removed in one
//! transaction). Frontends are xenio blkfronts in this process, one domain
//! each, doing verified I/O. Shown: several devices of several domains in
//! one daemon, the nodes honoured (qdisk's `aio:` form, `discard-enable = 0`,
//! a read-only removable CD-ROM), a device with nonsense nodes refused alone
//! (error node, Closing, the hotplug script fails), a device whose hotplug
//! script failed refused with its reason, a device never Connected before its
//! script said `connected` (libxl waits for exactly InitWait), a detach under I/O, a
//! frontend domain released (@releaseDomain) closing its device, the other
//! devices' I/O undisturbed throughout, and the daemon's threads, fds, store
//! nodes and grant mappings back to where they started.

mod common;

use common::toolstack::*;
use common::*;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use xenio_blkfront::{BlkFront, Options};
use xenio_xen_sys::blkif::{VDISK_CDROM, VDISK_REMOVABLE};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::{DomId, Store, Tx};

#[test]
fn backendd_serves_what_the_toolstack_writes_each_device_alone() {
    // The frontends' log (RUST_LOG), beside the daemon's.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let w = World::new("toolstack", &[1, 2, 3]);
    let ts = Toolstack::new(&w);
    let mut daemon = backendd(
        &w,
        None,
        &["--max-queues", "2", "--max-ring-page-order", "2"],
    );
    let base = proc_stats(daemon.pid());
    let base_fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .collect();

    let a = w.image("a.img", 4 * MIB);
    let b = w.image("b.img", 4 * MIB);
    let c = w.image("c.iso", 2 * MIB);
    std::fs::write(&c, vec![0xcd; 2 * MIB as usize]).unwrap();
    let e = w.image("e.img", 4 * MIB);

    // A: domain 1, a plain path (backendtype=phy).
    let st = ts.attach(1, "xvda", 51712, &[("params", a.display().to_string())]);
    assert_eq!(st, XenbusState::InitWait);
    assert!(ts.hotplug("vbd", "add", 1, 51712));
    let s = ts.store();
    let hs = format!("{}/hotplug-status", Toolstack::backend("vbd", 1, 51712));
    assert_eq!(
        s.read_opt(Tx::NONE, &hs).unwrap().as_deref(),
        Some("connected")
    );
    // B: domain 2, qdisk's form, no discard.
    let st = ts.attach(
        2,
        "xvda",
        51712,
        &[
            ("params", format!("aio:{}", b.display())),
            ("discard-enable", "0".into()),
        ],
    );
    assert_eq!(st, XenbusState::InitWait);
    assert!(ts.hotplug("vbd", "add", 2, 51712));
    // C: domain 2, a removable read-only CD-ROM.
    let st = ts.attach(
        2,
        "xvdb",
        51728,
        &[
            ("params", c.display().to_string()),
            ("device-type", "cdrom".into()),
            ("mode", "r".into()),
            ("removable", "1".into()),
        ],
    );
    assert_eq!(st, XenbusState::InitWait);
    assert!(ts.hotplug("vbd", "add", 2, 51728));

    let (dom1, dom2, dom3) = (
        Arc::new(w.platform(1)),
        Arc::new(w.platform(2)),
        Arc::new(w.platform(3)),
    );
    let io_a = io_loop(&dom1, 51712, 0xa0);
    let io_b = io_loop(&dom2, 51712, 0xb0);
    // C: what the frontend sees, and the media's data.
    let cd = {
        let mut cd = BlkFront::connect(
            dom2.clone(),
            "/local/domain/2/device/vbd/51728",
            Options::default(),
        )
        .unwrap();
        assert!(cd.info().readonly, "a CD-ROM is read-only");
        let info: u32 = s
            .read_string(
                Tx::NONE,
                &format!("{}/info", Toolstack::backend("vbd", 2, 51728)),
            )
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            info & (VDISK_CDROM | VDISK_REMOVABLE),
            VDISK_CDROM | VDISK_REMOVABLE
        );
        let mut sector = [0u8; 4096];
        cd.read_at(MIB, &mut sector).unwrap();
        assert!(sector.iter().all(|&x| x == 0xcd));
        assert!(cd.write_at(0, &[1; 512]).is_err(), "a CD-ROM took a write");
        cd
    };
    io_a.wait_progress("A's I/O");
    io_b.wait_progress("B's I/O");
    let b_back = Toolstack::backend("vbd", 2, 51712);
    assert!(
        s.read_opt(Tx::NONE, &format!("{b_back}/feature-discard"))
            .unwrap()
            .is_none_or(|v| v == "0"),
        "discard-enable = 0 still offered discard"
    );

    // D: domain 3, nonsense: a format xenio does not serve. Refused on
    // that device alone: its error node, Closing, the script fails (libxl's
    // attach fails), and the toolstack's rollback removes it.
    let st = ts.attach(3, "xvda", 51712, &[("params", "vhd:/srv/d.vhd".into())]);
    assert_eq!(st, XenbusState::Closing);
    let err = "/local/domain/0/error/backend/vbd/3/51712/error";
    let msg = s.read_string(Tx::NONE, err).unwrap();
    assert!(
        msg.contains("format=vhd") && msg.contains("qemu-img convert"),
        "{msg}"
    );
    assert!(
        !ts.hotplug("vbd", "add", 3, 51712),
        "the script accepted a refused device"
    );
    ts.remove("vbd", 3, 51712);
    eventually(Duration::from_secs(10), "D's error node removed", || {
        s.read_opt(Tx::NONE, err).unwrap().is_none()
    });
    // D again, with a mode that makes no sense.
    let st = ts.attach(
        3,
        "xvda",
        51712,
        &[("params", a.display().to_string()), ("mode", "rw".into())],
    );
    assert_eq!(st, XenbusState::Closing);
    assert!(s.read_string(Tx::NONE, err).unwrap().contains("mode"));
    ts.remove("vbd", 3, 51712);
    // D a third time, good nodes and a frontend ready at once, but the
    // hotplug script fails (as Xen's `xen-hotplug-common.sh` `fatal` writes
    // it): never Connected, the script's reason in the error node.
    let st = ts.attach(3, "xvda", 51712, &[("params", a.display().to_string())]);
    assert_eq!(st, XenbusState::InitWait);
    let connecting = {
        let dom3 = dom3.clone();
        std::thread::spawn(move || {
            let opts = Options {
                timeout: Duration::from_secs(20),
                ..Default::default()
            };
            BlkFront::connect(dom3, "/local/domain/3/device/vbd/51712", opts).map(|_| ())
        })
    };
    let d_front = "/local/domain/3/device/vbd/51712/state";
    eventually(Duration::from_secs(10), "D's frontend ready", || {
        state_of(s, d_front) == XenbusState::Initialised
    });
    let d_back = Toolstack::backend("vbd", 3, 51712);
    s.write(Tx::NONE, &format!("{d_back}/hotplug-error"), b"target busy")
        .unwrap();
    s.write(Tx::NONE, &format!("{d_back}/hotplug-status"), b"error")
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "D refused after its script",
        || state_of(s, &format!("{d_back}/state")) == XenbusState::Closing,
    );
    eventually(
        Duration::from_secs(10),
        "the script's reason reported",
        || {
            s.read_opt(Tx::NONE, err)
                .unwrap()
                .is_some_and(|m| m.contains("target busy"))
        },
    );
    assert!(connecting.join().unwrap().is_err(), "D connected anyway");
    ts.remove("vbd", 3, 51712);
    io_b.wait_progress("B's I/O after D");

    // E: domain 3, good; then domain 3 dies (@releaseDomain): E closes on
    // its own (no toolstack write), the others go on.
    let st = ts.attach(3, "xvda", 51712, &[("params", e.display().to_string())]);
    assert_eq!(st, XenbusState::InitWait);
    // Its frontend is ready before libxl ran the hotplug script: the device
    // stays in InitWait (libxl waits for exactly that state) until the
    // script said `connected`, as Linux's blkback waits for the script.
    let io_e = io_loop(&dom3, 51712, 0xe0);
    let e_state = format!("{}/state", Toolstack::backend("vbd", 3, 51712));
    eventually(Duration::from_secs(10), "E's frontend ready", || {
        state_of(s, d_front) == XenbusState::Initialised
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        state_of(s, &e_state),
        XenbusState::InitWait,
        "Connected before the hotplug script ran"
    );
    assert!(ts.hotplug("vbd", "add", 3, 51712));
    io_e.wait_progress("E's I/O");
    s.release(DomId(3)).unwrap();
    eventually(
        Duration::from_secs(30),
        "E closed after its domain went",
        || {
            state_of(s, &format!("{}/state", Toolstack::backend("vbd", 3, 51712)))
                == XenbusState::Closed
        },
    );
    assert!(
        io_e.thread.join().unwrap().is_some(),
        "E's I/O went on without its domain"
    );
    ts.remove("vbd", 3, 51712); // what `xl destroy` does last
    io_b.wait_progress("B's I/O after E");
    io_a.wait_progress("A's I/O after E");

    // Detach A under I/O: its frontend lets go, libxl's wait for Closed
    // ends, and B goes on.
    ts.detach("vbd", 1, 51712);
    let ended = io_a.thread.join().unwrap();
    assert!(ended.is_some(), "A's I/O did not notice the detach");
    eprintln!("A ended with: {}", ended.unwrap());
    io_a.stop.store(true, Ordering::Relaxed);
    io_b.wait_progress("B's I/O after A's detach");
    assert!(daemon.running(), "the daemon died");

    // B and C: closed by their frontends, detached.
    io_b.stop.store(true, Ordering::Relaxed);
    assert!(io_b.thread.join().unwrap().is_none(), "B's I/O failed");
    eprintln!(
        "B did {} verified write+read pairs",
        io_b.pairs.load(Ordering::Relaxed)
    );
    cd.close().unwrap();
    ts.detach("vbd", 2, 51712);
    ts.detach("vbd", 2, 51728);

    // Nothing left: store nodes, threads, fds, grant mappings.
    for gone in ["/local/domain/0/backend", "/local/domain/0/error", "/libxl"] {
        let left = s.directory(Tx::NONE, gone);
        assert!(
            left.as_ref().map_or(true, |l| l.is_empty()),
            "{gone} left: {left:?}"
        );
    }
    // Threads, grant mappings and descriptors back to the start. Not counted:
    // the local grant mapper's descriptors of each frontend domain's pool file
    // (two per domain ever seen, kept open for the process's life: a local
    // platform limitation, gntdev on Xen is one descriptor).
    let fds = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .map(|l| l.display().to_string())
                    .filter(|l| !(l.contains("/domains/") && l.ends_with("/pool")))
                    .collect()
            })
            .unwrap_or_default()
    };
    let pid = daemon.pid();
    let at = |p: ProcStats| (p.threads, p.pool_maps);
    let t = std::time::Instant::now();
    while (at(proc_stats(pid)), fds(pid).len()) != (at(base), base_fds.len())
        && t.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(at(proc_stats(pid)), at(base), "threads, grant mappings");
    assert_eq!(fds(pid), base_fds, "descriptors");
    let status = daemon.stop();
    assert!(status.success(), "the daemon exited with {status}");
}

/// Every knob of `xenio backendd` is in its --help.
#[test]
fn backendd_help_explains_every_knob() {
    let out = Command::new(env!("CARGO_BIN_EXE_xenio"))
        .args(["backendd", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for knob in [
        "--class",
        "--platform",
        "--run-dir",
        "--backend",
        "--max-ring-page-order",
        "--max-queues",
        "--max-indirect-segments",
        "--no-persistent",
        "--grant-mode",
        "--io-depth",
        "--direct",
        "--sync-io",
        "--close-timeout",
        "--inflight-dir",
        "--keep-on-exit",
        "block-xenio",
        "discard-enable",
        "@releaseDomain",
        "vif-xenio",
        "vifname",
        "hotplug-status",
        "--vif-max-queues",
        "--vif-mtu",
        "--vif-no-sg",
        "--vif-no-split-event-channels",
        "--vif-no-offloads",
        "--vif-batch",
        "--vif-rx-queue",
        "--vif-rx-drain-ms",
        "--vif-poll-us",
    ] {
        assert!(
            help.contains(knob),
            "--help does not mention {knob}:\n{help}"
        );
    }
}
