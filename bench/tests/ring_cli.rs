//! `xenio-bench ring` end to end: real processes, real shared memory, real
//! eventfds, a tiny workload (a fraction of a second per run).

use std::process::{Command, Output};
use std::sync::Mutex;

/// The benchmark runs pin busy-polling processes to the same two CPUs: one at a
/// time, or they would slow each other down to the scheduler's time slice.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args(args)
        .output()
        .expect("xenio-bench runs")
}

/// The first two CPUs this test may use (the same one twice on a 1-CPU machine).
fn cores() -> String {
    let cpus = xenio_bench::common::sys::allowed_cpus().expect("sched_getaffinity");
    let a = cpus[0];
    let b = *cpus.get(1).unwrap_or(&a);
    format!("{a},{b}")
}

#[test]
fn ring_runs_and_reports_ratios_with_zero_verification_errors() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let json = std::env::temp_dir().join(format!("xenio-bench-test-{}.json", std::process::id()));
    let json_arg = json.to_str().expect("utf-8 temp path");
    let cores = cores();
    let out = bench(&[
        "ring",
        "--reps",
        "1",
        "--duration-ms",
        "20",
        "--warmup-ms",
        "5",
        "--poll-us",
        "0,20",
        "--cores",
        &cores,
        "--json",
        json_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    for line in [
        "polling latency: ring RTT / ping-pong RTT",
        "full-ring throughput: ring / rtrb (polling)",
        "notifications per request under load (ring throughput event)",
        "notifications per request under load (ring throughput event+spin20us)",
    ] {
        let found = stdout.lines().find(|l| l.contains(line));
        let found = found.unwrap_or_else(|| panic!("no `{line}` line in:\n{stdout}"));
        assert!(
            found.ends_with("PASS") || found.ends_with("MISS"),
            "no verdict on: {found}"
        );
    }
    assert!(
        stdout.contains("\nverification errors: 0 "),
        "stdout:\n{stdout}"
    );
    for config in [
        "pingpong latency",
        "rtrb throughput",
        "ring latency polling",
        "ring throughput event",
    ] {
        assert!(stdout.contains(config), "no `{config}` row in:\n{stdout}");
        assert!(
            stderr.contains(&format!("[rep 1/1] {config}")),
            "no progress for `{config}` in:\n{stderr}"
        );
    }

    let json_text = std::fs::read_to_string(&json).expect("the JSON report was written");
    std::fs::remove_file(&json).ok();
    let v: serde_json::Value = serde_json::from_str(&json_text).expect("the report is valid JSON");
    assert_eq!(v["benchmark"], "ring", "{json_text}");
    assert_eq!(v["verification_errors"], 0, "{json_text}");
    let configs = v["configs"].as_array().expect("a configs array");
    assert!(
        configs.iter().any(|c| c["name"] == "ring throughput event"
            && c["ns_per_op"]["median"].as_f64().is_some_and(|x| x > 0.0)),
        "{json_text}"
    );
    assert!(
        v["targets"].as_array().is_some_and(|t| t.len() >= 3),
        "{json_text}"
    );
}

#[test]
fn ops_mode_and_polling_filter() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cores = cores();
    let out = bench(&[
        "ring",
        "--reps",
        "2",
        "--ops",
        "2000",
        "--warmup-ms",
        "0",
        "--mode",
        "polling",
        "--cores",
        &cores,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("ring latency event"),
        "--mode polling ran an event configuration:\n{stdout}"
    );
    assert!(
        stdout.contains("n/a: no event-mode configuration measured"),
        "{stdout}"
    );
    assert!(stdout.contains("\nverification errors: 0 "), "{stdout}");
}

#[test]
fn help_explains_every_knob() {
    let out = bench(&["ring", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for knob in [
        "--order",
        "--reps",
        "--duration-ms",
        "--ops",
        "--warmup-ms",
        "--cores",
        "--poll-us",
        "--mode",
        "--json",
    ] {
        assert!(help.contains(knob), "`{knob}` missing from --help:\n{help}");
    }
    assert!(
        !help.contains("ring-peer"),
        "the internal subcommand leaks into --help"
    );
}

#[test]
fn a_failing_peer_says_why() {
    let out = bench(&[
        "ring-peer",
        "--role",
        "ring-backend",
        "--wait",
        "polling",
        "--control-fd",
        "999",
        "--core",
        "0",
        "--parent-pid",
        &std::process::id().to_string(),
        "--timeout-s",
        "5",
        "--config",
        "test",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("opening inherited descriptor 999"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn a_wrong_response_fails_the_run_loudly() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cores = cores();
    let out = bench(&[
        "ring",
        "--reps",
        "1",
        "--duration-ms",
        "10",
        "--warmup-ms",
        "0",
        "--mode",
        "polling",
        "--cores",
        &cores,
        "--debug-corrupt-response",
        "100",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("`ring latency polling`: 1 verification error(s) seen by the frontend; first: expected id 100, got id 101"),
        "stderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("verification errors: 0"),
        "a failed run printed a report:\n{stdout}"
    );
}
