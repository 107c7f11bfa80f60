//! What every benchmark's report shares: ratios computed within each
//! repetition with their targets (PASS/MISS), one line per ratio, and the same
//! as JSON.

use crate::common::stats::{Summary, summarize};
use serde_json::{Value, json};
use std::fmt::Write;

/// A goal for a ratio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// The value must not exceed this.
    AtMost(f64),
    /// The value must reach at least this.
    AtLeast(f64),
}

impl Target {
    /// Whether `v` meets the target.
    pub fn met(self, v: f64) -> bool {
        match self {
            Target::AtMost(t) => v <= t,
            Target::AtLeast(t) => v >= t,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtMost(t) => format!("<= {t}{unit}"),
            Target::AtLeast(t) => format!(">= {t}{unit}"),
        }
    }
}

/// A ratio computed in each repetition (so both sides share that repetition's
/// conditions), summarised over the repetitions.
#[derive(Clone, Debug)]
pub struct Ratio {
    /// What it compares.
    pub name: String,
    /// `"x"` for a ratio, `""` for a plain number.
    pub unit: &'static str,
    /// One value per repetition.
    pub per_rep: Vec<f64>,
    /// The goal, if there is one.
    pub target: Option<Target>,
    /// Why it could not be computed (a configuration was filtered out).
    pub missing: Option<String>,
}

impl Ratio {
    /// Median, min and max over the repetitions.
    pub fn summary(&self) -> Option<Summary> {
        summarize(&self.per_rep)
    }

    /// `Some(true)` PASS, `Some(false)` MISS, `None` no target or no value.
    pub fn verdict(&self) -> Option<bool> {
        Some(self.target?.met(self.summary()?.median))
    }
}

/// One report line: name, median [min..max] and, with a target, PASS or MISS.
pub fn fmt_ratio(ratio: &Ratio) -> String {
    let Some(s) = ratio.summary() else {
        return format!(
            "  {:<62} n/a: {}",
            ratio.name,
            ratio.missing.as_deref().unwrap_or("no data")
        );
    };
    let prec = if ratio.unit.is_empty() { 3 } else { 2 };
    let value = format!("{:.prec$}{}", s.median, ratio.unit);
    let spread = format!("[{:.prec$}..{:.prec$}]", s.min, s.max);
    let mut line = format!("  {:<62} {value:>9} {spread:<18}", ratio.name);
    if let Some(t) = ratio.target {
        let verdict = if t.met(s.median) { "PASS" } else { "MISS" };
        let _ = write!(line, "  target {:<7} {verdict}", t.describe(ratio.unit));
    }
    line
}

/// Median, min, max and every repetition's value, as JSON.
pub fn summary_json(values: &[f64]) -> Value {
    let s = summarize(values);
    json!({
        "median": s.map(|s| s.median),
        "min": s.map(|s| s.min),
        "max": s.map(|s| s.max),
        "reps": values,
    })
}

/// A ratio with its target and verdict, as JSON.
pub fn ratio_json(ratio: &Ratio) -> Value {
    json!({
        "name": ratio.name,
        "value": summary_json(&ratio.per_rep),
        "target": ratio.target.map(|t| t.describe(ratio.unit)),
        "pass": ratio.verdict(),
        "missing": ratio.missing,
    })
}
