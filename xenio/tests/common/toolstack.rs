//! A test toolstack for `xenio backendd` on the local platform: it writes a
//! device's nodes as libxl does (disks as lab/recordings/01-phy-attach.txt:
//! one transaction, frontend directory `n<fe> r0`, backend directory `n0
//! r<fe>`, the same keys in the same order; vifs as Xen 4.17's libxl_nic.c),
//! waits for InitWait, runs tools/hotplug/block-xenio or vif-xenio as libxl
//! would (in the daemon's network namespace, if it has one), and detaches as
//! 02-phy-detach.txt does. Plus the daemon itself, and a frontend thread doing
//! verified I/O.

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

/// The toolstack: dom0's store, the run directory (for the hotplug scripts),
/// and the network namespace the daemon runs in, if it does (the scripts run
/// there too).
pub struct Toolstack<'w> {
    pub w: &'w World,
    pub dom0: xenio_xenbus::LocalPlatform,
    pub ns: Option<&'w Netns>,
}

impl<'w> Toolstack<'w> {
    /// dom0's toolstack for `w`, the daemon and scripts in this namespace.
    pub fn new(w: &'w World) -> Self {
        Toolstack {
            w,
            dom0: w.platform(0),
            ns: None,
        }
    }

    pub fn store(&self) -> &xenio_xenstore::Client {
        self.dom0.store()
    }

    /// `/local/domain/0/backend/<class>/<fe>/<devid>`.
    pub fn backend(class: &str, fe: u16, devid: u32) -> String {
        format!("/local/domain/0/backend/{class}/{fe}/{devid}")
    }

    /// The frontend directory: `device/vif` for a vif, `device/vbd` for every
    /// disk class (vbd, qdisk, xenio's own).
    pub fn frontend(class: &str, fe: u16, devid: u32) -> String {
        let kind = if class == "vif" { "vif" } else { "vbd" };
        format!("/local/domain/{fe}/device/{kind}/{devid}")
    }

    /// Both directories and libxl's copy of the backend's keys in one
    /// transaction, with libxl's permissions, the keys exactly as given (in
    /// libxl's order); then libxl's wait for InitWait. Returns the state the
    /// backend reached (a backend that refused says Closing).
    pub fn create(
        &self,
        class: &str,
        fe: u16,
        devid: u32,
        back_keys: &[(&str, String)],
        front_keys: &[(&str, String)],
    ) -> XenbusState {
        let s = self.store();
        let front = Self::frontend(class, fe, devid);
        let back = Self::backend(class, fe, devid);
        let libxl = format!("/libxl/{fe}/device/{class}/{devid}");
        s.transaction(16, |tx| {
            let _ = s.rm(tx, &libxl);
            s.write(tx, &format!("{libxl}/frontend"), front.as_bytes())?;
            s.write(tx, &format!("{libxl}/backend"), back.as_bytes())?;
            let _ = s.rm(tx, &front);
            s.mkdir(tx, &front)?;
            let fperms = [perm(fe, PermAccess::None), perm(0, PermAccess::Read)];
            s.set_perms(tx, &front, &fperms)?;
            for (k, v) in front_keys {
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
            for (k, v) in back_keys {
                s.write(tx, &format!("{back}/{k}"), v.as_bytes())?;
            }
            for (k, v) in back_keys {
                s.write(tx, &format!("{libxl}/{k}"), v.as_bytes())?;
            }
            Ok(())
        })
        .unwrap();
        let state = format!("{back}/state");
        let mut got = XenbusState::Initialising;
        eventually(LIBXL_WAIT, "the daemon to take the device", || {
            got = state_of(s, &state);
            matches!(got, XenbusState::InitWait | XenbusState::Closing)
        });
        got
    }

    /// `xl block-attach <fe> vdev=...,backendtype=phy,script=block-xenio`:
    /// the nodes of lab/recordings/01-phy-attach.txt, in its order, `over`
    /// replacing backend keys; then the wait for InitWait.
    pub fn attach(&self, fe: u16, vdev: &str, devid: u32, over: &[(&str, String)]) -> XenbusState {
        let mut back: Vec<(&str, String)> = vec![
            ("frontend", Self::frontend("vbd", fe, devid)),
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
            back.iter_mut()
                .find(|(n, _)| n == k)
                .expect("a libxl key")
                .1 = v.clone();
        }
        let front: Vec<(&str, String)> = vec![
            ("backend", Self::backend("vbd", fe, devid)),
            ("backend-id", "0".into()),
            ("state", "1".into()),
            ("virtual-device", devid.to_string()),
            ("device-type", "disk".into()),
            ("trusted", "1".into()),
            ("protocol", "x86_64-abi".into()),
        ];
        self.create("vbd", fe, devid, &back, &front)
    }

    /// `xl network-attach <fe> bridge=xbr0,script=vif-xenio,mac=...`: the
    /// nodes Xen 4.17's libxl_nic.c writes (`vifname` when `extra` has it).
    pub fn attach_vif(
        &self,
        fe: u16,
        devid: u32,
        mac: &str,
        extra: &[(&str, String)],
    ) -> XenbusState {
        let mut back: Vec<(&str, String)> = vec![
            ("frontend", Self::frontend("vif", fe, devid)),
            ("frontend-id", fe.to_string()),
            ("online", "1".into()),
            ("state", "1".into()),
            ("script", "/etc/xen/scripts/vif-xenio".into()),
            ("mac", mac.into()),
            ("bridge", "xbr0".into()),
            ("handle", devid.to_string()),
            ("type", "vif".into()),
            ("hotplug-status", String::new()),
        ];
        back.extend(extra.iter().cloned());
        let front: Vec<(&str, String)> = vec![
            ("backend", Self::backend("vif", fe, devid)),
            ("backend-id", "0".into()),
            ("state", "1".into()),
            ("handle", devid.to_string()),
            ("mac", mac.into()),
            ("trusted", "1".into()),
            ("mtu", "1500".into()),
        ];
        self.create("vif", fe, devid, &back, &front)
    }

    /// A hotplug script as libxl runs it (Xen 4.17, libxl_linux.c), in the
    /// daemon's namespace if it has one: `<script> <command> [type_if=vif]`
    /// with XENBUS_PATH, XENBUS_TYPE, XENBUS_BASE_PATH (and for a vif `vif`
    /// and `netdev`), through xenstore-utils. Whether it succeeded.
    pub fn hotplug(&self, class: &str, command: &str, fe: u16, devid: u32) -> bool {
        let name = if class == "vif" {
            "vif-xenio"
        } else {
            "block-xenio"
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tools/hotplug")
            .join(name);
        let mut c = match self.ns {
            Some(ns) => {
                let mut c = ns.exec();
                c.arg("sh");
                c
            }
            None => Command::new("sh"),
        };
        c.arg(script).arg(command);
        if class == "vif" {
            c.arg("type_if=vif")
                .env("vif", format!("vif{fe}.{devid}"))
                .env("netdev", "");
        }
        let out = c
            .env("XENBUS_PATH", format!("backend/{class}/{fe}/{devid}"))
            .env("XENBUS_TYPE", class)
            .env("XENBUS_BASE_PATH", "backend")
            .env(
                "XENSTORED_PATH",
                self.w.run_dir().join("xenstored").join("socket"),
            )
            .output()
            .expect("sh, ip and xenstore-utils (xenstore-read, xenstore-write)");
        eprintln!(
            "{name} {command} {fe}/{devid}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out.status.success()
    }

    /// The end of a detach (02-phy-detach.txt): both directories, libxl's
    /// copy and every parent left empty, in one transaction.
    pub fn remove(&self, class: &str, fe: u16, devid: u32) {
        let s = self.store();
        s.transaction(16, |tx| {
            for dir in [
                Self::frontend(class, fe, devid),
                format!("/libxl/{fe}/device/{class}/{devid}"),
                Self::backend(class, fe, devid),
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

    /// `xl block-detach`/`network-detach`: `online = 0` and `state = 5`, a
    /// wait for Closed, the script's remove/offline, the nodes removed.
    pub fn detach(&self, class: &str, fe: u16, devid: u32) {
        let s = self.store();
        let back = Self::backend(class, fe, devid);
        s.transaction(16, |tx| {
            s.write(tx, &format!("{back}/online"), b"0")?;
            s.write(tx, &format!("{back}/state"), b"5")
        })
        .unwrap();
        eventually(LIBXL_WAIT, "the backend's Closed", || {
            state_of(s, &format!("{back}/state")) == XenbusState::Closed
        });
        let command = if class == "vif" { "offline" } else { "remove" };
        assert!(self.hotplug(class, command, fe, devid));
        self.remove(class, fe, devid);
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

/// `xenio backendd --platform local` on `w` (in `ns` if given) with
/// `--close-timeout 2` and `extra`, once it is up and settled (its baseline
/// can be taken then).
pub fn backendd(w: &World, ns: Option<&Netns>, extra: &[&str]) -> Backend {
    let mut d = match ns {
        Some(ns) => {
            let mut c = ns.exec();
            c.arg(env!("CARGO_BIN_EXE_xenio"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_xenio")),
    };
    d.args(["backendd", "--platform", "local", "--close-timeout", "2"])
        .arg("--run-dir")
        .arg(w.run_dir())
        .args(extra);
    let mut daemon = Backend::spawn(d);
    eventually(Duration::from_secs(30), "the daemon up", || {
        daemon.running() && proc_stats(daemon.pid()).threads >= 1
    });
    std::thread::sleep(Duration::from_millis(500));
    daemon
}
