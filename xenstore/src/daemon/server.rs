//! The daemon: a [`StoreCore`] served on Unix sockets, one per domain.
//!
//! Each accepted connection gets a reader thread (read a message, hand it to
//! the core, repeat) and a writer thread (send what the connection's queue
//! holds). A client that never reads blocks only its own writer: its watch
//! events are capped in its queue, and its reader stops taking requests while
//! its replies are unsent. The core's lock is never held across socket I/O.

use super::path::domain_path;
use super::queue::Popped;
use super::quotas::Quotas;
use super::requests::{DomainHooks, StoreCore};
use crate::error::{Error, Result};
use crate::wire::{ReadOutcome, read_message};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xenio_xen_sys::DomId;

/// How to run a [`Daemon`].
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The run directory; the daemon's files go in `RUN/xenstored/`.
    pub run_dir: PathBuf,
    /// Quotas (xenstored's defaults).
    pub quotas: Quotas,
    /// Domains introduced at start-up (as if dom0 sent XS_INTRODUCE).
    pub domains: Vec<DomId>,
    /// Connections served at once, all sockets together; further ones are
    /// closed at once. An eighth of them (at most 64) is kept for dom0: guests
    /// together, and each guest within its [`Quotas::connections`], never take
    /// the connections the toolstack needs.
    pub max_connections: usize,
}

impl DaemonConfig {
    /// Defaults with this run directory.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        DaemonConfig {
            run_dir: run_dir.into(),
            quotas: Quotas::default(),
            domains: vec![],
            max_connections: 1024,
        }
    }
}

/// A running store daemon. Dropping it (or [`Daemon::shutdown`]) stops it and
/// removes its sockets.
pub struct Daemon {
    core: Arc<StoreCore>,
    shared: Arc<Shared>,
    main: Option<Listener>,
    _lock: Flock<File>,
}

struct Listener {
    /// Dropping the write end of this pipe wakes the accept loop, which exits.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Listener {
    fn stop(&mut self, join: bool) {
        self.stop.take();
        let _ = std::fs::remove_file(&self.path);
        if join {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

struct Shared {
    dir: PathBuf,
    core: Weak<StoreCore>,
    listeners: Mutex<HashMap<DomId, Listener>>,
    /// Every open connection: its domain and a handle to shut it down.
    streams: Mutex<HashMap<u64, (DomId, UnixStream)>>,
    /// [`Quotas::connections`].
    per_guest: usize,
    next_stream: AtomicU64,
    max_connections: usize,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let c = context.into();
    move |e| Error::io(c, e)
}

/// Bind a listening socket at `path` (owner-only access) with an accept thread
/// serving connections as `domid`.
fn listen(shared: &Arc<Shared>, path: &Path, domid: DomId) -> io::Result<Listener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let (stop_rx, stop_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let sh = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("xs-accept-{domid}"))
        .spawn(move || accept_loop(&sh, &listener, &stop_rx, domid))?;
    Ok(Listener {
        stop: Some(stop_tx),
        thread: Some(thread),
        path: path.to_path_buf(),
    })
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener, stop: &OwnedFd, domid: DomId) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(%domid, "poll on the listening socket: {e}");
                return;
            }
        }
        if fds[1].any().unwrap_or(true) || shared.stopping.load(Ordering::Acquire) {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => shared.serve(stream, domid),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%domid, "accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Shared {
    /// Why a new connection of `domid` must be refused, if it must: the
    /// daemon's limit, the guests' share of it (the rest is dom0's), or the
    /// domain's own quota.
    fn refusal(&self, streams: &HashMap<u64, (DomId, UnixStream)>, domid: DomId) -> Option<String> {
        if streams.len() >= self.max_connections {
            return Some(format!(
                "the daemon serves {} at most",
                self.max_connections
            ));
        }
        if domid == DomId::DOM0 {
            return None;
        }
        let dom0_share = (self.max_connections / 8).clamp(1, 64);
        let guests_max = self.max_connections.saturating_sub(dom0_share);
        let guests = streams.values().filter(|(d, _)| *d != DomId::DOM0).count();
        if guests >= guests_max {
            return Some(format!("guests hold {guests}, the rest is kept for dom0"));
        }
        let mine = streams.values().filter(|(d, _)| *d == domid).count();
        if mine >= self.per_guest {
            return Some(format!("the domain's quota is {}", self.per_guest));
        }
        None
    }

    fn serve(self: &Arc<Self>, stream: UnixStream, domid: DomId) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let handle = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%domid, "cloning a socket: {e}");
                return;
            }
        };
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        {
            let mut streams = lock(&self.streams);
            if let Some(why) = self.refusal(&streams, domid) {
                tracing::warn!(%domid, "too many connections ({why}): refused");
                return;
            }
            streams.insert(id, (domid, handle));
        }
        let sh = self.clone();
        let on_exit = Box::new(move || {
            lock(&sh.streams).remove(&id);
        });
        if let Err(e) = spawn_connection(&core, domid, stream, Some(on_exit)) {
            tracing::warn!(%domid, "serving a connection: {e}");
            lock(&self.streams).remove(&id);
        }
    }
}

/// Serve one client stream as `domid` on threads of its own (what the daemon
/// does for each accepted connection): usable with any connected stream, e.g.
/// one end of a `UnixStream::pair()`.
pub fn serve_stream(core: &Arc<StoreCore>, domid: DomId, stream: UnixStream) -> Result<()> {
    spawn_connection(core, domid, stream, None)
}

type OnExit = Box<dyn FnOnce() + Send>;

/// Stack of a connection thread: the store's operations are iterative, so a
/// small stack keeps a thousand connections cheap.
const CONN_STACK: usize = 512 * 1024;

fn spawn_connection(
    core: &Arc<StoreCore>,
    domid: DomId,
    stream: UnixStream,
    on_exit: Option<OnExit>,
) -> Result<()> {
    stream
        .set_nonblocking(false)
        .map_err(io_err("socket mode"))?;
    let conn = Arc::new(core.connect(domid)?);
    let mut wstream = stream.try_clone().map_err(io_err("cloning a socket"))?;
    let wconn = conn.clone();
    std::thread::Builder::new()
        .name(format!("xs-d{domid}-out"))
        .stack_size(CONN_STACK)
        .spawn(move || {
            loop {
                match wconn.next_output(None) {
                    Popped::Message(m) => {
                        if let Err(e) = wstream.write_all(&m.encode()) {
                            tracing::debug!(domid = %wconn.domid(), "write: {e}");
                            break;
                        }
                    }
                    Popped::Timeout => continue,
                    Popped::Closed => break,
                }
            }
            // Wake the reader (blocked in read, or waiting for room to reply).
            wconn.close();
            let _ = wstream.shutdown(std::net::Shutdown::Both);
        })
        .map_err(io_err("spawning a connection thread"))?;
    let mut rstream = stream;
    std::thread::Builder::new()
        .name(format!("xs-d{domid}-in"))
        .stack_size(CONN_STACK)
        .spawn(move || {
            loop {
                match read_message(&mut rstream) {
                    Ok(ReadOutcome::Message(m)) => {
                        if !conn.handle(&m) {
                            break;
                        }
                    }
                    Ok(ReadOutcome::Eof) => break,
                    Ok(ReadOutcome::Truncated) => {
                        tracing::debug!(%domid, "client left in the middle of a message");
                        break;
                    }
                    Ok(ReadOutcome::TooLong(len)) => {
                        tracing::warn!(%domid, len, "payload above 4096 bytes: connection closed");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(%domid, "read: {e}");
                        break;
                    }
                }
            }
            conn.close();
            let _ = rstream.shutdown(std::net::Shutdown::Both);
            if let Some(f) = on_exit {
                f();
            }
        })
        .map_err(io_err("spawning a connection thread"))?;
    Ok(())
}

struct Hooks(Arc<Shared>);

impl DomainHooks for Hooks {
    fn introduce(&self, domid: DomId) -> io::Result<()> {
        let path = self.0.dir.join("domain").join(domid.0.to_string());
        let l = listen(&self.0, &path, domid)?;
        tracing::info!(%domid, socket = %path.display(), "domain socket");
        if let Some(mut old) = lock(&self.0.listeners).insert(domid, l) {
            old.stop.take();
        }
        Ok(())
    }

    fn release(&self, domid: DomId) {
        // Not joined: the accept thread may be waiting for the store's lock,
        // which our caller holds. It exits on its own.
        if let Some(mut l) = lock(&self.0.listeners).remove(&domid) {
            l.stop(false);
        }
    }
}

impl Daemon {
    /// Start serving: take the lock, refuse if another daemon listens on the
    /// socket, remove stale sockets, listen, introduce the configured domains.
    pub fn start(config: DaemonConfig) -> Result<Daemon> {
        let dir = config.run_dir.join("xenstored");
        let domain_dir = dir.join("domain");
        std::fs::create_dir_all(&domain_dir)
            .map_err(io_err(format!("creating {}", domain_dir.display())))?;
        let lock_path = dir.join("lock");
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("opening {}", lock_path.display())))?;
        let lock_file = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            Error::Unavailable(format!(
                "another xenio store daemon is running on {} (it holds {})",
                config.run_dir.display(),
                lock_path.display()
            ))
        })?;
        let socket = dir.join("socket");
        if UnixStream::connect(&socket).is_ok() {
            return Err(Error::Unavailable(format!(
                "something already listens on {}: is another xenstored running?",
                socket.display()
            )));
        }
        // Stale sockets of a daemon that died.
        remove_sockets(&dir)?;
        remove_sockets(&domain_dir)?;

        let core = StoreCore::new(config.quotas.clone());
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            core: Arc::downgrade(&core),
            listeners: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
            max_connections: config.max_connections.max(1),
            per_guest: config.quotas.connections.max(1),
            stopping: AtomicBool::new(false),
        });
        core.set_hooks(Arc::new(Hooks(shared.clone())));
        let main = listen(&shared, &socket, DomId(0))
            .map_err(io_err(format!("listening on {}", socket.display())))?;
        let mut daemon = Daemon {
            core,
            shared,
            main: Some(main),
            _lock: lock_file,
        };
        for d in &config.domains {
            if let Err(e) = daemon.core.introduce(*d, "0", "0") {
                daemon.stop();
                return Err(e);
            }
        }
        tracing::info!(socket = %socket.display(), "xenstored listening");
        Ok(daemon)
    }

    /// The store being served.
    pub fn core(&self) -> &Arc<StoreCore> {
        &self.core
    }

    /// `RUN/xenstored/socket`: dom0's socket.
    pub fn socket_path(&self) -> PathBuf {
        self.shared.dir.join("socket")
    }

    /// `RUN/xenstored/domain/<domid>`: a domain's socket (it exists while the
    /// domain is introduced).
    pub fn domain_socket_path(&self, domid: DomId) -> PathBuf {
        self.shared.dir.join("domain").join(domid.0.to_string())
    }

    /// The home path of a domain, `/local/domain/<domid>`.
    pub fn domain_path(domid: DomId) -> String {
        domain_path(domid.0.into())
    }

    /// Stop: close the listening sockets and every connection, remove the
    /// socket files.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(mut m) = self.main.take() {
            m.stop(true);
        }
        let listeners: Vec<Listener> = lock(&self.shared.listeners)
            .drain()
            .map(|(_, l)| l)
            .collect();
        for mut l in listeners {
            l.stop(true);
        }
        self.core.close_all();
        for (_, s) in lock(&self.shared.streams).values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Let the connection threads see it (bounded: they only finish a write).
        let deadline = Instant::now() + Duration::from_secs(2);
        while !lock(&self.shared.streams).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = remove_sockets(&self.shared.dir.join("domain"));
        let _ = std::fs::remove_file(self.shared.dir.join("socket"));
        tracing::info!("xenstored stopped");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn remove_sockets(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_socket()) {
            std::fs::remove_file(e.path())
                .map_err(io_err(format!("removing stale {}", e.path().display())))?;
        }
    }
    Ok(())
}
