//! One end of a device's handshake: its own `state` written, the peer's
//! watched, keys read and parsed.

use super::keys::{self, parse_key};
use crate::error::{Error, Result};
use std::str::FromStr;
use std::time::{Duration, Instant};
use xenio_xen_sys::DomId;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenstore::{Store, Tx, Watch};

/// Read a `state` node. A missing node reads as `Unknown`, which both sides treat
/// as "not there (any more)". So does one the store denies: once a backend
/// removes its directory, a guest reading the backend's `state` gets `EACCES`
/// (the nearest remaining ancestor is dom0's and says nothing to it), not
/// `ENOENT`. Linux's `xenbus_read_driver_state` takes any failed read as
/// `Unknown`; a broken store connection stays an error here.
pub fn read_state<S: Store>(store: &S, path: &str) -> Result<XenbusState> {
    let value = match store.read_string(Tx::NONE, path) {
        Ok(v) => v,
        Err(e) if e.is_not_found() || e.is_denied() => return Ok(XenbusState::Unknown),
        Err(e) => return Err(e.into()),
    };
    if value.trim().is_empty() {
        return Ok(XenbusState::Unknown);
    }
    value.parse().map_err(|_| Error::BadValue {
        what: path.to_string(),
        value,
    })
}

/// Whether the device whose directory is `dir` is gone (its `state` with it):
/// the toolstack removed it (`xl block-detach`, `xl destroy`).
pub fn device_gone<S: Store>(store: &S, dir: &str) -> Result<bool> {
    Ok(store
        .read_opt(Tx::NONE, &format!("{dir}/{}", keys::STATE))?
        .is_none())
}

/// Whether the toolstack took the device whose backend directory is `dir`
/// offline (`online = 0`: detaching, as libxl writes it). A device without
/// the node (one made by hand) is online.
pub fn device_offline<S: Store>(store: &S, dir: &str) -> Result<bool> {
    Ok(store
        .read_opt(Tx::NONE, &format!("{dir}/{}", keys::ONLINE))?
        .is_some_and(|v| v.trim() == "0"))
}

/// Where the toolstack's hotplug script is with a device (read by
/// [`hotplug_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hotplug {
    /// Nothing to wait for: the script said `connected`, or the device has no
    /// script (one made by hand, `--create-device`).
    Done,
    /// The device has a script that has not said `connected` yet.
    Pending,
    /// The script failed (`hotplug-status = error`), with its `hotplug-error`.
    Failed(String),
}

/// Where the hotplug script of the device whose backend directory is `dir`
/// is: a device with a `script` node, or with a `hotplug-status` node (libxl
/// writes it empty for vifs), waits for `hotplug-status = connected`.
pub fn hotplug_state<S: Store>(store: &S, dir: &str) -> Result<Hotplug> {
    let read = |key: &str| store.read_opt(Tx::NONE, &format!("{dir}/{key}"));
    let status = read(keys::HOTPLUG_STATUS)?;
    Ok(match status.as_deref().map(str::trim) {
        Some("connected") => Hotplug::Done,
        Some("error") => Hotplug::Failed(
            read(keys::HOTPLUG_ERROR)?
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the hotplug script failed".into()),
        ),
        Some(_) => Hotplug::Pending,
        None if read(keys::SCRIPT)?.is_some() => Hotplug::Pending,
        None => Hotplug::Done,
    })
}

/// What became of a device a backend closed, waiting in `Closed`
/// ([`Endpoint::wait_reopen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reopen {
    /// The frontend is back at `Initialising`: it asks to be served again.
    Reopen,
    /// The frontend's directory or the device's is gone.
    Removed,
    /// The toolstack detached it while closed (`online = 0`; it wrote
    /// `Closing` and waits for `Closed`, which has been said again).
    Detached,
    /// The caller's stop said so.
    Stopped,
}

/// Which end of the device this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The backend.
    Backend,
    /// The frontend.
    Frontend,
}

/// One end of a device's handshake: writes its own `state`, watches the peer's.
pub struct Endpoint<'s, S: Store> {
    store: &'s S,
    role: Role,
    own: String,
    peer: String,
    peer_id: DomId,
    watch: S::Watch,
}

impl<'s, S: Store> Endpoint<'s, S> {
    /// The backend end of the device whose backend directory is `backend_dir`
    /// (the frontend's path and id are read from it).
    pub fn backend(store: &'s S, backend_dir: &str) -> Result<Self> {
        let peer = store.read_string(Tx::NONE, &format!("{backend_dir}/{}", keys::FRONTEND))?;
        let id = store.read_string(Tx::NONE, &format!("{backend_dir}/{}", keys::FRONTEND_ID))?;
        Self::open(store, Role::Backend, backend_dir, &peer, &id)
    }

    /// The frontend end of the device whose frontend directory is `frontend_dir`.
    pub fn frontend(store: &'s S, frontend_dir: &str) -> Result<Self> {
        let peer = store.read_string(Tx::NONE, &format!("{frontend_dir}/{}", keys::BACKEND))?;
        let id = store.read_string(Tx::NONE, &format!("{frontend_dir}/{}", keys::BACKEND_ID))?;
        Self::open(store, Role::Frontend, frontend_dir, &peer, &id)
    }

    fn open(store: &'s S, role: Role, own: &str, peer: &str, peer_id: &str) -> Result<Self> {
        let peer_id = peer_id
            .trim()
            .parse::<u16>()
            .map(DomId)
            .map_err(|_| Error::BadValue {
                what: format!("{own} peer id"),
                value: peer_id.to_string(),
            })?;
        if !peer.starts_with("/local/domain/") || peer.contains("..") {
            return Err(Error::BadValue {
                what: format!("{own} peer path"),
                value: peer.to_string(),
            });
        }
        let watch = store.watch(
            &format!("{peer}/{}", keys::STATE),
            &format!("xenio-{}", own),
        )?;
        Ok(Endpoint {
            store,
            role,
            own: own.to_string(),
            peer: peer.to_string(),
            peer_id,
            watch,
        })
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This end's directory.
    pub fn dir(&self) -> &str {
        &self.own
    }

    /// The other end's directory.
    pub fn peer_dir(&self) -> &str {
        &self.peer
    }

    /// The other end's domain.
    pub fn peer_id(&self) -> DomId {
        self.peer_id
    }

    /// The store.
    pub fn store(&self) -> &'s S {
        self.store
    }

    /// This end's state.
    pub fn state(&self) -> Result<XenbusState> {
        read_state(self.store, &self.own_path(keys::STATE))
    }

    /// The other end's state (`Unknown` if its directory is gone).
    pub fn peer_state(&self) -> Result<XenbusState> {
        read_state(self.store, &self.peer_path(keys::STATE))
    }

    /// Write `keys` into this end's directory and then move to `state`, in one
    /// transaction (so the peer never sees the state without the keys).
    ///
    /// A directory that is gone (the toolstack removed the device) is never
    /// written again: a write would create the nodes anew, and nobody would
    /// remove them. As Linux's `xenbus_switch_state`, the transaction first
    /// reads this end's `state`; without it the switch fails with the store's
    /// `ENOENT` ([`Error::is_gone`]) and writes nothing.
    ///
    /// # Errors
    ///
    /// The store's errors; `ENOENT` when this end's `state` node is gone.
    pub fn switch(&self, state: XenbusState, keys: &[(&str, String)]) -> Result<()> {
        Ok(self.store.transaction(16, |tx| {
            self.store.read(tx, &self.own_path(keys::STATE))?;
            for (k, v) in keys {
                self.store
                    .write(tx, &format!("{}/{k}", self.own), v.as_bytes())?;
            }
            self.store
                .write(tx, &self.own_path(keys::STATE), &state_bytes(state))
        })?)
    }

    /// [`switch`](Self::switch) to `state` with no keys, unless the
    /// toolstack removed this end's directory: then nothing is written and
    /// the answer is `false` (a backend must not recreate a removed device).
    pub fn switch_unless_gone(&self, state: XenbusState) -> Result<bool> {
        match self.switch(state, &[]) {
            Ok(()) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give up on the device as Linux's `xenbus_dev_fatal` does: write
    /// `"<errno> <message>"` to the node `error/<dir>/error` below this end's
    /// domain home, where toolstacks look for the reason (for the backend
    /// directory `/local/domain/0/backend/vbd/1/51712`:
    /// `/local/domain/0/error/backend/vbd/1/51712/error`), then say Closing.
    /// A directory outside `/local/domain/<id>/` gets no error node; one that
    /// cannot be written is logged, and the state is switched all the same. A
    /// directory the toolstack removed gets nothing (`ENOENT`, as
    /// [`switch`](Self::switch)).
    ///
    /// # Errors
    ///
    /// The store's error when the state cannot be switched.
    pub fn fatal(&self, errno: i32, message: &str) -> Result<()> {
        // A device the toolstack removed gets nothing (see `switch`).
        if self.state_node_gone()? {
            return self.switch(XenbusState::Closing, &[]);
        }
        if let Some(node) = error_node(&self.own) {
            let value = format!("{errno} {message}");
            if let Err(e) = self.store.write(Tx::NONE, &node, value.as_bytes()) {
                tracing::warn!("{node}: {e}");
            }
        }
        self.switch(XenbusState::Closing, &[])
    }

    fn state_node_gone(&self) -> Result<bool> {
        Ok(self
            .store
            .read_opt(Tx::NONE, &self.own_path(keys::STATE))?
            .is_none())
    }

    /// The store path of the other end's `key`.
    pub fn peer_path(&self, key: &str) -> String {
        format!("{}/{key}", self.peer)
    }

    /// The store path of this end's `key`.
    pub fn own_path(&self, key: &str) -> String {
        format!("{}/{key}", self.own)
    }

    /// Read a key of the other end (`None` if absent).
    pub fn peer_key(&self, key: &str) -> Result<Option<String>> {
        Ok(self.store.read_opt(Tx::NONE, &self.peer_path(key))?)
    }

    /// Read a key of this end (`None` if absent).
    pub fn own_key(&self, key: &str) -> Result<Option<String>> {
        Ok(self.store.read_opt(Tx::NONE, &self.own_path(key))?)
    }

    /// Read and parse a key of the other end (`None` if absent).
    ///
    /// # Errors
    ///
    /// The store's error, or [`Error::BadKey`] naming the key's path and value
    /// when it does not parse as a `T` ([`parse_key`]).
    pub fn peer_parse<T: FromStr>(&self, key: &str) -> Result<Option<T>> {
        self.peer_key(key)?
            .map(|v| parse_key(&self.peer_path(key), &v))
            .transpose()
    }

    /// Read and parse a key of this end (`None` if absent); errors as
    /// [`Endpoint::peer_parse`].
    pub fn own_parse<T: FromStr>(&self, key: &str) -> Result<Option<T>> {
        self.own_key(key)?
            .map(|v| parse_key(&self.own_path(key), &v))
            .transpose()
    }

    /// A boolean key of the other end (a `feature-*`): `1` is on; absent, `0`
    /// or any other number is off.
    ///
    /// # Errors
    ///
    /// As [`Endpoint::peer_parse`]: a value that is not a number is an error,
    /// not "off".
    pub fn peer_flag(&self, key: &str) -> Result<bool> {
        Ok(self.peer_parse::<u32>(key)?.unwrap_or(0) == 1)
    }

    /// In a backend, wait until the toolstack's hotplug script has done its
    /// part ([`hotplug_state`]), as Linux's backends do before they connect:
    /// libxl waits for exactly `InitWait` before it runs the script, so a
    /// backend that went on to `Connected` first would make it time out.
    /// Returns `Ok(false)` as soon as the frontend leaves ([`peer_leaving`])
    /// or `stop` says so (checked every 100 ms), `Ok(true)` once connected.
    ///
    /// # Errors
    ///
    /// [`Error::Hotplug`] with the script's reason when it failed, or a store
    /// error.
    pub fn wait_hotplug(&mut self, stop: impl Fn() -> Result<bool>) -> Result<bool> {
        let mut told = false;
        loop {
            match hotplug_state(self.store, &self.own)? {
                Hotplug::Done => return Ok(true),
                Hotplug::Failed(why) => {
                    return Err(Error::Hotplug(format!(
                        "{}: {why}",
                        self.own_path(keys::HOTPLUG_STATUS)
                    )));
                }
                Hotplug::Pending => {}
            }
            if !told {
                tracing::info!(
                    "{}: waiting for the hotplug script ({} = connected)",
                    self.own,
                    keys::HOTPLUG_STATUS
                );
                told = true;
            }
            if stop()? {
                return Ok(false);
            }
            match self.wait_peer(Duration::from_millis(100), peer_leaving) {
                Ok(_) => return Ok(false),
                Err(Error::Timeout(..)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait up to `timeout` for the other end to close: `Closed`, gone, or back
    /// at `Initialising` (`Ok(true)`). `stop` (checked every 200 ms) ends the
    /// wait early with `Ok(false)`: a backend passes "the device is gone or
    /// going" (a toolstack that removed the directory, as `xl block-detach
    /// --force` does after its 10 s, must not find the device held, nor a
    /// late `Closed` written into a device it creates again there).
    /// `Ok(false)` too when `timeout` runs out.
    pub fn wait_peer_closed(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut() -> Result<bool>,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            match self.wait_peer(slice, |s| {
                matches!(
                    s,
                    XenbusState::Closed | XenbusState::Unknown | XenbusState::Initialising
                )
            }) {
                Ok(_) => return Ok(true),
                Err(Error::Timeout(..)) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline || stop()? {
                return Ok(false);
            }
        }
    }

    /// In a backend that said `Closed`, wait for what comes next: the frontend
    /// back at `Initialising` (reconnect), the device removed, the toolstack
    /// detaching it (`Closed` said again, as libxl waits for it), or `stop`
    /// (checked every 500 ms).
    pub fn wait_reopen(&mut self, stop: impl Fn() -> bool) -> Result<Reopen> {
        loop {
            if stop() {
                return Ok(Reopen::Stopped);
            }
            match self.wait_peer(Duration::from_millis(500), |s| {
                s == XenbusState::Initialising || s == XenbusState::Unknown
            }) {
                Ok(XenbusState::Unknown) => return Ok(Reopen::Removed),
                Ok(_) => return Ok(Reopen::Reopen),
                Err(Error::Timeout(..)) => {
                    if device_gone(self.store, &self.own)? {
                        return Ok(Reopen::Removed);
                    }
                    if device_offline(self.store, &self.own)? {
                        self.switch_unless_gone(XenbusState::Closed)?;
                        return Ok(Reopen::Detached);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Block until the other end's state satisfies `until` (checked at once, then
    /// after every watch event), returning it. Fails after `timeout`.
    pub fn wait_peer(
        &mut self,
        timeout: Duration,
        until: impl Fn(XenbusState) -> bool,
    ) -> Result<XenbusState> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.peer_state()?;
            if until(s) {
                return Ok(s);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(
                    timeout,
                    format!("{} (now {s:?})", self.peer),
                ));
            }
            // Events are only hints to re-read the state; their content is not needed.
            let _ = self.watch.next_event(Some(left))?;
        }
    }
}

/// Where [`Endpoint::fatal`] reports on the device whose directory is `dir`
/// (`None` outside `/local/domain/<id>/`).
pub fn error_node(dir: &str) -> Option<String> {
    let rest = dir.strip_prefix("/local/domain/")?;
    let (domid, node) = rest.split_once('/')?;
    domid.parse::<u16>().ok()?;
    Some(format!("/local/domain/{domid}/error/{node}/error"))
}

/// States in which a frontend has published its rings.
pub fn frontend_ready(s: XenbusState) -> bool {
    matches!(s, XenbusState::Initialised | XenbusState::Connected)
}

/// States that mean the other end is going away, gone or restarting.
pub fn peer_leaving(s: XenbusState) -> bool {
    matches!(
        s,
        XenbusState::Closing
            | XenbusState::Closed
            | XenbusState::Unknown
            | XenbusState::Initialising
    )
}

fn state_bytes(s: XenbusState) -> Vec<u8> {
    s.to_string().into_bytes()
}
