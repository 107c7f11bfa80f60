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
    for line in [
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
    ] {
        let found = stdout
            .lines()
            .find(|l| l.contains(line))
            .unwrap_or_else(|| panic!("no `{line}` line:\n{stdout}"));
        assert!(
            found.contains("PASS") || found.contains("MISS"),
            "no verdict: {found}"
        );
    }
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
