//! The XenbusState handshake between a backend process and a frontend process
//! through the local store daemon: connect, tear down, and recover when either
//! side is killed in the middle.
//!
//! `harness = false`: `main` runs the tests; the binary is also the peer process
//! (`--peer backend|frontend ...`), reporting its progress line by line.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{
    DeviceKind, DevicePaths, Endpoint, create_device, create_device_with, destroy_device,
    frontend_ready, peer_leaving, read_state, vbd_frontend_keys,
};
use xenio_xenbus::{DomId, Store};
use xenio_xenstore::Client;
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

type R<T = ()> = std::result::Result<T, String>;
type TestFn = fn() -> R;
const T: Duration = Duration::from_secs(10);

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--peer") {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        return match peer(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peer {:?}: {e}", &args[2..]);
                ExitCode::FAILURE
            }
        };
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let tests: &[(&str, TestFn)] = &[
        ("frontend_and_backend_connect_and_close", connect_and_close),
        (
            "backend_killed_mid_handshake_recovers_with_a_new_backend",
            backend_killed,
        ),
        (
            "frontend_killed_mid_handshake_recovers_with_a_new_frontend",
            frontend_killed,
        ),
        (
            "toolstack_layout_with_own_backend_class_and_frontend_keys",
            toolstack_layout,
        ),
        ("the_device_handshake_runs_between_threads", between_threads),
    ];
    let mut failed = 0;
    for (name, f) in tests {
        if filter.as_deref().is_some_and(|p| !name.contains(p)) {
            continue;
        }
        let t = Instant::now();
        match f() {
            Ok(()) => println!("test {name} ... ok ({:.1?})", t.elapsed()),
            Err(e) => {
                println!("test {name} ... FAILED: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        println!("{failed} failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------- peers

fn peer(args: &[String]) -> R {
    let role = args.first().ok_or("no role")?;
    let socket = args.get(1).ok_or("no socket")?;
    let dir = args.get(2).ok_or("no dir")?;
    let store = Client::connect(socket).map_err(s)?;
    let mut out = std::io::stdout();
    let mut say = |l: &str| -> R {
        writeln!(out, "{l}").map_err(s)?;
        out.flush().map_err(s)
    };
    match role.as_str() {
        "backend" => backend(&store, dir, &mut say),
        "frontend" => frontend(&store, dir, &mut say),
        other => Err(format!("unknown role {other}")),
    }
}

/// A backend: advertise, connect when the frontend is ready, tear down when it
/// leaves, and start over when a frontend (re)initialises.
fn backend(store: &Client, dir: &str, say: &mut dyn FnMut(&str) -> R) -> R {
    let mut ep = Endpoint::backend(store, dir).map_err(s)?;
    loop {
        ep.switch(
            XenbusState::InitWait,
            &[("max-ring-page-order", "4".into())],
        )
        .map_err(s)?;
        say("initwait")?;
        ep.wait_peer(T, frontend_ready).map_err(s)?;
        let rr = ep.peer_key("ring-ref").map_err(s)?;
        if rr.as_deref() != Some("42") {
            return Err(format!("frontend ring-ref {rr:?}"));
        }
        ep.switch(XenbusState::Connected, &[("sectors", "1024".into())])
            .map_err(s)?;
        say("connected")?;
        let left = ep
            .wait_peer(Duration::from_secs(60), peer_leaving)
            .map_err(s)?;
        if left == XenbusState::Initialising {
            say("reconnect")?;
            continue;
        }
        ep.switch(XenbusState::Closing, &[]).map_err(s)?;
        ep.wait_peer(T, |s| {
            matches!(s, XenbusState::Closed | XenbusState::Unknown)
        })
        .map_err(s)?;
        ep.switch(XenbusState::Closed, &[]).map_err(s)?;
        say("closed")?;
        // A frontend coming back to Initialising asks to reconnect.
        if ep.wait_peer(T, |s| s == XenbusState::Initialising).is_err() {
            return Ok(());
        }
        say("reconnect")?;
    }
}

/// A frontend: (re)initialise, wait for InitWait, publish, connect; `close` on
/// stdin tears down.
fn frontend(store: &Client, dir: &str, say: &mut dyn FnMut(&str) -> R) -> R {
    let mut ep = Endpoint::frontend(store, dir).map_err(s)?;
    ep.switch(XenbusState::Initialising, &[]).map_err(s)?;
    ep.wait_peer(T, |s| s == XenbusState::InitWait).map_err(s)?;
    let order = ep.peer_key("max-ring-page-order").map_err(s)?;
    if order.as_deref() != Some("4") {
        return Err(format!("backend max-ring-page-order {order:?}"));
    }
    ep.switch(
        XenbusState::Initialised,
        &[("ring-ref", "42".into()), ("event-channel", "7".into())],
    )
    .map_err(s)?;
    say("initialised")?;
    ep.wait_peer(T, |s| s == XenbusState::Connected)
        .map_err(s)?;
    let sectors = ep.peer_key("sectors").map_err(s)?;
    if sectors.as_deref() != Some("1024") {
        return Err(format!("backend sectors {sectors:?}"));
    }
    ep.switch(XenbusState::Connected, &[]).map_err(s)?;
    say("connected")?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(s)?;
    if line.trim() == "close" {
        ep.switch(XenbusState::Closing, &[]).map_err(s)?;
        ep.wait_peer(T, |s| {
            matches!(s, XenbusState::Closing | XenbusState::Closed)
        })
        .map_err(s)?;
        ep.switch(XenbusState::Closed, &[]).map_err(s)?;
        say("closed")?;
    }
    Ok(())
}

// ---------------------------------------------------------------- harness

struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(role: &str, socket: &Path, dir: &str) -> R<Peer> {
        let mut child = Command::new(std::env::current_exe().map_err(s)?)
            .args(["--peer", role])
            .arg(socket)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(s)?;
        let input = child.stdin.take().ok_or("stdin")?;
        let output = BufReader::new(child.stdout.take().ok_or("stdout")?);
        Ok(Peer {
            child,
            input,
            output,
        })
    }

    /// The next progress line (the peer's own waits time out, so this returns).
    fn expect(&mut self, want: &str) -> R {
        let mut l = String::new();
        self.output.read_line(&mut l).map_err(s)?;
        if l.trim_end() == want {
            Ok(())
        } else {
            Err(format!(
                "expected {want:?}, peer said {:?} (status {:?})",
                l.trim_end(),
                self.child.try_wait()
            ))
        }
    }

    fn send(&mut self, line: &str) -> R {
        writeln!(self.input, "{line}").map_err(s)?;
        self.input.flush().map_err(s)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn finish(mut self) -> R {
        let st = self.child.wait().map_err(s)?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("peer exited with {st}"))
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Setup {
    daemon: Daemon,
    paths: DevicePaths,
    dom0: Client,
    _dir: tempfile::TempDir,
}

fn setup() -> R<Setup> {
    let dir = tempfile::tempdir().map_err(s)?;
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(dir.path())
    })
    .map_err(s)?;
    let dom0 = Client::connect(daemon.socket_path()).map_err(s)?;
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(&dom0, &paths, &[("params", "/tmp/disk.img".into())]).map_err(s)?;
    Ok(Setup {
        daemon,
        paths,
        dom0,
        _dir: dir,
    })
}

fn states(st: &Setup) -> R<(XenbusState, XenbusState)> {
    let b = read_state(&st.dom0, &format!("{}/state", st.paths.backend)).map_err(s)?;
    let f = read_state(&st.dom0, &format!("{}/state", st.paths.frontend)).map_err(s)?;
    Ok((b, f))
}

fn connect_and_close() -> R {
    let st = setup()?;
    // The toolstack's layout and permissions: the frontend may read the backend.
    let fe_view = Client::connect(st.daemon.domain_socket_path(DomId(1))).map_err(s)?;
    let be_id = fe_view
        .read_string(
            xenio_xenbus::Tx::NONE,
            &format!("{}/backend-id", st.paths.frontend),
        )
        .map_err(s)?;
    if be_id != "0" {
        return Err(format!("backend-id {be_id}"));
    }
    let mut be = Peer::spawn("backend", &st.daemon.socket_path(), &st.paths.backend)?;
    be.expect("initwait")?;
    let mut fe = Peer::spawn(
        "frontend",
        &st.daemon.domain_socket_path(DomId(1)),
        &st.paths.frontend,
    )?;
    fe.expect("initialised")?;
    be.expect("connected")?;
    fe.expect("connected")?;
    if states(&st)? != (XenbusState::Connected, XenbusState::Connected) {
        return Err(format!("not both Connected: {:?}", states(&st)?));
    }
    fe.send("close")?;
    fe.expect("closed")?;
    be.expect("closed")?;
    fe.finish()?;
    if states(&st)? != (XenbusState::Closed, XenbusState::Closed) {
        return Err(format!("not both Closed: {:?}", states(&st)?));
    }
    // A frontend coming back reconnects to the same backend.
    let mut fe2 = Peer::spawn(
        "frontend",
        &st.daemon.domain_socket_path(DomId(1)),
        &st.paths.frontend,
    )?;
    be.expect("reconnect")?;
    be.expect("initwait")?;
    fe2.expect("initialised")?;
    be.expect("connected")?;
    fe2.expect("connected")?;
    Ok(())
}

fn backend_killed() -> R {
    let st = setup()?;
    let mut be = Peer::spawn("backend", &st.daemon.socket_path(), &st.paths.backend)?;
    be.expect("initwait")?;
    be.kill(); // SIGKILL mid-handshake: its InitWait stays in the store.
    let mut fe = Peer::spawn(
        "frontend",
        &st.daemon.domain_socket_path(DomId(1)),
        &st.paths.frontend,
    )?;
    fe.expect("initialised")?;
    // Nobody answers; a new backend appears and completes the handshake.
    std::thread::sleep(Duration::from_millis(200));
    let mut be2 = Peer::spawn("backend", &st.daemon.socket_path(), &st.paths.backend)?;
    be2.expect("initwait")?;
    be2.expect("connected")?;
    fe.expect("connected")?;
    if states(&st)? != (XenbusState::Connected, XenbusState::Connected) {
        return Err(format!("not both Connected: {:?}", states(&st)?));
    }
    Ok(())
}

fn frontend_killed() -> R {
    let st = setup()?;
    let mut be = Peer::spawn("backend", &st.daemon.socket_path(), &st.paths.backend)?;
    be.expect("initwait")?;
    let mut fe = Peer::spawn(
        "frontend",
        &st.daemon.domain_socket_path(DomId(1)),
        &st.paths.frontend,
    )?;
    fe.expect("initialised")?;
    fe.kill(); // dies before it reaches Connected
    be.expect("connected")?;
    // A new frontend re-initialises; the backend starts over and both connect.
    let mut fe2 = Peer::spawn(
        "frontend",
        &st.daemon.domain_socket_path(DomId(1)),
        &st.paths.frontend,
    )?;
    be.expect("reconnect")?;
    be.expect("initwait")?;
    fe2.expect("initialised")?;
    be.expect("connected")?;
    fe2.expect("connected")?;
    Ok(())
}

/// What a Linux frontend needs at probe time, and a backend class of its own
/// (so a kernel xen-blkback watching `backend/vbd` leaves the device alone): the
/// frontend reads `virtual-device`, follows `backend` to the custom class, and
/// the frontend domain may read the backend but not write it.
fn toolstack_layout() -> R {
    let dir = tempfile::tempdir().map_err(s)?;
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(3)],
        ..DaemonConfig::new(dir.path())
    })
    .map_err(s)?;
    let dom0 = Client::connect(daemon.socket_path()).map_err(s)?;
    let paths = DevicePaths::new(DomId(0), DomId(3), DeviceKind::Vbd, 51728)
        .with_backend_type("xenio")
        .map_err(s)?;
    if paths.backend != "/local/domain/0/backend/xenio/3/51728"
        || paths.frontend != "/local/domain/3/device/vbd/51728"
    {
        return Err(format!("paths {paths:?}"));
    }
    for bad in ["", "a/b", "..", "x y"] {
        if DevicePaths::new(DomId(0), DomId(3), DeviceKind::Vbd, 1)
            .with_backend_type(bad)
            .is_ok()
        {
            return Err(format!("backend type {bad:?} accepted"));
        }
    }
    create_device_with(
        &dom0,
        &paths,
        &[("mode", "w".into())],
        &vbd_frontend_keys(51728, false),
    )
    .map_err(s)?;
    let fe = Client::connect(daemon.domain_socket_path(DomId(3))).map_err(s)?;
    let rd = |c: &Client, p: String| c.read_string(xenio_xenbus::Tx::NONE, &p).map_err(s);
    let vdev = rd(&fe, format!("{}/virtual-device", paths.frontend))?;
    let devtype = rd(&fe, format!("{}/device-type", paths.frontend))?;
    let backend = rd(&fe, format!("{}/backend", paths.frontend))?;
    let mode = rd(&fe, format!("{backend}/mode"))?;
    if (
        vdev.as_str(),
        devtype.as_str(),
        backend.as_str(),
        mode.as_str(),
    ) != ("51728", "disk", paths.backend.as_str(), "w")
    {
        return Err(format!("read {vdev:?} {devtype:?} {backend:?} {mode:?}"));
    }
    if fe
        .write(xenio_xenbus::Tx::NONE, &format!("{backend}/mode"), b"r")
        .is_ok()
    {
        return Err("the frontend domain could write the backend directory".into());
    }
    destroy_device(&dom0, &paths).map_err(s)?;
    if read_state(&dom0, &format!("{}/state", paths.frontend)).map_err(s)? != XenbusState::Unknown {
        return Err("frontend directory left behind".into());
    }
    // The guest cannot see dom0's backend tree, so the removed node is EACCES to
    // it, not ENOENT; a state read takes it as gone, as Linux's xenbus does.
    let be_state = format!("{}/state", paths.backend);
    match fe.read_string(xenio_xenbus::Tx::NONE, &be_state) {
        Err(e) if e.is_denied() => {}
        other => return Err(format!("the removed backend state read as {other:?}")),
    }
    if read_state(&fe, &be_state).map_err(s)? != XenbusState::Unknown {
        return Err("the removed backend state is not Unknown to the guest".into());
    }
    Ok(())
}

/// Both ends in one process (threads), each with its own store connection.
fn between_threads() -> R {
    use XenbusState as S;
    const WAIT: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().map_err(s)?;
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(5)],
        ..DaemonConfig::new(dir.path())
    })
    .map_err(s)?;
    let dom0 = Client::connect(daemon.socket_path()).map_err(s)?;
    let guest = Client::connect(daemon.domain_socket_path(DomId(5))).map_err(s)?;
    let paths = DevicePaths::new(DomId(0), DomId(5), DeviceKind::Vbd, 51712);
    create_device(&dom0, &paths, &[("mode", "w".to_string())]).map_err(s)?;

    let fe_dir = paths.frontend.clone();
    let frontend = std::thread::spawn(move || -> R {
        let mut fe = Endpoint::frontend(&guest, &fe_dir).map_err(s)?;
        fe.wait_peer(WAIT, |s| s == S::InitWait).map_err(s)?;
        fe.switch(S::Initialised, &[("ring-ref", "8".into())])
            .map_err(s)?;
        fe.wait_peer(WAIT, |s| s == S::Connected).map_err(s)?;
        fe.switch(S::Connected, &[]).map_err(s)?;
        fe.wait_peer(WAIT, |s| s == S::Closing).map_err(s)?;
        fe.switch(S::Closed, &[]).map_err(s)
    });
    let mut be = Endpoint::backend(&dom0, &paths.backend).map_err(s)?;
    be.switch(S::InitWait, &[("feature-flush-cache", "1".into())])
        .map_err(s)?;
    be.wait_peer(WAIT, frontend_ready).map_err(s)?;
    let ring_ref = be.peer_key("ring-ref").map_err(s)?;
    if ring_ref.as_deref() != Some("8") {
        return Err(format!("ring-ref read back as {ring_ref:?}"));
    }
    be.switch(S::Connected, &[("sectors", "2048".into())])
        .map_err(s)?;
    be.wait_peer(WAIT, |s| s == S::Connected).map_err(s)?;
    be.switch(S::Closing, &[]).map_err(s)?;
    be.wait_peer(WAIT, |s| s == S::Closed).map_err(s)?;
    frontend
        .join()
        .map_err(|_| "the frontend thread panicked".to_string())?
}
