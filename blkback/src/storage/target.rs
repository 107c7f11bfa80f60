//! [`StorageTarget`]: what an `xl` disk spec (`format=` and `target=`) or a
//! toolstack's `params` node names, and [`StorageTarget::open`], the one place
//! where that becomes a [`Storage`](super::Storage) ([`AnyStorage`]).

use super::any::AnyStorage;
use super::file::FileStorage;
use super::nbd::NbdStorage;
use super::options::OpenOptions;
use super::qcow2::Qcow2Storage;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a disk specification (or a `params` value) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad disk specification: {}", self.0)
    }
}

impl std::error::Error for SpecError {}

/// The NBD URI schemes (the NBD URI standard, as libnbd takes them).
const NBD_SCHEMES: [&str; 4] = ["nbd://", "nbd+unix://", "nbds://", "nbds+unix://"];

/// What a disk is served from, as the `xl` disk spec names it.
///
/// | `format=` | `target=` | storage |
/// | --- | --- | --- |
/// | `raw` (the default; `aio` as libxl writes it) | a file or block device | [`FileStorage`] (io_uring, O_DIRECT) |
/// | `qcow2` | a qcow2 image (its backing chain is opened too) | [`Qcow2Storage`] (imago) |
/// | `raw` | `nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH` (and `nbds` with TLS) | [`NbdStorage`] (libnbd) |
/// | `raw` | `rbd:pool[/namespace]/image[@snap][:conf=PATH][:id=NAME][:keyring=PATH][:opt=value...]` | `RbdStorage` (librbd, cargo feature `rbd`) |
///
/// Refused, with what to do instead: `vhd`/`vpc`/`vhdx` (no library that writes
/// them builds here: convert with `qemu-img convert -O qcow2`), `qcow`, `qed`,
/// `vmdk`, `empty`, and any format other than `raw` over an NBD export or an
/// RBD image (serve the image with qemu-nbd, which exports any format as raw).
///
/// ```
/// use xenio_blkback::storage::StorageTarget;
///
/// let t = StorageTarget::parse(Some("qcow2"), "/srv/vm.qcow2")?;
/// assert_eq!(t, StorageTarget::Qcow2("/srv/vm.qcow2".into()));
/// let n = StorageTarget::parse(None, "nbd+unix:///disk?socket=/run/nbd.sock")?;
/// assert!(matches!(n, StorageTarget::Nbd(_)));
/// // A toolstack's `params` node: `format:target`, or just the target.
/// assert_eq!(StorageTarget::from_params("qcow2:/srv/vm.qcow2")?, t);
/// assert!(matches!(StorageTarget::from_params("rbd:pool/img")?, StorageTarget::Rbd(_)));
/// assert!(StorageTarget::parse(Some("vhd"), "/srv/vm.vhd").unwrap_err().0.contains("qemu-img convert"));
/// # Ok::<(), xenio_blkback::storage::SpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageTarget {
    /// A raw image file or block device.
    Raw(PathBuf),
    /// A qcow2 image (with its backing chain).
    Qcow2(PathBuf),
    /// An NBD export, by URI.
    Nbd(String),
    /// A Ceph RBD image, in QEMU's spelling (`rbd:pool/image...`).
    Rbd(String),
}

impl StorageTarget {
    /// The dispatch: `format` (`None`: raw) and `target` as a disk spec gives
    /// them, to what serves them. Nothing is opened.
    ///
    /// # Errors
    ///
    /// [`SpecError`] naming the format or target and what to do instead.
    pub fn parse(format: Option<&str>, target: &str) -> Result<StorageTarget, SpecError> {
        let err = |m: String| Err(SpecError(m));
        if target.is_empty() {
            return err(
                "no target (the image file, block device, NBD URI or rbd:pool/image)".into(),
            );
        }
        let format = format.map(str::to_ascii_lowercase);
        let format = format.as_deref().unwrap_or("raw");
        let remote = if NBD_SCHEMES.iter().any(|s| target.starts_with(s)) {
            Some(StorageTarget::Nbd(target.to_string()))
        } else if target.starts_with("rbd:") {
            Some(StorageTarget::Rbd(target.to_string()))
        } else {
            None
        };
        match (format, remote) {
            ("raw" | "aio", Some(r)) => Ok(r),
            (f, Some(_)) => err(format!(
                "format={f} over {target:?}: an NBD export or RBD image is served as raw; \
                 to serve a {f} image over the network, export it with qemu-nbd (which \
                 serves any format as raw) and give its nbd:// URI with format=raw"
            )),
            ("raw" | "aio", None) => Ok(StorageTarget::Raw(PathBuf::from(target))),
            ("qcow2", None) => Ok(StorageTarget::Qcow2(PathBuf::from(target))),
            (f @ ("vhd" | "vpc" | "vhdx"), None) => err(format!(
                "format={f}: xenio cannot write VHD/VHDX images (no library for them builds \
                 here); convert it with `qemu-img convert -f {} -O qcow2 {target} OUT.qcow2` \
                 and serve OUT.qcow2 with format=qcow2",
                if f == "vhdx" { "vhdx" } else { "vpc" }
            )),
            (f @ ("qcow" | "qed" | "vmdk"), None) => err(format!(
                "format={f} is not served by xenio; convert it with `qemu-img convert -f {f} \
                 -O qcow2 {target} OUT.qcow2` and serve OUT.qcow2 with format=qcow2"
            )),
            ("empty", None) => {
                err("format=empty (an empty CD-ROM drive) is not served by xenio".into())
            }
            (f, None) => err(format!(
                "format {f:?} is not supported (xenio serves raw and qcow2 images, nbd:// \
                 exports and rbd: images)"
            )),
        }
    }

    /// A toolstack's `params` node, as libxl writes it for a userspace backend:
    /// `format:target` (`qcow2:/srv/vm.qcow2`, `raw:nbd://host/disk`,
    /// `aio:/srv/vm.img`), or the target alone (`/dev/vg/vm`,
    /// `rbd:pool/image`, `nbd://host/disk`), which is raw.
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse).
    pub fn from_params(params: &str) -> Result<StorageTarget, SpecError> {
        let params = params.trim();
        match params.split_once(':') {
            Some((f, t))
                if matches!(
                    f.to_ascii_lowercase().as_str(),
                    "raw"
                        | "aio"
                        | "qcow2"
                        | "qcow"
                        | "qed"
                        | "vhd"
                        | "vpc"
                        | "vhdx"
                        | "vmdk"
                        | "empty"
                ) =>
            {
                Self::parse(Some(f), t)
            }
            _ => Self::parse(None, params),
        }
    }

    /// The target as the user wrote it (a path, a URI, an `rbd:` spec).
    pub fn target(&self) -> String {
        match self {
            StorageTarget::Raw(p) | StorageTarget::Qcow2(p) => p.display().to_string(),
            StorageTarget::Nbd(s) | StorageTarget::Rbd(s) => s.clone(),
        }
    }

    /// `raw` or `qcow2`: the format the frontend's disk has.
    pub fn format(&self) -> &'static str {
        match self {
            StorageTarget::Qcow2(_) => "qcow2",
            _ => "raw",
        }
    }

    /// Open what this names: the one function from a disk spec to a storage.
    ///
    /// # Errors
    ///
    /// What opening said (a missing file, a broken backing chain, an NBD server
    /// that does not answer within [`OpenOptions::connect_timeout`], a Ceph
    /// cluster that cannot be reached), with the target in the message;
    /// [`ErrorKind::Unsupported`](io::ErrorKind::Unsupported) for an `rbd:`
    /// target in a build without the cargo feature `rbd`.
    pub fn open(&self, opts: &OpenOptions) -> io::Result<AnyStorage> {
        Ok(match self {
            StorageTarget::Raw(p) => AnyStorage::File(FileStorage::open_with(p, opts)?),
            StorageTarget::Qcow2(p) => AnyStorage::Qcow2(Qcow2Storage::open(p, opts)?),
            StorageTarget::Nbd(uri) => AnyStorage::Nbd(NbdStorage::connect(uri, opts)?),
            #[cfg(feature = "rbd")]
            StorageTarget::Rbd(spec) => AnyStorage::Rbd(super::rbd::RbdStorage::open(spec, opts)?),
            #[cfg(not(feature = "rbd"))]
            StorageTarget::Rbd(spec) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{spec}: this xenio was built without Ceph RBD support \
                         (build with `--features rbd`, which needs librbd-dev)"
                    ),
                ));
            }
        })
    }
}

impl fmt::Display for StorageTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.format(), self.target())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_maps_to_its_storage() {
        let ok = |f: Option<&str>, t: &str| StorageTarget::parse(f, t).unwrap();
        assert_eq!(ok(None, "/a.img"), StorageTarget::Raw("/a.img".into()));
        assert_eq!(
            ok(Some("aio"), "/a.img"),
            StorageTarget::Raw("/a.img".into())
        );
        assert_eq!(
            ok(Some("QCOW2"), "/a.q"),
            StorageTarget::Qcow2("/a.q".into())
        );
        for uri in [
            "nbd://127.0.0.1:10809/disk",
            "nbd://host/disk",
            "nbd+unix:///disk?socket=/run/s",
            "nbds://host/disk",
        ] {
            assert_eq!(ok(Some("raw"), uri), StorageTarget::Nbd(uri.into()));
        }
        let rbd = "rbd:pool/img:conf=/etc/ceph/ceph.conf:id=admin";
        assert_eq!(ok(None, rbd), StorageTarget::Rbd(rbd.into()));
    }

    #[test]
    fn params_take_an_optional_format_prefix() {
        let p = |s: &str| StorageTarget::from_params(s).unwrap();
        assert_eq!(p("/dev/vg/lv"), StorageTarget::Raw("/dev/vg/lv".into()));
        assert_eq!(p("aio:/x.img"), StorageTarget::Raw("/x.img".into()));
        assert_eq!(p("qcow2:/x:y.q"), StorageTarget::Qcow2("/x:y.q".into()));
        assert_eq!(p("raw:nbd://h/e"), StorageTarget::Nbd("nbd://h/e".into()));
        assert_eq!(p("nbd://h/e"), StorageTarget::Nbd("nbd://h/e".into()));
        assert_eq!(p("rbd:p/i"), StorageTarget::Rbd("rbd:p/i".into()));
        assert_eq!(p("raw:rbd:p/i"), StorageTarget::Rbd("rbd:p/i".into()));
        // A path with a colon that is not a format stays a path.
        assert_eq!(p("/srv/a:b"), StorageTarget::Raw("/srv/a:b".into()));
    }

    #[test]
    fn refusals_say_what_to_do() {
        for (f, t, why) in [
            (Some("vhd"), "/x.vhd", "qemu-img convert -f vpc"),
            (Some("vpc"), "/x.vhd", "qemu-img convert -f vpc"),
            (Some("vhdx"), "/x.vhdx", "qemu-img convert -f vhdx"),
            (Some("qed"), "/x", "qemu-img convert -f qed"),
            (Some("qcow2"), "nbd://h/e", "qemu-nbd"),
            (Some("qcow2"), "rbd:p/i", "served as raw"),
            (Some("empty"), "/x", "empty"),
            (Some("floppy"), "/x", "not supported"),
            (None, "", "no target"),
        ] {
            let e = StorageTarget::parse(f, t).unwrap_err().to_string();
            assert!(e.contains(why), "{f:?} {t}: {e}");
        }
        assert!(StorageTarget::from_params("vhdx:/a").is_err());
    }

    /// Every open error names the target once, then what was being done and
    /// why, and keeps its kind (a caller adds its own context in front).
    #[test]
    fn open_errors_name_the_target_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bad = d.join("bad.qcow2");
        std::fs::write(&bad, vec![7u8; 4096]).unwrap();
        let sock = d.join("no.sock");
        let uri = format!("nbd+unix:///disk?socket={}", sock.display());
        let opts = OpenOptions::default();
        let open = |t: StorageTarget| {
            let Err(e) = t.open(&opts) else {
                panic!("{t}: the open must fail")
            };
            let msg = e.to_string();
            let name = t.target();
            assert_eq!(msg.matches(name.as_str()).count(), 1, "{msg}");
            assert!(msg.starts_with(&format!("{name}: ")), "{msg}");
            (msg, e.kind())
        };

        let missing = d.join("missing.img");
        assert_eq!(
            open(StorageTarget::Raw(missing.clone())),
            (
                format!(
                    "{}: stat: No such file or directory (os error 2)",
                    missing.display()
                ),
                io::ErrorKind::NotFound
            )
        );
        assert_eq!(
            open(StorageTarget::Raw(d.to_path_buf())),
            (
                format!(
                    "{}: opening as a disk: not a regular file or a block device",
                    d.display()
                ),
                io::ErrorKind::InvalidInput
            )
        );
        assert_eq!(
            open(StorageTarget::Qcow2(bad.clone())),
            (
                format!(
                    "{}: opening as a qcow2 image: Not a qcow2 file",
                    bad.display()
                ),
                io::ErrorKind::InvalidData
            )
        );
        // Nothing listens on the socket: libnbd's own words follow.
        let (msg, kind) = open(StorageTarget::Nbd(uri.clone()));
        assert!(
            msg.starts_with(&format!(
                "{uri}: connecting: nbd_aio_connect_uri: connect: "
            )),
            "{msg}"
        );
        assert_eq!(kind, io::ErrorKind::NotFound, "{msg}");
    }
}
