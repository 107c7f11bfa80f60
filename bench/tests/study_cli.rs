//! `xenio-bench study --quick` end to end with tiny settings (a 4 MiB file, 2
//! runs, a ring-order sweep): the real `xenio blkback` as a child process
//! against the native path on one file; the run completes, prints Figure 2's
//! table with a t-value in every cell, says O_DIRECT, writes report.md, the
//! CSV and JSON files and the plots, and leaves no process or scratch file
//! behind.
//!
//! The `xenio` command is the one built next to `xenio-bench` (`cargo test
//! --workspace` builds it); if it is not there it is built here.

mod common;
use common::xenio_bin;

use std::path::Path;
use std::process::{Command, Stdio};

/// `xenio-bench study --quick` at tiny settings (100 seeks, 2 MiB fio-style
/// workloads, a ring-order sweep) on `sizes` MiB, `runs` runs, plus `extra`.
fn tiny_study(
    xenio: &Path,
    dir: &Path,
    scratch: &Path,
    out: &Path,
    sizes: &[&str],
    runs: u32,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xenio-bench"));
    c.args(["study", "--quick", "--sizes-mib", &sizes.join(",")])
        .args(["--runs", &runs.to_string()])
        .args(["--seeks", "100", "--fio-mib", "2", "--sweep", "ring-order"])
        .args(extra)
        .arg("--xenio")
        .arg(xenio)
        .arg("--dir")
        .arg(dir)
        .arg("--scratch")
        .arg(scratch)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Processes whose command line mentions `path` (other tests of this binary
/// run in parallel, so children of this process are not all ours).
fn using(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            out.push(cmd);
        }
    }
    out
}

#[test]
fn quick_study_on_a_tiny_file_reports_figure_2_with_t_values() {
    let xenio = xenio_bin();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let scratch = tempfile::tempdir_in("/dev/shm").unwrap();
    let out_dir = dir.path().join("out");
    let child = tiny_study(&xenio, dir.path(), scratch.path(), &out_dir, &["4"], 2, &[])
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stderr.contains("O_DIRECT"), "{stderr}");
    assert!(stdout.contains("**O_DIRECT** on both paths"), "{stdout}");

    // Figure 2: one row for the 4 MiB file, every cell a ratio with a t-value.
    let row = stdout
        .lines()
        .skip_while(|l| !l.starts_with("## Figure 2"))
        .find(|l| l.starts_with("| 4 MiB |"))
        .unwrap_or_else(|| panic!("no Figure 2 row:\n{stdout}"));
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(cells.len(), 1 + 7, "{row}");
    for c in &cells[1..] {
        let ratio: f64 = c.split(['*', ' ']).next().unwrap().parse().unwrap();
        assert!(ratio > 0.0 && ratio.is_finite(), "{row}");
        assert!(c.contains("(t="), "{row}");
    }
    for finding in [
        "1. **Sequential output",
        "2. **Sequential input per character",
        "3. **Sequential input per block",
        "Ring-order sweep",
        "4. **Random seeks",
    ] {
        assert!(stdout.contains(finding), "no `{finding}`:\n{stdout}");
    }
    assert!(stdout.contains("### ring-order"), "{stdout}");

    // The files: the report as printed, every run in the CSV, the JSON.
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert_eq!(report, stdout);
    let samples = std::fs::read_to_string(out_dir.join("samples.csv")).unwrap();
    // native and xenio: 11 workloads + total time, 2 runs each; ring orders 2
    // and 4: 5 sweep workloads, 2 runs each.
    assert_eq!(
        samples.lines().count(),
        1 + 2 * 12 * 2 + 2 * 5 * 2,
        "{samples}"
    );
    // Each sweep point against the base configuration: the change of the mean,
    // as the samples give it.
    let mean = |config: &str, metric: &str| {
        let v: Vec<f64> = samples
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f[0] == "4" && f[1] == config && f[4] == metric)
            .map(|f| f[7].parse::<f64>().unwrap())
            .collect();
        assert_eq!(v.len(), 2, "{config} {metric}");
        v.iter().sum::<f64>() / 2.0
    };
    let table = stdout
        .split("### ring-order")
        .nth(1)
        .and_then(|t| t.split("Against the base configuration").nth(1))
        .unwrap_or_else(|| panic!("no ring-order table against the base:\n{stdout}"));
    let cells = |first: &str| -> Vec<&str> {
        let line = table.lines().find(|l| l.starts_with(first));
        let line = line.unwrap_or_else(|| panic!("no `{first}` row:\n{table}"));
        line.trim_matches('|').split('|').map(str::trim).collect()
    };
    let (header, row) = (cells("| ring-order |"), cells("| 2 |"));
    assert!(
        table.lines().any(|l| l.starts_with("| 0 (base) | base |")),
        "{table}"
    );
    for (metric, cell) in header[1..].iter().zip(&row[1..]) {
        let want = format!(
            "{:+.1}%",
            (mean("xenio ring-order=2", metric) / mean("xenio", metric) - 1.0) * 100.0
        );
        assert!(
            cell.starts_with(&want) && cell.contains("(t="),
            "{metric}: {cell}, want {want}"
        );
    }
    let summary = std::fs::read_to_string(out_dir.join("summary.csv")).unwrap();
    assert!(summary.lines().count() > 12);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(v["plan"]["o_direct"], true);
    assert_eq!(v["plan"]["runs"], 2);
    let block_in = v["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["config"] == "xenio" && c["metric"] == "block in")
        .unwrap();
    assert_eq!(block_in["native"]["n"], 2);
    assert!(block_in["welch"]["t"].is_number(), "{block_in}");
    assert!(block_in["welch"]["p"].as_f64().unwrap() <= 1.0);
    // xenio's traffic really went over the rings to the backend process.
    let counters = v["counters"].as_array().unwrap();
    assert!(
        counters
            .iter()
            .any(|c| c["config"] == "xenio" && c["requests"].as_u64().unwrap() > 1000),
        "{counters:?}"
    );
    // Plots, when a font for their text is installed (.ci/run installs one).
    if Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file() {
        for f in [
            "relative.svg",
            "relative.png",
            "fio.svg",
            "ring-order.svg",
            "ring-order.png",
        ] {
            let len = std::fs::metadata(out_dir.join(f)).map_or(0, |m| m.len());
            assert!(len > 1000, "{f}: {len} bytes");
        }
        let svg = std::fs::read_to_string(out_dir.join("relative.svg")).unwrap();
        assert!(svg.contains("block in") && svg.contains("4 MiB"));
    }

    // Nothing left behind: no process of this study, no scratch file.
    assert!(
        using(scratch.path()).is_empty(),
        "{:?}",
        using(scratch.path())
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let images: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
        .collect();
    assert!(images.is_empty());
}

#[test]
fn help_explains_every_knob_and_bad_arguments_fail_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args(["study", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for knob in [
        "--quick",
        "--full",
        "--sizes-mib",
        "--runs",
        "--phases",
        "--chunk-kib",
        "--depth",
        "--seeks",
        "--seekers",
        "--fio-mib",
        "--sweep",
        "--sweep-size-mib",
        "--sweep-phases",
        "--native-engine",
        "--buffered",
        "--ring-order",
        "--indirect",
        "--reorder",
        "--poll-us",
        "--resume",
        "--report-only",
        "O_DIRECT",
        "t-test",
    ] {
        assert!(help.contains(knob), "--help lacks {knob}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args(["study", "--phases", "bogus", "--xenio", "/bin/true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown workload `bogus`"), "{err}");
    // Nothing to report from: a clear error, and no directory made.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("none");
    let out = Command::new(env!("CARGO_BIN_EXE_xenio-bench"))
        .args(["study", "--quick", "--report-only", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--report-only") && err.contains("measurements.jsonl"),
        "{err}"
    );
    assert!(!out_dir.exists());
}

/// Interrupted with SIGINT after some measurements, a study keeps them in its
/// checkpoint: a new start in the same --out is refused, --report-only reports
/// the finished part, and --resume measures only what is missing, ending with
/// the same report files as an uninterrupted study.
#[test]
fn an_interrupted_study_resumes_where_it_stopped() {
    let xenio = xenio_bin();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let scratch = tempfile::tempdir_in("/dev/shm").unwrap();
    let out_dir = dir.path().join("out");
    let study = |extra: &[&str]| {
        let mut words = vec!["--no-progress", "--no-plots"];
        words.extend_from_slice(extra);
        tiny_study(
            &xenio,
            dir.path(),
            scratch.path(),
            &out_dir,
            &["4,8"],
            3,
            &words,
        )
    };
    let checkpoint = out_dir.join("checkpoint.jsonl");
    let lines = || {
        std::fs::read_to_string(&checkpoint)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let child = study(&[]).spawn().unwrap();
    // 4 MiB: native, xenio, ring orders 2 and 4; 8 MiB: native, xenio; 3 runs:
    // 18 measurements.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while lines() < 1 + 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "finished before the interrupt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = lines() - 1;
    assert!((5..18).contains(&kept), "{kept} measurements kept");
    assert!(
        using(scratch.path()).is_empty(),
        "{:?}",
        using(scratch.path())
    );

    // A fresh start would throw the measurements away: refused.
    let out = study(&[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unfinished study") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(lines() - 1, kept);

    // A report of what there is.
    let out = study(&["--report-only"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("**Partial report**: {kept} of 18 measurements")),
        "{report}"
    );

    // Other settings cannot resume it.
    let out = study(&["--resume", "--seed", "9"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other settings"));

    // Resume: only the missing measurements, then the full report.
    let out = study(&["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{kept} of 18 measurements already in")),
        "{err}"
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("in 2 sittings"), "{report}");
    assert!(!report.contains("Partial"), "{report}");
    assert!(!checkpoint.exists(), "the checkpoint outlived the study");
    assert!(
        err.contains("measurements.jsonl"),
        "where the measurements stay is not said: {err}"
    );
    let samples = std::fs::read_to_string(out_dir.join("samples.csv")).unwrap();
    // Two sizes; native and xenio: 12 metrics x 3 runs; the sweeps on 4 MiB:
    // 2 configurations x 5 workloads x 3 runs.
    assert_eq!(
        samples.lines().count(),
        1 + 2 * 2 * 12 * 3 + 2 * 5 * 3,
        "{samples}"
    );
    // Every (size, config, metric) has runs 1..=3 exactly once.
    let mut seen = std::collections::BTreeMap::<String, Vec<u32>>::new();
    for l in samples.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        let key = format!("{}/{}/{}", f[0], f[1], f[4]);
        seen.entry(key).or_default().push(f[6].parse().unwrap());
    }
    for (k, runs) in &seen {
        assert_eq!(runs, &[1, 2, 3], "{k}");
    }

    // The finished study keeps its measurements: the report can be written
    // again from them, without measuring, and it is the same report.
    let first_report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    for f in ["report.md", "samples.csv", "summary.csv", "results.json"] {
        std::fs::remove_file(out_dir.join(f)).unwrap();
    }
    let out = study(&["--report-only"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("measurements.jsonl"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("samples.csv")).unwrap(),
        samples
    );
    let again = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(again.contains("in 2 sittings"), "{again}");
    assert!(!again.contains("Partial"), "{again}");
    let tables = |r: &str| -> Vec<String> {
        r.lines()
            .filter(|l| l.starts_with('|'))
            .map(String::from)
            .collect()
    };
    assert_eq!(tables(&again), tables(&first_report));
    // A new study may start in the same directory.
    assert!(!checkpoint.exists());
    assert!(
        using(scratch.path()).is_empty(),
        "{:?}",
        using(scratch.path())
    );
}

/// `--target qcow2` and `--target nbd` at tiny settings (one 4 MiB size, one
/// run, the ring-order sweep): the xenio configurations serve a qcow2 copy of
/// the file (format=qcow2) and a qemu-nbd export of it (target=nbd+unix://),
/// as the report's Paths line and the JSON's backend storage say; the run
/// completes with every Bonnie cell, and neither the copy nor qemu-nbd is left
/// behind. Skipped (with the reason) without qemu-utils.
#[test]
fn study_over_a_qcow2_copy_and_an_nbd_export() {
    for tool in ["qemu-img", "qemu-nbd"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIPPED: {tool} not found (install the Debian package qemu-utils)");
            return;
        }
    }
    let xenio = xenio_bin();
    for (target, says) in [("qcow2", "qcow2"), ("nbd", "NBD export nbd+unix://")] {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let scratch = tempfile::tempdir_in("/dev/shm").unwrap();
        let out_dir = dir.path().join("out");
        let out = tiny_study(
            &xenio,
            dir.path(),
            scratch.path(),
            &out_dir,
            &["4"],
            1,
            &["--target", target, "--no-plots"],
        )
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "--target {target}: status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        let paths = stdout
            .lines()
            .find(|l| l.starts_with("- Paths:"))
            .unwrap_or_else(|| panic!("no Paths line:\n{stdout}"));
        assert!(paths.contains(says), "--target {target}: {paths}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
                .unwrap();
        let storage = json["plan"]["backend_storage"].as_str().unwrap();
        assert!(storage.contains(says), "--target {target}: {storage}");
        assert!(stdout.contains("### ring-order"), "{stdout}");
        let row = stdout
            .lines()
            .skip_while(|l| !l.starts_with("## Figure 2"))
            .find(|l| l.starts_with("| 4 MiB |"))
            .unwrap_or_else(|| panic!("no Figure 2 row:\n{stdout}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 1 + 7, "{row}");
        for c in &cells[1..] {
            let ratio: f64 = c.split(['*', ' ']).next().unwrap().parse().unwrap();
            assert!(ratio > 0.0 && ratio.is_finite(), "--target {target}: {row}");
        }
        assert!(
            using(scratch.path()).is_empty(),
            "{:?}",
            using(scratch.path())
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "out")
            .collect();
        assert!(left.is_empty(), "--target {target}: left behind {left:?}");
        eprintln!("--target {target}: {paths}");
    }
}
