//! [`BlockFile`]: an image file or a block device opened for zero-copy I/O, with
//! the geometry and capabilities a block backend advertises.

use super::sys;
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether to bypass the page cache (`O_DIRECT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direct {
    /// `O_DIRECT` where it bypasses a cache; the page cache otherwise (a filesystem
    /// that refuses `O_DIRECT`, or tmpfs, whose data lives in the page cache
    /// anyway), with the reason in [`BlockFile::fallback_reason`].
    #[default]
    Auto,
    /// `O_DIRECT` or fail.
    On,
    /// Always the page cache.
    Off,
}

/// How to open a [`BlockFile`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DiskOpen {
    /// Open read-only: writes and discards are refused before they reach the kernel.
    pub readonly: bool,
    /// `O_DIRECT` policy.
    pub direct: Direct,
}

/// Discard (trim) support, as blkif's `discard-granularity` and `discard-alignment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiscardInfo {
    /// Bytes: discards smaller than this, or not aligned to it, may free nothing.
    pub granularity: u32,
    /// Bytes: offset of the first granule from the start of the disk.
    pub alignment: u32,
}

/// An image file or a block device, opened for I/O through a
/// [`DiskQueue`](super::DiskQueue).
///
/// Sizes are probed once, at open. Share it between queue threads in an `Arc`.
#[derive(Debug)]
pub struct BlockFile {
    file: File,
    path: PathBuf,
    readonly: bool,
    block: bool,
    direct: bool,
    fallback: Option<String>,
    /// Bytes at open, or at the last [`BlockFile::refresh_size`].
    size: AtomicU64,
    logical: u32,
    physical: u32,
    mem_align: u32,
    discard: std::result::Result<DiscardInfo, String>,
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The filesystem's magic number (`statfs.f_type`).
fn fs_magic(fd: BorrowedFd<'_>) -> Option<i64> {
    let st = nix::sys::statfs::fstatfs(fd).ok()?;
    #[allow(clippy::unnecessary_cast)] // the type of f_type differs between libcs
    Some(st.filesystem_type().0 as i64)
}

/// A short name for a filesystem type, for messages.
fn fs_name(fd: BorrowedFd<'_>) -> String {
    let Some(magic) = fs_magic(fd) else {
        return "unknown filesystem".into();
    };
    match magic {
        TMPFS_MAGIC => "tmpfs".into(),
        0x8584_58f6 => "ramfs".into(),
        0xef53 => "ext2/3/4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0x0102_1997 => "9p".into(),
        m => format!("filesystem type {m:#x}"),
    }
}

fn pow2_in(v: u32, lo: u32, hi: u32) -> bool {
    v.is_power_of_two() && (lo..=hi).contains(&v)
}

/// Read a number from sysfs.
fn sysfs_u64(path: &Path) -> io::Result<u64> {
    let s = std::fs::read_to_string(path)?;
    s.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {s:?}", path.display()),
        )
    })
}

/// `/sys/dev/block/M:m/queue`, or the parent's for a partition (which has none).
fn sysfs_queue(dev: u64) -> PathBuf {
    let base = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(dev),
        libc::minor(dev)
    ));
    let q = base.join("queue");
    if q.exists() { q } else { base.join("../queue") }
}

impl BlockFile {
    /// Open a regular file or a block device. The file must exist; a read-write
    /// open of a read-only device or file fails.
    ///
    /// ```
    /// use xenio_hostio::disk::{BlockFile, DiskOpen};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("disk.img");
    /// std::fs::File::create(&path).unwrap().set_len(1 << 20).unwrap();
    /// let disk = BlockFile::open(&path, DiskOpen::default()).unwrap();
    /// assert_eq!(disk.sectors(), 2048);
    /// if let Some(why) = disk.fallback_reason() {
    ///     println!("{why}");
    /// }
    /// ```
    pub fn open(path: impl AsRef<Path>, opts: DiskOpen) -> Result<BlockFile> {
        let path = path.as_ref();
        let shown = path.display();
        let access = if opts.readonly {
            "read-only"
        } else {
            "read-write"
        };

        // Look before opening: opening a FIFO would block.
        let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("{shown}: stat"), e))?;
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(Error::io(
                format!("{shown}: opening as a disk"),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file or a block device",
                ),
            ));
        }

        let open = |direct: bool| -> io::Result<File> {
            let mut o = OpenOptions::new();
            o.read(true).write(!opts.readonly);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let want = opts.direct != Direct::Off;
        let (file, mut direct, mut fallback) = match open(want) {
            Ok(f) => (f, want, None),
            Err(e) if want && e.raw_os_error() == Some(libc::EINVAL) => {
                // Tell a refusal of O_DIRECT apart from any other EINVAL: the same
                // open without it must work.
                let f =
                    open(false).map_err(|e| Error::io(format!("{shown}: opening {access}"), e))?;
                let fs = fs_name(f.as_fd());
                if opts.direct == Direct::On {
                    return Err(Error::io(
                        format!("{shown}: opening {access} with O_DIRECT (Direct::On)"),
                        io::Error::new(
                            io::ErrorKind::Unsupported,
                            format!(
                                "O_DIRECT refused by the filesystem ({fs}, EINVAL); \
                                 Direct::Auto would use the page cache instead"
                            ),
                        ),
                    ));
                }
                let why = format!(
                    "O_DIRECT refused by the filesystem of {shown} ({fs}, EINVAL): using the page cache"
                );
                (f, false, Some(why))
            }
            Err(e) => {
                let how = if want { " with O_DIRECT" } else { "" };
                return Err(Error::io(format!("{shown}: opening {access}{how}"), e));
            }
        };

        let st = nix::sys::stat::fstat(file.as_fd())
            .map_err(|e| Error::io(format!("{shown}: fstat"), e.into()))?;
        let fmt = st.st_mode & libc::S_IFMT;
        let block = fmt == libc::S_IFBLK;
        if !block && fmt != libc::S_IFREG {
            return Err(Error::io(
                format!("{shown}: opening as a disk"),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file or a block device",
                ),
            ));
        }

        if direct
            && !block
            && opts.direct == Direct::Auto
            && fs_magic(file.as_fd()) == Some(TMPFS_MAGIC)
        {
            // tmpfs accepts O_DIRECT since Linux 6.6, but only by copying through the
            // page cache where its data lives: the same work as buffered I/O, with
            // O_DIRECT's alignment rules on top.
            use nix::fcntl::{FcntlArg, OFlag, fcntl};
            let flags = fcntl(file.as_fd(), FcntlArg::F_GETFL)
                .map_err(|e| Error::io(format!("{shown}: fcntl(F_GETFL)"), e.into()))?;
            let flags = OFlag::from_bits_truncate(flags) - OFlag::O_DIRECT;
            fcntl(file.as_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| {
                Error::io(
                    format!("{shown}: fcntl(F_SETFL) clearing O_DIRECT"),
                    e.into(),
                )
            })?;
            direct = false;
            fallback = Some(format!(
                "{shown} is on tmpfs, where O_DIRECT only copies through the page cache that holds \
                 the data anyway: using the page cache"
            ));
        }

        let fd = file.as_fd();
        let (size, logical, physical, mem_align) = if block {
            let ctx = |what: &str| format!("{shown}: {what}");
            let size =
                sys::blkgetsize64(fd).map_err(|e| Error::io(ctx("ioctl(BLKGETSIZE64)"), e))?;
            let logical = sys::blksszget(fd).map_err(|e| Error::io(ctx("ioctl(BLKSSZGET)"), e))?;
            let physical =
                sys::blkpbszget(fd).map_err(|e| Error::io(ctx("ioctl(BLKPBSZGET)"), e))?;
            if !pow2_in(logical, 512, 65536) {
                return Err(Error::BadValue {
                    what: format!("{shown}: logical block size (BLKSSZGET)"),
                    value: logical.to_string(),
                });
            }
            let physical = if pow2_in(physical, logical, 1 << 20) {
                physical
            } else {
                logical
            };
            (size, logical, physical, logical)
        } else {
            let size = st.st_size as u64;
            let (logical, mem) = if direct {
                match sys::dio_align(fd) {
                    Some(a) if pow2_in(a.offset, 1, 65536) => {
                        let logical = a.offset.max(512);
                        let mem = if pow2_in(a.mem, 1, 65536) {
                            a.mem.max(logical)
                        } else {
                            logical
                        };
                        (logical, mem)
                    }
                    // No STATX_DIOALIGN (Linux < 6.1): the device under the filesystem.
                    _ => {
                        let q = sysfs_queue(st.st_dev as u64).join("logical_block_size");
                        match sysfs_u64(&q).ok().and_then(|v| u32::try_from(v).ok()) {
                            Some(v) if pow2_in(v, 512, 65536) => (v, v),
                            // Unknown: 4096 is a multiple of every usual sector size.
                            _ => (4096, 4096),
                        }
                    }
                }
            } else {
                (512, 512)
            };
            let blksize = u32::try_from(st.st_blksize).unwrap_or(0);
            let physical = if pow2_in(blksize, logical, 65536) {
                blksize
            } else {
                logical.max(4096)
            };
            (size, logical, physical, mem)
        };

        let discard = if opts.readonly {
            Err("the disk is opened read-only".to_string())
        } else if block {
            Self::probe_discard_block(st.st_rdev as u64)
        } else {
            let granularity = u32::try_from(st.st_blksize)
                .ok()
                .filter(|&g| pow2_in(g, 512, 1 << 20))
                .unwrap_or(4096);
            // Punching a hole past the end of the file (KEEP_SIZE) changes nothing,
            // but a filesystem without hole punching refuses it all the same.
            let probe_at = size.div_ceil(4096).saturating_mul(4096);
            match sys::punch_hole(fd, probe_at, 4096) {
                Ok(()) => Ok(DiscardInfo {
                    granularity,
                    alignment: 0,
                }),
                Err(e) => Err(format!(
                    "the filesystem of {shown} ({}) refuses FALLOC_FL_PUNCH_HOLE: {e}",
                    fs_name(fd)
                )),
            }
        };

        Ok(BlockFile {
            path: path.to_path_buf(),
            readonly: opts.readonly,
            block,
            direct,
            fallback,
            size: AtomicU64::new(size),
            logical,
            physical,
            mem_align,
            discard,
            file,
        })
    }

    fn probe_discard_block(rdev: u64) -> std::result::Result<DiscardInfo, String> {
        let q = sysfs_queue(rdev);
        let max = sysfs_u64(&q.join("discard_max_bytes")).map_err(|e| {
            format!(
                "cannot read the device's discard limits ({}): {e}",
                q.display()
            )
        })?;
        if max == 0 {
            return Err(format!(
                "the device does not support discard ({} is 0)",
                q.join("discard_max_bytes").display()
            ));
        }
        let granularity = sysfs_u64(&q.join("discard_granularity"))
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .filter(|&g| g > 0)
            .unwrap_or(512);
        let alignment = sysfs_u64(&q.join("../discard_alignment"))
            .ok()
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(0);
        Ok(DiscardInfo {
            granularity,
            alignment,
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes (for a file, its length at open or at the last
    /// [`refresh_size`](Self::refresh_size)).
    pub fn size_bytes(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Read the size again (`fstat`, or `BLKGETSIZE64` for a block device) and
    /// make it the size I/O is checked against: a file may have grown
    /// (`truncate -s`) or a device been resized (`lvextend`) since it was
    /// opened. Returns the new size in bytes. Queues already made see it at
    /// once.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `fstat` or the ioctl fails (the size stays as it was).
    pub fn refresh_size(&self) -> Result<u64> {
        let fd = self.file.as_fd();
        let shown = self.path.display();
        let now = if self.block {
            sys::blkgetsize64(fd)
                .map_err(|e| Error::io(format!("{shown}: ioctl(BLKGETSIZE64)"), e))?
        } else {
            let st = nix::sys::stat::fstat(fd)
                .map_err(|e| Error::io(format!("{shown}: fstat"), e.into()))?;
            st.st_size as u64
        };
        self.size.store(now, Ordering::Relaxed);
        Ok(now)
    }

    /// Size in 512-byte sectors (blkif's `sectors` unit), rounded down. I/O is
    /// allowed up to `sectors() * 512` bytes.
    pub fn sectors(&self) -> u64 {
        self.size_bytes() / 512
    }

    /// The smallest unit of I/O: offsets and lengths (and, with O_DIRECT, memory
    /// addresses) must be multiples of it under O_DIRECT. 512 for files in the
    /// page cache; the device's or filesystem's O_DIRECT alignment otherwise.
    pub fn logical_sector_size(&self) -> u32 {
        self.logical
    }

    /// The device's preferred I/O unit (at least the logical sector size).
    pub fn physical_sector_size(&self) -> u32 {
        self.physical
    }

    /// Whether this is a block device (not a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block
    }

    /// Whether it was opened read-only.
    pub fn is_readonly(&self) -> bool {
        self.readonly
    }

    /// Discard support: `None` when discards would be refused (see
    /// [`discard_unsupported_reason`](Self::discard_unsupported_reason)).
    pub fn discard(&self) -> Option<DiscardInfo> {
        self.discard.as_ref().ok().copied()
    }

    /// Why discard is not supported, if it is not.
    pub fn discard_unsupported_reason(&self) -> Option<&str> {
        self.discard.as_ref().err().map(String::as_str)
    }

    /// Whether O_DIRECT is in use (I/O goes straight between the disk and the
    /// memory regions).
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Why [`Direct::Auto`] did not get O_DIRECT, if it did not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Alignment of memory addresses required by O_DIRECT (1 without it).
    pub(super) fn mem_align(&self) -> usize {
        if self.direct {
            self.mem_align as usize
        } else {
            1
        }
    }

    /// Alignment of offsets and lengths required by O_DIRECT (1 without it).
    pub(super) fn io_align(&self) -> u64 {
        if self.direct {
            u64::from(self.logical)
        } else {
            1
        }
    }

    /// Bytes addressable by I/O: `sectors() * 512`.
    pub(super) fn capacity(&self) -> u64 {
        self.sectors() * 512
    }

    /// The discard limits or why there are none.
    pub(super) fn discard_support(&self) -> &std::result::Result<DiscardInfo, String> {
        &self.discard
    }
}

impl AsFd for BlockFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
