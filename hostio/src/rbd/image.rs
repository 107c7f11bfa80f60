//! [`RbdImage`]: a connection to a Ceph cluster and an open RBD image.

use super::ffi;
use crate::rbd_target::RbdTarget;
use crate::{Error, Result};
use std::ffi::{CString, c_int};
use std::io;
use std::ptr;
use std::time::Duration;

/// An RBD image opened through librbd, with its cluster connection and pool
/// context. Open it once per device and share it between that device's
/// [`RbdQueue`](super::RbdQueue)s in an `Arc`: librbd's asynchronous calls may be
/// made on one image from several threads.
pub struct RbdImage {
    cluster: ffi::rados_t,
    ioctx: ffi::rados_ioctx_t,
    pub(super) image: ffi::rbd_image_t,
    target: RbdTarget,
    size: u64,
    readonly: bool,
    pub(super) discard_zeroes: bool,
}

// SAFETY: librados cluster handles, I/O contexts and librbd image handles may
// be used from any thread, and librbd's aio calls on one image from several
// threads at once; the handles are only closed in `Drop`.
unsafe impl Send for RbdImage {}
// SAFETY: as above.
unsafe impl Sync for RbdImage {}

impl std::fmt::Debug for RbdImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdImage")
            .field("target", &self.target.to_string())
            .field("size", &self.size)
            .field("readonly", &self.readonly)
            .finish()
    }
}

fn cstr(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::BadValue {
        what: format!("{what} (contains a NUL byte)"),
        value: s.into(),
    })
}

impl RbdImage {
    /// Connect to the cluster `target` names and open its image (read-only
    /// with `opts.readonly` or a snapshot). `rados_connect` is bounded by
    /// [`RbdOptions::connect_timeout`] (librados' `client_mount_timeout`).
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] for a name with a NUL byte; [`Error::Io`] naming the
    /// target and the step (reading the conf, an option Ceph does not know,
    /// connecting, the pool, the image) with librados' or librbd's errno.
    pub fn open(target: &RbdTarget, opts: &RbdOptions) -> Result<RbdImage> {
        let t = target.to_string();
        let fail = |step: &str, rc: c_int| {
            Error::io(format!("{t}: {step}"), io::Error::from_raw_os_error(-rc))
        };
        let id = target
            .id
            .as_deref()
            .map(|i| cstr("RBD id", i))
            .transpose()?;
        let mut cluster: ffi::rados_t = ptr::null_mut();
        // SAFETY: `cluster` is written by the call; `id` is NUL-terminated or NULL.
        let rc = unsafe {
            ffi::rados_create(
                &mut cluster,
                id.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
            )
        };
        if rc < 0 {
            return Err(fail("rados_create", rc));
        }
        // From here the handles are released by `Drop`, whatever fails.
        let mut img = RbdImage {
            cluster,
            ioctx: ptr::null_mut(),
            image: ptr::null_mut(),
            target: target.clone(),
            size: 0,
            readonly: opts.readonly || target.snapshot.is_some(),
            discard_zeroes: opts.discard_zeroes,
        };
        match &target.conf {
            Some(path) => {
                let p = cstr("conf", &path.to_string_lossy())?;
                // SAFETY: a live cluster handle, a NUL-terminated path.
                let rc = unsafe { ffi::rados_conf_read_file(cluster, p.as_ptr()) };
                if rc < 0 {
                    return Err(fail(&format!("reading {}", path.display()), rc));
                }
            }
            None => {
                // The default search; no file there is not an error (as QEMU).
                // SAFETY: a live cluster handle; NULL asks for the search path.
                let _ = unsafe { ffi::rados_conf_read_file(cluster, ptr::null()) };
            }
        }
        let timeout = opts.connect_timeout.as_secs().max(1).to_string();
        let mut options = target.options.clone();
        options.push(("client_mount_timeout".into(), timeout));
        for (k, v) in &options {
            let (ck, cv) = (cstr("RBD option", k)?, cstr("RBD option value", v)?);
            // SAFETY: a live cluster handle, NUL-terminated strings.
            let rc = unsafe { ffi::rados_conf_set(cluster, ck.as_ptr(), cv.as_ptr()) };
            if rc < 0 {
                return Err(fail(&format!("setting Ceph option {k}"), rc));
            }
        }
        // SAFETY: a configured cluster handle.
        let rc = unsafe { ffi::rados_connect(cluster) };
        if rc < 0 {
            return Err(fail("connecting to the cluster (rados_connect)", rc));
        }
        let pool = cstr("pool", &target.pool)?;
        // SAFETY: a connected cluster handle; `img.ioctx` is written by the call.
        let rc = unsafe { ffi::rados_ioctx_create(cluster, pool.as_ptr(), &mut img.ioctx) };
        if rc < 0 {
            return Err(fail(&format!("opening pool {}", target.pool), rc));
        }
        if let Some(ns) = &target.namespace {
            let ns = cstr("namespace", ns)?;
            // SAFETY: a live I/O context, a NUL-terminated name (copied).
            unsafe { ffi::rados_ioctx_set_namespace(img.ioctx, ns.as_ptr()) };
        }
        let name = cstr("image", &target.image)?;
        let snap = target
            .snapshot
            .as_deref()
            .map(|s| cstr("snapshot", s))
            .transpose()?;
        let snap_ptr = snap.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        // SAFETY: a live I/O context, NUL-terminated names (or NULL for no
        // snapshot); `img.image` is written by the call.
        let rc = unsafe {
            if img.readonly {
                ffi::rbd_open_read_only(img.ioctx, name.as_ptr(), &mut img.image, snap_ptr)
            } else {
                ffi::rbd_open(img.ioctx, name.as_ptr(), &mut img.image, snap_ptr)
            }
        };
        if rc < 0 {
            img.image = ptr::null_mut();
            return Err(fail("opening the image (rbd_open)", rc));
        }
        let mut size = 0u64;
        // SAFETY: an open image; `size` is written by the call.
        let rc = unsafe { ffi::rbd_get_size(img.image, &mut size) };
        if rc < 0 {
            return Err(fail("rbd_get_size", rc));
        }
        img.size = size;
        Ok(img)
    }

    /// The target (its `Display` leaves the options, and so key paths, out).
    pub fn target(&self) -> &RbdTarget {
        &self.target
    }

    /// The image's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Whether writes and discards are refused (opened read-only, or a snapshot).
    pub fn is_readonly(&self) -> bool {
        self.readonly
    }
}

impl Drop for RbdImage {
    /// Close the image (librbd waits for its in-flight I/O and flushes its
    /// cache), the pool context and the cluster connection.
    fn drop(&mut self) {
        // SAFETY: each handle is live (non-null) and released exactly once, in
        // the order librbd requires (image, I/O context, cluster).
        unsafe {
            if !self.image.is_null() {
                ffi::rbd_close(self.image);
            }
            if !self.ioctx.is_null() {
                ffi::rados_ioctx_destroy(self.ioctx);
            }
            ffi::rados_shutdown(self.cluster);
        }
    }
}

/// How to open an [`RbdImage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbdOptions {
    /// Open the image read-only (a snapshot always is).
    pub readonly: bool,
    /// How long connecting to the cluster may take (librados'
    /// `client_mount_timeout`, whole seconds). 30 s by default.
    pub connect_timeout: Duration,
    /// Discard with `rbd_aio_write_zeroes`, so that discarded ranges read
    /// back as zeros (librbd may skip discarding part of an object). Off by default.
    pub discard_zeroes: bool,
}

impl Default for RbdOptions {
    fn default() -> Self {
        RbdOptions {
            readonly: false,
            connect_timeout: Duration::from_secs(30),
            discard_zeroes: false,
        }
    }
}
