//! The Ceph RBD engines of `xenio-bench blk` (`xenio-rbd`, `fio-rbd`): the
//! image named by `--rbd-target` (QEMU's spelling, which `xenio blkback`
//! takes as is), what fio's rbd engine needs of it, and writing it once before
//! anything is measured.

use crate::common::error::{BenchError, Result};
use crate::common::proc::{self, Proc};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use xenio_hostio::rbd_target::RbdTarget;

/// An RBD image as `--rbd-target` names it:
/// `rbd:POOL/IMAGE[:conf=PATH][:id=NAME][:keyring=PATH]...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbdSpec {
    /// The target, verbatim (what `xenio blkback --disk target=` gets).
    pub target: String,
    /// The pool.
    pub pool: String,
    /// The image.
    pub image: String,
    /// The client's id (`id=`, default `admin`): fio's `--clientname`.
    pub client: String,
    /// The cluster's config (`conf=`): `CEPH_CONF` for fio (whose rbd engine
    /// reads the default config); it must name the client's keyring, as
    /// `tests/servers/ceph.sh`'s does.
    pub conf: Option<PathBuf>,
}

impl RbdSpec {
    /// Read `--rbd-target` (parsed as `xenio blkback` parses it:
    /// [`RbdTarget`]); a clear reason when it is not one the engines can use
    /// (fio's rbd engine has no namespaces, a snapshot is read-only).
    pub fn parse(target: &str) -> std::result::Result<RbdSpec, String> {
        let bad = |why: &str| format!("--rbd-target {target:?}: {why}");
        let t = target
            .parse::<RbdTarget>()
            .map_err(|e| bad(&e.to_string()))?;
        if t.snapshot.is_some() {
            return Err(bad("a snapshot is read-only; name an image"));
        }
        if t.namespace.is_some() {
            return Err(bad(
                "namespaces (POOL/NAMESPACE/IMAGE) are not supported by fio's rbd engine",
            ));
        }
        Ok(RbdSpec {
            target: target.to_string(),
            client: t.id.unwrap_or_else(|| "admin".into()),
            pool: t.pool,
            image: t.image,
            conf: t.conf,
        })
    }

    /// The environment fio's rbd engine needs (its cluster config).
    pub fn fio_env(&self) -> Vec<(&'static str, PathBuf)> {
        self.conf.iter().map(|c| ("CEPH_CONF", c.clone())).collect()
    }

    /// fio's arguments naming the image (after `--ioengine=rbd`).
    pub fn fio_args(&self) -> Vec<String> {
        vec![
            format!("--pool={}", self.pool),
            format!("--rbdname={}", self.image),
            format!("--clientname={}", self.client),
        ]
    }
}

/// Write the image's first `size` bytes once (fio's rbd engine, 1 MiB
/// sequential writes, QD 8, random data), so that reads hit stored objects
/// rather than holes that librbd answers without asking an OSD.
pub fn precondition(fio: &Path, spec: &RbdSpec, size: u64, scratch: &Path) -> Result<()> {
    let log = scratch.join("fio-rbd-precondition.log");
    let stderr = std::fs::File::create(&log)
        .map_err(|e| BenchError::io(format!("creating {}", log.display()), e))?;
    let mut cmd = proc::command(fio);
    cmd.args([
        "--name=xenio-bench-rbd-precondition",
        "--ioengine=rbd",
        "--rw=write",
        "--bs=1M",
        "--iodepth=8",
        "--refill_buffers=1",
    ])
    .arg(format!("--size={size}"))
    .args(spec.fio_args())
    .envs(spec.fio_env())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr);
    let mut p = Proc::spawn(&mut cmd, "fio")?;
    let limit = Duration::from_secs(600);
    match p.wait_timeout(limit)? {
        Some(st) if st.success() => Ok(()),
        st => Err(BenchError::Tool {
            tool: "fio",
            what: format!(
                "writing {} MiB of {} (--ioengine=rbd): {}",
                size >> 20,
                spec.target,
                st.map_or_else(
                    || format!("still running after {} s; killed", limit.as_secs()),
                    |s| s.to_string()
                )
            ),
            detail: proc::log_tail(&log, 20),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_spelled_targets() {
        let s = RbdSpec::parse("rbd:rbd/disk:conf=/tmp/c\\:d/ceph.conf:id=bench:keyring=/tmp/k")
            .unwrap();
        assert_eq!((s.pool.as_str(), s.image.as_str()), ("rbd", "disk"));
        assert_eq!(s.client, "bench");
        assert_eq!(s.conf.as_deref(), Some(Path::new("/tmp/c:d/ceph.conf")));
        assert_eq!(
            s.fio_args(),
            ["--pool=rbd", "--rbdname=disk", "--clientname=bench"]
        );
        assert_eq!(
            s.fio_env(),
            [("CEPH_CONF", PathBuf::from("/tmp/c:d/ceph.conf"))]
        );
        let d = RbdSpec::parse("rbd:p/i").unwrap();
        assert_eq!((d.client.as_str(), d.conf.as_ref()), ("admin", None));
        assert!(d.fio_env().is_empty());
        for bad in [
            "nbd://x/y",
            "rbd:pool",
            "rbd:/i",
            "rbd:p/ns/i",
            "rbd:p/i@snap",
            "rbd:p/i:conf",
        ] {
            let e = RbdSpec::parse(bad).unwrap_err();
            assert!(e.contains("--rbd-target"), "{bad}: {e}");
        }
    }
}
