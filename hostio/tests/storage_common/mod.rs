//! Helpers shared by the tests of the qcow2, NBD and RBD queues: a seeded
//! random write/read/discard script checked against an in-memory model, the
//! queue shape they all have, external tools (qemu-img, the server scripts in
//! tests/servers/), and skipping only when a package is genuinely absent.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use xenio_hostio::disk::{Completion, Io, IoSeg};
use xenio_xenbus::Region;

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
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// The queue shape every storage queue of hostio has.
pub trait Queue {
    fn submit(&mut self, tag: u64, io: Io) -> Result<(), String>;
    fn flush_submissions(&mut self);
    fn complete(&mut self, out: &mut Vec<Completion>, wait_for: usize, timeout: Option<Duration>);
}

impl Queue for xenio_hostio::disk::DiskQueue {
    fn submit(&mut self, tag: u64, io: Io) -> Result<(), String> {
        xenio_hostio::disk::DiskQueue::submit(self, tag, io).map_err(|e| e.to_string())
    }
    fn flush_submissions(&mut self) {
        xenio_hostio::disk::DiskQueue::flush_submissions(self).unwrap();
    }
    fn complete(&mut self, out: &mut Vec<Completion>, n: usize, t: Option<Duration>) {
        xenio_hostio::disk::DiskQueue::complete(self, out, n, t).unwrap();
    }
}

impl Queue for xenio_hostio::qcow2::Qcow2Queue {
    fn submit(&mut self, tag: u64, io: Io) -> Result<(), String> {
        xenio_hostio::qcow2::Qcow2Queue::submit(self, tag, io).map_err(|e| e.to_string())
    }
    fn flush_submissions(&mut self) {
        xenio_hostio::qcow2::Qcow2Queue::flush_submissions(self).unwrap();
    }
    fn complete(&mut self, out: &mut Vec<Completion>, n: usize, t: Option<Duration>) {
        xenio_hostio::qcow2::Qcow2Queue::complete(self, out, n, t).unwrap();
    }
}

/// `len` bytes (a multiple of 512) as 1-4 segments, each in its own region at
/// a sector-aligned offset (blkif-shaped: pieces of different pages).
pub fn segments(rng: &mut Rng, len: usize) -> Vec<IoSeg> {
    let n = (rng.range(1, 4) as usize).min(len / 512);
    let mut cuts: Vec<usize> = (1..n)
        .map(|_| rng.range(1, (len / 512 - 1) as u64) as usize * 512)
        .collect();
    cuts.sort();
    cuts.dedup();
    let mut segs = Vec::new();
    let mut at = 0;
    for end in cuts.into_iter().chain([len]) {
        let piece = end - at;
        let pad = rng.range(0, 7) as usize * 512;
        let r = Arc::new(Region::anonymous(piece + pad).unwrap());
        segs.push(IoSeg::new(r, pad, piece));
        at = end;
    }
    segs
}

pub fn put(segs: &[IoSeg], data: &[u8]) {
    let mut at = 0;
    for s in segs {
        let xenio_hostio::disk::IoMem::ReadWrite(r) = &s.mem else {
            panic!("read-only")
        };
        r.write(s.offset, &data[at..at + s.len]).unwrap();
        at += s.len;
    }
}

pub fn get(segs: &[IoSeg]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segs {
        let xenio_hostio::disk::IoMem::ReadWrite(r) = &s.mem else {
            panic!("read-only")
        };
        let mut b = vec![0u8; s.len];
        r.read(s.offset, &mut b).unwrap();
        out.extend_from_slice(&b);
    }
    out
}

/// What a script did.
#[derive(Debug, Default)]
pub struct Tally {
    pub writes: u64,
    pub reads: u64,
    pub discards: u64,
    pub flushes: u64,
}

enum Op {
    Write(u64, Vec<u8>),
    Read(u64, usize),
    Discard(u64, u64),
    Flush,
}

/// Run `rounds` batches of random operations (writes 512 B..256 KiB, reads,
/// discards if `discard`, flushes) through `q`, up to `depth` at once with no
/// two overlapping in a batch, applying each to `model` and checking every
/// read against it. Panics on any difference or failed operation.
pub fn script(
    q: &mut dyn Queue,
    model: &mut [u8],
    seed: u64,
    rounds: usize,
    depth: usize,
    discard: bool,
) -> Tally {
    let mut rng = Rng(seed | 1);
    let size = model.len() as u64;
    let mut t = Tally::default();
    let mut done = Vec::new();
    for _ in 0..rounds {
        let mut batch: Vec<(Op, Vec<IoSeg>)> = Vec::new();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let n = rng.range(1, depth as u64);
        for _ in 0..n {
            let kind = rng.range(0, 99);
            let len = if rng.range(0, 3) == 0 {
                rng.range(1, 512) * 512
            } else {
                rng.range(1, 16) * 512
            };
            let len = len.min(size);
            let off = rng.range(0, (size - len) / 512) * 512;
            let overlaps = ranges.iter().any(|&(a, b)| off < b && a < off + len);
            if kind < 3 {
                batch.push((Op::Flush, Vec::new()));
                continue;
            }
            if overlaps {
                continue;
            }
            ranges.push((off, off + len));
            if kind < 50 {
                let mut data = vec![0u8; len as usize];
                rng.fill(&mut data);
                let segs = segments(&mut rng, len as usize);
                put(&segs, &data);
                batch.push((Op::Write(off, data), segs));
            } else if kind < 60 && discard {
                batch.push((Op::Discard(off, len), Vec::new()));
            } else {
                let segs = segments(&mut rng, len as usize);
                batch.push((Op::Read(off, len as usize), segs));
            }
        }
        for (i, (op, segs)) in batch.iter().enumerate() {
            let io = match op {
                Op::Write(off, _) => Io::Write {
                    offset: *off,
                    segs: segs.clone(),
                },
                Op::Read(off, _) => Io::Read {
                    offset: *off,
                    segs: segs.clone(),
                },
                Op::Discard(off, len) => Io::Discard {
                    offset: *off,
                    len: *len,
                },
                Op::Flush => Io::Flush,
            };
            q.submit(i as u64, io).unwrap();
        }
        q.flush_submissions();
        done.clear();
        while done.len() < batch.len() {
            let before = done.len();
            let want = batch.len() - before;
            q.complete(&mut done, want, Some(Duration::from_secs(60)));
            assert!(done.len() > before, "no completion within 60 s");
        }
        for c in &done {
            let (op, _) = &batch[c.tag as usize];
            if let Err(e) = &c.result {
                panic!("operation {} failed: {e}", c.tag);
            }
            match op {
                Op::Write(off, data) => {
                    model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
                    t.writes += 1;
                }
                Op::Discard(off, len) => {
                    model[*off as usize..(*off + *len) as usize].fill(0);
                    t.discards += 1;
                }
                Op::Flush => t.flushes += 1,
                Op::Read(..) => {}
            }
        }
        // Reads overlap no write of their batch: check them against the model.
        for (op, segs) in &batch {
            if let Op::Read(off, len) = op {
                let got = get(segs);
                let want = &model[*off as usize..*off as usize + len];
                if got != want {
                    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                    panic!("read of {len} bytes at {off}: first difference at byte {first}");
                }
                t.reads += 1;
            }
        }
    }
    t
}

/// Whether `tool` runs (`tool --version`/`--help`).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// Skip (return true, with a message) when `tool` is absent: only a missing
/// package may skip a test; `.ci/run` installs them.
pub fn missing(tool: &str, package: &str) -> bool {
    if have(tool) {
        return false;
    }
    eprintln!("SKIPPED: {tool} not found (install the Debian package {package}; .ci/run does)");
    true
}

/// Run a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

/// The repository's tests/servers directory.
pub fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers")
}

/// A directory on the target's filesystem (O_DIRECT works there).
pub fn disk_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stor")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary directory under CARGO_TARGET_TMPDIR")
}

/// Write `data` to a new file `name` in `dir`.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[cfg(feature = "nbd")]
impl Queue for xenio_hostio::nbd::NbdQueue {
    fn submit(&mut self, tag: u64, io: Io) -> Result<(), String> {
        xenio_hostio::nbd::NbdQueue::submit(self, tag, io).map_err(|e| e.to_string())
    }
    fn flush_submissions(&mut self) {
        xenio_hostio::nbd::NbdQueue::flush_submissions(self).unwrap();
    }
    fn complete(&mut self, out: &mut Vec<Completion>, n: usize, t: Option<Duration>) {
        xenio_hostio::nbd::NbdQueue::complete(self, out, n, t).unwrap();
    }
}

/// A server started by one of tests/servers/*.sh in a short directory under
/// /tmp (Unix socket paths must stay under 108 bytes); stopped when dropped.
pub struct Server {
    pub script: PathBuf,
    pub dir: tempfile::TempDir,
    pub uri: String,
}

impl Server {
    /// `script start DIR args...`; the URI it printed (`NBD_URI=`).
    pub fn start(script: &str, args: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("xn")
            .tempdir_in("/tmp")
            .unwrap();
        let script = servers_dir().join(script);
        let out = run(Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path())
            .args(args));
        let uri = out
            .lines()
            .find_map(|l| l.strip_prefix("NBD_URI="))
            .unwrap_or_else(|| panic!("no NBD_URI in {out}"))
            .trim_matches(|c| c == '\'' || c == '"')
            .to_string();
        Server { script, dir, uri }
    }

    pub fn verb(&self, verb: &str) {
        run(Command::new("bash")
            .arg(&self.script)
            .arg(verb)
            .arg(self.dir.path()));
    }

    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
