//! The C ring.h pair: the xenio ring's polling workloads written with Xen's own
//! `io/ring.h` macros (`c/ringpair.c`), compiled when a run starts and
//! measured in the same run on the same cores, so that the ring's numbers can
//! be set against C code of the same layout. Where the ring trails `rtrb` and
//! the C pair trails it as much, the layout is the limit (a response written
//! over its request's slot, both indices on one line); where the C pair is
//! ahead, the code is.

use crate::common::error::{BenchError, Result};
use crate::ring::types::{Plan, Sample, Stop, Workload};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The C source.
pub const SOURCE: &str = include_str!("c/ringpair.c");

/// The compiled pair (removed with this value).
pub struct CPair {
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl CPair {
    /// Compile `c/ringpair.c` with `$CC` (or `cc`) `-O2` against the system's
    /// Xen headers (Debian's libxen-dev). `Err`: why it could not be built.
    pub fn build() -> std::result::Result<CPair, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let src = dir.path().join("ringpair.c");
        std::fs::write(&src, SOURCE).map_err(|e| format!("writing {}: {e}", src.display()))?;
        let bin = dir.path().join("ringpair");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&cc)
            .args(["-O2", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .map_err(|e| format!("running the C compiler {cc:?}: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
            return Err(format!(
                "{cc} could not build it ({}; Xen's headers come with libxen-dev)",
                first.trim()
            ));
        }
        Ok(CPair { bin, _dir: dir })
    }

    /// One measurement of `workload`, polling, on the plan's cores.
    pub fn measure(&self, plan: &Plan, workload: Workload, config: &str) -> Result<Sample> {
        let duration = match plan.stop {
            Stop::After(d) => d,
            // The C pair times a window, not a count: about as long as the
            // ring's polling round trips would take (well under 1 us each).
            Stop::Ops(n) => Duration::from_nanos(n.saturating_mul(500)),
        };
        let out = Command::new(&self.bin)
            .arg(workload.label())
            .arg(plan.order.to_string())
            .arg(plan.warmup.as_millis().to_string())
            .arg(duration.as_millis().max(1).to_string())
            .arg(plan.front_core.to_string())
            .arg(plan.back_core.to_string())
            .output()
            .map_err(|e| BenchError::io(format!("running {}", self.bin.display()), e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| -> Option<u64> {
            let mut words = text.split_whitespace();
            words.find(|w| *w == name)?;
            words.next()?.parse().ok()
        };
        let (Some(ops), Some(ns), Some(errors)) = (field("ops"), field("ns"), field("errors"))
        else {
            return Err(BenchError::Tool {
                tool: "the C ring.h pair",
                what: format!("`{config}` failed ({})", out.status),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        };
        if errors > 0 {
            return Err(BenchError::Verification {
                config: config.to_string(),
                side: "C pair",
                errors,
                first: "see c/ringpair.c's checks".to_string(),
            });
        }
        Ok(Sample {
            ops,
            elapsed: Duration::from_nanos(ns),
            front_notifications: 0,
            back_notifications: 0,
        })
    }
}
