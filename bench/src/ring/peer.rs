//! The second process of a measurement: how the parent starts, watches and stops
//! it, the control page both share, and how the child watches its parent (the
//! child's entry point, [`crate::ring::run_peer`], puts them together).
//!
//! The child is this same binary (`std::env::current_exe()`) running the hidden
//! `ring-peer` subcommand. It inherits:
//! - the ring's and the control page's memfds, whose `FD_CLOEXEC` the parent
//!   clears (nix `fcntl`) just for the spawn; their numbers are on the command
//!   line and the child reopens them through `/proc/self/fd/N`;
//! - in event mode, the two eventfd doorbells as its stdin (frontend to backend)
//!   and stdout (backend to frontend). An eventfd cannot be reopened through
//!   `/proc`, and adopting an inherited descriptor number is `unsafe`
//!   (`OwnedFd::from_raw_fd`), which this crate forbids; stdin and stdout are the
//!   two inherited descriptors safe Rust can name. The child never prints to stdout.
//!
//! The child can never outlive the parent: it asks for `SIGKILL` on parent death
//! (`PR_SET_PDEATHSIG`), checks that its parent is still the pid it was given,
//! stops at a deadline the parent sets, and the parent's [`PeerProcess`] kills and
//! reaps it on every path that does not end with a clean exit.

use crate::common::error::{BenchError, Result};
use crate::common::sys::{self, Bells, Doorbell};
use crate::ring::args::PeerRole;
use crate::ring::types::WaitMode;
use crate::ring::wait::Liveness;
use nix::unistd::getppid;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use xenio_ring::{AtomicU32, MmapRegion, SharedMemory};

/// A page of shared words beside the ring: the peer's state, the stop flag, the
/// backend's counters and the ping-pong cache line. Each group has its own
/// 128-byte block, so the hot ping-pong line shares nothing.
#[derive(Debug)]
pub struct Control {
    region: MmapRegion,
}

/// [`Control::state`] of a peer that is starting.
pub const STATE_STARTING: u32 = 0;
/// [`Control::state`] of a peer that is attached, pinned and serving.
pub const STATE_READY: u32 = 1;
/// [`Control::state`] of a peer that stopped cleanly.
pub const STATE_DONE: u32 = 2;

const W_STATE: usize = 0;
const W_STOP: usize = 32;
const W_BACK_NOTIFICATIONS: usize = 64;
const W_BACK_SERVED_LO: usize = 65;
const W_BACK_SERVED_HI: usize = 66;
const W_PING: usize = 512;

impl Control {
    /// Size of the control page.
    pub const BYTES: u64 = 4096;

    /// A fresh zeroed control page in a new memfd (returned for the child to inherit).
    pub fn create() -> Result<(File, Control)> {
        let file = sys::shared_file("xenio-bench-control", Self::BYTES)?;
        let control = Self::open(&file)?;
        Ok((file, control))
    }

    /// Map the control page in `file`.
    pub fn open(file: &File) -> Result<Control> {
        let region = MmapRegion::from_file(file)
            .map_err(|e| BenchError::io("mapping the control page", e))?;
        if region.len_bytes() as u64 != Self::BYTES {
            return Err(BenchError::Usage(format!(
                "the control page has {} bytes, not {}",
                region.len_bytes(),
                Self::BYTES
            )));
        }
        Ok(Control { region })
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        &self.region.words()[i]
    }

    /// The peer's state (`STATE_*`).
    pub fn state(&self) -> u32 {
        // Acquire: pairs with the Release in `set_state`, so what the peer did
        // before (attach, counters) is visible.
        self.word(W_STATE).load(Ordering::Acquire)
    }

    /// Set the peer's state.
    pub fn set_state(&self, state: u32) {
        self.word(W_STATE).store(state, Ordering::Release);
    }

    /// Tell the peer to stop once it runs out of work.
    pub fn request_stop(&self) {
        self.word(W_STOP).store(1, Ordering::SeqCst);
    }

    /// Whether the parent asked the peer to stop.
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.word(W_STOP).load(Ordering::Acquire) != 0
    }

    /// Doorbells the backend has rung so far (wrapping).
    pub fn back_notifications(&self) -> u32 {
        self.word(W_BACK_NOTIFICATIONS).load(Ordering::Relaxed)
    }

    /// Publish the backend's doorbell count.
    #[inline]
    pub fn set_back_notifications(&self, n: u64) {
        self.word(W_BACK_NOTIFICATIONS)
            .store(n as u32, Ordering::Relaxed);
    }

    /// Requests the backend answered (read after it exited).
    pub fn back_served(&self) -> u64 {
        let lo = self.word(W_BACK_SERVED_LO).load(Ordering::Relaxed);
        let hi = self.word(W_BACK_SERVED_HI).load(Ordering::Relaxed);
        u64::from(hi) << 32 | u64::from(lo)
    }

    /// Publish the backend's final request count.
    pub fn set_back_served(&self, n: u64) {
        self.word(W_BACK_SERVED_LO)
            .store(n as u32, Ordering::Relaxed);
        self.word(W_BACK_SERVED_HI)
            .store((n >> 32) as u32, Ordering::Relaxed);
    }

    /// The ping-pong word.
    pub fn ping(&self) -> &AtomicU32 {
        self.word(W_PING)
    }
}

/// How to start a peer.
#[derive(Debug)]
pub struct PeerSpawn<'a> {
    /// The configuration's name (for messages).
    pub config: &'a str,
    /// What the peer does.
    pub role: PeerRole,
    /// How it waits.
    pub wait: WaitMode,
    /// Ring page order.
    pub order: u32,
    /// Its CPU.
    pub core: usize,
    /// Yield instead of spinning.
    pub yield_cpu: bool,
    /// Its time limit.
    pub timeout: Duration,
    /// The ring's memfd (ring backend only).
    pub ring: Option<&'a File>,
    /// The control page's memfd.
    pub control: &'a File,
    /// The doorbells (event mode only).
    pub bells: Option<&'a Bells>,
    /// Testing aid: answer this request number with a wrong id.
    pub corrupt_response: Option<u64>,
}

/// How long a peer may take to attach and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer may take to exit once told to stop.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running peer process. Dropping it without [`PeerProcess::finish`] kills and
/// reaps the child, so no error path leaves a process behind.
#[derive(Debug)]
pub struct PeerProcess {
    child: Child,
    config: String,
    reaped: bool,
}

impl PeerProcess {
    /// Start the peer.
    pub fn spawn(spec: PeerSpawn<'_>) -> Result<Self> {
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::io("finding this executable to re-run it", e))?;
        let mut cmd = Command::new(exe);
        let (wait, spin_us) = match spec.wait {
            WaitMode::Polling => ("polling", 0),
            WaitMode::Event { spin } => ("event", spin.as_micros()),
        };
        let role = match spec.role {
            PeerRole::RingBackend => "ring-backend",
            PeerRole::PingPong => "ping-pong",
        };
        cmd.arg("ring-peer")
            .args(["--role", role, "--wait", wait])
            .arg(format!("--spin-us={spin_us}"))
            .arg(format!("--order={}", spec.order))
            .arg(format!("--control-fd={}", spec.control.as_raw_fd()))
            .arg(format!("--core={}", spec.core))
            .arg(format!("--parent-pid={}", std::process::id()))
            .arg(format!("--timeout-s={}", spec.timeout.as_secs().max(1)))
            .arg(format!("--config={}", spec.config));
        if spec.yield_cpu {
            cmd.arg("--yield-cpu");
        }
        if let Some(seq) = spec.corrupt_response {
            cmd.arg(format!("--corrupt-response={seq}"));
        }
        if let Some(ring) = spec.ring {
            cmd.arg(format!("--ring-fd={}", ring.as_raw_fd()));
        }
        match spec.bells {
            Some(b) => {
                cmd.stdin(Stdio::from(b.to_back.try_clone_fd()?));
                cmd.stdout(Stdio::from(b.to_front.try_clone_fd()?));
            }
            None => {
                cmd.stdin(Stdio::null());
                cmd.stdout(Stdio::null());
            }
        }
        let inherited: Vec<&File> = spec.ring.into_iter().chain([spec.control]).collect();
        for f in &inherited {
            sys::set_inheritable(f, true)?;
        }
        let spawned = cmd.spawn();
        // From here on the child, if any, is owned by a `PeerProcess`: an error below
        // kills it.
        let peer = spawned
            .map(|child| PeerProcess {
                child,
                config: spec.config.to_string(),
                reaped: false,
            })
            .map_err(|e| {
                BenchError::io(format!("starting the peer process of `{}`", spec.config), e)
            });
        for f in &inherited {
            sys::set_inheritable(f, false)?;
        }
        peer
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        if !self.reaped {
            // Errors mean it is already gone; either way it is reaped below.
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// Wait until the peer reports ready (attached and pinned).
    pub fn wait_ready(&mut self, control: &Control) -> Result<()> {
        let start = Instant::now();
        loop {
            if control.state() == STATE_READY {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                return Err(BenchError::PeerFailed {
                    pid: self.pid(),
                    config: self.config.clone(),
                    status,
                    detail: " before it was ready",
                });
            }
            if start.elapsed() > READY_TIMEOUT {
                self.kill();
                return Err(BenchError::PeerTimeout {
                    pid: self.pid(),
                    config: self.config.clone(),
                    what: "get ready",
                    secs: READY_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let status = self
            .child
            .try_wait()
            .map_err(|e| BenchError::io("waitpid on the peer process", e))?;
        if status.is_some() {
            self.reaped = true;
        }
        Ok(status)
    }

    /// After [`Control::request_stop`] (and a doorbell in event mode): wait for the
    /// peer to exit, and fail unless it exited cleanly.
    pub fn finish(mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                return Err(BenchError::PeerFailed {
                    pid: self.pid(),
                    config: self.config.clone(),
                    status,
                    detail: "",
                });
            }
            if start.elapsed() > EXIT_TIMEOUT {
                self.kill();
                return Err(BenchError::PeerTimeout {
                    pid: self.pid(),
                    config: self.config.clone(),
                    what: "exit after being told to stop",
                    secs: EXIT_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Liveness for PeerProcess {
    fn check(&mut self) -> Result<()> {
        match self.try_wait()? {
            None => Ok(()),
            Some(status) => Err(BenchError::PeerFailed {
                pid: self.pid(),
                config: self.config.clone(),
                status,
                detail: " while the measurement was still running",
            }),
        }
    }

    fn config(&self) -> &str {
        &self.config
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child's view of its parent: still there, and still within the time limit?
#[derive(Debug)]
pub struct ParentWatch {
    parent_pid: i32,
    deadline: Instant,
    timeout_s: u64,
    config: String,
}

impl ParentWatch {
    /// Watch parent `parent_pid`, giving up `timeout_s` seconds from now;
    /// `config` names the measurement in errors.
    pub fn new(parent_pid: i32, timeout_s: u64, config: &str) -> Self {
        ParentWatch {
            parent_pid,
            deadline: Instant::now() + Duration::from_secs(timeout_s),
            timeout_s,
            config: config.to_string(),
        }
    }
}

impl Liveness for ParentWatch {
    fn check(&mut self) -> Result<()> {
        if getppid().as_raw() != self.parent_pid {
            return Err(BenchError::ParentGone {
                expected: self.parent_pid,
            });
        }
        if Instant::now() > self.deadline {
            return Err(BenchError::PeerDeadline {
                secs: self.timeout_s,
            });
        }
        Ok(())
    }

    fn config(&self) -> &str {
        &self.config
    }

    fn stall_limit(&self) -> Option<Duration> {
        // The parent decides when the peer is stuck; the peer only stops when told,
        // when the parent is gone, or at its deadline.
        None
    }
}

/// The doorbells as the child inherited them: stdin (rung by the frontend) and
/// stdout (rung by the backend).
pub fn inherited_bells() -> Result<Bells> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>, name: &str| {
        fd.try_clone_to_owned()
            .map_err(|e| BenchError::io(format!("duplicating the doorbell on {name}"), e))
    };
    Ok(Bells {
        to_back: Doorbell::from_fd(dup(std::io::stdin().as_fd(), "stdin")?),
        to_front: Doorbell::from_fd(dup(std::io::stdout().as_fd(), "stdout")?),
    })
}
