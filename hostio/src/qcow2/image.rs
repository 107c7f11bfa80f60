//! [`Qcow2Image`]: a qcow2 image and its backing chain, opened once per device.

use crate::disk::Direct;
use crate::{Error, Result};
use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate, StorageOpenOptions};
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// What `qemu-img` should turn a format xenio cannot serve into.
const CONVERT: &str = "convert it with `qemu-img convert -f vpc|vhdx -O qcow2 IN OUT` \
                       (or `-O raw`) and serve the result";

/// The image formats a block backend serves (`format=` of an xl disk spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// A raw file or block device ([`DiskQueue`](crate::disk::DiskQueue)).
    Raw,
    /// A qcow2 image ([`Qcow2Queue`](super::Qcow2Queue)).
    Qcow2,
}

impl FromStr for ImageFormat {
    type Err = Error;

    /// `raw` or `qcow2` (any case). `vhd`, `vpc` and `vhdx` are refused with the
    /// `qemu-img convert` command that makes a qcow2 or raw image of them.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for VHD and VHDX, [`Error::BadValue`] for anything
    /// else that is not `raw` or `qcow2`.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "raw" | "aio" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            f @ ("vhd" | "vpc" | "vhdx") => Err(Error::Unsupported(format!(
                "format={f}: xenio cannot write VHD/VHDX images (no library for them builds here); {CONVERT}"
            ))),
            _ => Err(Error::BadValue {
                what: "image format (raw, qcow2)".into(),
                value: s.into(),
            }),
        }
    }
}

/// How to open a [`Qcow2Image`].
#[derive(Clone, Debug, Default)]
pub struct Qcow2Open {
    /// Refuse writes and discards (the image and its backing files are opened
    /// read-only). Backing files are always opened read-only.
    pub readonly: bool,
    /// `O_DIRECT` on the image and its backing files: `Auto` (the default) uses it
    /// where the filesystem allows it, `On` insists, `Off` uses the page cache.
    pub direct: Direct,
}

/// A qcow2 image opened for I/O through [`Qcow2Queue`](super::Qcow2Queue)s, with its
/// backing chain (the files named in the headers, relative paths taken from the
/// directory of the image that names them).
///
/// Open an image once per device and share it between that device's queues in an
/// `Arc`: two openings of one writable image would each cache its metadata and
/// corrupt it. Dropping the last reference writes back imago's metadata caches.
pub struct Qcow2Image {
    pub(super) access: RwLock<FormatAccess<File>>,
    path: PathBuf,
    size: u64,
    readonly: bool,
    direct: bool,
    description: String,
    /// imago refused `discard_to_zero` (a version 2 image): write zeros instead.
    pub(super) no_zero_discard: AtomicBool,
    /// Reads and writes in flight on the queues' direct path (io_uring on a
    /// cluster's place in a file, found through imago's mapping): a discard,
    /// which may free clusters, waits until none is left.
    pub(super) direct_inflight: AtomicUsize,
    /// The direct path's descriptors, by imago storage object and access.
    fds: Mutex<HashMap<(usize, bool), Arc<DataFile>>>,
}

/// A file of the image's chain, opened by xenio for the direct path.
pub(super) struct DataFile {
    pub file: std::fs::File,
    /// Alignment of memory addresses and lengths for I/O on it.
    pub mem_align: u64,
    /// Alignment of file offsets and lengths.
    pub io_align: u64,
}

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Image")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("readonly", &self.readonly)
            .field("direct", &self.direct)
            .finish()
    }
}

impl Qcow2Image {
    /// Open the qcow2 image at `path` and its backing chain.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the image when it cannot be opened, is not a qcow2
    /// image (imago's reason: a bad magic, an unknown incompatible feature such
    /// as `extended_l2`), or a backing file is missing or broken;
    /// [`Error::Unsupported`] for a VHD or VHDX file (with the `qemu-img
    /// convert` command to use); with [`Direct::On`], an error when `O_DIRECT`
    /// is refused.
    pub fn open(path: impl AsRef<Path>, opts: &Qcow2Open) -> Result<Qcow2Image> {
        let path = path.as_ref().to_path_buf();
        let p = path.display();
        sniff(&path)?;
        preflight(&path)?;
        let open = |direct: bool| {
            Qcow2::<File>::builder_path(&path)
                .write(!opts.readonly)
                .storage_open_options(StorageOpenOptions::new().direct(direct))
                .open(PermissiveImplicitOpenGate::default())
        };
        let mut fallback = None;
        let (q, direct) = match opts.direct {
            Direct::On => (open(true), true),
            Direct::Off => (open(false), false),
            // tmpfs before Linux 6.6, ramfs and some others refuse O_DIRECT
            // (imago reports EINVAL inside its own error): try the page cache.
            Direct::Auto => match open(true) {
                Ok(q) => (Ok(q), true),
                Err(e) => match open(false) {
                    Ok(q) => {
                        fallback = Some(e.to_string());
                        (Ok(q), false)
                    }
                    Err(e2) => (Err(e2), false),
                },
            },
        };
        let q = q.map_err(|e| Error::io(format!("{p}: opening as a qcow2 image"), e))?;
        let backing = q.implicit_backing_file().cloned();
        let access = FormatAccess::new(q);
        let size = access.size();
        let backing = match backing {
            Some(b) => format!(", backing file {b}"),
            None => String::new(),
        };
        let cache = match (direct, fallback) {
            (true, _) => "O_DIRECT".to_string(),
            (false, Some(why)) => format!("page cache: O_DIRECT refused: {why}"),
            (false, None) => "page cache".to_string(),
        };
        let description = format!("qcow2 image {p} ({size} bytes{backing}, {cache})");
        Ok(Qcow2Image {
            access: RwLock::new(access),
            path,
            size,
            readonly: opts.readonly,
            direct,
            description,
            no_zero_discard: AtomicBool::new(false),
            direct_inflight: AtomicUsize::new(0),
            fds: Mutex::new(HashMap::new()),
        })
    }

    /// xenio's own descriptor for the file behind imago's `storage` (read-write
    /// if `write`), opened on first use with the image's cache mode.
    pub(super) fn data_file(&self, storage: &File, write: bool) -> io::Result<Arc<DataFile>> {
        use imago::Storage;
        use std::os::fd::AsFd;
        use std::os::unix::fs::OpenOptionsExt;
        let key = (std::ptr::from_ref(storage) as usize, write);
        let mut fds = self.fds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = fds.get(&key) {
            return Ok(f.clone());
        }
        let path = storage
            .get_filename()
            .ok_or_else(|| io::Error::other("imago storage without a file name"))?;
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(write);
        if self.direct {
            o.custom_flags(libc::O_DIRECT);
        }
        let file = o.open(&path)?;
        let (mem_align, io_align) = if self.direct {
            match crate::disk::sys::dio_align(file.as_fd()) {
                Some(a) if a.mem > 0 && a.offset > 0 => (u64::from(a.mem), u64::from(a.offset)),
                _ => (4096, 4096),
            }
        } else {
            (1, 1)
        };
        let f = Arc::new(DataFile {
            file,
            mem_align,
            io_align,
        });
        fds.insert(key, f.clone());
        Ok(f)
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The virtual disk's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// The virtual disk's size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.size / 512
    }

    /// Whether writes and discards are refused.
    pub fn is_readonly(&self) -> bool {
        self.readonly
    }

    /// Whether `O_DIRECT` is in use.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// One line for logs: the image, its size, its backing file, the cache mode.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether discards free clusters (false once imago refused
    /// `discard_to_zero`: a version 2 image, where a discard writes zeros).
    pub fn discards_free_space(&self) -> bool {
        !self.no_zero_discard.load(Ordering::Relaxed)
    }
}

/// Refuse VHD and VHDX files by their signatures, naming the conversion.
fn sniff(path: &Path) -> Result<()> {
    let p = path.display();
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("{p}: opening"), e))?;
    let mut head = [0u8; 8];
    let n = read_full(&mut f, &mut head).map_err(|e| Error::io(format!("{p}: reading"), e))?;
    let kind = match &head[..n] {
        b"vhdxfile" => Some("a VHDX image"),
        // A dynamic VHD starts with a copy of its footer; a fixed one has the
        // footer only in its last 512 bytes.
        b"conectix" => Some("a VHD image"),
        _ => {
            use std::io::{Seek, SeekFrom};
            let fixed_vhd = f.seek(SeekFrom::End(-512)).is_ok()
                && read_full(&mut f, &mut head).is_ok_and(|n| n == 8)
                && &head == b"conectix";
            fixed_vhd.then_some("a fixed VHD image")
        }
    };
    match kind {
        Some(k) => Err(Error::Unsupported(format!(
            "{p} is {k}: xenio cannot write VHD/VHDX images; {CONVERT}"
        ))),
        None => Ok(()),
    }
}

/// Refuse a qcow2 image whose L1 or refcount table, or first refcount block,
/// lies outside the file (a truncated or corrupt image): imago 0.2.6 recurses
/// without end when it must allocate a refcount block for a table that reads as
/// zeros, which overflows the stack. Files without qcow2's magic are left to
/// imago, which names what is wrong.
fn preflight(path: &Path) -> Result<()> {
    let p = path.display();
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("{p}: opening"), e))?;
    let file_len = f
        .metadata()
        .map_err(|e| Error::io(format!("{p}: stat"), e))?
        .len();
    let mut h = [0u8; 72];
    let n = read_full(&mut f, &mut h).map_err(|e| Error::io(format!("{p}: reading"), e))?;
    if n < 4 || h[..4] != *b"QFI\xfb" {
        return Ok(());
    }
    let corrupt = |what: String| {
        Error::io(
            format!("{p}: opening as a qcow2 image"),
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "truncated or corrupt image: {what} (`qemu-img check -r all` may repair it)"
                ),
            ),
        )
    };
    if n < h.len() {
        return Err(corrupt(format!("the header is cut off after {n} bytes")));
    }
    let be32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let be64 = |o: usize| (u64::from(be32(o)) << 32) | u64::from(be32(o + 4));
    let cluster_bits = be32(20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(corrupt(format!("cluster_bits {cluster_bits} (9..=21)")));
    }
    let cluster = 1u64 << cluster_bits;
    let inside = |what: &str, offset: u64, len: u64| match offset.checked_add(len) {
        Some(end) if end <= file_len && offset % cluster == 0 => Ok(()),
        _ => Err(corrupt(format!(
            "the {what} ({len} bytes at offset {offset}) lies outside the file ({file_len} bytes) or is unaligned"
        ))),
    };
    inside("L1 table", be64(40), u64::from(be32(36)) * 8)?;
    let rt = be64(48);
    inside("refcount table", rt, u64::from(be32(56)) * cluster)?;
    let mut first = [0u8; 8];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(rt))
        .and_then(|_| read_full(&mut f, &mut first))
        .map_err(|e| Error::io(format!("{p}: reading the refcount table"), e))?;
    let rb = u64::from_be_bytes(first) & !0x1ff;
    if rb == 0 {
        return Err(corrupt("the first refcount block is missing".into()));
    }
    inside("first refcount block", rb, cluster)
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
