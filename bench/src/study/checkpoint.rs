//! The study's checkpoint: every finished measurement, one JSON line each, in
//! `--out/checkpoint.jsonl`, so that a study of several hours survives an
//! interruption (`--resume` continues it, `--report-only` reports what it holds).
//! When the study finishes, the checkpoint is renamed `measurements.jsonl`: the
//! raw data of the finished study, from which `--report-only` can write the
//! report again (with a newer `xenio-bench`, say) without measuring.
//!
//! [`load_entries`] and [`record`] put a checkpoint's measurements, and each
//! new one, into the results.
//!
//! The first line is the study's fingerprint: everything that decides what a
//! measurement means (sizes, runs, configurations, workloads, seed, O_DIRECT).
//! A resume with different settings is refused rather than mixed in. A last
//! line cut short by a kill is dropped with a warning; any other damage is an
//! error that names the line.

use crate::common::error::{BenchError, Result};
use crate::study::args::StudyArgs;
use crate::study::types::{BONNIE, Config, Counters, Metric, Phase, Plan, Resolved, StudyResults};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The checkpoint's file name inside `--out`.
pub const FILE: &str = "checkpoint.jsonl";

/// What the checkpoint of a finished study is renamed to.
pub const FINISHED: &str = "measurements.jsonl";

/// One finished measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Size index.
    pub si: usize,
    /// Configuration index.
    pub ci: usize,
    /// Run index (0-based).
    pub run: usize,
    /// Each phase's metric and seconds.
    pub values: Vec<(Phase, f64, f64)>,
    /// xenio's counters (None: native).
    pub counters: Option<Counters>,
    /// How the path opened the file.
    pub storage: String,
    /// Study wall time, over every sitting, when this measurement ended.
    pub elapsed_secs: f64,
    /// The sitting (1: the first start, 2: the first resume, ...).
    pub sitting: u32,
    /// The machine it was measured on.
    pub machine: String,
}

/// What decides the meaning of a measurement.
pub fn fingerprint(r: &Resolved, a: &StudyArgs) -> Value {
    json!({
        "xenio_study_checkpoint": 1,
        "sizes": r.sizes,
        "runs": r.runs,
        "chunk": r.params.chunk,
        "depth": r.params.depth,
        "seeks": r.params.seeks,
        "seekers": r.params.seekers,
        "fio_bytes": r.params.fio_bytes,
        "seed": r.params.seed,
        "buffered": a.buffered,
        "native_engine": format!("{:?}", a.native_io),
        "target": format!("{:?}", a.target),
        "sweep_size": r.sweep_size,
        "configs": r.configs.iter().map(Config::to_json).collect::<Vec<_>>(),
    })
}

/// An open checkpoint, appended to as measurements finish.
pub struct Checkpoint {
    path: PathBuf,
    file: File,
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "size": e.si, "config": e.ci, "run": e.run,
        "values": e.values.iter().map(|(p, v, s)| json!([p.name(), v, s])).collect::<Vec<_>>(),
        "counters": e.counters.map(|k| json!({
            "requests": k.requests, "merged": k.merged, "notifications": k.notifications,
        })),
        "storage": e.storage,
        "elapsed_secs": e.elapsed_secs,
        "sitting": e.sitting,
        "machine": e.machine,
    })
}

fn bad(path: &Path, line: usize, why: impl std::fmt::Display) -> BenchError {
    BenchError::Usage(format!(
        "{} line {line}: {why} (a damaged checkpoint: remove it to start over)",
        path.display()
    ))
}

fn parse_entry(v: &Value, r: &Resolved, path: &Path, line: usize) -> Result<Entry> {
    let idx = |k: &str, max: usize| -> Result<usize> {
        let n = v
            .get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(path, line, format!("no `{k}`")))?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n < max)
            .ok_or_else(|| bad(path, line, format!("`{k}` {n} is out of range")))
    };
    let si = idx("size", r.sizes.len())?;
    let ci = idx("config", r.configs.len())?;
    let run = idx("run", r.runs as usize)?;
    let mut values = Vec::new();
    for x in v
        .get("values")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(path, line, "no `values`"))?
    {
        let t = x.as_array().filter(|t| t.len() == 3);
        let parsed = t.and_then(|t| {
            Some((
                Phase::parse(t[0].as_str()?)?,
                t[1].as_f64().filter(|f| f.is_finite())?,
                t[2].as_f64().filter(|f| f.is_finite())?,
            ))
        });
        let (p, val, secs) = parsed.ok_or_else(|| bad(path, line, format!("bad value {x}")))?;
        if !r.configs[ci].phases.contains(&p) || values.iter().any(|(q, _, _)| *q == p) {
            return Err(bad(
                path,
                line,
                format!("`{}` is not a workload of {}", p.name(), r.configs[ci].name),
            ));
        }
        values.push((p, val, secs));
    }
    if values.len() != r.configs[ci].phases.len() {
        return Err(bad(path, line, "not every workload was measured"));
    }
    let counters = match v.get("counters") {
        None | Some(Value::Null) => None,
        Some(k) => {
            let f = |n: &str| {
                k.get(n)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad(path, line, format!("counters without `{n}`")))
            };
            Some(Counters {
                requests: f("requests")?,
                merged: f("merged")?,
                notifications: f("notifications")?,
            })
        }
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Entry {
        si,
        ci,
        run,
        values,
        counters,
        storage: text("storage"),
        elapsed_secs: v
            .get("elapsed_secs")
            .and_then(Value::as_f64)
            .filter(|f| f.is_finite() && *f >= 0.0)
            .unwrap_or(0.0),
        sitting: v
            .get("sitting")
            .and_then(Value::as_u64)
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(1),
        machine: text("machine"),
    })
}

/// Read the checkpoint at `path` written for `fp`: its measurements in file
/// order. A duplicate measurement is an error.
pub fn load(path: &Path, fp: &Value, r: &Resolved) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let Some(first) = lines.first() else {
        return Err(bad(path, 1, "empty"));
    };
    let head: Value = serde_json::from_str(first).map_err(|e| bad(path, 1, e))?;
    if &head != fp {
        return Err(BenchError::Usage(format!(
            "{} was written by a study with other settings (sizes, runs, workloads, \
             configurations or seed differ); resume with the same options, or remove it \
             to start over",
            path.display()
        )));
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, l) in lines.iter().enumerate().skip(1) {
        let n = i + 1;
        let v: Value = match serde_json::from_str(l) {
            Ok(v) => v,
            Err(_) if i + 1 == lines.len() && !complete => {
                eprintln!(
                    "xenio-bench study: {} line {n} was cut short (killed while writing); measuring it again",
                    path.display()
                );
                break;
            }
            Err(e) => return Err(bad(path, n, e)),
        };
        let e = parse_entry(&v, r, path, n)?;
        if !seen.insert((e.si, e.ci, e.run)) {
            return Err(bad(path, n, "a measurement already in the checkpoint"));
        }
        out.push(e);
    }
    Ok(out)
}

impl Checkpoint {
    /// Open `dir/checkpoint.jsonl` for a study with fingerprint `fp`.
    ///
    /// Without `resume` it must not exist (an unfinished study is never
    /// overwritten by accident); with `resume` it must, and its measurements are
    /// returned. The file is rewritten without a line cut short.
    pub fn open(dir: &Path, fp: &Value, r: &Resolved, resume: bool) -> Result<(Self, Vec<Entry>)> {
        let path = dir.join(FILE);
        let entries = if resume {
            if !path.exists() {
                return Err(BenchError::Usage(format!(
                    "--resume: {} does not exist (no unfinished study in {})",
                    path.display(),
                    dir.display()
                )));
            }
            load(&path, fp, r)?
        } else {
            if path.exists() {
                return Err(BenchError::Usage(format!(
                    "{} holds an unfinished study; pass --resume to continue it (same options), \
                     --report-only to report what it measured, or remove it to start over",
                    path.display()
                )));
            }
            Vec::new()
        };
        let mut body = serde_json::to_string(fp).unwrap_or_default() + "\n";
        for e in &entries {
            body += &(serde_json::to_string(&entry_json(e)).unwrap_or_default() + "\n");
        }
        let tmp = dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| BenchError::io(format!("opening {}", path.display()), e))?;
        Ok((Checkpoint { path, file }, entries))
    }

    /// Append one finished measurement, on disk before this returns.
    pub fn append(&mut self, e: &Entry) -> Result<()> {
        let line = serde_json::to_string(&entry_json(e)).unwrap_or_default() + "\n";
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|err| BenchError::io(format!("appending to {}", self.path.display()), err))
    }

    /// The study finished and its report is written: the checkpoint is kept
    /// as [`FINISHED`] (replacing an older study's), so that a new study can
    /// start in the same directory and this one can still be reported again.
    pub fn finish(self) -> Result<PathBuf> {
        drop(self.file);
        let done = self.path.with_file_name(FINISHED);
        std::fs::rename(&self.path, &done).map_err(|e| {
            BenchError::io(
                format!("renaming {} to {}", self.path.display(), done.display()),
                e,
            )
        })?;
        Ok(done)
    }
}

/// Put a finished measurement into the results.
pub fn record(res: &mut StudyResults, e: &Entry) {
    let (si, ci) = (e.si, e.ci);
    if res.configs[ci].xenio.is_none() {
        res.plan.native.clone_from(&e.storage);
    } else if res.plan.backend_storage.is_empty() {
        res.plan.backend_storage.clone_from(&e.storage);
    }
    let mut total = 0.0;
    let mut bonnie = 0;
    for &(ph, v, secs) in &e.values {
        res.samples
            .entry((si, ci, Metric::Phase(ph)))
            .or_default()
            .push(v);
        if ph.is_bonnie() {
            total += secs;
            bonnie += 1;
        }
    }
    if bonnie == BONNIE.len() {
        res.samples
            .entry((si, ci, Metric::Total))
            .or_default()
            .push(total);
    }
    if let Some(k) = e.counters {
        let c = res.counters.entry((si, ci)).or_default();
        c.requests += k.requests;
        c.merged += k.merged;
        c.notifications += k.notifications;
    }
}

/// Put a checkpoint's measurements into the results in run order; returns how
/// many there were. The plan takes the latest wall time and the sittings.
pub fn load_entries(res: &mut StudyResults, mut entries: Vec<Entry>) -> usize {
    entries.sort_by_key(|e| (e.si, e.run, e.ci));
    for e in &entries {
        record(res, e);
        res.plan.elapsed_secs = res.plan.elapsed_secs.max(e.elapsed_secs);
        res.plan.sittings = res.plan.sittings.max(e.sitting);
        add_machine(&mut res.plan, &e.machine);
    }
    entries.len()
}

/// Name `machine` in the plan unless it is there already (a study resumed on
/// another machine names both, in order).
pub fn add_machine(plan: &mut Plan, machine: &str) {
    if machine.is_empty() || plan.machine.contains(machine) {
        return;
    }
    if plan.machine.is_empty() {
        plan.machine = machine.to_string();
    } else {
        plan.machine = format!("{}; then {machine}", plan.machine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::args::test_args as args;
    use crate::study::resolve::resolve;

    fn entry(r: &Resolved, si: usize, ci: usize, run: usize) -> Entry {
        Entry {
            si,
            ci,
            run,
            values: r.configs[ci]
                .phases
                .iter()
                .enumerate()
                .map(|(i, &p)| (p, 10.0 + i as f64, 0.5))
                .collect(),
            counters: (ci > 0).then_some(Counters {
                requests: 7,
                merged: 2,
                notifications: 3,
            }),
            storage: "io_uring".into(),
            elapsed_secs: 1.5,
            sitting: 1,
            machine: "m".into(),
        }
    }

    #[test]
    fn measurements_survive_a_restart_and_settings_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(&["--quick"]);
        let r = resolve(&a).unwrap();
        let fp = fingerprint(&r, &a);
        let (mut c, got) = Checkpoint::open(dir.path(), &fp, &r, false).unwrap();
        assert!(got.is_empty());
        let written = vec![entry(&r, 0, 0, 0), entry(&r, 0, 1, 0), entry(&r, 1, 2, 2)];
        for e in &written {
            c.append(e).unwrap();
        }
        drop(c);
        // Not resumed: refused, nothing lost.
        let e = Checkpoint::open(dir.path(), &fp, &r, false).err().unwrap();
        assert!(e.to_string().contains("--resume"), "{e}");
        let (_c, got) = Checkpoint::open(dir.path(), &fp, &r, true).unwrap();
        assert_eq!(got, written);
        // Other settings: refused.
        let b = args(&["--quick", "--seed", "7"]);
        let rb = resolve(&b).unwrap();
        let e = Checkpoint::open(dir.path(), &fingerprint(&rb, &b), &rb, true)
            .err()
            .unwrap();
        assert!(e.to_string().contains("other settings"), "{e}");
        // Still intact after the refusal.
        assert_eq!(load(&dir.path().join(FILE), &fp, &r).unwrap(), written);
    }

    #[test]
    fn a_cut_line_is_dropped_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(&["--quick"]);
        let r = resolve(&a).unwrap();
        let fp = fingerprint(&r, &a);
        let (mut c, _) = Checkpoint::open(dir.path(), &fp, &r, false).unwrap();
        c.append(&entry(&r, 0, 0, 0)).unwrap();
        c.append(&entry(&r, 0, 1, 0)).unwrap();
        drop(c);
        let path = dir.path().join(FILE);
        let good = std::fs::read_to_string(&path).unwrap();
        // Killed in the middle of a line: that measurement is simply redone.
        std::fs::write(&path, format!("{good}{{\"size\":0,\"con")).unwrap();
        let (_c, got) = Checkpoint::open(dir.path(), &fp, &r, true).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        // Damage in the middle, indices out of range, duplicates: errors.
        let lines: Vec<&str> = good.lines().collect();
        let cases = [
            format!("{}\nnot json\n{}\n", lines[0], lines[1]),
            format!(
                "{}\n{}\n",
                lines[0],
                lines[1].replace("\"size\":0", "\"size\":99")
            ),
            format!(
                "{}\n{}\n",
                lines[0],
                lines[1].replace("\"run\":0", "\"run\":3")
            ),
            format!("{}\n{}\n{}\n", lines[0], lines[1], lines[1]),
            format!(
                "{}\n{}\n",
                lines[0],
                lines[1].replace("putc out", "nonsense")
            ),
            String::new(),
        ];
        for body in cases {
            std::fs::write(&path, &body).unwrap();
            let e = load(&path, &fp, &r)
                .err()
                .unwrap_or_else(|| panic!("{body}"));
            assert!(e.to_string().contains(FILE), "{e}");
        }
    }
}
