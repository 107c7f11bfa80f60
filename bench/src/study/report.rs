//! What `xenio-bench study` reports: the Markdown report (Figure 2's table,
//! every mean/sd/t-value, the sweeps, the paper's findings answered), and the
//! bodies of samples.csv, summary.csv and results.json (the plots are
//! [`crate::study::plot`]'s; [`crate::study::run`] writes the files).

use crate::study::compare::{Cmp, base_value, compare, fmt_t, sweep_points};
use crate::study::stats::{Moments, TTest};
use crate::study::types::{Knob, Metric, Phase, StudyResults};
use serde_json::json;
use std::fmt::Write as _;

fn size_name(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

fn metrics(r: &StudyResults, ci: usize) -> Vec<Metric> {
    let mut m: Vec<Metric> = r
        .samples
        .keys()
        .filter(|(_, c, _)| *c == ci)
        .map(|(_, _, m)| *m)
        .collect();
    m.sort();
    m.dedup();
    m
}

fn knobs_swept(r: &StudyResults) -> Vec<Knob> {
    let mut k: Vec<Knob> = r
        .configs
        .iter()
        .filter_map(|c| c.sweep.as_ref().map(|s| s.0))
        .collect();
    k.sort();
    k.dedup();
    k
}

/// A Markdown table's header: `first`, then one column per metric.
fn table_header(out: &mut String, first: &str, ms: &[Metric]) {
    let _ = write!(out, "| {first} |");
    for m in ms {
        let _ = write!(out, " {} |", m.name());
    }
    let _ = write!(out, "\n| --- |");
    for _ in ms {
        let _ = write!(out, " --- |");
    }
    out.push('\n');
}

fn relative_table(out: &mut String, r: &StudyResults, ms: &[Metric]) {
    table_header(out, "file size", ms);
    for si in 0..r.sizes.len() {
        let _ = write!(out, "| {} |", size_name(r.sizes[si]));
        for &m in ms {
            let c = compare(r, si, 1, 0, m).map_or("-".into(), |c| c.cell());
            let _ = write!(out, " {c} |");
        }
        out.push('\n');
    }
}

fn mean_sd(m: &Moments) -> String {
    let digits = if m.mean.abs() >= 100.0 {
        0
    } else if m.mean.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{:.*} ± {:.*}", digits, m.mean, digits, m.sd)
}

fn pct(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

/// The Markdown report.
pub fn render(r: &StudyResults) -> String {
    let p = &r.plan;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# xenio disk study: Youseff et al. (2006), section 4.2, rerun\n"
    );
    let _ = writeln!(
        o,
        "- Paths: **native** ({}) and **xenio** (blkfront -> rings -> `xenio blkback` process -> {}), same file, interleaved runs.",
        p.native, p.backend_storage
    );
    let _ = writeln!(
        o,
        "- {}",
        if p.direct {
            "**O_DIRECT** on both paths: the page cache does not hide the disk."
        } else {
            "**Page cache** on both paths (--buffered): caches hide the disk."
        }
    );
    let _ = writeln!(
        o,
        "- {} runs per configuration and size; sizes {}; Bonnie chunk {} KiB, {} in flight; {} seeks by {} seekers; fio-style workloads {} MiB (4K random: 1/16).",
        p.runs,
        r.sizes
            .iter()
            .map(|s| size_name(*s))
            .collect::<Vec<_>>()
            .join(", "),
        p.chunk >> 10,
        p.depth,
        p.seeks,
        p.seekers,
        p.fio_bytes >> 20
    );
    if let Some((k, poll)) = r.configs.get(1).and_then(|c| c.xenio.as_ref()) {
        let _ = writeln!(
            o,
            "- Base xenio: ring order {} ({} slots), indirect {}, {} queue(s), reorder {}, waiting {}, grants {:?}{}.",
            k.ring_order,
            32u32 << k.ring_order,
            k.indirect,
            k.queues,
            base_value(r, Knob::Reorder),
            poll,
            k.grant_mode,
            if k.persistent { ", persistent" } else { "" }
        );
    }
    let sittings = if p.sittings > 1 {
        format!(
            " in {} sittings (interrupted, then continued with --resume)",
            p.sittings
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "- Machine: {}; study took {:.0} s{sittings}.",
        p.machine, p.elapsed_secs
    );
    if let Some(partial) = &p.partial {
        let _ = writeln!(
            o,
            "- **Partial report**: {partial}. Each cell has the runs finished so far (n in the JSON)."
        );
    }
    let _ = writeln!(
        o,
        "- Cells: xenio/native ratio of the means (total time: lower is better); `*`: significant at 95% (Welch's t-test, statrs' t distribution); t > 0: xenio larger.\n"
    );

    let bonnie: Vec<Metric> = metrics(r, 1)
        .into_iter()
        .filter(|m| !matches!(m, Metric::Phase(Phase::Fio(_))))
        .collect();
    let fio: Vec<Metric> = metrics(r, 1)
        .into_iter()
        .filter(|m| matches!(m, Metric::Phase(Phase::Fio(_))))
        .collect();
    if !bonnie.is_empty() {
        let _ = writeln!(o, "## Figure 2: Bonnie, xenio relative to native\n");
        relative_table(&mut o, r, &bonnie);
        o.push('\n');
    }
    if !fio.is_empty() {
        let _ = writeln!(o, "## fio-style workloads, xenio relative to native\n");
        relative_table(&mut o, r, &fio);
        o.push('\n');
    }

    let _ = writeln!(o, "## Every number\n");
    let _ = writeln!(
        o,
        "| size | metric | unit | native mean ± sd | xenio mean ± sd | xenio/native | t | df | p | 95% |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for si in 0..r.sizes.len() {
        for m in metrics(r, 1) {
            if let Some(c) = compare(r, si, 1, 0, m) {
                let (t, df, pv, sig) = match c.welch {
                    Some(w) => (
                        fmt_t(w.t),
                        format!("{:.1}", w.df),
                        format!("{:.2e}", w.p),
                        if w.significant() { "yes" } else { "no" }.to_string(),
                    ),
                    None => ("-".into(), "-".into(), "-".into(), "-".into()),
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {:.3} | {t} | {df} | {pv} | {sig} |",
                    size_name(r.sizes[si]),
                    m.name(),
                    m.unit(),
                    mean_sd(&c.base),
                    mean_sd(&c.this),
                    c.ratio
                );
            }
        }
    }
    o.push('\n');

    if let Some(ssi) = p.sweep_size {
        let _ = writeln!(
            o,
            "## Sweeps (on {}; each value relative to native in the same runs; t against native)\n",
            size_name(r.sizes[ssi])
        );
        for knob in knobs_swept(r) {
            let pts = sweep_points(r, knob);
            let Some(&(_, first)) = pts.iter().find(|(_, ci)| *ci != 1) else {
                continue;
            };
            let ms: Vec<Metric> = r.configs[first]
                .phases
                .iter()
                .map(|&p| Metric::Phase(p))
                .collect();
            let _ = write!(o, "### {}\n\n", knob.name());
            table_header(&mut o, knob.name(), &ms);
            for (label, ci) in &pts {
                let _ = write!(o, "| {label} |");
                for &m in &ms {
                    let cell = compare(r, ssi, *ci, 0, m).map_or("-".into(), |c| {
                        format!("{} [{} {}]", c.cell(), mean_sd(&c.this), m.unit())
                    });
                    let _ = write!(o, " {cell} |");
                }
                o.push('\n');
            }
            o.push('\n');
            sweep_against_base(&mut o, r, ssi, knob, &pts, &ms);
        }
    }

    o.push_str(&findings(r));

    if !r.counters.is_empty() {
        let _ = writeln!(
            o,
            "## xenio's counters (all runs of a configuration on a size)\n"
        );
        let _ = writeln!(
            o,
            "| size | configuration | ring requests | merged | notifications per request |\n| --- | --- | --- | --- | --- |"
        );
        for ((si, ci), k) in &r.counters {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} ({:.1}%) | {:.3} |",
                size_name(r.sizes[*si]),
                r.configs[*ci].name,
                k.requests,
                k.merged,
                100.0 * k.merged as f64 / k.requests.max(1) as f64,
                k.notifications as f64 / k.requests.max(1) as f64
            );
        }
        o.push('\n');
    }
    o
}

/// What each point of a sweep changes against the base configuration, in the
/// same runs: the knob's own effect, which the table against native shows only
/// as a difference of two ratios.
fn sweep_against_base(
    o: &mut String,
    r: &StudyResults,
    ssi: usize,
    knob: Knob,
    pts: &[(String, usize)],
    ms: &[Metric],
) {
    o.push_str(
        "Against the base configuration (change of the mean; `*`: significant at 95%, Welch):\n\n",
    );
    table_header(o, knob.name(), ms);
    for (label, ci) in pts {
        let _ = write!(o, "| {label} |");
        for &m in ms {
            let cell = if *ci == 1 {
                "base".to_string()
            } else {
                compare(r, ssi, *ci, 1, m).map_or("-".into(), |c| {
                    format!(
                        "{}{} (t={})",
                        pct(c.ratio),
                        if c.significant() { "*" } else { "" },
                        c.welch.map_or("-".into(), |t| fmt_t(t.t))
                    )
                })
            };
            let _ = write!(o, " {cell} |");
        }
        o.push('\n');
    }
    o.push('\n');
}

fn range_pct(cs: &[Cmp]) -> String {
    let lo = cs.iter().map(|c| c.ratio).fold(f64::INFINITY, f64::min);
    let hi = cs.iter().map(|c| c.ratio).fold(f64::NEG_INFINITY, f64::max);
    if (hi - lo).abs() < 1e-9 {
        pct(lo)
    } else {
        format!("{} .. {}", pct(lo), pct(hi))
    }
}

fn list(cs: &[Cmp], r: &StudyResults) -> String {
    cs.iter()
        .map(|c| {
            format!(
                "{} {}: {} (t={}{})",
                size_name(r.sizes[c.si]),
                c.metric.name(),
                pct(c.ratio),
                c.welch.map_or("-".into(), |t| fmt_t(t.t)),
                if c.significant() { ", significant" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The paper's findings, each answered by these numbers (automatically; the
/// written study in docs/ interprets them).
pub fn findings(r: &StudyResults) -> String {
    let mut o = String::from("## The paper's findings, answered by this run\n\n");
    let all = |p: Phase| -> Vec<Cmp> {
        (0..r.sizes.len())
            .filter_map(|si| compare(r, si, 1, 0, Metric::Phase(p)))
            .collect()
    };
    // 1. Sequential output on par or better.
    let out: Vec<Cmp> = [Phase::PutcOut, Phase::BlockOut, Phase::Rewrite]
        .iter()
        .flat_map(|&p| all(p))
        .collect();
    if !out.is_empty() {
        let worse: Vec<Cmp> = out
            .iter()
            .copied()
            .filter(|c| c.significant() && c.ratio < 1.0)
            .collect();
        let _ = writeln!(
            o,
            "1. **Sequential output (per char, per block, rewrite) on par with or better than native.** {}: {} of {} cells significantly slower. {}\n",
            if worse.is_empty() {
                "Reproduced"
            } else {
                "Not reproduced"
            },
            worse.len(),
            out.len(),
            list(&out, r)
        );
    }
    // 2. Per-character input not significantly different.
    let getc = all(Phase::GetcIn);
    if !getc.is_empty() {
        let sig = getc.iter().filter(|c| c.significant()).count();
        let _ = writeln!(
            o,
            "2. **Sequential input per character not significantly different.** {}: {}.\n",
            if sig == 0 {
                "Reproduced"
            } else {
                "Not reproduced"
            },
            list(&getc, r)
        );
    }
    // 3. Block input lags 11-17% with the default ring; tuning fixes it.
    let bin = all(Phase::BlockIn);
    if !bin.is_empty() {
        let lag: Vec<&Cmp> = bin
            .iter()
            .filter(|c| c.significant() && c.ratio < 1.0)
            .collect();
        let in_range = bin
            .iter()
            .filter(|c| c.ratio <= 0.89 && c.ratio >= 0.83)
            .count();
        let _ = writeln!(
            o,
            "3. **Sequential input per block lags native by 11-17% with the default ring size.** {} ({} of {} sizes significantly slower, {} in the 11-17% band; range {}): {}.",
            if lag.len() == bin.len() {
                "Lag reproduced"
            } else {
                "Lag not reproduced"
            },
            lag.len(),
            bin.len(),
            in_range,
            range_pct(&bin),
            list(&bin, r)
        );
        if let Some(ssi) = r.plan.sweep_size {
            let pts = sweep_points(r, Knob::RingOrder);
            let mut lines = Vec::new();
            for m in [Metric::Phase(Phase::BlockIn), Metric::Phase(Phase::Fio(0))] {
                // Every order relative to native, and against the base.
                let mut parts = Vec::new();
                for (label, ci) in &pts {
                    let Some(n) = compare(r, ssi, *ci, 0, m) else {
                        continue;
                    };
                    let vs_base = if *ci == 1 {
                        String::new()
                    } else {
                        compare(r, ssi, *ci, 1, m).map_or(String::new(), |c| {
                            format!(
                                ", {} against the base (t={}{})",
                                pct(c.ratio),
                                c.welch.map_or("-".into(), |t| fmt_t(t.t)),
                                if c.significant() { ", significant" } else { "" }
                            )
                        })
                    };
                    parts.push(format!("order {label}: {:.2} of native{vs_base}", n.ratio));
                }
                if !parts.is_empty() {
                    lines.push(format!("{}: {}", m.name(), parts.join("; ")));
                }
            }
            if !lines.is_empty() {
                let _ = writeln!(
                    o,
                    "   Ring-order sweep ({}): {}.",
                    size_name(r.sizes[ssi]),
                    lines.join("; ")
                );
            }
        }
        o.push('\n');
    }
    // 4. Random seeks: significant overhead, worst on large files.
    let seeks = all(Phase::Seeks);
    if !seeks.is_empty() {
        let sig = seeks
            .iter()
            .filter(|c| c.significant() && c.ratio < 1.0)
            .count();
        let largest = seeks.iter().max_by_key(|c| r.sizes[c.si]).copied();
        let _ = writeln!(
            o,
            "4. **Random seeks have significant overhead (the paper: on large files).** {} ({} of {} sizes significantly slower): {}.\n",
            match largest {
                Some(c) if c.significant() && c.ratio < 1.0 => "Reproduced on the largest file",
                _ => "Not reproduced on the largest file",
            },
            sig,
            seeks.len(),
            list(&seeks, r)
        );
    }
    // 5. Reordering credited for the output results.
    if let Some(ssi) = r.plan.sweep_size {
        let pts = sweep_points(r, Knob::Reorder);
        if let Some((_, off)) = pts.iter().find(|(v, _)| v.starts_with("off")) {
            let mut lines = Vec::new();
            for (label, ci) in &pts {
                if ci == off {
                    continue;
                }
                for m in [Phase::BlockOut, Phase::Seeks] {
                    if let Some(c) = compare(r, ssi, *ci, *off, Metric::Phase(m)) {
                        lines.push(format!(
                            "{} {} against off: {} (t={}{})",
                            label,
                            m.name(),
                            pct(c.ratio),
                            c.welch.map_or("-".into(), |t| fmt_t(t.t)),
                            if c.significant() { ", significant" } else { "" }
                        ));
                    }
                }
            }
            if !lines.is_empty() {
                let _ = writeln!(
                    o,
                    "5. **Backend reordering is what makes output fast.** Reorder sweep on {}: {}.\n",
                    size_name(r.sizes[ssi]),
                    lines.join("; ")
                );
            }
        }
    }
    o
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Every run: size_mib,config,knob,value,metric,unit,run,value.
pub fn samples_csv(r: &StudyResults) -> String {
    let mut o = String::from("size_mib,config,knob,knob_value,metric,unit,run,value\n");
    for ((si, ci, m), vs) in &r.samples {
        let c = &r.configs[*ci];
        let (k, v) = c
            .sweep
            .as_ref()
            .map_or(("", ""), |(k, v)| (k.name(), v.as_str()));
        for (run, x) in vs.iter().enumerate() {
            let _ = writeln!(
                o,
                "{},{},{},{},{},{},{},{}",
                r.sizes[*si] >> 20,
                csv_field(&c.name),
                k,
                v,
                csv_field(m.name()),
                m.unit(),
                run + 1,
                x
            );
        }
    }
    o
}

fn all_cmps(r: &StudyResults) -> Vec<Cmp> {
    let mut v = Vec::new();
    for si in 0..r.sizes.len() {
        for ci in 1..r.configs.len() {
            for m in metrics(r, ci) {
                if let Some(c) = compare(r, si, ci, 0, m) {
                    v.push(c);
                }
            }
        }
    }
    v
}

/// Every configuration against native: one row per size, configuration, metric.
pub fn summary_csv(r: &StudyResults) -> String {
    let mut o = String::from(
        "size_mib,config,metric,unit,native_n,native_mean,native_sd,n,mean,sd,ratio,welch_t,welch_df,welch_p,significant_95,student_t,student_p\n",
    );
    for c in all_cmps(r) {
        let w = c.welch;
        let s = c.student;
        let _ = writeln!(
            o,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.sizes[c.si] >> 20,
            csv_field(&r.configs[c.ci].name),
            csv_field(c.metric.name()),
            c.metric.unit(),
            c.base.n,
            c.base.mean,
            c.base.sd,
            c.this.n,
            c.this.mean,
            c.this.sd,
            c.ratio,
            w.map_or(String::new(), |t| t.t.to_string()),
            w.map_or(String::new(), |t| t.df.to_string()),
            w.map_or(String::new(), |t| t.p.to_string()),
            w.map_or(String::new(), |t| t.significant().to_string()),
            s.map_or(String::new(), |t| t.t.to_string()),
            s.map_or(String::new(), |t| t.p.to_string()),
        );
    }
    o
}

fn num(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!(x)
    } else {
        json!(x.to_string())
    }
}

/// Everything as JSON.
pub fn to_json(r: &StudyResults) -> serde_json::Value {
    let p = &r.plan;
    let test = |t: Option<TTest>| {
        t.map_or(serde_json::Value::Null, |t| {
            json!({"t": num(t.t), "df": num(t.df), "p": num(t.p), "significant_95": t.significant()})
        })
    };
    json!({
        "study": "Youseff et al. 2006, section 4.2 (Bonnie), rerun with xenio",
        "plan": {
            "runs": p.runs, "chunk_bytes": p.chunk, "depth": p.depth, "seeks": p.seeks,
            "seekers": p.seekers, "fio_bytes": p.fio_bytes, "o_direct": p.direct,
            "native": p.native, "backend_storage": p.backend_storage, "machine": p.machine,
            "elapsed_secs": p.elapsed_secs, "quick": p.quick, "sittings": p.sittings,
            "partial": p.partial,
            "sweep_size_mib": p.sweep_size.map(|i| r.sizes[i] >> 20),
        },
        "sizes_mib": r.sizes.iter().map(|s| s >> 20).collect::<Vec<_>>(),
        "configs": r.configs.iter().map(|c| {
            let mut v = c.to_json();
            v["sweep"] = json!(c.sweep.as_ref().map(|(k, v)| json!({"knob": k.name(), "value": v})));
            v
        }).collect::<Vec<_>>(),
        "samples": r.samples.iter().map(|((si, ci, m), v)| json!({
            "size_mib": r.sizes[*si] >> 20, "config": r.configs[*ci].name,
            "metric": m.name(), "unit": m.unit(), "values": v,
        })).collect::<Vec<_>>(),
        "comparisons": all_cmps(r).iter().map(|c| json!({
            "size_mib": r.sizes[c.si] >> 20, "config": r.configs[c.ci].name,
            "against": r.configs[c.against].name, "metric": c.metric.name(),
            "unit": c.metric.unit(),
            "native": {"n": c.base.n, "mean": num(c.base.mean), "sd": num(c.base.sd)},
            "this": {"n": c.this.n, "mean": num(c.this.mean), "sd": num(c.this.sd)},
            "ratio": num(c.ratio), "welch": test(c.welch), "student": test(c.student),
        })).collect::<Vec<_>>(),
        "counters": r.counters.iter().map(|((si, ci), k)| json!({
            "size_mib": r.sizes[*si] >> 20, "config": r.configs[*ci].name,
            "requests": k.requests, "merged": k.merged, "notifications": k.notifications,
        })).collect::<Vec<_>>(),
    })
}
