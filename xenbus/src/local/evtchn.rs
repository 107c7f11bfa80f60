//! Local event channels: each port is a FIFO in its domain's `evtchn/`
//! directory, held open read-write by the owner. Notifying writes one byte into
//! the peer's FIFO; a full FIFO means an event is already pending, so
//! notifications coalesce. Waiting is `poll` on the FIFO, then draining it. A
//! notification sent while the owner is not waiting stays in the FIFO until it
//! looks, so none is lost.
//!
//! `<port>.info` holds the port's state as one line of text:
//! `unbound <remote-domid> <owner-pid>` or
//! `interdomain <remote-domid> <remote-port> <owner-pid>`.

use super::domain::{LocalDomain, alive};
use crate::error::{Error, Result};
use crate::evtchn::{EventChannel, EventChannels};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xenio_xen_sys::{DomId, Port};

/// Ports per domain (Xen's 2-level ABI has 4096 on 64-bit guests).
pub const MAX_PORTS: u32 = 4096;

/// Event channels of one local domain.
#[derive(Clone, Debug)]
pub struct LocalEventChannels {
    dom: LocalDomain,
}

impl LocalEventChannels {
    /// Event channels acting as `dom`.
    pub fn new(dom: &LocalDomain) -> Self {
        LocalEventChannels { dom: dom.clone() }
    }

    fn dir(&self, domid: DomId) -> PathBuf {
        self.dom.domain_dir(domid).join("evtchn")
    }

    /// Whether `domid`'s port `port` exists and its owner is alive.
    fn port_alive(&self, domid: DomId, port: Port) -> bool {
        read_info(&self.dir(domid).join(format!("{}.info", port.0))).is_ok_and(|i| alive(i.owner))
    }

    /// Create the lowest free port (reclaiming ports of dead processes).
    fn allocate(&self, info: impl Fn(u32) -> String) -> Result<(Port, File)> {
        let dir = self.dir(self.dom.domid());
        for p in 1..MAX_PORTS {
            let fifo = dir.join(p.to_string());
            match nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o660)) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    // Taken, unless its owner is gone.
                    match read_info(&dir.join(format!("{p}.info"))) {
                        Ok(i) if !alive(i.owner) => {
                            let _ = std::fs::remove_file(&fifo);
                            if nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o660)).is_err()
                            {
                                continue;
                            }
                        }
                        _ => continue,
                    }
                }
                Err(e) => return Err(Error::io(format!("creating {}", fifo.display()), e.into())),
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(OFlag::O_NONBLOCK.bits() | OFlag::O_CLOEXEC.bits())
                .open(&fifo)
                .map_err(|e| Error::io(format!("opening {}", fifo.display()), e))?;
            write_info(&dir.join(format!("{p}.info")), &info(p))?;
            return Ok((Port(p), file));
        }
        Err(Error::Limit(format!(
            "domain {} has no free event channel port (max {MAX_PORTS})",
            self.dom.domid()
        )))
    }
}

impl EventChannels for LocalEventChannels {
    type Channel = LocalChannel;

    fn alloc_unbound(&self, remote: DomId) -> Result<LocalChannel> {
        let pid = std::process::id();
        let (port, fifo) = self.allocate(|_| format!("unbound {} {pid}\n", remote.0))?;
        Ok(LocalChannel {
            events: self.clone(),
            port,
            fifo,
            remote,
            peer: Mutex::new(None),
        })
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<LocalChannel> {
        let me = self.dom.domid();
        let pid = std::process::id();
        let rinfo_path = self.dir(remote).join(format!("{}.info", remote_port.0));
        let refuse = |why: String| Error::EventChannel {
            port: remote_port,
            reason: format!("binding to port {remote_port} of domain {remote}: {why}"),
        };
        let rinfo = read_info(&rinfo_path).map_err(|e| refuse(e.to_string()))?;
        if !alive(rinfo.owner) {
            return Err(refuse("its owner is gone".into()));
        }
        match rinfo.state {
            State::Unbound { remote: r } if r == me => {}
            State::Unbound { remote: r } => {
                return Err(refuse(format!("it is reserved for domain {r}")));
            }
            // As in Xen, a port whose peer closed (here: whose peer port is gone, or
            // whose owner died) is unbound again, for the same remote domain.
            State::Interdomain { remote: r, port: p } if r == me && !self.port_alive(me, p) => {}
            State::Interdomain { .. } => return Err(refuse("it is already bound".into())),
        }
        let (port, fifo) =
            self.allocate(|_| format!("interdomain {} {} {pid}\n", remote.0, remote_port.0))?;
        // Tell the remote end who it is connected to.
        write_info(
            &rinfo_path,
            &format!("interdomain {} {} {}\n", me.0, port.0, rinfo.owner),
        )?;
        let ch = LocalChannel {
            events: self.clone(),
            port,
            fifo,
            remote,
            peer: Mutex::new(None),
        };
        ch.connect(remote_port)?;
        Ok(ch)
    }
}

/// One local port.
#[derive(Debug)]
pub struct LocalChannel {
    events: LocalEventChannels,
    port: Port,
    fifo: File,
    remote: DomId,
    /// The peer's FIFO, opened for writing once the port is bound.
    peer: Mutex<Option<(Port, File)>>,
}

impl LocalChannel {
    fn err(&self, reason: String) -> Error {
        Error::EventChannel {
            port: self.port,
            reason,
        }
    }

    /// Open the peer's FIFO for writing. `Ok(false)` if the peer is gone (its
    /// FIFO missing, or held by nobody because its owner died): like Xen, a send
    /// to a dead peer is dropped, not an error.
    fn connect(&self, remote_port: Port) -> Result<bool> {
        let path = self.events.dir(self.remote).join(remote_port.0.to_string());
        let f = match OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_NONBLOCK.bits() | OFlag::O_CLOEXEC.bits())
            .open(&path)
        {
            Ok(f) => f,
            Err(e)
                if e.raw_os_error() == Some(libc::ENXIO)
                    || e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(false);
            }
            Err(e) => return Err(self.err(format!("opening the peer's {}: {e}", path.display()))),
        };
        *self
            .peer
            .lock()
            .map_err(|_| self.err("lock poisoned".into()))? = Some((remote_port, f));
        Ok(true)
    }

    /// The remote end, if bound: (domain, port).
    pub fn remote(&self) -> Result<Option<(DomId, Port)>> {
        let info = read_info(
            &self
                .events
                .dir(self.events.dom.domid())
                .join(format!("{}.info", self.port.0)),
        )?;
        Ok(match info.state {
            State::Interdomain { remote, port } => Some((remote, port)),
            State::Unbound { .. } => None,
        })
    }

    /// Drain the FIFO; `true` if anything was pending.
    fn drain(&self) -> Result<bool> {
        let mut buf = [0u8; 256];
        let mut any = false;
        loop {
            match (&self.fifo).read(&mut buf) {
                Ok(0) => return Ok(any),
                Ok(n) => {
                    any = true;
                    if n < buf.len() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(any),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err(format!("reading: {e}"))),
            }
        }
    }
}

impl AsFd for LocalChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fifo.as_fd()
    }
}

impl EventChannel for LocalChannel {
    fn port(&self) -> Port {
        self.port
    }

    fn notify(&self) -> Result<()> {
        let mut peer = self
            .peer
            .lock()
            .map_err(|_| self.err("lock poisoned".into()))?;
        if peer.is_none() {
            drop(peer);
            // Not bound yet (Xen drops a send on an unbound port), or bound since.
            match self.remote()? {
                Some((_, rport)) => {
                    if !self.connect(rport)? {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            }
            peer = self
                .peer
                .lock()
                .map_err(|_| self.err("lock poisoned".into()))?;
        }
        let Some((_, f)) = peer.as_mut() else {
            return Ok(());
        };
        match f.write(&[1]) {
            Ok(_) => Ok(()),
            // Full: an event is already pending; notifications coalesce.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            // The peer closed its port: like Xen, the send goes nowhere. Forget the
            // writer so a rebinding peer is found next time.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                *peer = None;
                Ok(())
            }
            Err(e) => Err(self.err(format!("notifying: {e}"))),
        }
    }

    fn take_pending(&self) -> Result<bool> {
        self.drain()
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        // Poll first, then drain: a caller sleeps after its ring's final check
        // found nothing, so an event is rarely pending yet, and a read before
        // the poll would be one system call per sleep for nothing (poll
        // returns at once when one is pending: the FIFO is readable).
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // To the microsecond (`ppoll`): a nap of 300 us must not last 1 ms.
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        // Out of time: one last look (a zero timeout is a
                        // look without sleeping).
                        return self.drain();
                    }
                    Some(TimeSpec::from_duration(left))
                }
            };
            let mut fds = [PollFd::new(self.fifo.as_fd(), PollFlags::POLLIN)];
            let ready = match ppoll(&mut fds, left, None) {
                Ok(n) => n > 0,
                Err(Errno::EINTR) => false,
                Err(e) => return Err(self.err(format!("poll: {e}"))),
            };
            if ready && self.drain()? {
                return Ok(true);
            }
        }
    }

    fn unmask(&self) -> Result<()> {
        // Local ports are never masked: draining the FIFO is the acknowledgement.
        Ok(())
    }
}

impl Drop for LocalChannel {
    fn drop(&mut self) {
        // Closing one end of an interdomain channel leaves the other end unbound
        // (for us) again, as in Xen.
        if let Ok(Some((rdom, rport))) = self.remote() {
            let rpath = self.events.dir(rdom).join(format!("{}.info", rport.0));
            if let Ok(i) = read_info(&rpath) {
                if matches!(i.state, State::Interdomain { remote, port } if remote == self.events.dom.domid() && port == self.port)
                {
                    let _ = write_info(
                        &rpath,
                        &format!("unbound {} {}\n", self.events.dom.domid().0, i.owner),
                    );
                }
            }
        }
        let dir = self.events.dir(self.events.dom.domid());
        let _ = std::fs::remove_file(dir.join(self.port.0.to_string()));
        let _ = std::fs::remove_file(dir.join(format!("{}.info", self.port.0)));
    }
}

// ---------------------------------------------------------------- port info files

#[derive(Debug)]
enum State {
    Unbound { remote: DomId },
    Interdomain { remote: DomId, port: Port },
}

#[derive(Debug)]
struct Info {
    state: State,
    owner: u32,
}

fn read_info(path: &std::path::Path) -> Result<Info> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let bad = || Error::BadValue {
        what: path.display().to_string(),
        value: text.clone(),
    };
    let w: Vec<&str> = text.split_whitespace().collect();
    let num = |s: Option<&&str>| s.and_then(|s| s.parse::<u32>().ok()).ok_or_else(bad);
    let dom = |s: Option<&&str>| {
        s.and_then(|s| s.parse::<u16>().ok())
            .map(DomId)
            .ok_or_else(bad)
    };
    match w.first().copied() {
        Some("unbound") if w.len() == 3 => Ok(Info {
            state: State::Unbound {
                remote: dom(w.get(1))?,
            },
            owner: num(w.get(2))?,
        }),
        Some("interdomain") if w.len() == 4 => Ok(Info {
            state: State::Interdomain {
                remote: dom(w.get(1))?,
                port: Port(num(w.get(2))?),
            },
            owner: num(w.get(3))?,
        }),
        _ => Err(bad()),
    }
}

/// Replace an info file atomically (write a temporary, then rename).
fn write_info(path: &std::path::Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f =
        File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}
