//! One configuration against another: the ratio of the means and the
//! t-tests, as the report and the plots show them; and the points of a sweep.

use crate::common::blkback::ReorderArg;
use crate::study::stats::{Moments, TTest, moments, student, welch};
use crate::study::types::{Knob, Metric, StudyResults};
use xenio_blkfront::Wait;

/// One configuration against another on one size and metric.
#[derive(Clone, Copy, Debug)]
pub struct Cmp {
    /// Size index.
    pub si: usize,
    /// Configuration index (compared with `against`).
    pub ci: usize,
    /// The reference configuration (native, or the base xenio for knob tests).
    pub against: usize,
    /// Metric.
    pub metric: Metric,
    /// The reference's runs.
    pub base: Moments,
    /// This configuration's runs.
    pub this: Moments,
    /// this.mean / base.mean.
    pub ratio: f64,
    /// Welch's test of this against the reference.
    pub welch: Option<TTest>,
    /// Student's pooled test.
    pub student: Option<TTest>,
}

impl Cmp {
    /// Significant at 95%.
    pub fn significant(&self) -> bool {
        self.welch.is_some_and(|t| t.significant())
    }
    /// Relative cell: `0.87* (t=-5.1)`.
    pub fn cell(&self) -> String {
        match self.welch {
            Some(t) => format!(
                "{:.2}{} (t={})",
                self.ratio,
                if t.significant() { "*" } else { "" },
                fmt_t(t.t)
            ),
            None => format!("{:.2}", self.ratio),
        }
    }
}

/// A t-value as the report prints it (`-5.12`, `+inf`).
pub fn fmt_t(t: f64) -> String {
    if t.is_infinite() {
        if t > 0.0 { "+inf" } else { "-inf" }.into()
    } else {
        format!("{t:.2}")
    }
}

/// Compare configuration `ci` with `against` on size `si` for `metric`.
pub fn compare(
    r: &StudyResults,
    si: usize,
    ci: usize,
    against: usize,
    metric: Metric,
) -> Option<Cmp> {
    let base = moments(r.samples.get(&(si, against, metric))?)?;
    let this = moments(r.samples.get(&(si, ci, metric))?)?;
    Some(Cmp {
        si,
        ci,
        against,
        metric,
        base,
        this,
        ratio: this.mean / base.mean,
        welch: welch(&this, &base),
        student: student(&this, &base),
    })
}

/// The base configuration's value of `knob`, as the sweep labels spell it.
pub fn base_value(r: &StudyResults, knob: Knob) -> String {
    let Some((k, poll)) = r.configs.get(1).and_then(|c| c.xenio.as_ref()) else {
        return String::new();
    };
    match knob {
        Knob::RingOrder => k.ring_order.to_string(),
        Knob::Reorder => match k.reorder {
            ReorderArg::Off => "off".into(),
            ReorderArg::Sort => "sort".into(),
            ReorderArg::Merge => "merge".into(),
        },
        Knob::Indirect => k.indirect.to_string(),
        Knob::Queues => k.queues.to_string(),
        Knob::Poll => match poll {
            Wait::Adaptive => "adaptive".into(),
            Wait::Fixed(d) => format!("{}us", d.as_micros()),
        },
    }
}

/// The sweep's points for `knob`: (value label, configuration index), the base
/// included, in the order the values were given.
pub fn sweep_points(r: &StudyResults, knob: Knob) -> Vec<(String, usize)> {
    let mut pts: Vec<(String, usize)> = r
        .configs
        .iter()
        .enumerate()
        .filter_map(|(ci, c)| match &c.sweep {
            Some((k, v)) if *k == knob => Some((v.clone(), ci)),
            _ => None,
        })
        .collect();
    if pts.is_empty() {
        return pts;
    }
    let bv = base_value(r, knob);
    // Put the base where its value sorts among the others.
    let pos = pts
        .iter()
        .position(|(v, _)| {
            match (
                v.trim_end_matches("us").parse::<f64>(),
                bv.trim_end_matches("us").parse::<f64>(),
            ) {
                (Ok(a), Ok(b)) => a > b,
                _ => false,
            }
        })
        .unwrap_or(pts.len());
    let pos = if knob == Knob::Reorder {
        // off, sort, merge
        let rank = |s: &str| {
            ["off", "sort", "merge"]
                .iter()
                .position(|x| *x == s)
                .unwrap_or(3)
        };
        pts.iter()
            .position(|(v, _)| rank(v) > rank(&bv))
            .unwrap_or(pts.len())
    } else {
        pos
    };
    pts.insert(pos, (format!("{bv} (base)"), 1));
    pts
}
