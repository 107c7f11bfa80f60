//! The example programs run as what they are: separate processes on the local
//! platform. A store daemon (in this process), `checksum_backend` with a
//! corrupt block, `checksum_frontend` reading it together with its healthy
//! neighbours; then SIGTERM to the backend, which closes cleanly and removes
//! the device, and nothing of either domain is left in the run directory.
//!
//! The examples are built by `cargo test` (and by this test, with the same
//! cargo, when run alone).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xenio_sdk::platform::{DomId, LocalPlatform, Platform};
use xenio_sdk::store::{Daemon, DaemonConfig};
use xenio_sdk::xenbus::{Store, Tx};

/// `target/<profile>/examples/<name>`, built (again, if stale) with this
/// test's cargo.
fn example(name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "xenio-blkback", "--example", name])
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build --example {name} failed");
    // This test is target/<profile>/deps/examples-<hash>.
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name)
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > within {
            let _ = child.kill();
            panic!("{} did not exit within {within:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn checksum_backend_and_frontend_as_processes() {
    let (backend_exe, frontend_exe) = (example("checksum_backend"), example("checksum_frontend"));
    let dir = tempfile::Builder::new()
        .prefix("examples-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let run = dir.path().join("run");
    let _store = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(&run)
    })
    .unwrap();
    // The frontend starts first: it waits for the device to appear.
    let frontend = Command::new(&frontend_exe)
        .args([
            "--platform",
            "local",
            "--write-verify",
            "8",
            "--read",
            "0,2,3",
        ])
        .arg("--run-dir")
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut backend = Command::new(&backend_exe)
        .args([
            "--platform",
            "local",
            "--size-mib",
            "8",
            "--corrupt-block",
            "2",
        ])
        .arg("--run-dir")
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = frontend.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = || {
        format!(
            "frontend {}:\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(stdout.contains("connected: 8 MiB"), "{}", report());
    assert!(
        stdout.contains("write-verify of 8 blocks: ok"),
        "{}",
        report()
    );
    assert!(stdout.contains("block 0: ok"), "{}", report());
    assert!(
        stdout.contains("block 2: failed: the backend reported an I/O error"),
        "{}",
        report()
    );
    assert!(stdout.contains("block 3: ok"), "{}", report());
    assert_eq!(out.status.code(), Some(1), "{}", report());
    // The frontend process is gone: so are its grant table and pool.
    for f in ["gnttab", "maptrack", "pool"] {
        let p = run.join("domains/1").join(f);
        assert!(!p.exists(), "{} left behind", p.display());
    }

    // SIGTERM: a clean close, the device's nodes removed, exit 0.
    let dom0 = LocalPlatform::connect(&run, DomId(0)).unwrap();
    let backend_dir = "/local/domain/0/backend/vbd/1/51712";
    assert!(
        dom0.store()
            .read_opt(Tx::NONE, &format!("{backend_dir}/state"))
            .unwrap()
            .is_some()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(backend.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut backend, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(backend.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "backend {status}: {stderr}");
    assert!(
        stderr.contains("checksum_backend: read of 4096 bytes at 8192 failed")
            && stderr.contains("block 2: checksum mismatch"),
        "the failed read is reported by the hook: {stderr}"
    );
    assert!(stderr.contains("Shutdown"), "{stderr}");
    for d in [backend_dir, "/local/domain/1/device/vbd/51712"] {
        assert!(
            dom0.store().read_opt(Tx::NONE, d).unwrap().is_none(),
            "{d} left behind"
        );
    }
}
