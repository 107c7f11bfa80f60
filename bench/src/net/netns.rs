//! Network namespaces, the commands that set them up, and threads inside them.

use crate::net::types::R;
use std::process::{Command, Stdio};

/// Run `cmd`; its stderr is the error if it fails.
pub fn sh(cmd: &mut Command) -> R<()> {
    let out = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace, deleted when dropped.
pub struct Netns(String);

impl Netns {
    /// Create namespace `name` (replacing one of that name) with `lo` up.
    pub fn new(name: String) -> R<Netns> {
        let _ = sh(Command::new("ip").args(["netns", "del", &name]));
        sh(Command::new("ip").args(["netns", "add", &name]))
            .map_err(|e| format!("{e} (xenio-bench net needs root)"))?;
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> R<()> {
        sh(Command::new("ip").args(["-n", &self.0]).args(args))
    }
    /// A command run inside it (`ip netns exec NAME ...`).
    pub fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }
    /// Run `f` on a new thread that has entered the namespace.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<R<T>> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
            Ok(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(Command::new("ip").args(["netns", "del", &self.0]));
    }
}

/// Join a worker thread (a panic is an error).
pub fn join<T>(h: std::thread::JoinHandle<R<T>>) -> R<T> {
    h.join()
        .map_err(|_| "a worker thread panicked".to_string())?
}
