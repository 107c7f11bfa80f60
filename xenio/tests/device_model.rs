//! `xenio device-model` (a child process) started as libxl starts QEMU for a
//! PV domain with a qdisk disk: the command line of lab/recordings/10
//! (libxl__build_device_model_args_new), the store daemon of the local
//! platform as dom0's store, the domain introduced. A test client does what
//! libxl does (waits for `device-model/<domid>/state = running`, connects to
//! `qmp-libxl-<domid>`, reads the greeting, `qmp_capabilities`,
//! `query-chardev`; libxenstat's `query-blockstats` on the other monitor),
//! every reply checked; then libxl's destroy (`device-model/<domid>` removed,
//! SIGHUP). Bad input on the socket (garbage, a huge request, deep nesting,
//! a client gone mid-request, too many clients) gets an error or a closed
//! connection, and the process goes on, its memory bounded. SIGTERM and the
//! domain released end it too, each leaving no socket, pid file or node.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{DomId, Store, Tx};

const DOMID: u16 = 3;

/// The device model as libxl would start it, and where its files are.
struct Dm {
    backend: Backend,
    qmp: PathBuf,
    stat: PathBuf,
    pidfile: PathBuf,
}

fn start(w: &World) -> Dm {
    let dir = w.dir.path();
    let qmp = dir.join(format!("qmp-libxl-{DOMID}"));
    let stat = dir.join(format!("qmp-libxenstat-{DOMID}"));
    let pidfile = dir.join("dm.pid");
    let socket = w.platform(0).domain().store_socket();
    // libxl makes the directory before it spawns the device model.
    let dom0 = w.platform(0);
    dom0.store()
        .mkdir(Tx::NONE, &format!("/local/domain/0/device-model/{DOMID}"))
        .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_xenio"));
    c.arg("device-model")
        .args(["-xen-domid", &DOMID.to_string(), "-no-shutdown", "-chardev"])
        .arg(format!(
            "socket,id=libxl-cmd,path={},server=on,wait=off",
            qmp.display()
        ))
        .args(["-mon", "chardev=libxl-cmd,mode=control", "-chardev"])
        .arg(format!(
            "socket,id=libxenstat-cmd,path={},server=on,wait=off",
            stat.display()
        ))
        .args(["-mon", "chardev=libxenstat-cmd,mode=control"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-xen-attach",
            "-name",
            "recq",
        ])
        .args(["-vnc", "none", "-display", "none", "-nographic"])
        .args(["-machine", "xenpv", "-m", "128", "-pidfile"])
        .arg(&pidfile)
        .env("XENSTORED_PATH", socket);
    Dm {
        backend: Backend::spawn(c),
        qmp,
        stat,
        pidfile,
    }
}

fn state_node<S: Store>(s: &S) -> Option<String> {
    s.read_opt(
        Tx::NONE,
        &format!("/local/domain/0/device-model/{DOMID}/state"),
    )
    .unwrap()
}

/// libxl's wait (device_model_confirm): `running` in the store.
fn wait_running(w: &World, dm: &mut Dm) {
    let dom0 = w.platform(0);
    eventually(T, "device-model state = running", || {
        assert!(dm.backend.running(), "the device model exited");
        state_node(dom0.store()).as_deref() == Some("running")
    });
    assert!(dm.qmp.exists() && dm.stat.exists());
    let pid = std::fs::read_to_string(&dm.pidfile).unwrap();
    assert_eq!(pid.trim(), dm.backend.pid().to_string());
}

/// A QMP client reading `\r\n`-terminated replies, as libxl does.
struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Qmp {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        Qmp {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// The next message, or None once the server closed the connection (a
    /// reset, when it closed with input of ours unread).
    fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a reply: {e}"),
        }
        assert!(line.ends_with("\r\n"), "not CRLF-terminated: {line:?}");
        Some(serde_json::from_str(&line).unwrap())
    }

    fn send_raw(&mut self, b: &[u8]) {
        self.w.write_all(b).unwrap();
    }

    /// libxl's qmp_prepare_cmd: `{"execute":..,"id":N}` and `\r\n`.
    fn cmd(&mut self, execute: &str, id: i64) -> Value {
        self.send_raw(format!("{}\r\n", json!({"execute": execute, "id": id})).as_bytes());
        self.recv().expect("a reply")
    }

    /// The greeting and capabilities negotiation libxl does on connecting.
    fn negotiate(path: &Path) -> Qmp {
        let mut q = Qmp::connect(path);
        let g = q.recv().expect("greeting");
        assert!(g["QMP"]["version"]["qemu"]["major"].is_i64(), "{g}");
        assert!(g["QMP"]["capabilities"].is_array(), "{g}");
        // libxl__ev_qmp_init: ids start at "xlq\0"
        assert_eq!(
            q.cmd("qmp_capabilities", 0x786c7100),
            json!({"return": {}, "id": 0x786c7100})
        );
        q
    }
}

/// Wait for the process to exit (15 s at most).
fn exit_of(b: &mut Backend) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = b.child.try_wait().unwrap() {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(b: &Backend, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(b.pid() as i32), sig).unwrap();
}

/// Nothing of the device model is left: sockets, pid file, store node.
fn nothing_left(w: &World, dm: &Dm) {
    assert!(!dm.qmp.exists(), "{} left", dm.qmp.display());
    assert!(!dm.stat.exists(), "{} left", dm.stat.display());
    assert!(!dm.pidfile.exists(), "pid file left");
    let dom0 = w.platform(0);
    assert_eq!(
        dom0.store()
            .read_opt(Tx::NONE, &format!("/local/domain/0/device-model/{DOMID}"))
            .unwrap(),
        None,
        "device-model/{DOMID} left"
    );
}

#[test]
fn libxl_create_then_destroy() {
    let w = World::new("dm-libxl", &[DOMID]);
    let mut dm = start(&w);
    wait_running(&w, &mut dm);
    // device_model_spawn_outcome -> device_model_postconfig_chardev
    let mut q = Qmp::negotiate(&dm.qmp);
    let r = q.cmd("query-chardev", 0x786c7101);
    assert_eq!(r["id"], 0x786c7101);
    let devs = r["return"].as_array().expect("a list");
    for d in devs {
        // libxl writes serial/N/tty for each serialN with a pty: filename
        let label = d["label"].as_str().expect("label");
        assert!(d["filename"].is_string(), "{d}");
        assert!(!label.starts_with("serial"), "{d}");
    }
    assert_eq!(devs.len(), 2);
    // device_model_postconfig_vnc (a domain with VNC only)
    assert_eq!(
        q.cmd("query-vnc", 0x786c7102),
        json!({"return": {"enabled": false}, "id": 0x786c7102})
    );
    // Commands libxl sends HVM domains only: not here, as QEMU says.
    let r = q.cmd("xen-save-devices-state", 5);
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    assert_eq!(r["id"], 5);
    drop(q);
    // libxenstat (xentop) on its own monitor
    let mut s = Qmp::negotiate(&dm.stat);
    assert_eq!(s.cmd("query-blockstats", 1), json!({"return": [], "id": 1}));
    // libxl__destroy_device_model: the directory removed, then SIGHUP to
    // the pid in image/device-model-pid.
    let dom0 = w.platform(0);
    dom0.store()
        .rm(Tx::NONE, &format!("/local/domain/0/device-model/{DOMID}"))
        .unwrap();
    signal(&dm.backend, nix::sys::signal::Signal::SIGHUP);
    let st = exit_of(&mut dm.backend);
    assert!(st.success(), "{st}");
    assert_eq!(s.recv(), None, "the open QMP connection is closed");
    nothing_left(&w, &dm);
}

#[test]
fn bad_input_gets_errors_and_memory_stays_bounded() {
    let w = World::new("dm-bad", &[DOMID]);
    let mut dm = start(&w);
    wait_running(&w, &mut dm);

    // Too many clients at once (the first connections made): the ones
    // past the limit are closed.
    let held: Vec<Qmp> = (0..8).map(|_| Qmp::negotiate(&dm.qmp)).collect();
    let mut extra = Qmp::connect(&dm.qmp);
    let mut b = [0u8; 1];
    assert_eq!(extra.r.read(&mut b).unwrap(), 0, "a ninth client is closed");
    drop(held);
    // ... and once they are gone, a client is served again.
    let mut again = None;
    eventually(T, "a client served after the others left", || {
        let mut q = Qmp::connect(&dm.qmp);
        let g = q.recv();
        if g.is_some() {
            again = Some(q);
        }
        g.is_some()
    });
    let mut q = again.unwrap();
    assert_eq!(q.cmd("qmp_capabilities", 1), json!({"return": {}, "id": 1}));
    drop(q);

    // Garbage: an error (no id, as QEMU), then the connection still serves.
    let mut q = Qmp::connect(&dm.qmp);
    q.recv().expect("greeting");
    q.send_raw(b"{{{ this is not json\r\n");
    let r = q.recv().expect("an error");
    assert_eq!(r["error"]["class"], "GenericError", "{r}");
    assert!(r.get("id").is_none());
    // before negotiation, only qmp_capabilities
    assert_eq!(
        q.cmd("query-status", 1)["error"]["class"],
        "CommandNotFound"
    );
    assert_eq!(q.cmd("qmp_capabilities", 2), json!({"return": {}, "id": 2}));
    // several requests in one write, one split over two writes
    q.send_raw(b"{\"execute\":\"query-name\",\"id\":3}{\"execute\":\"query-st");
    assert_eq!(
        q.recv().unwrap(),
        json!({"return": {"name": "recq"}, "id": 3})
    );
    q.send_raw(b"atus\",\"id\":4}\r\n");
    assert_eq!(q.recv().unwrap()["return"]["status"], "running");
    q.send_raw(b"[1,2]\r\n\"x\"\r\n{\"id\":5}\r\n");
    for _ in 0..3 {
        assert_eq!(q.recv().unwrap()["error"]["class"], "GenericError");
    }
    q.send_raw(b"{\"execute\":\"no-such-command\",\"id\":6}\r\n");
    let r = q.recv().unwrap();
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    assert_eq!(r["id"], 6);
    // Deep nesting: an error, not a stack overflow.
    let mut deep = vec![b'['; 100_000];
    deep.extend_from_slice(b"\r\n");
    q.send_raw(&deep);
    assert_eq!(q.recv().unwrap()["error"]["class"], "GenericError");
    assert_eq!(q.cmd("query-name", 7)["id"], 7, "still serving");
    drop(q);

    // A request that never ends: an error past 1 MiB, then the connection
    // is closed (the writer sees its pipe broken; it must not hang).
    let mut q = Qmp::connect(&dm.qmp);
    q.recv().expect("greeting");
    let mut w2 = q.w.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w2.write_all(b"{\"execute\": \"");
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..64 {
            if w2.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let r = q.recv().expect("an error before the close");
    assert!(
        r["error"]["desc"].as_str().unwrap().contains("too big"),
        "{r}"
    );
    assert_eq!(q.recv(), None);
    writer.join().unwrap();

    // A client gone in the middle of a request.
    let mut q = Qmp::connect(&dm.qmp);
    q.recv().expect("greeting");
    q.send_raw(b"{\"execute\": \"query-");
    drop(q);

    let mut q = Qmp::negotiate(&dm.qmp);
    assert_eq!(
        q.cmd("query-chardev", 2)["return"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    assert!(dm.backend.running());
    let status = std::fs::read_to_string(format!("/proc/{}/status", dm.backend.pid())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(hwm_kib < 64 * 1024, "peak resident memory {hwm_kib} KiB");

    signal(&dm.backend, nix::sys::signal::Signal::SIGTERM);
    let st = exit_of(&mut dm.backend);
    assert!(st.success(), "{st}");
    nothing_left(&w, &dm);
}

#[test]
fn exits_when_its_domain_is_gone_or_on_quit() {
    let w = World::new("dm-gone", &[DOMID]);
    let mut dm = start(&w);
    wait_running(&w, &mut dm);
    w.platform(0).store().release(DomId(DOMID)).unwrap();
    let st = exit_of(&mut dm.backend);
    assert!(st.success(), "{st}");
    nothing_left(&w, &dm);

    let w = World::new("dm-quit", &[DOMID]);
    let mut dm = start(&w);
    wait_running(&w, &mut dm);
    let mut q = Qmp::negotiate(&dm.qmp);
    assert_eq!(q.cmd("quit", 9), json!({"return": {}, "id": 9}));
    let st = exit_of(&mut dm.backend);
    assert!(st.success(), "{st}");
    nothing_left(&w, &dm);
}

#[test]
fn command_lines_it_cannot_serve_are_refused() {
    for (args, says) in [
        (&["-name", "x"][..], "-xen-domid"),
        (&["-xen-domid", "4"][..], "no QMP monitor"),
        (
            &[
                "-xen-domid",
                "4",
                "-chardev",
                "socket,id=libxl-cmd,fd=7,server=on,wait=off",
                "-mon",
                "chardev=libxl-cmd,mode=control",
                "-S",
            ][..],
            "dm_restrict",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_xenio"))
            .arg("device-model")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_xenio"))
        .args(["device-model", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "device_model_override",
        "SIGHUP",
        "-xen-domid",
        "-pidfile",
        "CommandNotFound",
    ] {
        assert!(help.contains(word), "--help does not name {word}");
    }
}
