//! One domain of the local platform: its id and its files under the run directory.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use xenio_xen_sys::DomId;

/// The run directory: `$XENIO_RUN_DIR`, else `/run/xenio` for root, else
/// `$XDG_RUNTIME_DIR/xenio`, else `/tmp/xenio-<uid>`.
pub fn default_run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XENIO_RUN_DIR") {
        return PathBuf::from(d);
    }
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        return PathBuf::from("/run/xenio");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("xenio"),
        None => PathBuf::from(format!("/tmp/xenio-{uid}")),
    }
}

/// One domain of the local platform: its id and its directory.
#[derive(Clone, Debug)]
pub struct LocalDomain {
    run_dir: PathBuf,
    domid: DomId,
}

impl LocalDomain {
    /// This process acts as `domid` under `run_dir` (creating its directories).
    pub fn new(run_dir: impl Into<PathBuf>, domid: DomId) -> Result<Self> {
        if !domid.is_real() {
            return Err(Error::BadValue {
                what: "domain id".into(),
                value: domid.to_string(),
            });
        }
        let d = LocalDomain {
            run_dir: run_dir.into(),
            domid,
        };
        let evtchn = d.domain_dir(domid).join("evtchn");
        std::fs::create_dir_all(&evtchn)
            .map_err(|e| Error::io(format!("creating {}", evtchn.display()), e))?;
        Ok(d)
    }

    /// This domain's id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// `RUN/domains/<domid>`.
    pub fn domain_dir(&self, domid: DomId) -> PathBuf {
        self.run_dir.join("domains").join(domid.0.to_string())
    }

    /// The store socket this domain talks through.
    pub fn store_socket(&self) -> PathBuf {
        let s = self.run_dir.join("xenstored");
        if self.domid == DomId::DOM0 {
            s.join("socket")
        } else {
            s.join("domain").join(self.domid.0.to_string())
        }
    }
}

/// Whether process `pid` still exists (the owner of a port, a grant mapper).
pub(crate) fn alive(pid: u32) -> bool {
    pid != 0
        && !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None),
            Err(nix::errno::Errno::ESRCH)
        )
}
