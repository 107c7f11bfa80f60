//! A test toolstack for `xenio backendd` on the local platform: it writes each
//! disk's nodes as libxl does (lab/recordings/01-phy-attach.txt: one
//! transaction, frontend directory `n<fe> r0`, backend directory `n0 r<fe>`,
//! the same keys in the same order), waits for InitWait, runs
//! tools/hotplug/block-xenio as libxl would, and detaches as
//! 02-phy-detach.txt does. Plus a frontend thread doing verified I/O.

use super::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use xenio_blkfront::{BlkFront, Options};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::{DomId, Store};
use xenio_xenstore::{Perm, PermAccess};

pub const MIB: u64 = 1 << 20;
/// libxl's own wait for a backend's state (its source: 10 s).
pub const LIBXL_WAIT: Duration = Duration::from_secs(10);

pub fn perm(domid: u16, access: PermAccess) -> Perm {
    Perm {
        domid: DomId(domid),
        access,
    }
}

/// The toolstack: dom0's store, the run directory (for the hotplug script).
pub struct Toolstack<'w> {
    pub w: &'w World,
    pub dom0: xenio_xenbus::LocalPlatform,
}

impl Toolstack<'_> {
    pub fn store(&self) -> &xenio_xenstore::Client {
        self.dom0.store()
    }

    pub fn backend(fe: u16, devid: u32) -> String {
        format!("/local/domain/0/backend/vbd/{fe}/{devid}")
    }

    /// `xl block-attach <fe> vdev=...,backendtype=phy,script=block-xenio`:
    /// the nodes of 01-phy-attach.txt, `over` replacing backend keys; then
    /// the wait for InitWait. Returns the state the backend reached.
    pub fn attach(&self, fe: u16, vdev: &str, devid: u32, over: &[(&str, String)]) -> XenbusState {
        let s = self.store();
        let front = format!("/local/domain/{fe}/device/vbd/{devid}");
        let back = Self::backend(fe, devid);
        let libxl = format!("/libxl/{fe}/device/vbd/{devid}");
        let mut bkeys: Vec<(&str, String)> = vec![
            ("frontend", front.clone()),
            ("params", String::new()),
            ("script", "/etc/xen/scripts/block-xenio".into()),
            ("frontend-id", fe.to_string()),
            ("online", "1".into()),
            ("removable", "0".into()),
            ("bootable", "1".into()),
            ("state", "1".into()),
            ("dev", vdev.into()),
            ("type", "phy".into()),
            ("mode", "w".into()),
            ("device-type", "disk".into()),
            ("discard-enable", "1".into()),
            ("specification", "xen".into()),
        ];
        for (k, v) in over {
            bkeys
                .iter_mut()
                .find(|(n, _)| n == k)
                .expect("a libxl key")
                .1 = v.clone();
        }
        s.transaction(16, |tx| {
            let _ = s.rm(tx, &libxl);
            s.write(tx, &format!("{libxl}/frontend"), front.as_bytes())?;
            s.write(tx, &format!("{libxl}/backend"), back.as_bytes())?;
            let _ = s.rm(tx, &front);
            s.mkdir(tx, &front)?;
            let fperms = [perm(fe, PermAccess::None), perm(0, PermAccess::Read)];
            s.set_perms(tx, &front, &fperms)?;
            for (k, v) in [
                ("backend", back.clone()),
                ("backend-id", "0".into()),
                ("state", "1".into()),
                ("virtual-device", devid.to_string()),
                ("device-type", "disk".into()),
                ("trusted", "1".into()),
                ("protocol", "x86_64-abi".into()),
            ] {
                let p = format!("{front}/{k}");
                s.write(tx, &p, v.as_bytes())?;
                s.set_perms(tx, &p, &fperms)?;
            }
            let _ = s.rm(tx, &back);
            s.mkdir(tx, &back)?;
            s.set_perms(
                tx,
                &back,
                &[perm(0, PermAccess::None), perm(fe, PermAccess::Read)],
            )?;
            for (k, v) in &bkeys {
                s.write(tx, &format!("{back}/{k}"), v.as_bytes())?;
            }
            for (k, v) in &bkeys {
                s.write(tx, &format!("{libxl}/{k}"), v.as_bytes())?;
            }
            Ok(())
        })
        .unwrap();
        // libxl waits for InitWait; a backend that refused says Closing.
        let state = format!("{back}/state");
        let mut got = XenbusState::Initialising;
        eventually(LIBXL_WAIT, "the daemon to take the device", || {
            got = state_of(s, &state);
            matches!(got, XenbusState::InitWait | XenbusState::Closing)
        });
        got
    }

    /// tools/hotplug/block-xenio, as libxl runs it.
    pub fn hotplug(&self, command: &str, fe: u16, devid: u32) -> bool {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/hotplug/block-xenio");
        let out = Command::new("sh")
            .arg(script)
            .arg(command)
            .env("XENBUS_PATH", format!("backend/vbd/{fe}/{devid}"))
            .env("XENBUS_TYPE", "vbd")
            .env("XENBUS_BASE_PATH", "backend")
            .env(
                "XENSTORED_PATH",
                self.w.run_dir().join("xenstored").join("socket"),
            )
            .output()
            .expect("sh and xenstore-utils (xenstore-read, xenstore-write)");
        eprintln!(
            "block-xenio {command} {fe}/{devid}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out.status.success()
    }

    /// The end of 02-phy-detach.txt: both directories, libxl's copy and
    /// every parent left empty, in one transaction.
    pub fn remove(&self, fe: u16, devid: u32) {
        let s = self.store();
        s.transaction(16, |tx| {
            for dir in [
                format!("/local/domain/{fe}/device/vbd/{devid}"),
                format!("/libxl/{fe}/device/vbd/{devid}"),
                Self::backend(fe, devid),
            ] {
                if s.rm(tx, &dir).is_err() {
                    continue; // already gone
                }
                let mut p = dir.as_str();
                while let Some((parent, _)) = p.rsplit_once('/') {
                    if parent.matches('/').count() < 4 && !parent.starts_with("/libxl") {
                        break; // /local/domain/<id> stays
                    }
                    match s.directory(tx, parent) {
                        Ok(c) if c.is_empty() && !parent.is_empty() => s.rm(tx, parent)?,
                        _ => break,
                    }
                    p = parent;
                }
            }
            Ok(())
        })
        .unwrap();
    }

    /// `xl block-detach`: `online = 0` and `state = 5`, a wait for Closed,
    /// the script's `remove`, the nodes removed.
    pub fn detach(&self, fe: u16, devid: u32) {
        let s = self.store();
        let back = Self::backend(fe, devid);
        s.transaction(16, |tx| {
            s.write(tx, &format!("{back}/online"), b"0")?;
            s.write(tx, &format!("{back}/state"), b"5")
        })
        .unwrap();
        eventually(LIBXL_WAIT, "the backend's Closed", || {
            state_of(s, &format!("{back}/state")) == XenbusState::Closed
        });
        assert!(self.hotplug("remove", fe, devid));
        self.remove(fe, devid);
    }
}

/// A frontend doing verified I/O until `stop` or an error: pairs done, the
/// error that ended it (if one did).
pub struct Io {
    pub pairs: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    pub thread: JoinHandle<Option<xenio_blkfront::Error>>,
}

/// `p`: the frontend's domain, shared by all its frontends (one grant table
/// per domain, as on Xen).
pub fn io_loop(p: &Arc<LocalPlatform>, devid: u32, tag: u8) -> Io {
    let (p, fe) = (p.clone(), p.domid());
    let pairs = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (n, st) = (pairs.clone(), stop.clone());
    let dir = format!("/local/domain/{fe}/device/vbd/{devid}");
    let thread = std::thread::spawn(move || {
        let opts = Options {
            timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let mut d = BlkFront::connect(p, &dir, opts).unwrap();
        let mut k = 0u64;
        while !st.load(Ordering::Relaxed) {
            let data = [tag ^ k as u8; 8192];
            let off = (k % 64) * 8192;
            let r = d.write_at(off, &data).and_then(|()| {
                let mut back = [0u8; 8192];
                d.read_at(off, &mut back).map(|()| back)
            });
            match r {
                Ok(back) => assert!(back == data, "{dir}: other data read back"),
                Err(e) => return Some(e),
            }
            k += 1;
            n.store(k, Ordering::Relaxed);
        }
        d.close().unwrap();
        None
    });
    Io {
        pairs,
        stop,
        thread,
    }
}

impl Io {
    pub fn wait_progress(&self, what: &str) {
        let from = self.pairs.load(Ordering::Relaxed);
        eventually(Duration::from_secs(60), what, || {
            self.pairs.load(Ordering::Relaxed) > from
        });
    }
}
