//! `xenio backendd --class vbd,vif` (a child process, domain 0, inside a
//! network namespace the test makes, with a bridge `xbr0` at 192.0.2.1/24)
//! serving the vifs and a disk a test toolstack creates, on the local
//! platform. The toolstack writes each vif's nodes as Xen 4.17's libxl does
//! (tools/libs/light/libxl_nic.c: backend `frontend`, `frontend-id`,
//! `online`, `state`, `script`, `mac`, `bridge`, `handle`, `type`, an empty
//! `hotplug-status`, `vifname` when set; frontend `backend`, `backend-id`,
//! `state`, `handle`, `mac`, `trusted`, `mtu`), waits for InitWait, runs
//! tools/hotplug/vif-xenio `online type_if=vif` with libxl's environment (in
//! the namespace), and detaches as libxl does (`online = 0` + `state = 5`, a
//! wait for Closed, `offline`, the directories removed).
//!
//! Shown: the vif's TAP (`vif<domid>.<devid>`, or the `vifname` node) is
//! plugged into the bridge by the script; a real netfront (`xenio netfront`,
//! its own process) pings the bridge's address through it, every reply's
//! payload compared, twice (a second connection); a vif with a nonsense
//! `mac` fails alone (error node, Closing, no TAP, the script fails), and so
//! does one whose frontend asks for what is not served and never closes
//! (its detach still within libxl's 10 s), while a
//! disk of the same daemon does verified I/O throughout; a vif whose domain
//! dies closes; detach leaves no TAP, no store node, and the daemon's
//! threads and descriptors back where they started. Needs root (network
//! namespaces, TAP, bridge): without it the test says why and passes
//! vacuously.

mod common;

use common::toolstack::*;
use common::*;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{DomId, Store, Tx};

/// The namespace's interfaces.
fn links(ns: &Netns) -> Vec<String> {
    let out = ns.exec().args(["ls", "/sys/class/net"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// `ip -o link show <dev>` in the namespace.
fn link(ns: &Netns, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `xenio netfront` (its own process, domain `fe`): ARP, then `count` echo
/// requests of 1400 bytes to the bridge's address, every reply compared.
fn ping_from(w: &World, fe: u16, devid: u32, count: u16) -> bool {
    let st = Command::new(env!("CARGO_BIN_EXE_xenio"))
        .args([
            "netfront",
            "--platform",
            "local",
            "--domid",
            &fe.to_string(),
        ])
        .arg("--run-dir")
        .arg(w.run_dir())
        .args(["--device", &devid.to_string()])
        .args(["--ip", "192.0.2.2", "--ping", "192.0.2.1"])
        .args(["--count", &count.to_string(), "--size", "1400"])
        .status()
        .unwrap();
    st.success()
}

fn fds(pid: u32) -> Vec<String> {
    // Not counted: the local grant mapper's descriptors of each frontend
    // domain's pool file (kept for the process's life: a local platform
    // limitation, gntdev on Xen is one descriptor).
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|l| l.display().to_string())
                .filter(|l| {
                    let l = l.trim_end_matches(" (deleted)");
                    !(l.contains("/domains/") && l.ends_with("/pool"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn backendd_serves_toolstack_vifs_beside_a_disk() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(ns) = Netns::with_tap("vifd") else {
        return;
    };
    ns.ip(&["link", "add", "xbr0", "type", "bridge"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "xbr0"]);
    ns.ip(&["link", "set", "xbr0", "up"]);
    let w = World::new("toolstack-vif", &[1, 2, 3]);
    let ts = Toolstack {
        ns: Some(&ns),
        ..Toolstack::new(&w)
    };
    let mut daemon = backendd(&w, Some(&ns), &["--class", "vbd,vif"]);
    let pid = daemon.pid();
    let base = proc_stats(pid);
    let base_fds = fds(pid);
    let links0 = links(&ns);
    let s = ts.store();

    // A disk of domain 2, verified I/O throughout.
    let img = w.image("a.img", 4 << 20);
    assert_eq!(
        ts.attach(2, "xvda", 51712, &[("params", img.display().to_string())]),
        XenbusState::InitWait
    );
    assert!(ts.hotplug("vbd", "add", 2, 51712));
    let dom2 = Arc::new(w.platform(2));
    let io = io_loop(&dom2, 51712, 0x2d);
    io.wait_progress("the disk's I/O");

    // A vif with nonsense nodes: refused alone, no TAP, the script fails.
    let st = ts.attach_vif(3, 0, "nonsense", &[]);
    assert_eq!(st, XenbusState::Closing);
    let err = "/local/domain/0/error/backend/vif/3/0/error";
    let msg = s.read_string(Tx::NONE, err).unwrap();
    assert!(msg.contains("mac") && msg.contains("nonsense"), "{msg}");
    assert!(!ts.hotplug("vif", "online", 3, 0), "the script took it");
    let herr = s
        .read_string(
            Tx::NONE,
            &format!("{}/hotplug-error", Toolstack::backend("vif", 3, 0)),
        )
        .unwrap();
    assert!(herr.contains("did not take the device"), "{herr}");
    assert!(!links(&ns).contains(&"vif3.0".to_string()));
    ts.remove("vif", 3, 0);
    eventually(Duration::from_secs(10), "the error node removed", || {
        s.read_opt(Tx::NONE, err).unwrap().is_none()
    });
    io.wait_progress("the disk's I/O after the refused vif");

    // A vif of domain 1: its TAP vif1.0, plugged into the bridge by the
    // script; the device waits for the script before it says Connected.
    assert_eq!(
        ts.attach_vif(1, 0, "00:16:3e:00:01:00", &[]),
        XenbusState::InitWait
    );
    eventually(Duration::from_secs(10), "the TAP vif1.0", || {
        links(&ns).contains(&"vif1.0".to_string())
    });
    assert!(ts.hotplug("vif", "online", 1, 0));
    let l = link(&ns, "vif1.0");
    assert!(l.contains("master xbr0") && l.contains(",UP"), "{l}");
    assert_eq!(
        s.read_string(
            Tx::NONE,
            &format!("{}/hotplug-status", Toolstack::backend("vif", 1, 0))
        )
        .unwrap(),
        "connected"
    );
    // A real netfront (its own process) pings the bridge through it; then
    // another connection.
    assert!(ping_from(&w, 1, 0, 5), "ping over the vif");

    // A hostile frontend on vif 1/2: it asks for page flipping
    // (request-rx-copy 0), which no backend does any more, and it never
    // closes. That device alone is disconnected, the reason in its error
    // node; the detach still ends within libxl's wait.
    assert_eq!(
        ts.attach_vif(1, 2, "00:16:3e:00:01:02", &[]),
        XenbusState::InitWait
    );
    assert!(ts.hotplug("vif", "online", 1, 2));
    let dom1 = w.platform(1);
    let f12 = Toolstack::frontend("vif", 1, 2);
    for (k, v) in [
        ("tx-ring-ref", "4000"),
        ("rx-ring-ref", "4001"),
        ("event-channel", "7"),
        ("request-rx-copy", "0"),
        ("feature-rx-notify", "1"),
        ("state", "4"),
    ] {
        dom1.store()
            .write(Tx::NONE, &format!("{f12}/{k}"), v.as_bytes())
            .unwrap();
    }
    let err12 = "/local/domain/0/error/backend/vif/1/2/error";
    eventually(
        Duration::from_secs(10),
        "the hostile vif's error node",
        || s.read_opt(Tx::NONE, err12).unwrap().is_some(),
    );
    let msg = s.read_string(Tx::NONE, err12).unwrap();
    assert!(msg.contains("request-rx-copy"), "{msg}");
    assert_eq!(
        state_of(s, &format!("{}/state", Toolstack::backend("vif", 1, 2))),
        XenbusState::Closing
    );
    assert!(
        ping_from(&w, 1, 0, 3),
        "ping over the vif, second connection"
    );
    ts.detach("vif", 1, 2);
    eventually(Duration::from_secs(10), "the TAP vif1.2 gone", || {
        !links(&ns).contains(&"vif1.2".to_string())
    });
    io.wait_progress("the disk's I/O beside the vif");

    // A vif of domain 3 named by `vifname`, its frontend connecting before
    // the script ran: the device says Connected only once the script wrote
    // hotplug-status = connected. Then domain 3 dies: the vif closes on its
    // own, its TAP goes.
    assert_eq!(
        ts.attach_vif(3, 1, "00:16:3e:00:03:01", &[("vifname", "guest3".into())]),
        XenbusState::InitWait
    );
    let dom3 = Arc::new(w.platform(3));
    let connecting = std::thread::spawn(move || {
        xenio_netfront::NetFront::connect(
            dom3,
            &Toolstack::frontend("vif", 3, 1),
            xenio_netfront::Options::default(),
        )
    });
    let back3 = format!("{}/state", Toolstack::backend("vif", 3, 1));
    eventually(Duration::from_secs(10), "guest3's frontend ready", || {
        matches!(
            state_of(s, &format!("{}/state", Toolstack::frontend("vif", 3, 1))),
            XenbusState::Initialised | XenbusState::Connected
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        state_of(s, &back3),
        XenbusState::InitWait,
        "Connected before the hotplug script ran"
    );
    assert!(ts.hotplug("vif", "online", 3, 1));
    assert!(link(&ns, "guest3").contains("master xbr0"));
    let nic = connecting.join().unwrap().unwrap();
    eventually(Duration::from_secs(10), "guest3 Connected", || {
        state_of(s, &back3) == XenbusState::Connected
    });
    s.release(DomId(3)).unwrap();
    eventually(
        Duration::from_secs(30),
        "guest3 closed after its domain went",
        || {
            state_of(s, &format!("{}/state", Toolstack::backend("vif", 3, 1)))
                == XenbusState::Closed
        },
    );
    eventually(Duration::from_secs(10), "the TAP guest3 gone", || {
        !links(&ns).contains(&"guest3".to_string())
    });
    drop(nic);
    assert!(ts.hotplug("vif", "offline", 3, 1));
    ts.remove("vif", 3, 1); // what `xl destroy` does last

    // Detach vif1.0 (its frontend is closed): Closed, the script, the nodes
    // gone, the TAP gone; the disk goes on.
    ts.detach("vif", 1, 0);
    eventually(Duration::from_secs(10), "the TAP vif1.0 gone", || {
        !links(&ns).contains(&"vif1.0".to_string())
    });
    io.wait_progress("the disk's I/O after the vifs");
    assert!(daemon.running(), "the daemon died");

    // The disk closed by its frontend, detached.
    io.stop.store(true, Ordering::Relaxed);
    assert!(io.thread.join().unwrap().is_none(), "the disk's I/O failed");
    eprintln!(
        "the disk did {} verified write+read pairs",
        io.pairs.load(Ordering::Relaxed)
    );
    ts.detach("vbd", 2, 51712);

    // Nothing left: interfaces, store nodes, threads, descriptors.
    assert_eq!(links(&ns), links0, "interfaces");
    for gone in ["/local/domain/0/backend", "/local/domain/0/error", "/libxl"] {
        let left = s.directory(Tx::NONE, gone);
        assert!(
            left.as_ref().map_or(true, |l| l.is_empty()),
            "{gone} left: {left:?}"
        );
    }
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
