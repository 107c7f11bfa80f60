//! `xenio-bench net` end to end on a tiny run (root only: it creates network
//! namespaces and a TAP device; otherwise it says why and passes), and its help.

mod common;
use common::xenio_bin;

use std::process::Command;

#[test]
fn net_tiny_run_reports_every_workload_with_ratios() {
    let probe = format!("xenio-bench-probe-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot create network namespaces (needs root; CI runs as root)");
        return;
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    let out = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args(["net", "--reps", "1", "--seconds", "0.3", "--tcp-mb", "1"])
        .arg("--xenio")
        .arg(xenio_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for w in ["tcp-tx", "tcp-rx", "gso-tx", "gso-rx", "pps-tx", "pps-rx"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(w))
            .unwrap_or_else(|| panic!("no {w} line:\n{stdout}"));
        assert!(!line.contains("NaN") && !line.contains("inf"), "{line}");
    }
    assert!(
        stdout.contains("netback notifications per packet"),
        "{stdout}"
    );
    // The frame engine moved large segments both ways through netback.
    let gso = stdout
        .lines()
        .find(|l| l.starts_with("frame engine path:"))
        .unwrap_or_else(|| panic!("no frame engine line:\n{stdout}"));
    assert!(!gso.contains("gso tx 0 "), "{gso}");
    assert!(!gso.contains(" rx 0 ("), "{gso}");
    assert!(stdout.contains("CPU seconds per GB"), "{stdout}");
    // No namespace is left behind.
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains("xbn-x-")
            && !String::from_utf8_lossy(&ns.stdout).contains("xbn-g-"),
        "namespaces left: {}",
        String::from_utf8_lossy(&ns.stdout)
    );
}

#[test]
fn net_help_explains_every_knob() {
    let out = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args(["net", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for k in [
        "--reps",
        "--seconds",
        "--tcp-mb",
        "--xenio",
        "--poll-us",
        "--mtu",
        "gso-tx",
        "offloads off",
        "veth",
        "pps-rx",
    ] {
        assert!(help.contains(k), "--help does not mention {k}:\n{help}");
    }
}
