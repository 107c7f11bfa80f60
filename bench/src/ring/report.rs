//! The report of `xenio-bench ring`: a table per configuration, the ratios against the
//! baselines with their targets, and the same as JSON.

use crate::common::report::{Ratio, Target, fmt_ratio, ratio_json, summary_json};
use crate::common::stats::summarize;
use crate::ring::types::{Config, RunResults, Sample, Stop, WaitMode, Workload};
use serde_json::{Value, json};
use std::fmt::Write;

fn find(r: &RunResults, want: Config) -> Option<&[Sample]> {
    r.configs
        .iter()
        .position(|c| *c == want)
        .map(|i| r.samples[i].as_slice())
}

fn per_rep(a: &[Sample], b: &[Sample], f: impl Fn(&Sample, &Sample) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| f(x, y)).collect()
}

fn ratio_of(
    r: &RunResults,
    name: &str,
    num: Config,
    den: Config,
    f: impl Fn(&Sample, &Sample) -> f64,
    target: Option<Target>,
) -> Ratio {
    match (find(r, num), find(r, den)) {
        (Some(a), Some(b)) => Ratio {
            name: name.to_string(),
            unit: "x",
            per_rep: per_rep(a, b, f),
            target,
            missing: None,
        },
        _ => Ratio {
            name: name.to_string(),
            unit: "x",
            per_rep: Vec::new(),
            target,
            missing: Some(format!("needs `{}`, not measured (see --mode)", num.name())),
        },
    }
}

fn event_modes(r: &RunResults, workload: Workload) -> Vec<WaitMode> {
    r.configs
        .iter()
        .filter_map(|c| match c {
            Config::Ring(w, m @ WaitMode::Event { .. }) if *w == workload => Some(*m),
            _ => None,
        })
        .collect()
}

/// The ratios with targets: polling RTT against ping-pong, full-ring throughput
/// against rtrb, and notifications per request under load for each event variant.
pub fn targets(r: &RunResults) -> Vec<Ratio> {
    let rtt = |a: &Sample, b: &Sample| a.ns_per_op() / b.ns_per_op();
    let rate = |a: &Sample, b: &Sample| a.mops() / b.mops();
    let mut out = vec![
        ratio_of(
            r,
            "polling latency: ring RTT / ping-pong RTT",
            Config::Ring(Workload::Latency, WaitMode::Polling),
            Config::PingPong,
            rtt,
            Some(Target::AtMost(2.0)),
        ),
        ratio_of(
            r,
            "full-ring throughput: ring / rtrb (polling)",
            Config::Ring(Workload::Throughput, WaitMode::Polling),
            Config::Rtrb(Workload::Throughput),
            rate,
            Some(Target::AtLeast(1.0)),
        ),
    ];
    let modes = event_modes(r, Workload::Throughput);
    if modes.is_empty() {
        out.push(Ratio {
            name: "notifications per request under load (ring throughput event)".to_string(),
            unit: "",
            per_rep: Vec::new(),
            target: Some(Target::AtMost(0.1)),
            missing: Some("no event-mode configuration measured (see --mode)".to_string()),
        });
    }
    for m in modes {
        let c = Config::Ring(Workload::Throughput, m);
        out.push(Ratio {
            name: format!("notifications per request under load ({})", c.name()),
            unit: "",
            per_rep: find(r, c)
                .unwrap_or_default()
                .iter()
                .map(Sample::notifications_per_request)
                .collect(),
            target: Some(Target::AtMost(0.1)),
            missing: None,
        });
    }
    out
}

/// Further ratios, for context (no targets).
pub fn context_ratios(r: &RunResults) -> Vec<Ratio> {
    let rtt = |a: &Sample, b: &Sample| a.ns_per_op() / b.ns_per_op();
    let rate = |a: &Sample, b: &Sample| a.mops() / b.mops();
    let mut out = vec![
        ratio_of(
            r,
            "polling latency: ring RTT / rtrb RTT",
            Config::Ring(Workload::Latency, WaitMode::Polling),
            Config::Rtrb(Workload::Latency),
            rtt,
            None,
        ),
        ratio_of(
            r,
            "polling latency: ring RTT / C ring.h pair RTT",
            Config::Ring(Workload::Latency, WaitMode::Polling),
            Config::CRing(Workload::Latency),
            rtt,
            None,
        ),
        ratio_of(
            r,
            "full-ring throughput: ring / C ring.h pair (polling)",
            Config::Ring(Workload::Throughput, WaitMode::Polling),
            Config::CRing(Workload::Throughput),
            rate,
            None,
        ),
        ratio_of(
            r,
            "full-ring throughput: C ring.h pair / rtrb (polling)",
            Config::CRing(Workload::Throughput),
            Config::Rtrb(Workload::Throughput),
            rate,
            None,
        ),
    ];
    for m in event_modes(r, Workload::Latency) {
        let c = Config::Ring(Workload::Latency, m);
        out.push(ratio_of(
            r,
            &format!("{}: RTT / ping-pong RTT", c.name()),
            c,
            Config::PingPong,
            rtt,
            None,
        ));
    }
    for m in event_modes(r, Workload::Throughput) {
        let c = Config::Ring(Workload::Throughput, m);
        out.push(ratio_of(
            r,
            &format!("{}: throughput / rtrb", c.name()),
            c,
            Config::Rtrb(Workload::Throughput),
            rate,
            None,
        ));
    }
    out.retain(|ratio| ratio.missing.is_none());
    out
}

/// Verification errors over the run. A run only produces a report when this is
/// zero (any mismatch aborts it), so the line is a statement, not a hope.
pub const VERIFICATION_LINE: &str = "verification errors: 0";

/// The human-readable report.
pub fn render(r: &RunResults) -> String {
    let p = &r.plan;
    let mut o = String::new();
    let window = match p.stop {
        Stop::After(d) => format!("{} ms", d.as_millis()),
        Stop::Ops(n) => format!("{n} ops"),
    };
    let _ = writeln!(
        o,
        "xenio-bench ring: order {} ({} entries of blkif 112-byte requests / 16-byte responses), \
         cores {},{}, {} reps x {} (after {} ms warm-up)",
        p.order,
        p.ring_size,
        p.front_core,
        p.back_core,
        r.reps,
        window,
        p.warmup.as_millis()
    );
    let _ = writeln!(
        o,
        "median [min..max] over repetitions; latency: ns/op = round trip; throughput: ns/op = 1/rate\n"
    );
    let w = r
        .configs
        .iter()
        .map(|c| c.name().len())
        .max()
        .unwrap_or(0)
        .max(6);
    let _ = writeln!(
        o,
        "{:<w$}  {:>9} {:>9} {:>9}   {:>8} {:>8} {:>8}   {:>9} {:>8}",
        "config", "ns/op", "min", "max", "Mops/s", "min", "max", "notif/req", "ops/rep"
    );
    for (c, samples) in r.configs.iter().zip(&r.samples) {
        let ns = summarize(&samples.iter().map(Sample::ns_per_op).collect::<Vec<_>>());
        let mops = summarize(&samples.iter().map(Sample::mops).collect::<Vec<_>>());
        let notif = match c.wait_mode() {
            WaitMode::Event { .. } => summarize(
                &samples
                    .iter()
                    .map(Sample::notifications_per_request)
                    .collect::<Vec<_>>(),
            )
            .map_or_else(|| "-".to_string(), |s| format!("{:.3}", s.median)),
            WaitMode::Polling => "-".to_string(),
        };
        let ops = summarize(&samples.iter().map(|s| s.ops as f64).collect::<Vec<_>>())
            .map_or(0.0, |s| s.median);
        match (ns, mops) {
            (Some(ns), Some(m)) => {
                let _ = writeln!(
                    o,
                    "{:<w$}  {:>9.1} {:>9.1} {:>9.1}   {:>8.3} {:>8.3} {:>8.3}   {:>9} {:>8.0}",
                    c.name(),
                    ns.median,
                    ns.min,
                    ns.max,
                    m.median,
                    m.min,
                    m.max,
                    notif,
                    ops
                );
            }
            _ => {
                let _ = writeln!(o, "{:<w$}  no samples", c.name());
            }
        }
    }
    let _ = writeln!(
        o,
        "\ntargets (median [min..max] of the per-repetition ratio):"
    );
    for ratio in targets(r) {
        let _ = writeln!(o, "{}", fmt_ratio(&ratio));
    }
    let context = context_ratios(r);
    if !context.is_empty() {
        let _ = writeln!(o, "context:");
        for ratio in context {
            let _ = writeln!(o, "{}", fmt_ratio(&ratio));
        }
    }
    let _ = writeln!(
        o,
        "\n{VERIFICATION_LINE} (every request checked by the backend, every response by the frontend)"
    );
    o
}

/// The machine-readable report.
pub fn to_json(r: &RunResults) -> Value {
    let p = &r.plan;
    let configs: Vec<Value> = r
        .configs
        .iter()
        .zip(&r.samples)
        .map(|(c, samples)| {
            let col = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
            let (mode, spin_us) = match c.wait_mode() {
                WaitMode::Polling => ("polling", None),
                WaitMode::Event { spin } => ("event", Some(spin.as_micros() as u64)),
            };
            json!({
                "name": c.name(),
                "kind": c.kind(),
                "workload": c.workload().label(),
                "mode": mode,
                "spin_us": spin_us,
                "ns_per_op": summary_json(&col(Sample::ns_per_op)),
                "mops": summary_json(&col(Sample::mops)),
                "notifications_per_request": summary_json(&col(Sample::notifications_per_request)),
                "ops": samples.iter().map(|s| s.ops).collect::<Vec<_>>(),
                "front_notifications": samples.iter().map(|s| s.front_notifications).collect::<Vec<_>>(),
                "back_notifications": samples.iter().map(|s| s.back_notifications).collect::<Vec<_>>(),
            })
        })
        .collect();
    let (duration_ms, ops) = match p.stop {
        Stop::After(d) => (Some(d.as_millis() as u64), None),
        Stop::Ops(n) => (None, Some(n)),
    };
    json!({
        "benchmark": "ring",
        "order": p.order,
        "ring_size": p.ring_size,
        "reps": r.reps,
        "duration_ms": duration_ms,
        "ops": ops,
        "warmup_ms": p.warmup.as_millis() as u64,
        "cores": [p.front_core, p.back_core],
        "configs": configs,
        "targets": targets(r).iter().map(ratio_json).collect::<Vec<_>>(),
        "context": context_ratios(r).iter().map(ratio_json).collect::<Vec<_>>(),
        "verification_errors": 0,
    })
}
