//! Helpers shared by the disk tests: files on a filesystem with O_DIRECT and on
//! tmpfs, a ramfs mount (a filesystem that refuses O_DIRECT), blkif-shaped
//! scattered segments, and a random read/write workload checked against a model.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;
use xenio_hostio::disk::{Completion, DiskQueue, Io, IoSeg};
use xenio_xenbus::{ReadOnlyRegion, Region};

/// xorshift64*: reproducible, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A directory on the target's filesystem (ext4 on the machines we run on: it
/// supports O_DIRECT and hole punching).
pub fn disk_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("disk")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary directory under CARGO_TARGET_TMPDIR")
}

/// A directory on tmpfs.
pub fn shm_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("xenio-disk")
        .tempdir_in("/dev/shm")
        .expect("temporary directory under /dev/shm")
}

/// A zero-filled file of `size` bytes.
pub fn make_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("create image");
    f.set_len(size).expect("size image");
    path
}

/// The filesystem type of `path`, as `stat -f -c %T` prints it.
pub fn fs_type(path: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .expect("stat -f");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A ramfs mounted on a temporary directory (ramfs refuses O_DIRECT and hole
/// punching); unmounted when dropped. `None` (with a message) if mounting is not
/// permitted here.
pub struct RamfsMount {
    pub dir: tempfile::TempDir,
}

impl RamfsMount {
    pub fn new() -> Option<RamfsMount> {
        if !is_root() {
            eprintln!("skipping the ramfs part: mounting needs root (CI runs as root)");
            return None;
        }
        let dir = disk_dir();
        let ok = Command::new("mount")
            .args(["-t", "ramfs", "xenio-test-ramfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("skipping the ramfs part: `mount -t ramfs` failed here");
            return None;
        }
        Some(RamfsMount { dir })
    }
}

impl Drop for RamfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A loop device over `backing`, detached when dropped. `None` (with a message)
/// if loop devices cannot be created here.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn new(backing: &Path, sector_size: Option<u32>) -> Option<LoopDevice> {
        if !is_root() {
            eprintln!("skipping: creating a loop device needs root (CI runs as root)");
            return None;
        }
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if let Some(s) = sector_size {
            cmd.arg(format!("--sector-size={s}"));
        }
        match cmd.arg(backing).output() {
            Ok(out) if out.status.success() => {
                let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                Some(LoopDevice { path })
            }
            Ok(out) => {
                eprintln!(
                    "skipping: losetup failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run losetup: {e}");
                None
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// Read-only memory holding `bytes` (as a read-only grant mapping would be).
pub fn read_only_region(bytes: &[u8]) -> Arc<ReadOnlyRegion> {
    let mut map = memmap2::MmapMut::map_anon(bytes.len().div_ceil(4096).max(1) * 4096).unwrap();
    map[..bytes.len()].copy_from_slice(bytes);
    let map = map.make_read_only().unwrap();
    let len = map.len();
    let ptr = NonNull::new(map.as_ptr().cast_mut()).unwrap();
    // SAFETY: a private anonymous mapping, page aligned and readable for `len`
    // bytes, now read-only; it is moved into the owner, which unmaps it last, and
    // no reference to its bytes is used after this point.
    Arc::new(unsafe { ReadOnlyRegion::from_raw(ptr, len, Box::new(map)) })
}

/// Segments shaped like blkif's: segment `i` lies in page `i` of `region`, from
/// sector `first` to `last` (in units of `sector` bytes, so O_DIRECT-aligned).
pub fn blkif_segs(rng: &mut Rng, region: &Arc<Region>, sector: usize, count: usize) -> Vec<IoSeg> {
    let per_page = 4096 / sector;
    (0..count)
        .map(|i| {
            let first = rng.range(0, per_page - 1);
            let last = rng.range(first, per_page - 1);
            IoSeg::new(
                region.clone(),
                i * 4096 + first * sector,
                (last - first + 1) * sector,
            )
        })
        .collect()
}

/// The bytes the segments hold, in order.
pub fn gather(segs: &[IoSeg]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segs {
        let mut b = vec![0; s.len];
        match &s.mem {
            xenio_hostio::disk::IoMem::ReadWrite(r) => r.read(s.offset, &mut b).unwrap(),
            xenio_hostio::disk::IoMem::ReadOnly(r) => r.read(s.offset, &mut b).unwrap(),
        }
        out.extend_from_slice(&b);
    }
    out
}

/// Fill read-write segments with `data`, in order.
pub fn scatter(segs: &[IoSeg], data: &[u8]) {
    let mut at = 0;
    for s in segs {
        match &s.mem {
            xenio_hostio::disk::IoMem::ReadWrite(r) => {
                r.write(s.offset, &data[at..at + s.len]).unwrap()
            }
            _ => panic!("read-only segment"),
        }
        at += s.len;
    }
}

/// Submits with back-pressure (never more than the depth in flight), flushes the
/// submission queue only when full or when asked, and collects completions.
pub struct Driver<'a> {
    pub engine: &'a mut DiskQueue,
    pub done: HashMap<u64, std::io::Result<usize>>,
    pub max_in_flight: usize,
    buf: Vec<Completion>,
}

impl<'a> Driver<'a> {
    pub fn new(engine: &'a mut DiskQueue) -> Self {
        Driver {
            engine,
            done: HashMap::new(),
            max_in_flight: 0,
            buf: Vec::new(),
        }
    }

    pub fn submit(&mut self, tag: u64, io: Io) {
        while self.engine.in_flight() >= self.engine.depth() {
            self.reap(1);
        }
        self.engine.submit(tag, io).expect("submit");
        self.max_in_flight = self.max_in_flight.max(self.engine.in_flight());
    }

    /// Flush submissions and wait for at least `n` completions.
    pub fn reap(&mut self, n: usize) {
        self.engine.flush_submissions().expect("flush submissions");
        self.buf.clear();
        self.engine
            .complete(&mut self.buf, n, Some(Duration::from_secs(60)))
            .expect("complete");
        assert!(
            self.buf.len() >= n || self.engine.in_flight() == 0,
            "no completion within 60 s"
        );
        for c in self.buf.drain(..) {
            assert!(
                self.done.insert(c.tag, c.result).is_none(),
                "tag {} completed twice",
                c.tag
            );
        }
    }

    /// Wait for everything in flight.
    pub fn drain(&mut self) {
        while self.engine.in_flight() > 0 {
            self.reap(1);
        }
    }

    /// The result of `tag` (which must have completed).
    pub fn take(&mut self, tag: u64) -> std::io::Result<usize> {
        self.done
            .remove(&tag)
            .unwrap_or_else(|| panic!("no completion for tag {tag}"))
    }
}

/// The whole disk, read with plain buffered I/O.
pub fn read_all(path: &Path, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut v = vec![0; len];
    f.read_exact(&mut v).unwrap();
    v
}

/// Random blkif-shaped writes (disjoint while in flight) then random reads, `ops`
/// of each, with up to the engine's depth in flight; every read is compared with
/// a model of the disk, and so is the whole disk at the end. Returns the most
/// operations seen in flight at once.
pub fn random_io_verify(engine: &mut DiskQueue, seed: u64, ops: usize) -> usize {
    let file = engine.file().clone();
    let sector = file.logical_sector_size() as usize;
    let disk = (file.sectors() * 512) as usize;
    let chunk = (disk / ops) / 4096 * 4096;
    assert!(
        chunk >= 11 * 4096,
        "disk too small for {ops} disjoint writes"
    );
    let mut model = read_all(file.path(), disk);
    let mut rng = Rng(seed | 1);
    let mut driver = Driver::new(engine);

    // Writes: each in its own chunk of the disk, so none overlap in flight.
    let mut order: Vec<usize> = (0..ops).collect();
    for i in (1..ops).rev() {
        order.swap(i, rng.range(0, i));
    }
    let mut writes = Vec::new();
    for (n, &c) in order.iter().enumerate() {
        let region = Arc::new(Region::anonymous(11 * 4096).unwrap());
        let count = rng.range(1, 11);
        let segs = blkif_segs(&mut rng, &region, sector, count);
        let total: usize = segs.iter().map(|s| s.len).sum();
        let offset = c * chunk + rng.range(0, (chunk - total) / sector) * sector;
        let data = rng.bytes(total);
        scatter(&segs, &data);
        model[offset..offset + total].copy_from_slice(&data);
        let tag = n as u64;
        writes.push((tag, total));
        driver.submit(
            tag,
            Io::Write {
                offset: offset as u64,
                segs,
            },
        );
    }
    driver.drain();
    for (tag, total) in writes {
        assert_eq!(driver.take(tag).expect("write"), total, "write {tag}");
    }

    // Reads anywhere, into poisoned memory.
    let mut reads = Vec::new();
    for n in 0..ops {
        let region = Arc::new(Region::anonymous(11 * 4096).unwrap());
        region.fill(0, region.len(), 0xee).unwrap();
        let count = rng.range(1, 11);
        let segs = blkif_segs(&mut rng, &region, sector, count);
        let total: usize = segs.iter().map(|s| s.len).sum();
        let offset = rng.range(0, (disk - total) / sector) * sector;
        let tag = 1_000_000 + n as u64;
        reads.push((tag, offset, segs.clone()));
        driver.submit(
            tag,
            Io::Read {
                offset: offset as u64,
                segs,
            },
        );
    }
    driver.drain();
    for (tag, offset, segs) in reads {
        let total: usize = segs.iter().map(|s| s.len).sum();
        assert_eq!(driver.take(tag).expect("read"), total, "read {tag}");
        let got = gather(&segs);
        assert!(
            got == model[offset..offset + total],
            "read {tag} at {offset} ({total} bytes) differs from what was written"
        );
    }
    let max = driver.max_in_flight;
    assert!(driver.done.is_empty());
    assert_eq!(engine.in_flight(), 0);

    // The disk as a plain reader sees it.
    assert!(
        read_all(file.path(), disk) == model,
        "disk contents differ from the model"
    );
    max
}
