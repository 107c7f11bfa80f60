//! The report of `xenio-bench blk`: a table per workload and engine, the targets
//! (PASS/MISS) and context ratios, and the same as JSON. Ratios are computed
//! within each repetition, then summarised (median [min..max]).

use crate::blk::types::{BlkResults, Engine, NbdAio, Sample, Workload};
use crate::common::blkback::XenioCounters;
use crate::common::report::{Ratio, Target, fmt_ratio, ratio_json, summary_json};
use crate::common::stats::summarize;
use serde_json::{Value, json};
use std::fmt::Write;

fn mbs(s: &Sample) -> f64 {
    s.mbs
}
fn iops(s: &Sample) -> f64 {
    s.iops
}
fn p50(s: &Sample) -> f64 {
    s.p50_us
}
fn cpu(s: &Sample) -> f64 {
    s.cpu_us_per_op.unwrap_or(f64::NAN)
}

/// `num / den` of `f` in each repetition of `workload`.
fn ratio(
    r: &BlkResults,
    name: String,
    workload: &str,
    (num, den): (Engine, Engine),
    f: fn(&Sample) -> f64,
    target: Option<Target>,
) -> Ratio {
    let (per_rep, missing) = match (r.get(workload, num), r.get(workload, den)) {
        (Some(a), Some(b)) => (
            a.iter()
                .zip(b)
                .map(|(x, y)| f(x) / f(y))
                .filter(|v| v.is_finite())
                .collect(),
            None,
        ),
        (a, _) => {
            let which = if a.is_none() { num } else { den };
            (
                Vec::new(),
                Some(format!(
                    "needs `{workload}` on {}; not measured (see --workloads, --engines)",
                    which.name()
                )),
            )
        }
    };
    Ratio {
        name,
        unit: "x",
        per_rep,
        target,
        missing,
    }
}

/// Target of 4 KiB QD32 IOPS against fio (issue 18: fast by default).
pub const QD32_IOPS: f64 = 0.95;
/// Target of sequential 1 MiB QD8 MB/s against fio.
pub const SEQ_MBS: f64 = 0.95;
/// Most 4 KiB QD1 p50 latency against fio's.
pub const QD1_P50: f64 = 1.1;
/// Most CPU time per operation against fio's, at 4 KiB QD32 and 1 MiB QD8.
pub const CPU_PER_OP: f64 = 1.5;
/// Target of memory-backed 4 KiB QD32 IOPS (xenio-shm against fio-shm: the
/// software path alone).
pub const SHM_QD32_IOPS: f64 = 0.6;

/// The targets of issue 18 (and the storage engines' of issue 16).
pub fn targets(r: &BlkResults) -> Vec<Ratio> {
    use Engine::{Fio, QemuNbd, QemuNbdShm, Xenio, XenioShm};
    let mut out = Vec::new();
    for w in ["seq read 1M QD8", "seq write 1M QD8"] {
        out.push(ratio(
            r,
            format!("{w}: xenio / fio MB/s"),
            w,
            (Xenio, Fio),
            mbs,
            Some(Target::AtLeast(SEQ_MBS)),
        ));
    }
    for w in ["rand read 4K QD32", "rand write 4K QD32"] {
        out.push(ratio(
            r,
            format!("{w}: xenio / fio IOPS"),
            w,
            (Xenio, Fio),
            iops,
            Some(Target::AtLeast(QD32_IOPS)),
        ));
    }
    for w in ["rand read 4K QD1", "rand write 4K QD1"] {
        out.push(ratio(
            r,
            format!("{w}: xenio / fio p50 latency"),
            w,
            (Xenio, Fio),
            p50,
            Some(Target::AtMost(QD1_P50)),
        ));
    }
    for w in [
        "rand read 4K QD32",
        "rand write 4K QD32",
        "seq read 1M QD8",
        "seq write 1M QD8",
    ] {
        out.push(ratio(
            r,
            format!("{w}: xenio / fio CPU per op"),
            w,
            (Xenio, Fio),
            cpu,
            Some(Target::AtMost(CPU_PER_OP)),
        ));
    }
    // Only when the memory-backed engines ran (they are in the default set).
    if r.engines.contains(&XenioShm) || r.engines.contains(&Engine::FioShm) {
        for w in ["rand read 4K QD32", "rand write 4K QD32"] {
            out.push(ratio(
                r,
                format!("{w}: xenio-shm / fio-shm IOPS"),
                w,
                (XenioShm, Engine::FioShm),
                iops,
                Some(Target::AtLeast(SHM_QD32_IOPS)),
            ));
        }
    }
    for w in ["rand read 4K QD32", "rand write 4K QD32"] {
        out.push(ratio(
            r,
            format!("{w}: xenio / qemu-nbd IOPS"),
            w,
            (Xenio, QemuNbd),
            iops,
            Some(Target::AtLeast(4.0)),
        ));
        // On a disk both servers wait for the same device, which caps the ratio
        // at fio/qemu-nbd; memory-backed, what is compared is the software.
        out.push(ratio(
            r,
            format!("{w}: xenio-shm / qemu-nbd-shm IOPS"),
            w,
            (XenioShm, QemuNbdShm),
            iops,
            Some(Target::AtLeast(4.0)),
        ));
    }
    // Storage beyond a raw file (issue 16), when those engines ran.
    let ran = |e: Engine| r.engines.contains(&e);
    for w in ["rand read 4K QD32", "rand write 4K QD32"] {
        use Engine::{QemuNbdQcow2, XenioNbd, XenioQcow2};
        if ran(XenioQcow2) || ran(QemuNbdQcow2) {
            out.push(ratio(
                r,
                format!("{w}: xenio-qcow2 / qemu-nbd-qcow2 IOPS"),
                w,
                (XenioQcow2, QemuNbdQcow2),
                iops,
                Some(Target::AtLeast(2.0)),
            ));
            out.push(ratio(
                r,
                format!("{w}: xenio-qcow2 / xenio (raw) IOPS"),
                w,
                (XenioQcow2, Xenio),
                iops,
                Some(Target::AtLeast(0.8)),
            ));
        }
        if ran(XenioNbd) {
            out.push(ratio(
                r,
                format!("{w}: xenio-nbd / qemu-nbd (fio nbd, same server) IOPS"),
                w,
                (XenioNbd, QemuNbd),
                iops,
                Some(Target::AtLeast(0.9)),
            ));
        }
    }
    let qd32: Vec<&Workload> = r.workloads.iter().filter(|w| w.qd == 32).collect();
    let notif = |w: &str| Ratio {
        name: format!("notifications per request, xenio {w}"),
        unit: "",
        per_rep: r
            .get(w, Xenio)
            .unwrap_or_default()
            .iter()
            .filter_map(Sample::notifications_per_request)
            .collect(),
        target: Some(Target::AtMost(0.1)),
        missing: r
            .get(w, Xenio)
            .is_none()
            .then(|| format!("needs `{w}` on xenio; not measured (see --workloads, --engines)")),
    };
    if qd32.is_empty() {
        out.push(notif("rand read 4K QD32"));
    }
    for w in qd32 {
        out.push(notif(w.name));
    }
    out
}

/// Ratios without targets: xenio against fio on the file and on /dev/shm, and
/// against qemu-nbd, for every workload; p50 latency ratios at QD1.
pub fn context(r: &BlkResults) -> Vec<Ratio> {
    use Engine::*;
    let mut out = Vec::new();
    for w in &r.workloads {
        let n = w.name;
        out.push(ratio(
            r,
            format!("{n}: xenio / fio MB/s"),
            n,
            (Xenio, Fio),
            mbs,
            None,
        ));
        out.push(ratio(
            r,
            format!("{n}: xenio-shm / fio-shm MB/s"),
            n,
            (XenioShm, FioShm),
            mbs,
            None,
        ));
        out.push(ratio(
            r,
            format!("{n}: xenio / qemu-nbd MB/s"),
            n,
            (Xenio, QemuNbd),
            mbs,
            None,
        ));
        out.push(ratio(
            r,
            format!("{n}: xenio / fio CPU per op"),
            n,
            (Xenio, Fio),
            cpu,
            None,
        ));
        if w.qd == 1 {
            out.push(ratio(
                r,
                format!("{n}: xenio / fio p50 latency"),
                n,
                (Xenio, Fio),
                p50,
                None,
            ));
            out.push(ratio(
                r,
                format!("{n}: xenio-shm / fio-shm p50 latency"),
                n,
                (XenioShm, FioShm),
                p50,
                None,
            ));
        }
    }
    // Storage beyond a raw file against its baselines, for every workload
    // (the 4K QD32 ones are also targets above, except rbd which has none).
    for w in &r.workloads {
        let n = w.name;
        for (pair, what) in [
            ((XenioQcow2, QemuNbdQcow2), "xenio-qcow2 / qemu-nbd-qcow2"),
            ((XenioQcow2, Xenio), "xenio-qcow2 / xenio (raw)"),
            (
                (XenioNbd, QemuNbd),
                "xenio-nbd / qemu-nbd (fio nbd, same server)",
            ),
            ((XenioRbd, FioRbd), "xenio-rbd / fio-rbd (same image)"),
        ] {
            out.push(ratio(r, format!("{n}: {what} MB/s"), n, pair, mbs, None));
            if w.qd == 1 {
                out.push(ratio(
                    r,
                    format!("{n}: {what} p50 latency"),
                    n,
                    pair,
                    p50,
                    None,
                ));
            }
        }
    }
    let targeted: Vec<String> = targets(r).into_iter().map(|t| t.name).collect();
    out.retain(|x| x.missing.is_none() && !targeted.contains(&x.name));
    out
}

fn med(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    summarize(&samples.iter().filter_map(f).collect::<Vec<_>>()).map(|s| s.median)
}

fn header(r: &BlkResults, o: &mut String) {
    let p = &r.plan;
    let _ = writeln!(
        o,
        "xenio-bench blk: {} MiB file in {}, {} rep(s) x {:.1} s after {:.1} s warm-up, seed {}, {} CPUs, Linux {}",
        p.size >> 20,
        p.dir.display(),
        p.reps,
        p.timing.runtime.as_secs_f64(),
        p.timing.warmup.as_secs_f64(),
        p.seed,
        p.cpus,
        p.kernel
    );
    let has = |f: fn(&Engine) -> bool| r.engines.iter().any(f);
    if has(|e| matches!(e, Engine::Xenio | Engine::XenioShm)) {
        let _ = writeln!(
            o,
            "  xenio:    blkfront (this process{}) -> rings -> {} blkback {} (a child process){}",
            match p.front_poll_us {
                None => ", waiting adaptively".to_string(),
                Some(0) => ", event-driven".to_string(),
                Some(us) => format!(", spinning {us} us before sleeping"),
            },
            p.xenio_bin
                .as_ref()
                .map_or("xenio".into(), |b| b.display().to_string()),
            p.knobs.args().join(" "),
            p.backend_storage
                .as_ref()
                .map_or(String::new(), |s| format!("; serving {s}"))
        );
    }
    if has(|e| matches!(e, Engine::Fio | Engine::FioShm)) {
        let _ = writeln!(
            o,
            "  fio:      {} --ioengine=io_uring --direct=1",
            p.fio_version.as_deref().unwrap_or("fio")
        );
    }
    if has(|e| matches!(e, Engine::QemuNbd | Engine::QemuNbdShm)) {
        let _ = writeln!(
            o,
            "  qemu-nbd: {} -f raw --cache=none --aio={} on a Unix socket, driven by fio --ioengine=nbd",
            p.nbd_version.as_deref().unwrap_or("qemu-nbd"),
            match p.nbd_aio {
                NbdAio::IoUring => "io_uring",
                NbdAio::Native => "native",
            }
        );
    }
    if has(|e| e.is_nbd() || e.is_rbd()) && p.knobs.queues > 1 {
        let _ = writeln!(
            o,
            "  multi-conn: {} queues: qemu-nbd --shared={} (multi-conn offered), xenio one NBD connection per queue; fio's nbd/rbd engines min({}, QD) jobs, QD/jobs deep",
            p.knobs.queues,
            2 * p.knobs.queues + 2,
            p.knobs.queues
        );
    }
    if let Some(t) = &p.rbd_target {
        let _ = writeln!(
            o,
            "  rbd:      {t}: xenio-rbd serves it (librbd), fio-rbd is fio --ioengine=rbd on it"
        );
    }
    for (e, why) in &p.skipped {
        let _ = writeln!(o, "  skipped:  {}: {why}", e.name());
    }
    if has(|e| e.shm()) {
        let _ = writeln!(
            o,
            "  *-shm:    the same on a copy in /dev/shm (tmpfs{})",
            if p.shm_direct {
                ", O_DIRECT accepted"
            } else {
                " refuses O_DIRECT: fio-shm uses the page cache"
            }
        );
    }
}

/// The human-readable report.
pub fn render(r: &BlkResults) -> String {
    let mut o = String::new();
    header(r, &mut o);
    let _ = writeln!(
        o,
        "median [min..max] over repetitions; latency per operation, submission to completion; \
         notif/req = (frontend + backend notifications) / ring requests; \
         CPU us/op = CPU time per operation (xenio: frontend thread + backend process; \
         fio: fio's usr+sys; not measured for qemu-nbd)\n"
    );
    let _ = writeln!(
        o,
        "{:<18} {:<12} {:>25} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "workload",
        "engine",
        "MB/s [min..max]",
        "IOPS",
        "p50 us",
        "p99 us",
        "notif/req",
        "CPU us/op"
    );
    for (wi, w) in r.workloads.iter().enumerate() {
        for (ei, e) in r.engines.iter().enumerate() {
            let s = &r.samples[wi][ei];
            let Some(m) = summarize(&s.iter().map(mbs).collect::<Vec<_>>()) else {
                let _ = writeln!(o, "{:<18} {:<12} no samples", w.name, e.name());
                continue;
            };
            let f = |x: Option<f64>, prec: usize| {
                x.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"))
            };
            let _ = writeln!(
                o,
                "{:<18} {:<12} {:>25} {:>9} {:>9} {:>9} {:>9} {:>10}",
                w.name,
                e.name(),
                format!("{:.1} [{:.1}..{:.1}]", m.median, m.min, m.max),
                f(med(s, |x| Some(x.iops)), 0),
                f(med(s, |x| Some(x.p50_us)), 1),
                f(med(s, |x| Some(x.p99_us)), 1),
                f(med(s, Sample::notifications_per_request), 3),
                f(med(s, |x| x.cpu_us_per_op), 2),
            );
        }
    }
    let _ = writeln!(
        o,
        "\ntargets (median [min..max] of the per-repetition ratio):"
    );
    for t in targets(r) {
        let _ = writeln!(o, "{}", fmt_ratio(&t));
    }
    let c = context(r);
    if !c.is_empty() {
        let _ = writeln!(o, "context:");
        for t in c {
            let _ = writeln!(o, "{}", fmt_ratio(&t));
        }
    }
    o
}

/// The machine-readable report.
pub fn to_json(r: &BlkResults) -> Value {
    let p = &r.plan;
    let mut rows = Vec::new();
    for (wi, w) in r.workloads.iter().enumerate() {
        for (ei, e) in r.engines.iter().enumerate() {
            let s = &r.samples[wi][ei];
            let col = |f: fn(&Sample) -> f64| s.iter().map(f).collect::<Vec<_>>();
            let xc = |f: fn(&XenioCounters) -> u64| {
                s.iter()
                    .filter_map(|x| x.xenio.as_ref().map(f))
                    .collect::<Vec<_>>()
            };
            let notif: Vec<f64> = s
                .iter()
                .filter_map(Sample::notifications_per_request)
                .collect();
            let cpu: Vec<f64> = s.iter().filter_map(|x| x.cpu_us_per_op).collect();
            rows.push(json!({
                "workload": w.name,
                "engine": e.name(),
                "write": w.write,
                "random": w.random,
                "bs": w.bs,
                "qd": w.qd,
                "mbs": summary_json(&col(|x| x.mbs)),
                "iops": summary_json(&col(|x| x.iops)),
                "p50_us": summary_json(&col(|x| x.p50_us)),
                "p99_us": summary_json(&col(|x| x.p99_us)),
                "ops": s.iter().map(|x| x.ops).collect::<Vec<_>>(),
                "notifications_per_request": (!notif.is_empty()).then(|| summary_json(&notif)),
                "cpu_us_per_op": (!cpu.is_empty()).then(|| summary_json(&cpu)),
                "front_notifications": xc(|c| c.front_notifications),
                "back_notifications": xc(|c| c.back_notifications),
                "requests": xc(|c| c.requests),
                "batches": xc(|c| c.batches),
                "merged": xc(|c| c.merged),
                "backend_sleeps": xc(|c| c.sleeps),
                "queues": xc(|c| u64::from(c.queues)),
            }));
        }
    }
    json!({
        "benchmark": "blk",
        "dir": p.dir,
        "size_bytes": p.size,
        "reps": p.reps,
        "runtime_secs": p.timing.runtime.as_secs_f64(),
        "warmup_secs": p.timing.warmup.as_secs_f64(),
        "seed": p.seed,
        "cpus": p.cpus,
        "kernel": p.kernel,
        "fio": p.fio_version,
        "qemu_nbd": p.nbd_version,
        "nbd_aio": match p.nbd_aio { NbdAio::IoUring => "io_uring", NbdAio::Native => "native" },
        "shm_direct": p.shm_direct,
        "xenio": p.xenio_bin,
        "blkback_args": p.knobs.args(),
        "front_poll_us": p.front_poll_us,
        "backend_storage": p.backend_storage,
        "rbd_target": p.rbd_target,
        "skipped": p.skipped.iter().map(|(e, why)| json!({"engine": e.name(), "why": why})).collect::<Vec<_>>(),
        "engines": r.engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
        "rows": rows,
        "targets": targets(r).iter().map(ratio_json).collect::<Vec<_>>(),
        "context": context(r).iter().map(ratio_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::types::{Plan, Timing, WORKLOADS};
    use crate::common::blkback::{BackendKnobs, DirectArg, GrantModeArg, ReorderArg};
    use std::time::Duration;

    fn results() -> BlkResults {
        let plan = Plan {
            dir: "/var/tmp".into(),
            size: 16 << 20,
            reps: 2,
            timing: Timing {
                warmup: Duration::from_millis(100),
                runtime: Duration::from_secs(1),
            },
            seed: 1,
            knobs: BackendKnobs {
                ring_order: 4,
                queues: 1,
                indirect: 256,
                persistent: true,
                grant_mode: GrantModeArg::Map,
                reorder: ReorderArg::Merge,
                poll_us: Some(0),
                io_depth: 128,
                batch: 512,
                direct: DirectArg::Auto,
                extra: vec![],
            },
            front_poll_us: Some(0),
            nbd_aio: NbdAio::IoUring,
            shm_direct: true,
            cpus: 2,
            kernel: "6.1".into(),
            fio_version: Some("fio-3.33".into()),
            nbd_version: None,
            xenio_bin: None,
            backend_storage: None,
            rbd_target: None,
            skipped: vec![],
        };
        let workloads = vec![WORKLOADS[6], WORKLOADS[7]];
        let engines = vec![Engine::Xenio, Engine::Fio, Engine::QemuNbd];
        let mut r = BlkResults::new(plan, workloads, engines);
        let s = |iops: f64, p50: f64, x: bool| Sample {
            mbs: iops * 4096.0 / 1e6,
            iops,
            p50_us: p50,
            p99_us: p50 * 2.0,
            ops: iops as u64,
            // xenio 12 us, fio 8 us; qemu-nbd (5000 IOPS at QD1) unmeasured.
            cpu_us_per_op: if x {
                Some(12.0)
            } else {
                (iops != 5_000.0 && iops != 20_000.0).then_some(8.0)
            },
            xenio: x.then_some(XenioCounters {
                front_notifications: 5,
                back_notifications: 5,
                requests: 200,
                ..Default::default()
            }),
        };
        for rep in 0..2 {
            let k = 1.0 + rep as f64 * 0.1;
            // rand read 4K QD1
            r.samples[0][0].push(s(10_000.0, 60.0 * k, true));
            r.samples[0][1].push(s(15_000.0, 50.0, false));
            r.samples[0][2].push(s(5_000.0, 150.0, false));
            // rand read 4K QD32
            r.samples[1][0].push(s(90_000.0 * k, 300.0, true));
            r.samples[1][1].push(s(100_000.0, 300.0, false));
            r.samples[1][2].push(s(20_000.0, 1500.0, false));
        }
        r
    }

    #[test]
    fn targets_are_computed_per_repetition() {
        let r = results();
        let t = targets(&r);
        let find = |n: &str| t.iter().find(|x| x.name == n).unwrap();
        let q32 = find("rand read 4K QD32: xenio / fio IOPS");
        assert_eq!(q32.per_rep.len(), 2);
        assert!((q32.per_rep[0] - 0.9).abs() < 1e-9 && (q32.per_rep[1] - 0.99).abs() < 1e-9);
        assert_eq!(q32.verdict(), Some(false), "median 0.945 < 0.95");
        let lat = find("rand read 4K QD1: xenio / fio p50 latency");
        assert!((lat.per_rep[0] - 1.2).abs() < 1e-9);
        assert_eq!(lat.verdict(), Some(false), "median 1.26 > 1.1");
        let nbd = find("rand read 4K QD32: xenio / qemu-nbd IOPS");
        assert_eq!(nbd.verdict(), Some(true));
        let n = find("notifications per request, xenio rand read 4K QD32");
        assert_eq!(n.per_rep, vec![0.05, 0.05]);
        assert!(find("seq read 1M QD8: xenio / fio MB/s").missing.is_some());
        let cpu = find("rand read 4K QD32: xenio / fio CPU per op");
        assert_eq!(cpu.per_rep, vec![1.5, 1.5]);
        assert_eq!(cpu.verdict(), Some(true), "1.5 <= 1.5");
        assert!(
            find("seq read 1M QD8: xenio / fio CPU per op")
                .missing
                .is_some()
        );
        assert!(
            !t.iter().any(|x| x.name.contains("xenio-shm / fio-shm")),
            "no memory-backed target when those engines did not run"
        );
        // What is a target is not repeated as context.
        let c = context(&r);
        assert!(c.iter().all(|x| t.iter().all(|y| y.name != x.name)));
        assert!(
            c.iter()
                .any(|x| x.name == "rand read 4K QD1: xenio / fio CPU per op")
        );
    }

    #[test]
    fn render_and_json_carry_rows_targets_and_verdicts() {
        let r = results();
        let text = render(&r);
        assert!(text.contains("rand read 4K QD32  xenio"), "{text}");
        assert!(
            text.contains("rand read 4K QD32: xenio / qemu-nbd IOPS"),
            "{text}"
        );
        assert!(text.contains("PASS"), "{text}");
        assert!(text.contains("not measured"), "{text}");
        let v = to_json(&r);
        assert_eq!(v["benchmark"], "blk");
        assert_eq!(v["rows"].as_array().unwrap().len(), 6);
        assert_eq!(v["rows"][0]["requests"], json!([200, 200]));
    }
}
