//! `xenio-bench blk` end to end with tiny settings: it runs fio, xenio (a
//! backend process) and qemu-nbd on one file and prints the ratio lines.

use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn blk_quick_runs_every_engine_and_reports_targets() {
    if !have("fio") || !have("qemu-nbd") {
        panic!(
            "fio and qemu-nbd are needed (apt-get install fio qemu-utils; .ci/run installs them)"
        );
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let json = dir.path().join("blk.json");
    let out = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args([
            "blk",
            "--size-mib",
            "16",
            "--reps",
            "1",
            "--runtime-secs",
            "0.5",
            "--only",
            "4K QD",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for engine in ["fio", "xenio", "qemu-nbd"] {
        let row = format!("rand read 4K QD32 {engine} ");
        let found = stdout.lines().any(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .starts_with(&row)
        });
        assert!(found, "no `{row}` row:\n{stdout}");
    }
    assert!(
        stdout.contains("rand read 4K QD32: xenio / qemu-nbd IOPS"),
        "{stdout}"
    );
    assert!(
        stdout.contains("notifications per request, rand read 4K QD32"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["benchmark"], "blk");
    assert!(v["rows"].as_array().is_some_and(|r| r.len() >= 12));
}
