//! The custom network backend example as a real program: `echo_backend` (a
//! process serving domain 1's vif 0 on the local platform, its own store
//! directories created) and `echo_client` (domain 1's frontend, another
//! process) against xenio's store daemon. The client gets ARP, ping and UDP
//! echo replies byte for byte; on SIGTERM the backend closes the device
//! cleanly (the waiting client sees the close within a second or two, not a
//! timeout), exits 0 and leaves no store node behind.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::{DomId, Store, Tx};
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

/// `target/<profile>/examples/<name>`, brought up to date first (`cargo
/// test` for this test alone does not build the examples, and a stale one
/// would test old code).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "xenio-netback", "--examples"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "building the examples");
    dir.join(name)
}

#[test]
fn echo_backend_and_client_as_processes_with_a_clean_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let _daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(run.clone())
    })
    .unwrap();
    let (backend_bin, client_bin) = (example("echo_backend"), example("echo_client"));
    let mut backend = Command::new(backend_bin)
        .arg("--run-dir")
        .arg(&run)
        .args(["--frontend", "1", "--platform", "local"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = Command::new(client_bin)
        .arg("--run-dir")
        .arg(&run)
        .args(["--count", "3", "--wait-close"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        said.push(l.clone());
        if l.starts_with("echo ok") {
            break;
        }
    }
    assert!(
        said.iter()
            .any(|l| l == "echo ok: ARP, 3 pings, 2 datagrams"),
        "{said:?}"
    );
    // The datagram whose checksum the client left blank came back blank
    // (the example takes partial checksums and keeps them in its replies).
    assert!(
        said.iter()
            .any(|l| l.contains("udp echo 1") && l.contains("left to the offload")),
        "{said:?}"
    );
    // SIGTERM: the backend closes the device while the client waits.
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(backend.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = client.wait().unwrap();
    assert!(status.success(), "client: {status} {rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("backend closed the device")),
        "{rest:?}"
    );
    let status = backend.wait().unwrap();
    let elapsed = t.elapsed();
    assert!(status.success(), "backend: {status}");
    assert!(
        elapsed < Duration::from_secs(4),
        "a clean close, not a timeout: {elapsed:?}"
    );
    let mut out = String::new();
    std::io::Read::read_to_string(&mut backend.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("Shutdown"), "{out}");
    // No store node is left.
    let p = LocalPlatform::connect(&run, DomId(0)).unwrap();
    for path in [
        "/local/domain/0/backend/vif/1/0",
        "/local/domain/1/device/vif/0",
    ] {
        assert!(
            p.store().read_opt(Tx::NONE, path).unwrap().is_none(),
            "{path} is left"
        );
    }
}
