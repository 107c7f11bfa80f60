//! Where a device lives in the store, and creating and removing its two
//! directories as a toolstack (`xl`) does.

use super::keys::{self, blkif};
use crate::error::{Error, Result};
use xenio_xen_sys::DomId;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenstore::{Perm, PermAccess, Store, Tx};

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
        store.write(tx, &b(keys::FRONTEND), paths.frontend.as_bytes())?;
        store.write(tx, &b(keys::FRONTEND_ID), fe.0.to_string().as_bytes())?;
        store.write(tx, &b(keys::ONLINE), b"1")?;
        store.write(
            tx,
            &b(keys::STATE),
            state_bytes(XenbusState::Initialising).as_slice(),
        )?;
        for (k, v) in backend_keys {
            store.write(tx, &b(k), v.as_bytes())?;
        }
        for (k, v) in frontend_keys {
            store.write(tx, &f(k), v.as_bytes())?;
        }
        store.write(tx, &f(keys::BACKEND), paths.backend.as_bytes())?;
        store.write(tx, &f(keys::BACKEND_ID), be.0.to_string().as_bytes())?;
        store.write(
            tx,
            &f(keys::STATE),
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
        (blkif::VIRTUAL_DEVICE, devid.to_string()),
        (
            blkif::DEVICE_TYPE,
            if cdrom { "cdrom" } else { "disk" }.to_string(),
        ),
        (blkif::TRUSTED, "1".to_string()),
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
