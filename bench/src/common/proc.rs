//! The child processes and scratch files of `xenio-bench blk` and of the
//! study, and how none of them outlives the run.
//!
//! Every child (`xenio blkback`, qemu-nbd, fio) is a [`Proc`]: dropping one
//! kills and reaps it, so an error or a panic leaves nothing behind. Every
//! scratch file or directory is a [`ScratchPath`], removed when dropped. Both are
//! also listed in one registry that a signal thread ([`install_signal_cleanup`])
//! uses on SIGINT, SIGTERM or SIGHUP: it kills the listed children, removes the
//! listed paths and exits. Should the benchmark itself be killed with SIGKILL,
//! the children are started through `setpriv --pdeathsig KILL` (util-linux)
//! where it is available, so the kernel kills them when their parent goes.

use crate::common::error::{BenchError, Result};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// What must not outlive the run.
struct Live {
    pids: Vec<u32>,
    paths: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    pids: Vec::new(),
    paths: Vec::new(),
});

fn live() -> MutexGuard<'static, Live> {
    // A panic while the lock was held leaves the lists usable.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn remove_path(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Block SIGINT, SIGTERM and SIGHUP in the calling thread (and so in every
/// thread it starts afterwards) and start a thread that, on any of them, kills
/// the registered children, removes the registered paths and exits with
/// 128 + the signal number. Call it first, before any other thread exists, so
/// that no other thread takes the signal. Children start with an empty signal
/// mask (the standard library resets it).
pub fn install_signal_cleanup() -> Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| BenchError::os("blocking SIGINT/SIGTERM/SIGHUP", e))?;
    std::thread::Builder::new()
        .name("blk-signals".into())
        .spawn(move || {
            let Ok(sig) = set.wait() else { return };
            let l = live();
            eprintln!(
                "xenio-bench blk: {sig:?}: killing {} child process(es), removing {} scratch path(s)",
                l.pids.len(),
                l.paths.len()
            );
            for &pid in &l.pids {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            for p in &l.paths {
                remove_path(p);
            }
            std::process::exit(128 + sig as i32);
        })
        .map_err(|e| BenchError::io("starting the signal thread", e))?;
    let _ = INSTALLED.set(());
    Ok(())
}

/// A file or directory removed when this is dropped (or on a signal).
#[derive(Debug)]
pub struct ScratchPath(PathBuf);

impl ScratchPath {
    /// Register `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        live().paths.push(path.clone());
        ScratchPath(path)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchPath {
    fn drop(&mut self) {
        remove_path(&self.0);
        live().paths.retain(|p| p != &self.0);
    }
}

/// Remove what runs killed with SIGKILL left in `dirs`: entries named
/// `{prefix}<pid>` or `{prefix}<pid>.img` whose process no longer exists.
/// Returns what was removed.
pub fn remove_stale(dirs: &[&Path], prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let pid = rest.strip_suffix(".img").unwrap_or(rest);
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                remove_path(&e.path());
                removed.push(e.path());
            }
        }
    }
    removed
}

/// `name` if it is a path to a file, else the first `name` in `$PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let p = find_program("setpriv")?;
            let ok = Command::new(&p)
                .args(["--pdeathsig", "KILL", "--", "true"])
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(p)
        })
        .as_deref()
}

/// A command running `program` (a path), killed by the kernel should this
/// process die without cleaning up (through `setpriv --pdeathsig KILL` when
/// util-linux has it). The parent death signal follows the spawning *thread*:
/// spawn from the thread that runs the benchmark.
pub fn command(program: &Path) -> Command {
    match setpriv() {
        Some(s) => {
            let mut c = Command::new(s);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A running child process; dropping it kills and reaps it.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    pid: u32,
    reaped: bool,
}

impl Proc {
    /// Start `cmd`; `tool` names it in errors.
    pub fn spawn(cmd: &mut Command, tool: &'static str) -> Result<Proc> {
        // Held across the spawn so that the signal thread cannot miss the child.
        let mut l = live();
        let child = cmd.spawn().map_err(|e| BenchError::Tool {
            tool,
            what: format!("cannot start {:?}", cmd.get_program()),
            detail: format!(": {e}"),
        })?;
        let pid = child.id();
        l.pids.push(pid);
        Ok(Proc {
            child,
            pid,
            reaped: false,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.reaped {
            return Ok(None);
        }
        let mut l = live();
        let st = self
            .child
            .try_wait()
            .map_err(|e| BenchError::io("waitpid", e))?;
        if st.is_some() {
            self.reaped = true;
            l.pids.retain(|&p| p != self.pid);
        }
        Ok(st)
    }

    /// Wait up to `limit` for it to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if start.elapsed() >= limit {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kill and reap it (nothing happens if it has already been reaped).
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let mut l = live();
        // Errors mean it is already gone; either way it is reaped here.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
        l.pids.retain(|&p| p != self.pid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a log file, for error messages (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n--- {} ---\n{tail}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_proc_is_killed_and_unregistered() {
        let mut cmd = command(Path::new("/bin/sleep"));
        cmd.arg("30");
        let p = Proc::spawn(&mut cmd, "sleep").unwrap();
        let pid = p.pid;
        assert!(live().pids.contains(&pid));
        drop(p);
        assert!(!live().pids.contains(&pid));
        // Reaped: the pid no longer names our child.
        assert!(nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None).is_err());
    }

    #[test]
    fn scratch_paths_are_removed_on_drop() {
        let dir = std::env::temp_dir().join(format!("blk-proc-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), b"x").unwrap();
        let s = ScratchPath::new(&dir);
        drop(s);
        assert!(!dir.exists());
    }

    #[test]
    fn stale_leftovers_of_dead_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("stale-test-999999999.img");
        let mine = dir
            .path()
            .join(format!("stale-test-{}", std::process::id()));
        let other = dir.path().join("stale-test-notapid");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let removed = remove_stale(&[dir.path()], "stale-test-");
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists() && mine.exists() && other.exists());
    }

    #[test]
    fn programs_are_found_in_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-xenio").is_none());
    }
}
