//! The XenbusState handshake between a device's frontend and backend, driven by
//! store watches (no polling).
//!
//! Layout (`xen/io/blkif.h`, `netif.h`; what `xl` creates):
//!
//! ```text
//! /local/domain/<be>/backend/<type>/<fe>/<devid>/   frontend, frontend-id, state, online, ...
//! /local/domain/<fe>/device/<type>/<devid>/         backend, backend-id, state, ...
//! ```
//!
//! Each side writes its own `state` and watches the other's. The usual dance:
//! backend `InitWait` (features advertised) -> frontend `Initialised` (rings and
//! event channels published) -> backend `Connected` -> frontend `Connected`.
//! Teardown: either side `Closing` -> the other `Closing`/`Closed` -> `Closed`. A
//! frontend that comes back to `Initialising` after `Closed` asks to reconnect;
//! the backend answers by going to `InitWait` again.

use crate::{DomId, Error, Perm, PermAccess, Result, Store, Tx, Watch};
use std::time::{Duration, Instant};
use xenio_xen_sys::xenbus::XenbusState;

/// The device classes xenio drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A block device (`vbd`).
    Vbd,
    /// A network interface (`vif`).
    Vif,
}

impl DeviceKind {
    /// The store name of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Vbd => "vbd",
            DeviceKind::Vif => "vif",
        }
    }
}

/// Where one device lives in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePaths {
    /// The backend domain.
    pub backend_id: DomId,
    /// The frontend domain.
    pub frontend_id: DomId,
    /// `/local/domain/<be>/backend/<type>/<fe>/<devid>`.
    pub backend: String,
    /// `/local/domain/<fe>/device/<type>/<devid>`.
    pub frontend: String,
}

impl DevicePaths {
    /// The standard paths of device `devid` of class `kind`.
    pub fn new(backend_id: DomId, frontend_id: DomId, kind: DeviceKind, devid: u32) -> Self {
        DevicePaths {
            backend_id,
            frontend_id,
            backend: format!(
                "/local/domain/{}/backend/{}/{}/{devid}",
                backend_id.0,
                kind.as_str(),
                frontend_id.0
            ),
            frontend: format!(
                "/local/domain/{}/device/{}/{devid}",
                frontend_id.0,
                kind.as_str()
            ),
        }
    }

    /// The same device with its backend directory under another class name,
    /// `/local/domain/<be>/backend/<backend_type>/<fe>/<devid>` (as QEMU's
    /// `qdisk`): in a domain where a kernel backend (xen-blkback) watches
    /// `backend/vbd`, a userspace backend must use its own class, or both would
    /// claim the device. Frontends follow the `backend` key, whatever its class.
    pub fn with_backend_type(mut self, backend_type: &str) -> Result<Self> {
        if backend_type.is_empty()
            || !backend_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::BadValue {
                what: "backend type (letters, digits, - and _)".into(),
                value: backend_type.to_string(),
            });
        }
        let devid = self.frontend.rsplit('/').next().unwrap_or("0").to_string();
        self.backend = format!(
            "/local/domain/{}/backend/{backend_type}/{}/{devid}",
            self.backend_id.0, self.frontend_id.0
        );
        Ok(self)
    }
}

/// Create both directories of a device the way a toolstack (`xl`) does: each side
/// owns its directory and the other may read it; the back-links and
/// `Initialising` states are written in one transaction. `backend_keys` are extra
/// keys for the backend (its configuration, e.g. `params`, `mode`).
pub fn create_device<S: Store>(
    store: &S,
    paths: &DevicePaths,
    backend_keys: &[(&str, String)],
) -> Result<()> {
    create_device_with(store, paths, backend_keys, &[])
}

/// [`create_device`] with extra keys for the frontend directory too, written in
/// the same transaction. A Linux frontend reads its own keys when it probes the
/// device, i.e. as soon as the directory appears: `xen-blkfront` refuses a `vbd`
/// without `virtual-device` (the device number, see [`vbd_frontend_keys`]).
pub fn create_device_with<S: Store>(
    store: &S,
    paths: &DevicePaths,
    backend_keys: &[(&str, String)],
    frontend_keys: &[(&str, String)],
) -> Result<()> {
    let be = paths.backend_id;
    let fe = paths.frontend_id;
    Ok(store.transaction(16, |tx| {
        store.mkdir(tx, &paths.backend)?;
        store.set_perms(
            tx,
            &paths.backend,
            &[perm(be, PermAccess::None), perm(fe, PermAccess::Read)],
        )?;
        store.mkdir(tx, &paths.frontend)?;
        store.set_perms(
            tx,
            &paths.frontend,
            &[perm(fe, PermAccess::None), perm(be, PermAccess::Read)],
        )?;
        let b = |k: &str| format!("{}/{k}", paths.backend);
        let f = |k: &str| format!("{}/{k}", paths.frontend);
        store.write(tx, &b("frontend"), paths.frontend.as_bytes())?;
        store.write(tx, &b("frontend-id"), fe.0.to_string().as_bytes())?;
        store.write(tx, &b("online"), b"1")?;
        store.write(
            tx,
            &b("state"),
            state_bytes(XenbusState::Initialising).as_slice(),
        )?;
        for (k, v) in backend_keys {
            store.write(tx, &b(k), v.as_bytes())?;
        }
        for (k, v) in frontend_keys {
            store.write(tx, &f(k), v.as_bytes())?;
        }
        store.write(tx, &f("backend"), paths.backend.as_bytes())?;
        store.write(tx, &f("backend-id"), be.0.to_string().as_bytes())?;
        store.write(
            tx,
            &f("state"),
            state_bytes(XenbusState::Initialising).as_slice(),
        )?;
        Ok(())
    })?)
}

/// The frontend keys a toolstack writes for a block device (as libxl does):
/// `virtual-device` (the number `devid` stands for), `device-type` (`disk` or
/// `cdrom`) and `trusted`.
pub fn vbd_frontend_keys(devid: u32, cdrom: bool) -> Vec<(&'static str, String)> {
    vec![
        ("virtual-device", devid.to_string()),
        (
            "device-type",
            if cdrom { "cdrom" } else { "disk" }.to_string(),
        ),
        ("trusted", "1".to_string()),
    ]
}

/// Remove both directories of a device (what `xl block-detach` ends with).
pub fn destroy_device<S: Store>(store: &S, paths: &DevicePaths) -> Result<()> {
    for p in [&paths.frontend, &paths.backend] {
        match store.rm(Tx::NONE, p) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn perm(domid: DomId, access: PermAccess) -> Perm {
    Perm { domid, access }
}

fn state_bytes(s: XenbusState) -> Vec<u8> {
    s.to_string().into_bytes()
}

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
        let peer = store.read_string(Tx::NONE, &format!("{backend_dir}/frontend"))?;
        let id = store.read_string(Tx::NONE, &format!("{backend_dir}/frontend-id"))?;
        Self::open(store, Role::Backend, backend_dir, &peer, &id)
    }

    /// The frontend end of the device whose frontend directory is `frontend_dir`.
    pub fn frontend(store: &'s S, frontend_dir: &str) -> Result<Self> {
        let peer = store.read_string(Tx::NONE, &format!("{frontend_dir}/backend"))?;
        let id = store.read_string(Tx::NONE, &format!("{frontend_dir}/backend-id"))?;
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
        let watch = store.watch(&format!("{peer}/state"), &format!("xenio-{}", own))?;
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
        read_state(self.store, &format!("{}/state", self.own))
    }

    /// The other end's state (`Unknown` if its directory is gone).
    pub fn peer_state(&self) -> Result<XenbusState> {
        read_state(self.store, &format!("{}/state", self.peer))
    }

    /// Write `keys` into this end's directory and then move to `state`, in one
    /// transaction (so the peer never sees the state without the keys).
    pub fn switch(&self, state: XenbusState, keys: &[(&str, String)]) -> Result<()> {
        Ok(self.store.transaction(16, |tx| {
            for (k, v) in keys {
                self.store
                    .write(tx, &format!("{}/{k}", self.own), v.as_bytes())?;
            }
            self.store
                .write(tx, &format!("{}/state", self.own), &state_bytes(state))
        })?)
    }

    /// Read a key of the other end (`None` if absent).
    pub fn peer_key(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .read_opt(Tx::NONE, &format!("{}/{key}", self.peer))?)
    }

    /// Read a key of this end (`None` if absent).
    pub fn own_key(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .read_opt(Tx::NONE, &format!("{}/{key}", self.own))?)
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
