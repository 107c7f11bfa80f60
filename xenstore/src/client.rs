//! xenio's store client: the xenstore wire protocol over a Unix socket (xenio's
//! local daemon, or the real xenstored at `/run/xenstored/socket`) or over the
//! `/dev/xen/xenbus` character device (a domain's kernel-provided connection).
//!
//! One connection serves any number of threads: requests carry a `req_id`, a
//! reader thread matches replies to their requests and routes watch events to
//! the watch they belong to. Every reply is awaited with a timeout, so a dead
//! daemon is an error, not a hang.
//!
//! ```no_run
//! use std::time::Duration;
//! use xenio_xenstore::{Client, Store, Tx, Watch};
//!
//! let xs = Client::connect_default()?;
//! let mut w = xs.watch("/local/domain/0/backend", "be")?;
//! // The first event is the one every watch gets on registration.
//! let first = w.next_event(Some(Duration::from_secs(5)))?;
//! xs.transaction(16, |tx| xs.write(tx, "/local/domain/0/backend/x", b"1"))?;
//! # Ok::<(), xenio_xenstore::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::store::{Perm, Store, Tx, Watch, WatchEvent};
use crate::wire::{Message, ReadOutcome, XsError, join_strings, read_message, split_strings};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use xenio_xen_sys::DomId;
use xenio_xen_sys::xs_wire::{XENSTORE_PAYLOAD_MAX, XsdSockmsgType as T};

/// The real xenstored's socket.
pub const XENSTORED_SOCKET: &str = "/run/xenstored/socket";
/// The xenbus device of a Linux domain.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// How long a request waits for its reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Watch events a [`ClientWatch`] holds. An event that finds the queue full
/// replaces the whole backlog with one event for the watched path itself (see
/// [`ClientWatch`]), so a watch nobody reads holds at most this many events
/// (XSA-349: unbounded watch queues let a guest run its backend out of memory).
pub const WATCH_QUEUE: usize = 8192;

/// The byte stream to the store.
enum Transport {
    Socket(UnixStream),
    Device(File),
}

impl Transport {
    fn try_clone(&self) -> io::Result<Transport> {
        Ok(match self {
            Transport::Socket(s) => Transport::Socket(s.try_clone()?),
            Transport::Device(f) => Transport::Device(f.try_clone()?),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Socket(s) => s.as_fd(),
            Transport::Device(f) => f.as_fd(),
        }
    }

    fn shutdown(&self) {
        if let Transport::Socket(s) = self {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Socket(s) => s.read(buf),
            Transport::Device(f) => f.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Socket(s) => s.write(buf),
            Transport::Device(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Pending {
    /// Why the connection is gone, once it is.
    closed: Option<String>,
    waiting: HashMap<u32, Sender<Message>>,
}

struct WatchSlot {
    tx: Sender<WatchEvent>,
    /// The queue's other end, to empty it when it overflows.
    rx: Receiver<WatchEvent>,
    /// The watched path, as given (what the overflow event names).
    path: String,
    token: String,
    /// Events the owner will not see one by one (shared with the [`ClientWatch`]).
    dropped: Arc<AtomicU64>,
}

struct Shared {
    what: String,
    writer: Mutex<Transport>,
    pending: Mutex<Pending>,
    watches: Mutex<HashMap<Vec<u8>, WatchSlot>>,
    next_req: AtomicU32,
    next_watch: AtomicU64,
    timeout_ms: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection to a xenstore. `Send + Sync`: share it between threads (e.g. in
/// an `Arc`). Dropping it closes the connection; watches then report it closed.
pub struct Client {
    shared: Arc<Shared>,
    stop: Option<OwnedFd>,
    reader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("to", &self.shared.what)
            .finish()
    }
}

impl Client {
    /// Connect to a store: a Unix socket (the local daemon's
    /// `RUN/xenstored/socket` or `.../domain/<id>`, xenstored's
    /// `/run/xenstored/socket`) or the `/dev/xen/xenbus` device.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `path` does not exist or cannot be connected to or opened;
    /// [`Error::Unavailable`] if it is neither a socket nor a character device.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenio_xenstore::daemon::{Daemon, DaemonConfig};
    /// use xenio_xenstore::{Client, Store, Tx};
    ///
    /// let run = tempfile::tempdir()?;
    /// let daemon = Daemon::start(DaemonConfig::new(run.path()))?;
    /// let xs = Client::connect(daemon.socket_path())?;
    /// xs.write(Tx::NONE, "/tool/x", b"1")?;
    /// let e = xs.read(Tx::NONE, "/tool/y").unwrap_err();
    /// assert!(e.is_not_found());
    /// assert_eq!(e.errno(), Some(xenio_xenstore::XsError::ENOENT));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("xenstore {}", path.display()), e))?;
        let t = if meta.file_type().is_socket() {
            Transport::Socket(
                UnixStream::connect(path)
                    .map_err(|e| Error::io(format!("connecting to {}", path.display()), e))?,
            )
        } else if meta.file_type().is_char_device() {
            Transport::Device(
                File::options()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?,
            )
        } else {
            return Err(Error::Unavailable(format!(
                "{} is neither a socket nor a character device",
                path.display()
            )));
        };
        Self::start(t, path.display().to_string())
    }

    /// Connect the way xenstore-utils do: `$XENSTORED_PATH` if set, else
    /// `/run/xenstored/socket`; if that fails, `/dev/xen/xenbus`.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] naming both places tried (and `XENSTORED_PATH`).
    pub fn connect_default() -> Result<Client> {
        let socket = default_socket(std::env::var_os("XENSTORED_PATH"));
        match Self::connect(&socket) {
            Ok(c) => Ok(c),
            Err(first) => Self::connect(XENBUS_DEVICE).map_err(|second| {
                Error::Unavailable(format!(
                    "no xenstore: {first}; {second} (set XENSTORED_PATH to a store socket, \
                     e.g. `xenio store`'s RUN/xenstored/socket)"
                ))
            }),
        }
    }

    /// A client over an already connected stream (e.g. one end of a
    /// `UnixStream::pair()` served by [`crate::daemon::serve_stream`]).
    pub fn from_stream(stream: UnixStream) -> Result<Client> {
        Self::start(Transport::Socket(stream), "a socket".into())
    }

    /// A client over an open device file speaking the protocol (what
    /// [`Client::connect`] does for `/dev/xen/xenbus`).
    pub fn from_device(file: File) -> Result<Client> {
        Self::start(Transport::Device(file), "a device".into())
    }

    fn start(t: Transport, what: String) -> Result<Client> {
        if let Transport::Socket(s) = &t {
            // A daemon that stops reading must not block writers forever.
            s.set_write_timeout(Some(DEFAULT_TIMEOUT))
                .map_err(|e| Error::io("socket timeout", e))?;
        }
        let reader = t
            .try_clone()
            .map_err(|e| Error::io(format!("cloning the connection to {what}"), e))?;
        let (stop_rx, stop_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let shared = Arc::new(Shared {
            what,
            writer: Mutex::new(t),
            pending: Mutex::new(Pending {
                closed: None,
                waiting: HashMap::new(),
            }),
            watches: Mutex::new(HashMap::new()),
            next_req: AtomicU32::new(1),
            next_watch: AtomicU64::new(1),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
        });
        let sh = shared.clone();
        let handle = std::thread::Builder::new()
            .name("xenstore-reader".into())
            .spawn(move || reader_loop(&sh, reader, stop_rx))
            .map_err(|e| Error::io("spawning the xenstore reader", e))?;
        Ok(Client {
            shared,
            stop: Some(stop_tx),
            reader: Some(handle),
        })
    }

    /// How long requests wait for their reply.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.shared.timeout_ms.load(Ordering::Relaxed))
    }

    /// Change how long requests wait for their reply.
    pub fn set_timeout(&self, t: Duration) {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1);
        self.shared.timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the connection is gone (the store closed it or went away).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.pending).closed.is_some()
    }

    fn request(&self, ty: T, tx: Tx, payload: Vec<u8>, path: &str) -> Result<Vec<u8>> {
        self.shared.request(ty, tx, payload, path, self.timeout())
    }

    fn one(&self, ty: T, tx: Tx, path: &str) -> Result<Vec<u8>> {
        self.request(ty, tx, join_strings(&[path]), path)
    }

    /// XS_GET_DOMAIN_PATH: the home path of `domid`.
    pub fn get_domain_path(&self, domid: DomId) -> Result<String> {
        let r = self.one(T::GetDomainPath, Tx::NONE, &domid.0.to_string())?;
        text(&r, "GET_DOMAIN_PATH")
    }

    /// XS_INTRODUCE (dom0 only): let `domid` talk to the store. The local daemon
    /// then creates its socket and `/local/domain/<domid>`.
    pub fn introduce(&self, domid: DomId, mfn: u64, port: u32) -> Result<()> {
        let p = join_strings(&[domid.0.to_string(), mfn.to_string(), port.to_string()]);
        self.request(T::Introduce, Tx::NONE, p, &domid.0.to_string())
            .map(drop)
    }

    /// XS_RELEASE (dom0 only): disconnect `domid`.
    pub fn release(&self, domid: DomId) -> Result<()> {
        self.one(T::Release, Tx::NONE, &domid.0.to_string())
            .map(drop)
    }

    /// XS_IS_DOMAIN_INTRODUCED (dom0 only).
    pub fn is_domain_introduced(&self, domid: DomId) -> Result<bool> {
        let r = self.one(T::IsDomainIntroduced, Tx::NONE, &domid.0.to_string())?;
        Ok(r.starts_with(b"T"))
    }

    /// XS_RESET_WATCHES: drop every watch and transaction of this connection on
    /// the store's side (existing [`ClientWatch`]es then get nothing more).
    pub fn reset_watches(&self) -> Result<()> {
        self.request(T::ResetWatches, Tx::NONE, b"\0".to_vec(), "")
            .map(drop)
    }

    /// XS_CONTROL (dom0 only) with a command and its arguments; the reply payload.
    pub fn control(&self, args: &[&str]) -> Result<Vec<u8>> {
        let what = args.first().copied().unwrap_or_default();
        self.request(T::Control, Tx::NONE, join_strings(args), what)
    }

    fn directory_part(&self, tx: Tx, path: &str) -> Result<Vec<String>> {
        'again: loop {
            let mut names = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<Vec<u8>> = None;
            loop {
                let p = join_strings(&[path.to_string(), offset.to_string()]);
                let r = self.request(T::DirectoryPart, tx, p, path)?;
                let parts = split_strings(&r);
                let Some((g, rest)) = parts.split_first() else {
                    return Err(bad_reply("DIRECTORY_PART", &r));
                };
                match &generation {
                    Some(prev) if prev.as_slice() != *g => continue 'again,
                    _ => generation = Some(g.to_vec()),
                }
                let mut done = false;
                for n in rest {
                    if n.is_empty() {
                        done = true;
                        break;
                    }
                    offset += n.len() + 1;
                    names.push(String::from_utf8_lossy(n).into_owned());
                }
                if done || rest.is_empty() {
                    return Ok(names);
                }
            }
        }
    }
}

/// The socket [`Client::connect_default`] tries first, given `$XENSTORED_PATH`.
fn default_socket(env: Option<std::ffi::OsString>) -> PathBuf {
    env.filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(XENSTORED_SOCKET))
}

fn bad_reply(op: &str, payload: &[u8]) -> Error {
    Error::Protocol(format!(
        "malformed {op} reply: {:?}",
        String::from_utf8_lossy(payload)
    ))
}

fn text(payload: &[u8], op: &str) -> Result<String> {
    let p = payload.strip_suffix(&[0]).unwrap_or(payload);
    String::from_utf8(p.to_vec()).map_err(|_| bad_reply(op, payload))
}

impl Shared {
    fn request(
        &self,
        ty: T,
        tx: Tx,
        payload: Vec<u8>,
        path: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let op = crate::wire::type_name(ty as u32);
        if payload.len() > XENSTORE_PAYLOAD_MAX {
            return Err(Error::Limit(format!(
                "xenstore {op} {path:?}: request of {} bytes, the limit is {XENSTORE_PAYLOAD_MAX}",
                payload.len()
            )));
        }
        let (s, r) = crossbeam_channel::bounded(1);
        let req_id = {
            let mut p = lock(&self.pending);
            if let Some(why) = &p.closed {
                return Err(Error::Protocol(why.clone()));
            }
            let mut id = self.next_req.fetch_add(1, Ordering::Relaxed);
            while p.waiting.contains_key(&id) {
                id = self.next_req.fetch_add(1, Ordering::Relaxed);
            }
            p.waiting.insert(id, s);
            id
        };
        let msg = Message::new(ty, req_id, tx.0, payload);
        if let Err(e) = lock(&self.writer).write_all(&msg.encode()) {
            lock(&self.pending).waiting.remove(&req_id);
            return Err(Error::io(format!("xenstore {op} {path:?}: sending"), e));
        }
        let reply = match r.recv_timeout(timeout) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.pending).waiting.remove(&req_id);
                return Err(Error::Timeout(
                    timeout,
                    format!("xenstore {op} {path:?} on {}", self.what),
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let why = lock(&self.pending)
                    .closed
                    .clone()
                    .unwrap_or_else(|| "connection closed".into());
                return Err(Error::Protocol(why));
            }
        };
        if reply.type_ == T::Error as u32 {
            let name = text(&reply.payload, "ERROR")?;
            let errno = XsError::from_name(&name).ok_or_else(|| {
                Error::Protocol(format!(
                    "{op} {path:?}: unknown error {name:?} in the reply"
                ))
            })?;
            return Err(Error::Store {
                op,
                path: path.to_string(),
                errno,
            });
        }
        if reply.type_ != ty as u32 {
            return Err(Error::Protocol(format!(
                "{op} {path:?} answered with a {} message",
                crate::wire::type_name(reply.type_)
            )));
        }
        Ok(reply.payload)
    }

    fn close(&self, why: String) {
        let mut p = lock(&self.pending);
        if p.closed.is_none() {
            p.closed = Some(why);
        }
        p.waiting.clear();
        drop(p);
        lock(&self.watches).clear();
    }
}

fn reader_loop(shared: &Shared, mut t: Transport, stop: OwnedFd) {
    let why = loop {
        let mut fds = [
            PollFd::new(t.fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => break format!("polling the connection to {}: {e}", shared.what),
        }
        if fds[1].any().unwrap_or(true) {
            break "the client closed the connection".to_string();
        }
        let msg = match read_message(&mut t) {
            Ok(ReadOutcome::Message(m)) => m,
            Ok(ReadOutcome::Eof) => break format!("{} closed the connection", shared.what),
            Ok(ReadOutcome::Truncated) => {
                break format!("{} closed the connection mid-message", shared.what);
            }
            Ok(ReadOutcome::TooLong(n)) => {
                break format!("{} sent a {n}-byte payload", shared.what);
            }
            Err(e) => break format!("reading from {}: {e}", shared.what),
        };
        if msg.type_ == T::WatchEvent as u32 {
            route_event(shared, &msg);
            continue;
        }
        let waiter = lock(&shared.pending).waiting.remove(&msg.req_id);
        match waiter {
            Some(s) => {
                let _ = s.send(msg);
            }
            None => tracing::trace!(req_id = msg.req_id, "reply nobody waits for"),
        }
    };
    tracing::debug!("xenstore connection ends: {why}");
    shared.close(why);
}

fn route_event(shared: &Shared, msg: &Message) {
    let parts = split_strings(&msg.payload);
    let (Some(path), Some(token)) = (parts.first(), parts.get(1)) else {
        tracing::warn!("malformed watch event {:?}", msg.payload);
        return;
    };
    let watches = lock(&shared.watches);
    let Some(slot) = watches.get(*token) else {
        return; // A watch being removed.
    };
    let ev = WatchEvent {
        path: String::from_utf8_lossy(path).into_owned(),
        token: slot.token.clone(),
    };
    if let Err(TrySendError::Full(ev)) = slot.tx.try_send(ev) {
        // Full: the owner has not read for WATCH_QUEUE events. Replace the
        // backlog with one event for the watched path itself, as on
        // registration: "something under here changed, read it again".
        let mut lost = 1u64;
        while slot.rx.try_recv().is_ok() {
            lost += 1;
        }
        slot.dropped.fetch_add(lost, Ordering::Relaxed);
        let _ = slot.tx.try_send(WatchEvent {
            path: slot.path.clone(),
            token: ev.token,
        });
        tracing::warn!(
            path = slot.path,
            token = slot.token,
            lost,
            "watch queue full ({WATCH_QUEUE} events not read): replaced by one event for the watched path"
        );
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.take();
        lock(&self.shared.writer).shutdown();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.shared.close("the client closed the connection".into());
    }
}

/// A registered watch of a [`Client`]: events arrive on a channel, the initial
/// one first. Dropping it unregisters the watch (UNWATCH).
///
/// At most [`WATCH_QUEUE`] events wait. When one more arrives, the waiting
/// events are thrown away and one event for the watched path itself takes
/// their place (the path registration fires), so an owner that re-reads what
/// it watches on every event, as xenio's drivers do, misses nothing, and one
/// that follows event paths learns that it must read everything again;
/// [`ClientWatch::dropped`] counts the events it did not get.
pub struct ClientWatch {
    rx: Receiver<WatchEvent>,
    shared: Arc<Shared>,
    path: String,
    wire_token: Vec<u8>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for ClientWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientWatch")
            .field("path", &self.path)
            .finish()
    }
}

impl ClientWatch {
    /// The watched path, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The channel events arrive on (to `select!` over several watches). It is
    /// disconnected when the connection closes.
    pub fn receiver(&self) -> &Receiver<WatchEvent> {
        &self.rx
    }

    /// Events waiting to be read (at most [`WATCH_QUEUE`]).
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// Events thrown away because the queue was full (each time replaced by
    /// one event for the watched path), since the watch was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Watch for ClientWatch {
    fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        let closed = || {
            let why = lock(&self.shared.pending)
                .closed
                .clone()
                .unwrap_or_else(|| "watch removed".into());
            Error::Protocol(why)
        };
        match timeout {
            None => self.rx.recv().map(Some).map_err(|_| closed()),
            Some(t) => match self.rx.recv_timeout(t) {
                Ok(ev) => Ok(Some(ev)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(closed()),
            },
        }
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        lock(&self.shared.watches).remove(&self.wire_token);
        if lock(&self.shared.pending).closed.is_some() {
            return;
        }
        // Fire and forget: the reply is discarded by the reader.
        let payload = join_strings(&[self.path.as_bytes(), &self.wire_token]);
        let req_id = self.shared.next_req.fetch_add(1, Ordering::Relaxed);
        let msg = Message::new(T::Unwatch, req_id, 0, payload);
        let _ = lock(&self.shared.writer).write_all(&msg.encode());
    }
}

impl Store for Client {
    type Watch = ClientWatch;

    fn read(&self, tx: Tx, path: &str) -> Result<Vec<u8>> {
        self.one(T::Read, tx, path)
    }

    fn write(&self, tx: Tx, path: &str, value: &[u8]) -> Result<()> {
        let mut p = join_strings(&[path]);
        p.extend_from_slice(value);
        self.request(T::Write, tx, p, path).map(drop)
    }

    fn mkdir(&self, tx: Tx, path: &str) -> Result<()> {
        self.one(T::Mkdir, tx, path).map(drop)
    }

    fn rm(&self, tx: Tx, path: &str) -> Result<()> {
        self.one(T::Rm, tx, path).map(drop)
    }

    fn directory(&self, tx: Tx, path: &str) -> Result<Vec<String>> {
        match self.one(T::Directory, tx, path) {
            Ok(r) => Ok(split_strings(&r)
                .into_iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()),
            // Longer than one payload: page through it.
            Err(Error::Store {
                errno: XsError::E2BIG,
                ..
            }) => self.directory_part(tx, path),
            Err(e) => Err(e),
        }
    }

    fn get_perms(&self, tx: Tx, path: &str) -> Result<Vec<Perm>> {
        let r = self.one(T::GetPerms, tx, path)?;
        split_strings(&r)
            .into_iter()
            .map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad_reply("GET_PERMS", &r))
            })
            .collect()
    }

    fn set_perms(&self, tx: Tx, path: &str, perms: &[Perm]) -> Result<()> {
        let mut parts = vec![path.to_string()];
        parts.extend(perms.iter().map(|p| p.to_string()));
        self.request(T::SetPerms, tx, join_strings(&parts), path)
            .map(drop)
    }

    fn transaction_start(&self) -> Result<Tx> {
        let r = self.request(T::TransactionStart, Tx::NONE, b"\0".to_vec(), "")?;
        text(&r, "TRANSACTION_START")?
            .parse::<u32>()
            .map(Tx)
            .map_err(|_| bad_reply("TRANSACTION_START", &r))
    }

    fn transaction_end(&self, tx: Tx, commit: bool) -> Result<()> {
        let p = if commit { b"T\0" } else { b"F\0" };
        self.request(T::TransactionEnd, tx, p.to_vec(), "")
            .map(drop)
    }

    fn watch(&self, path: &str, token: &str) -> Result<ClientWatch> {
        if token.contains('\0') || path.contains('\0') {
            return Err(Error::BadValue {
                what: "watch".into(),
                value: format!("{path:?} {token:?}"),
            });
        }
        // The token on the wire is made unique, so that events are routed to the
        // right watch whatever tokens callers choose.
        let n = self.shared.next_watch.fetch_add(1, Ordering::Relaxed);
        let wire_token = format!("{n:x}:{token}").into_bytes();
        let (tx, rx) = crossbeam_channel::bounded(WATCH_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        lock(&self.shared.watches).insert(
            wire_token.clone(),
            WatchSlot {
                tx,
                rx: rx.clone(),
                path: path.to_string(),
                token: token.to_string(),
                dropped: dropped.clone(),
            },
        );
        let p = join_strings(&[path.as_bytes(), &wire_token]);
        match self.request(T::Watch, Tx::NONE, p, path) {
            Ok(_) => Ok(ClientWatch {
                rx,
                shared: self.shared.clone(),
                path: path.to_string(),
                wire_token,
                dropped,
            }),
            Err(e) => {
                lock(&self.shared.watches).remove(&wire_token);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{Quotas, StoreCore, serve_stream};
    use std::os::fd::OwnedFd;

    #[test]
    fn the_device_transport_speaks_the_protocol() {
        // /dev/xen/xenbus is a file descriptor carrying the same byte stream as
        // the socket: stand in one end of a socket pair, served by the store.
        let core = StoreCore::new(Quotas::default());
        let (ours, theirs) = UnixStream::pair().unwrap();
        serve_stream(&core, DomId(0), theirs).unwrap();
        let dev = File::from(OwnedFd::from(ours));
        let xs = Client::from_device(dev).unwrap();
        let mut w = xs.watch("/dev", "d").unwrap();
        assert_eq!(
            w.next_event(Some(DEFAULT_TIMEOUT)).unwrap().unwrap().path,
            "/dev"
        );
        xs.write(Tx::NONE, "/dev/x", b"1").unwrap();
        assert_eq!(xs.read(Tx::NONE, "/dev/x").unwrap(), b"1");
        assert_eq!(
            w.next_event(Some(DEFAULT_TIMEOUT)).unwrap().unwrap().path,
            "/dev/x"
        );
        let tx = xs.transaction_start().unwrap();
        xs.rm(tx, "/dev/x").unwrap();
        xs.transaction_end(tx, true).unwrap();
        assert!(xs.read_opt(Tx::NONE, "/dev/x").unwrap().is_none());
        drop(xs);
        drop(w);
    }

    #[test]
    fn a_device_that_ends_fails_requests_at_once() {
        // /dev/null: a character device that reads as end-of-file.
        let xs = Client::connect("/dev/null").unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(xs.read(Tx::NONE, "/x"), Err(Error::Protocol(_))));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(xs.is_closed());
    }

    #[test]
    fn connect_refuses_what_is_not_a_store() {
        assert!(matches!(Client::connect("/"), Err(Error::Unavailable(_))));
        assert!(Client::connect("/nonexistent/socket").is_err());
    }

    #[test]
    fn the_default_socket_honours_xenstored_path() {
        assert_eq!(default_socket(None), PathBuf::from(XENSTORED_SOCKET));
        assert_eq!(
            default_socket(Some("/tmp/s".into())),
            PathBuf::from("/tmp/s")
        );
        assert_eq!(
            default_socket(Some("".into())),
            PathBuf::from(XENSTORED_SOCKET)
        );
    }
}
