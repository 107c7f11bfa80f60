//! `tests/c/cfront.c`, the blkif frontend written in C from
//! `docs/local-platform.md` with only Xen's public headers and libc: compiled
//! once per test binary, run as a child process that is killed when the test
//! ends, and the pattern its writes follow.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The byte at disk offset `off` of a write with seed `seed`; the initial image
/// is seed 0. Must match `pat` in cfront.c (murmur3's fmix64).
pub fn pat(off: u64, seed: u32) -> u8 {
    let mut x = off.wrapping_add(u64::from(seed) << 40);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    x as u8
}

/// Compile `tests/c/cfront.c` against the system's Xen headers (once per run).
pub fn compiled() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(compile)
}

pub fn compile() -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/cfront.c");
    // Built under a name of its own, then renamed into place: other test runs
    // may be executing an earlier `cfront` at the same time.
    let tmp =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cfront.{}", std::process::id()));
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cfront");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&tmp)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} ({e}); install gcc"));
    assert!(
        out.status.success(),
        "compiling {} failed (is libxen-dev installed?):\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Proc {
    child: Option<Child>,
    name: &'static str,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            child: Some(child),
            name,
            stdout,
            stderr,
        }
    }

    /// Wait for the exit, at most `timeout` (then kill it and say so).
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let child = self.child.as_mut().expect("not waited yet");
        let t = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return Ok(s);
            }
            if t.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Err(format!("{} did not exit within {timeout:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("not waited yet");
        child.try_wait().unwrap().is_some()
    }

    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- {} stdout:\n{}--- {} stderr:\n{}",
            self.name,
            read(&self.stdout),
            self.name,
            read(&self.stderr)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
