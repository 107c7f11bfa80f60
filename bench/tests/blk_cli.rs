//! `xenio-bench blk` end to end with tiny settings (16 MiB file, one repetition,
//! short measurements): fio, xenio (the real `xenio blkback` as a child process)
//! and qemu-nbd on one file and on a /dev/shm copy; the run completes, prints a
//! row per engine and every target line, writes its JSON, and leaves no process
//! or scratch file behind.
//!
//! Skipped, with a message, when fio or qemu-nbd is missing (`.ci/run` installs
//! both). The `xenio` command is the one built next to `xenio-bench`
//! (`cargo test --workspace` builds it); if it is not there it is built here.

mod common;
use common::xenio_bin;

use std::path::Path;
use std::process::{Command, Stdio};

/// The runs of this file one at a time: each checks that it left no child
/// process of this test process behind (which another run's children would
/// be), and two benchmarks at once on a small machine starve each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn children_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.get(1) == Some(&pid.to_string().as_str()) {
            out.push(stat[..close + 1].to_string());
        }
    }
    out
}

#[test]
fn blk_tiny_run_reports_every_engine_and_target() {
    let _serial = serial();
    if !have("fio") || !have("qemu-nbd") {
        eprintln!(
            "SKIPPED: fio and qemu-nbd are needed (apt-get install fio qemu-utils; .ci/run installs them)"
        );
        return;
    }
    let xenio = xenio_bin();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let scratch = tempfile::tempdir_in("/dev/shm").unwrap();
    let json = dir.path().join("blk.json");
    let child = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args(["blk", "--quick", "--size-mib", "16", "--reps", "1"])
        .args(["--runtime-secs", "0.3", "--warmup-secs", "0.1"])
        .arg("--xenio")
        .arg(&xenio)
        .arg("--dir")
        .arg(dir.path())
        .arg("--scratch")
        .arg(scratch.path())
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let squeezed: Vec<String> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for engine in [
        "xenio",
        "fio",
        "qemu-nbd",
        "xenio-shm",
        "fio-shm",
        "qemu-nbd-shm",
    ] {
        let row = format!("rand read 4K QD32 {engine} ");
        assert!(
            squeezed.iter().any(|l| l.starts_with(&row)),
            "no `{row}` row:\n{stdout}"
        );
    }
    has_verdicts(
        &stdout,
        &[
            "seq read 1M QD8: xenio / fio MB/s",
            "seq write 1M QD8: xenio / fio MB/s",
            "rand read 4K QD32: xenio / fio IOPS",
            "rand write 4K QD32: xenio / fio IOPS",
            "rand read 4K QD1: xenio / fio p50 latency",
            "rand read 4K QD32: xenio / qemu-nbd IOPS",
            "rand read 4K QD32: xenio-shm / qemu-nbd-shm IOPS",
            "rand read 4K QD32: xenio / fio CPU per op",
            "seq read 1M QD8: xenio / fio CPU per op",
            "rand read 4K QD32: xenio-shm / fio-shm IOPS",
            "notifications per request, xenio rand read 4K QD32",
        ],
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["benchmark"], "blk");
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(6 * 6));
    // CPU per operation where it is measured (not for qemu-nbd: its server's
    // CPU is not counted).
    for r in v["rows"].as_array().unwrap() {
        let has = r["cpu_us_per_op"]["median"]
            .as_f64()
            .is_some_and(|x| x > 0.0);
        let nbd = r["engine"].as_str().unwrap().starts_with("qemu-nbd");
        assert_eq!(has, !nbd, "{r}");
    }
    let xenio_row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["engine"] == "xenio" && r["workload"] == "rand read 4K QD32")
        .unwrap();
    assert!(
        xenio_row["requests"][0].as_u64().unwrap() > 0,
        "{xenio_row}"
    );
    // Nothing left behind: no child process, no scratch file.
    assert!(children_of(std::process::id()).is_empty());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "blk.json")
        .collect();
    assert!(left.is_empty(), "left in --dir: {left:?}");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    assert!(!Path::new(&format!("/dev/shm/xenio-bench-blk-{pid}.img")).exists());
}

#[test]
fn blk_help_explains_every_knob() {
    let out = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args(["blk", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for knob in [
        "--dir",
        "--size-mib",
        "--reps",
        "--runtime-secs",
        "--warmup-secs",
        "--quick",
        "--workloads",
        "--engines",
        "--json",
        "--ring-order",
        "--queues",
        "--indirect",
        "--no-persistent",
        "--grant-mode",
        "--reorder",
        "--poll-us",
        "--io-depth",
        "--nbd-aio",
        "--backend-arg",
    ] {
        assert!(help.contains(knob), "--help lacks {knob}:\n{help}");
    }
}

/// Runs `xenio-bench blk` with `args` (and --xenio, --dir, --scratch, --json);
/// returns (stdout, stderr, the JSON).
fn run_blk(args: &[&str]) -> (String, String, serde_json::Value) {
    let xenio = xenio_bin();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let scratch = tempfile::tempdir_in("/dev/shm").unwrap();
    let json = dir.path().join("blk.json");
    let out = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .arg("blk")
        .args(args)
        .arg("--xenio")
        .arg(&xenio)
        .arg("--dir")
        .arg(dir.path())
        .arg("--scratch")
        .arg(scratch.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let v = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(children_of(std::process::id()).is_empty());
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    (stdout, stderr, v)
}

fn row<'a>(v: &'a serde_json::Value, engine: &str) -> &'a serde_json::Value {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["engine"] == engine)
        .unwrap_or_else(|| panic!("no {engine} row in {v}"))
}

/// The storage engines with two queues: qemu-nbd offers multi-conn
/// (--shared), so xenio-nbd's connection has two queues (blkback caps them
/// at 1 for an export without multi-conn), fio's nbd engine runs two jobs;
/// the qcow2 engines; their target lines; an rbd engine asked for without
/// --rbd-target is skipped with the reason and the rest runs.
#[test]
fn blk_storage_engines_with_multi_conn() {
    let _serial = serial();
    if !have("fio") || !have("qemu-nbd") || !have("qemu-img") {
        eprintln!(
            "SKIPPED: fio, qemu-nbd and qemu-img are needed (apt-get install fio qemu-utils; .ci/run installs them)"
        );
        return;
    }
    let (stdout, stderr, v) = run_blk(&[
        "--engines",
        "xenio,xenio-nbd,qemu-nbd,xenio-qcow2,qemu-nbd-qcow2,xenio-rbd",
        "--workloads",
        "rand-read-4k-qd32",
        "--queues",
        "2",
        "--size-mib",
        "16",
        "--reps",
        "1",
        "--runtime-secs",
        "0.3",
        "--warmup-secs",
        "0.1",
    ]);
    assert!(
        stderr.contains("skipping xenio-rbd: "),
        "no skip message:\n{stderr}"
    );
    assert!(stdout.contains("skipped:  xenio-rbd: "), "{stdout}");
    assert!(stdout.contains("multi-conn: 2 queues"), "{stdout}");
    assert_eq!(row(&v, "xenio-nbd")["queues"], serde_json::json!([2]));
    assert_eq!(row(&v, "xenio")["queues"], serde_json::json!([2]));
    for engine in ["qemu-nbd", "xenio-qcow2", "qemu-nbd-qcow2"] {
        assert!(row(&v, engine)["iops"]["median"].as_f64().unwrap() > 0.0);
    }
    has_verdicts(
        &stdout,
        &[
            "rand read 4K QD32: xenio-nbd / qemu-nbd (fio nbd, same server) IOPS",
            "rand read 4K QD32: xenio-qcow2 / qemu-nbd-qcow2 IOPS",
            "rand read 4K QD32: xenio-qcow2 / xenio (raw) IOPS",
        ],
    );
    assert_eq!(v["skipped"][0]["engine"], "xenio-rbd");
}

/// xenio-rbd and fio-rbd on an RBD image of a one-node Ceph cluster
/// (`tests/servers/ceph.sh`), skipped as blk_storage's RBD test is: without
/// the feature rbd (`cargo test -p xenio-bench --features rbd --test
/// blk_cli`), root, or Ceph's packages.
#[test]
fn blk_rbd_engines_on_a_one_node_cluster() {
    let _serial = serial();
    if !cfg!(feature = "rbd") {
        eprintln!(
            "SKIPPED: xenio-bench built without the cargo feature rbd \
             (cargo test -p xenio-bench --features rbd --test blk_cli)"
        );
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the one-node Ceph cluster (tests/servers/ceph.sh) runs as root");
        return;
    }
    for (tool, package) in [
        ("ceph-mon", "ceph-mon"),
        ("ceph-osd", "ceph-osd"),
        ("rbd", "ceph-common"),
        ("fio", "fio"),
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("SKIPPED: {tool} not found (install the Debian package {package})");
            return;
        }
    }
    let ceph_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/ceph.sh");
    let dir = tempfile::Builder::new()
        .prefix("xbbceph")
        .tempdir_in("/tmp")
        .unwrap();
    struct Cluster(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Cluster {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .arg(&self.0)
                .arg("destroy")
                .arg(&self.1)
                .output();
        }
    }
    let out = Command::new("bash")
        .arg(&ceph_sh)
        .arg("start")
        .arg(dir.path())
        .output()
        .unwrap();
    let _cluster = Cluster(ceph_sh.clone(), dir.path().to_path_buf());
    if !out.status.success() {
        eprintln!(
            "SKIPPED: the one-node Ceph cluster did not start: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let env = String::from_utf8_lossy(&out.stdout).into_owned();
    let target = env
        .lines()
        .find_map(|l| l.strip_prefix("RBD_TARGET="))
        .unwrap_or_else(|| panic!("no RBD_TARGET in {env}"))
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    let (stdout, _, v) = run_blk(&[
        "--engines",
        "xenio-rbd,fio-rbd",
        "--rbd-target",
        &target,
        "--workloads",
        "rand-read-4k-qd32,rand-write-4k-qd32",
        "--size-mib",
        "16",
        "--reps",
        "1",
        "--runtime-secs",
        "0.5",
        "--warmup-secs",
        "0.2",
    ]);
    for engine in ["xenio-rbd", "fio-rbd"] {
        assert!(row(&v, engine)["iops"]["median"].as_f64().unwrap() > 0.0);
    }
    assert!(row(&v, "xenio-rbd")["requests"][0].as_u64().unwrap() > 0);
    assert_eq!(v["rbd_target"], serde_json::json!(target));
    for w in ["rand read 4K QD32", "rand write 4K QD32"] {
        let line = format!("{w}: xenio-rbd / fio-rbd (same image) MB/s");
        assert!(stdout.contains(&line), "no `{line}` line:\n{stdout}");
    }
}

/// Each of `lines` is a target line of the report with its verdict.
fn has_verdicts(stdout: &str, lines: &[&str]) {
    for line in lines {
        let found = stdout
            .lines()
            .find(|l| l.contains(line))
            .unwrap_or_else(|| panic!("no `{line}` line:\n{stdout}"));
        assert!(
            found.contains("PASS") || found.contains("MISS"),
            "no verdict: {found}"
        );
    }
}
