//! The disk to serve, in `xl`'s disk specification syntax
//! (`docs/man/xl-disk-configuration.5` in Xen): comma-separated `key=value`
//! pairs, e.g. `format=raw,vdev=xvda,access=rw,target=/path/disk.img`, where
//! `target=` swallows the rest of the string (so paths may contain commas), or the
//! positional form `<target>,<format>,<vdev>,<access>`. `format=` and `target=`
//! choose the storage ([`StorageTarget`]): `raw` files and block devices,
//! `qcow2` images, `nbd://` / `nbd+unix://` URIs, `rbd:pool/image` specs.

pub use crate::storage::SpecError;
use crate::storage::StorageTarget;
use std::path::PathBuf;

/// A parsed disk specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The target as written: an image file or block device, an NBD URI, an
    /// `rbd:` spec.
    pub target: PathBuf,
    /// What serves it ([`StorageTarget::parse`] of `format=` and `target=`);
    /// [`StorageTarget::open`] opens it.
    pub storage: StorageTarget,
    /// The virtual device name as given (`xvda`, `hdb`, `sdc1`, or a number).
    pub vdev: String,
    /// The Xen device number the vdev stands for (`docs/misc/vbd-interface.txt`).
    pub devid: u32,
    /// `access=ro` (or `r`): writes are rejected with an error response.
    pub readonly: bool,
    /// `devtype=cdrom`.
    pub cdrom: bool,
    /// `discard` / `no-discard` (default: discard when the storage supports it).
    pub discard: bool,
}

impl std::str::FromStr for DiskSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let err = |m: String| SpecError(m);
        let (mut target, mut format, mut vdev, mut access, mut devtype) =
            (None, None, None, None, None);
        let mut discard = true;
        let mut positional = Vec::new();
        let mut rest = spec.trim();
        while !rest.is_empty() {
            // `target=` takes everything after it, commas included.
            if let Some(t) = rest.strip_prefix("target=") {
                target = Some(t.to_string());
                break;
            }
            let (item, tail) = match rest.split_once(',') {
                Some((i, t)) => (i.trim(), t.trim_start()),
                None => (rest, ""),
            };
            rest = tail;
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some(("format", v)) => format = Some(v.to_string()),
                Some(("vdev", v)) => vdev = Some(v.to_string()),
                Some(("access", v)) => access = Some(v.to_string()),
                Some(("devtype", v)) => devtype = Some(v.to_string()),
                Some((
                    "backendtype" | "backend" | "script" | "specification" | "direct-io-safe",
                    _,
                )) => {}
                Some((k, _)) => {
                    return Err(err(format!(
                        "unknown key {k:?} (known: target, format, vdev, access, devtype, backendtype, backend, script, discard, no-discard)"
                    )));
                }
                None => match item {
                    "discard" => discard = true,
                    "no-discard" => discard = false,
                    "cdrom" => devtype = Some("cdrom".into()),
                    "direct-io-safe" => {}
                    other => positional.push(other.to_string()),
                },
            }
        }
        // Positional: target, format, vdev, access (in that order, for those not given).
        let mut pos = positional.into_iter();
        if target.is_none() {
            target = pos.next();
        }
        if format.is_none() {
            if let Some(p) = pos.next() {
                format = Some(p);
            }
        }
        if vdev.is_none() {
            vdev = pos.next();
        }
        if access.is_none() {
            access = pos.next();
        }
        if let Some(extra) = pos.next() {
            return Err(err(format!("unexpected extra item {extra:?}")));
        }
        let target = target.filter(|t| !t.is_empty()).ok_or_else(|| {
            err("no target (the image file, block device, NBD URI or rbd:pool/image)".into())
        })?;
        let storage = StorageTarget::parse(format.as_deref(), &target)?;
        let vdev = vdev.ok_or_else(|| err("no vdev (e.g. vdev=xvda)".into()))?;
        let devid = vdev_to_devid(&vdev).ok_or_else(|| {
            err(format!(
                "vdev {vdev:?} is not a Xen virtual disk name (xvdX, hdX, sdX, or a number)"
            ))
        })?;
        let readonly = match access.as_deref().unwrap_or("rw") {
            "rw" | "w" => false,
            "ro" | "r" => true,
            a => return Err(err(format!("access {a:?} must be rw or ro"))),
        };
        let cdrom = match devtype.as_deref().unwrap_or("disk") {
            "disk" => false,
            "cdrom" => true,
            d => return Err(err(format!("devtype {d:?} must be disk or cdrom"))),
        };
        Ok(DiskSpec {
            target: PathBuf::from(target),
            storage,
            vdev,
            devid,
            readonly: readonly || cdrom,
            cdrom,
            discard,
        })
    }
}

/// Disk letters: a..z, then aa..zz..., bijective base 26.
fn letters_to_index(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    let mut n: u32 = 0;
    for c in s.bytes() {
        if !c.is_ascii_lowercase() {
            return None;
        }
        n = n.checked_mul(26)?.checked_add(u32::from(c - b'a') + 1)?;
    }
    Some(n - 1)
}

/// The device number of a vdev name, per Xen's `docs/misc/vbd-interface.txt`.
pub fn vdev_to_devid(vdev: &str) -> Option<u32> {
    if let Ok(n) = vdev.parse::<u32>() {
        return Some(n);
    }
    let (prefix, rest) = ["xvd", "hd", "sd"]
        .iter()
        .find_map(|p| vdev.strip_prefix(p).map(|r| (*p, r)))?;
    let split = rest
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(rest.len());
    let disk = letters_to_index(&rest[..split])?;
    let part: u32 = if split == rest.len() {
        0
    } else {
        rest[split..].parse().ok()?
    };
    match prefix {
        "xvd" if disk < 16 && part < 16 => Some((202 << 8) | (disk << 4) | part),
        "xvd" if disk < (1 << 20) && part < 256 => Some((1 << 28) | (disk << 8) | part),
        "hd" if disk < 2 && part < 64 => Some((3 << 8) | (disk << 6) | part),
        "hd" if disk < 4 && part < 64 => Some((22 << 8) | ((disk - 2) << 6) | part),
        "sd" if disk < 16 && part < 16 => Some((8 << 8) | (disk << 4) | part),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_key_value_form_with_target_last() {
        let d: DiskSpec = "format=raw,vdev=xvda,access=rw,target=/tmp/a,b.img"
            .parse()
            .unwrap();
        assert_eq!(d.target, PathBuf::from("/tmp/a,b.img"));
        assert_eq!(d.devid, 51712);
        assert!(!d.readonly && d.discard && !d.cdrom);
        let ro: DiskSpec = "vdev=xvdb,access=ro,no-discard,target=/dev/loop0"
            .parse()
            .unwrap();
        assert!(ro.readonly && !ro.discard);
        assert_eq!(ro.devid, 51728);
    }

    #[test]
    fn format_and_target_choose_the_storage() {
        let s = |spec: &str| spec.parse::<DiskSpec>().unwrap().storage;
        assert_eq!(
            s("format=qcow2,vdev=xvda,target=/a,b.qcow2"),
            StorageTarget::Qcow2("/a,b.qcow2".into())
        );
        assert_eq!(
            s("vdev=xvda,target=nbd+unix:///d?socket=/r/s"),
            StorageTarget::Nbd("nbd+unix:///d?socket=/r/s".into())
        );
        assert_eq!(
            s("format=raw,vdev=xvda,target=rbd:p/i:conf=/c:id=a"),
            StorageTarget::Rbd("rbd:p/i:conf=/c:id=a".into())
        );
        assert_eq!(s("/x.q,qcow2,xvdb,rw"), StorageTarget::Qcow2("/x.q".into()));
    }

    #[test]
    fn parses_the_positional_form() {
        let d: DiskSpec = "/srv/disk.img,raw,xvdc,ro".parse().unwrap();
        assert_eq!(d.target, PathBuf::from("/srv/disk.img"));
        assert_eq!(d.vdev, "xvdc");
        assert!(d.readonly);
    }

    #[test]
    fn refuses_what_it_cannot_serve_with_a_reason() {
        for (spec, why) in [
            ("vdev=xvda", "no target"),
            ("format=vhd,vdev=xvda,target=/x", "qemu-img convert"),
            ("format=qcow2,vdev=xvda,target=nbd://h/e", "qemu-nbd"),
            ("format=raw,target=/x", "no vdev"),
            ("vdev=xvd,target=/x", "not a Xen virtual disk"),
            ("vdev=xvda,access=rx,target=/x", "rw or ro"),
            ("vdev=xvda,colour=blue,target=/x", "unknown key"),
            ("/x,raw,xvda,rw,extra", "extra item"),
        ] {
            let e = spec.parse::<DiskSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn vdev_numbers_follow_vbd_interface_txt() {
        assert_eq!(vdev_to_devid("xvda"), Some(51712));
        assert_eq!(vdev_to_devid("xvdb1"), Some(51729));
        assert_eq!(vdev_to_devid("xvdp"), Some((202 << 8) | (15 << 4)));
        assert_eq!(vdev_to_devid("xvdq"), Some((1 << 28) | (16 << 8)));
        assert_eq!(vdev_to_devid("xvdaa"), Some((1 << 28) | (26 << 8)));
        assert_eq!(vdev_to_devid("hda"), Some(768));
        assert_eq!(vdev_to_devid("hdc"), Some(22 << 8));
        assert_eq!(vdev_to_devid("sda"), Some(2048));
        assert_eq!(vdev_to_devid("51712"), Some(51712));
        assert_eq!(vdev_to_devid("xvdA"), None);
        assert_eq!(vdev_to_devid("nvme0"), None);
    }
}
