//! What the bench's CLI tests share.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `xenio` binary of this build (target/<profile>/xenio), built (or found
/// up to date) by cargo first, so a test run alone never runs a stale one.
pub fn xenio_bin() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_xenio-bench"));
    let xenio = bench.with_file_name("xenio");
    let release = bench
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|p| p == "release");
    let mut c = Command::new(env!("CARGO"));
    c.args(["build", "--quiet", "-p", "xenio", "--bin", "xenio"]);
    if release {
        c.arg("--release");
    }
    // xenio-bench's feature rbd: a `xenio` that serves rbd: targets.
    if cfg!(feature = "rbd") {
        c.args(["--features", "rbd"]);
    }
    let st = c.status().expect("running cargo build -p xenio");
    assert!(st.success(), "cargo build -p xenio failed");
    assert!(xenio.is_file(), "{} missing", xenio.display());
    xenio
}
