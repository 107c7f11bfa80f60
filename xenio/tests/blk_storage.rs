//! Storage beyond a raw file, through the whole stack: blkfront (this test
//! process, domain 1) <-> rings <-> a `xenio blkback` process (domain 0) on the
//! local platform <-> a qcow2 chain made by qemu-img, an NBD export of a real
//! server (qemu-nbd, nbdkit, nbd-server, each started here through
//! tests/servers/), or a Ceph RBD image on a one-node cluster
//! (tests/servers/ceph.sh). The disk is chosen by the `--disk` spec alone
//! (`format=qcow2`, `target=nbd://...`, `target=rbd:...`).
//!
//! Needs qemu-utils, nbdkit (+ nbdkit-plugin-python), nbd-server, libnbd-bin
//! (nbdinfo, which the server scripts wait with); each test prints SKIPPED
//! naming the package when one is absent. The RBD test needs the cargo feature
//! `rbd` (`cargo test -p xenio --features rbd --test blk_storage`), root and
//! Ceph's packages, and says which is missing otherwise.

mod common;

use common::{Backend, World};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_blkfront::{BlkFront, Done, Op, Options, Token};
use xenio_xenbus::DomId;
use xenio_xenbus::platform::LocalPlatform;

const DISK: u64 = 16 << 20;

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// Skip (true, with the reason printed) when a tool is absent: only a missing
/// package may skip; `.ci/run` installs them all.
fn missing(tools: &[(&str, &str)]) -> bool {
    for (tool, package) in tools {
        if !have(tool) {
            eprintln!(
                "SKIPPED: {tool} not found (install the Debian package {package}; .ci/run does)"
            );
            return true;
        }
    }
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers")
}

/// An NBD server started by one of tests/servers/*.sh in a short directory
/// under /tmp (socket paths stay under 108 bytes); stopped when dropped.
struct NbdServer {
    script: PathBuf,
    dir: tempfile::TempDir,
    uri: String,
}

impl NbdServer {
    fn start(script: &str, args: &[&str]) -> NbdServer {
        let dir = tempfile::Builder::new()
            .prefix("xb")
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
        NbdServer { script, dir, uri }
    }

    fn verb(&self, verb: &str) {
        run(Command::new("bash")
            .arg(&self.script)
            .arg(verb)
            .arg(self.dir.path()));
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// `xenio blkback --create-device --disk vdev=VDEV,<disk>` for domain 1.
fn blkback(w: &World, vdev: &str, disk: &str, extra: &[&str]) -> Backend {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xenio"));
    c.arg("blkback")
        .args(["--platform", "local", "--create-device", "--frontend", "1"])
        .arg("--run-dir")
        .arg(w.run_dir())
        .arg("--disk")
        .arg(format!("vdev={vdev},access=rw,{disk}"))
        .args(extra);
    Backend::spawn(c)
}

/// Domain 1, once per world: frontends of one domain share its grant table.
fn domain1(w: &World) -> Arc<LocalPlatform> {
    Arc::new(LocalPlatform::connect(w.run_dir(), DomId(1)).unwrap())
}

/// blkfront on `/local/domain/1/device/vbd/<devid>`, once the backend made it.
fn front(w: &World, devid: u32, backend: &mut Backend) -> BlkFront<LocalPlatform> {
    front_on(&domain1(w), devid, backend)
}

fn front_on(p: &Arc<LocalPlatform>, devid: u32, backend: &mut Backend) -> BlkFront<LocalPlatform> {
    let t = Instant::now();
    let dir = format!("/local/domain/1/device/vbd/{devid}");
    loop {
        let p = p.clone();
        let opts = Options {
            device_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            queues: 2,
            ..Default::default()
        };
        match BlkFront::connect(p, &dir, opts) {
            Ok(f) => return f,
            Err(e) => {
                assert!(backend.running(), "the backend exited: {e}");
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "frontend cannot connect to {dir}: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A seeded random script of writes (some of them 32 at once, pipelined),
/// reads checked against `shadow`, discards (which must read back as zeros)
/// and flushes, replayed on every device in `fronts`. Returns what it did.
fn replay(fronts: &mut [&mut BlkFront<LocalPlatform>], shadow: &mut [u8], seed: u64) -> String {
    let size = shadow.len() as u64;
    for f in fronts.iter() {
        assert_eq!(f.size(), size, "the device's size");
    }
    let mut rng = Rng(seed);
    let (mut writes, mut reads, mut discards, mut flushes, mut bursts) = (0, 0, 0, 0, 0);
    for _ in 0..300 {
        let kind = rng.range(0, 99);
        if kind < 40 {
            let len = rng.range(1, 256) * 512;
            let off = rng.range(0, (size - len) / 512) * 512;
            let data = rng.bytes(len as usize);
            for f in fronts.iter_mut() {
                f.write_at(off, &data).unwrap();
            }
            shadow[off as usize..][..len as usize].copy_from_slice(&data);
            writes += 1;
        } else if kind < 48 {
            // 32 writes of 4 KiB to distinct blocks, in flight at once.
            let blocks: Vec<u64> = (0..32).map(|_| rng.range(0, size / 4096 - 1)).collect();
            let mut uniq = blocks.clone();
            uniq.sort_unstable();
            uniq.dedup();
            let datas: Vec<Vec<u8>> = uniq.iter().map(|_| rng.bytes(4096)).collect();
            for f in fronts.iter_mut() {
                let mut tokens = Vec::new();
                for (b, d) in uniq.iter().zip(&datas) {
                    let buf = f.alloc(4096).unwrap();
                    f.buf_write(&buf, 0, d).unwrap();
                    tokens.push(
                        f.submit(Op::Write {
                            offset: b * 4096,
                            buf,
                        })
                        .unwrap(),
                    );
                }
                for d in wait(f, tokens.len()) {
                    d.result.unwrap();
                    if let Some(b) = d.buf {
                        f.free(b);
                    }
                }
            }
            for (b, d) in uniq.iter().zip(&datas) {
                shadow[(b * 4096) as usize..][..4096].copy_from_slice(d);
            }
            bursts += 1;
        } else if kind < 80 {
            let len = rng.range(1, 512) * 512;
            let off = rng.range(0, (size - len) / 512) * 512;
            for (i, f) in fronts.iter_mut().enumerate() {
                let mut got = vec![0u8; len as usize];
                f.read_at(off, &mut got).unwrap();
                if let Some(p) = got
                    .iter()
                    .zip(&shadow[off as usize..])
                    .position(|(a, b)| a != b)
                {
                    panic!(
                        "device {i}: read at {off}+{len} differs at byte {}",
                        off + p as u64
                    );
                }
            }
            reads += 1;
        } else if kind < 94 {
            let len = rng.range(1, 2048) * 512;
            let off = rng.range(0, (size - len) / 512) * 512;
            for f in fronts.iter_mut() {
                f.discard(off, len).unwrap();
            }
            shadow[off as usize..][..len as usize].fill(0);
            discards += 1;
        } else {
            for f in fronts.iter_mut() {
                f.flush().unwrap();
            }
            flushes += 1;
        }
    }
    // The whole disk, at the end.
    for (i, f) in fronts.iter_mut().enumerate() {
        let mut got = vec![0u8; size as usize];
        f.read_at(0, &mut got).unwrap();
        if let Some(p) = got.iter().zip(shadow.iter()).position(|(a, b)| a != b) {
            panic!("device {i}: the final read-back differs at byte {p}");
        }
        f.flush().unwrap();
    }
    format!(
        "{writes} writes, {bursts} bursts of 32, {reads} reads, {discards} discards, {flushes} flushes"
    )
}

/// Every completion of `n` ops in flight.
fn wait(f: &mut BlkFront<LocalPlatform>, n: usize) -> Vec<Done> {
    let mut out = Vec::new();
    let t = Instant::now();
    while out.len() < n {
        f.poll(&mut out, Some(Duration::from_secs(1))).unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{} of {n} answered",
            out.len()
        );
    }
    out
}

/// `len` bytes of seeded random data: a base image's content.
fn base_data(seed: u64, len: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut v = rng.bytes(len as usize);
    // A stretch of zeros, as a used disk has.
    v[(4 << 20)..(6 << 20)].fill(0);
    v
}

/// A base image and an overlay made by qemu-img, served as `format=qcow2`, and
/// a raw copy of the base served as `format=raw`: one random
/// write/read/discard/flush script on both gives identical data
/// (`qemu-img compare`), `qemu-img check` finds the chain clean, and the base
/// was not written.
#[test]
fn qcow2_chain_replays_like_a_raw_image_and_stays_clean() {
    if missing(&[("qemu-img", "qemu-utils")]) {
        return;
    }
    let t0 = Instant::now();
    let w = World::new("stor-qcow2", &[1]);
    let d = w.dir.path();
    let base = base_data(1, DISK);
    let (raw_base, raw) = (d.join("base.raw"), d.join("replay.raw"));
    std::fs::write(&raw_base, &base).unwrap();
    std::fs::write(&raw, &base).unwrap();
    let (qbase, overlay) = (d.join("base.qcow2"), d.join("overlay.qcow2"));
    let s = |p: &Path| p.display().to_string();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &s(&raw_base),
        &s(&qbase),
    ]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        &s(&overlay),
    ]);

    let mut a = blkback(&w, "xvda", &format!("format=raw,target={}", s(&raw)), &[]);
    let mut b = blkback(
        &w,
        "xvdb",
        &format!("format=qcow2,target={}", s(&overlay)),
        &[],
    );
    let dom1 = domain1(&w);
    let mut fa = front_on(&dom1, 51712, &mut a);
    let mut fb = front_on(&dom1, 51728, &mut b);
    assert_eq!(fb.size(), DISK, "the overlay's virtual size");
    let mut shadow = base.clone();
    let did = replay(&mut [&mut fa, &mut fb], &mut shadow, 42);
    fa.close().unwrap();
    fb.close().unwrap();
    assert!(a.stop().success());
    assert!(b.stop().success());

    let check = qemu_img(&["check", &s(&overlay)]);
    assert!(
        check.contains("No errors were found"),
        "qemu-img check: {check}"
    );
    let cmp = qemu_img(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        "raw",
        &s(&overlay),
        &s(&raw),
    ]);
    assert!(
        cmp.contains("Images are identical"),
        "qemu-img compare: {cmp}"
    );
    assert!(
        std::fs::read(&raw).unwrap() == shadow,
        "replay.raw != the script's model"
    );
    let cmp = qemu_img(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        "raw",
        &s(&qbase),
        &s(&raw_base),
    ]);
    assert!(
        cmp.contains("Images are identical"),
        "the base changed: {cmp}"
    );
    eprintln!(
        "qcow2 overlay and raw image identical after {did}; check clean; {:?}",
        t0.elapsed()
    );
}

/// The same disk through each of three real NBD servers (qemu-nbd on a Unix
/// socket, nbdkit and nbd-server on TCP): verified I/O with two queues (two
/// connections), discards as write-zeroes, and the exported file holds exactly
/// what the script left.
#[test]
fn nbd_exports_of_qemu_nbd_nbdkit_and_nbd_server() {
    if missing(&[
        ("qemu-img", "qemu-utils"),
        ("qemu-nbd", "qemu-utils"),
        ("nbdkit", "nbdkit"),
        ("nbd-server", "nbd-server"),
        ("nbdinfo", "libnbd-bin"),
    ]) {
        return;
    }
    let w = World::new("stor-nbd", &[1]);
    let base = base_data(2, DISK);
    for (i, (script, transport)) in [
        ("qemu-nbd.sh", vec!["--unix"]),
        ("nbdkit.sh", vec!["--tcp", "auto"]),
        ("nbd-server.sh", vec!["--tcp", "auto"]),
    ]
    .into_iter()
    .enumerate()
    {
        let t = Instant::now();
        let image = w.dir.path().join(format!("nbd{i}.raw"));
        std::fs::write(&image, &base).unwrap();
        let mut args = transport.clone();
        let image_s = image.display().to_string();
        args.extend(["--image", &image_s]);
        let server = NbdServer::start(script, &args);
        let mut b = blkback(
            &w,
            "xvda",
            &format!("target={}", server.uri),
            &["--discard-zeroes", "--max-queues", "2"],
        );
        let mut f = front(&w, 51712, &mut b);
        let mut shadow = base.clone();
        let did = replay(&mut [&mut f], &mut shadow, 100 + i as u64);
        f.close().unwrap();
        assert!(b.stop().success(), "{script}: blkback exit status");
        drop(server);
        assert!(
            std::fs::read(&image).unwrap() == shadow,
            "{script}: the exported file differs from the script's model"
        );
        eprintln!(
            "{script} ({}): {did}; {:?}",
            server_uri_kind(&transport),
            t.elapsed()
        );
    }
}

fn server_uri_kind(transport: &[&str]) -> &'static str {
    if transport.contains(&"--unix") {
        "nbd+unix"
    } else {
        "nbd over TCP"
    }
}

/// nbdkit fails every read and write touching sectors 64-71 (the 4 KiB block
/// 8) with EIO: of 16 pipelined 4 KiB reads (which blkback merges into one
/// operation) exactly the one of block 8 fails, the same for writes, and the
/// device keeps serving, with the writes that succeeded on the server.
#[test]
fn nbdkit_error_filter_fails_exactly_the_bad_requests() {
    if missing(&[("nbdkit", "nbdkit"), ("nbdinfo", "libnbd-bin")]) {
        return;
    }
    let w = World::new("stor-eio", &[1]);
    let image = w.image("bad.raw", DISK);
    let image_s = image.display().to_string();
    let server = NbdServer::start(
        "nbdkit.sh",
        &["--unix", "--image", &image_s, "--error-range", "64-71"],
    );
    let mut b = blkback(&w, "xvda", &format!("target={}", server.uri), &[]);
    let mut f = front(&w, 51712, &mut b);
    for round in 0..3u8 {
        for write in [true, false] {
            let mut tokens: HashMap<Token, u64> = HashMap::new();
            for blk in 0..16u64 {
                let buf = f.alloc(4096).unwrap();
                let op = if write {
                    f.buf_write(&buf, 0, &[round * 16 + blk as u8 + 1; 4096])
                        .unwrap();
                    Op::Write {
                        offset: blk * 4096,
                        buf,
                    }
                } else {
                    Op::Read {
                        offset: blk * 4096,
                        buf,
                    }
                };
                tokens.insert(f.submit(op).unwrap(), blk);
            }
            let mut failed = Vec::new();
            for d in wait(&mut f, 16) {
                let blk = tokens[&d.token];
                match &d.result {
                    Ok(()) if !write => {
                        let mut got = [0u8; 4096];
                        f.buf_read(d.buf.as_ref().unwrap(), 0, &mut got).unwrap();
                        assert_eq!(got, [round * 16 + blk as u8 + 1; 4096], "block {blk}");
                    }
                    Ok(()) => {}
                    Err(_) => failed.push(blk),
                }
                if let Some(buf) = d.buf {
                    f.free(buf);
                }
            }
            assert_eq!(
                failed,
                vec![8],
                "round {round}, {}: the failed requests",
                if write { "writes" } else { "reads" }
            );
        }
    }
    // Still serving: a request that straddles the bad sectors fails, one beside them works.
    let mut buf = vec![0u8; 8192];
    assert!(f.read_at(7 * 4096, &mut buf).is_err());
    f.read_at(9 * 4096, &mut buf).unwrap();
    f.flush().unwrap();
    f.close().unwrap();
    assert!(b.stop().success());
    let file = std::fs::read(&image).unwrap();
    for blk in 0..16usize {
        let want = if blk == 8 { 0 } else { 2 * 16 + blk as u8 + 1 };
        assert!(
            file[blk * 4096..][..4096].iter().all(|&x| x == want),
            "block {blk} on the server"
        );
    }
}

/// qemu-nbd SIGKILLed and restarted (same socket) three times under a stream of
/// 4 KiB writes through blkback: the stream stalls while the server is away,
/// blkback reconnects and re-issues, and every write acknowledged to the
/// frontend is in the exported file at the end.
#[test]
fn nbd_server_killed_under_writes_loses_no_acknowledged_write() {
    if missing(&[("qemu-nbd", "qemu-utils"), ("nbdinfo", "libnbd-bin")]) {
        return;
    }
    let w = World::new("stor-kill", &[1]);
    let image = w.image("kill.raw", DISK);
    let image_s = image.display().to_string();
    let server = Arc::new(NbdServer::start(
        "qemu-nbd.sh",
        &["--unix", "--image", &image_s],
    ));
    let mut b = blkback(
        &w,
        "xvda",
        &format!("target={}", server.uri),
        &["--nbd-reconnect-timeout", "60"],
    );
    let mut f = front(&w, 51712, &mut b);
    let kills = 3;
    let killer = {
        let server = server.clone();
        std::thread::spawn(move || {
            for _ in 0..kills {
                std::thread::sleep(Duration::from_millis(400));
                server.verb("kill");
                std::thread::sleep(Duration::from_millis(300));
                server.verb("restart");
            }
        })
    };
    let block = |blk: u64, k: u64| -> Vec<u8> {
        let mut rng = Rng(blk.wrapping_mul(31) ^ (k << 20) ^ 0x5eed);
        rng.bytes(4096)
    };
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut rng = Rng(9);
    let t = Instant::now();
    let mut k = 0u64;
    while !killer.is_finished() || k < 200 {
        let blk = rng.range(0, DISK / 4096 - 1);
        f.write_at(blk * 4096, &block(blk, k))
            .unwrap_or_else(|e| panic!("write {k} failed: {e}"));
        acked.insert(blk, k);
        k += 1;
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "the write stream stalled"
        );
    }
    killer.join().unwrap();
    f.flush().unwrap();
    f.close().unwrap();
    assert!(b.stop().success());
    let file = std::fs::read(&image).unwrap();
    for (blk, k) in &acked {
        assert!(
            file[*blk as usize * 4096..][..4096] == block(*blk, *k)[..],
            "acknowledged write {k} (block {blk}) is not in the export"
        );
    }
    eprintln!(
        "{k} writes ({} blocks) acknowledged across {kills} SIGKILLs of qemu-nbd, all in the export; {:?}",
        acked.len(),
        t.elapsed()
    );
}

/// nbdkit's `delay` filter holds every read and write 5 ms (and every trim and
/// zero): the seeded script still completes through blkback and verifies, the
/// exported file equals the model, and one lone 4 KiB read takes at least the
/// delay (the filter is really there). How much slower it is gets printed,
/// not asserted.
#[test]
fn nbdkit_delay_filter_slows_requests_that_still_verify() {
    if missing(&[("nbdkit", "nbdkit"), ("nbdinfo", "libnbd-bin")]) {
        return;
    }
    let w = World::new("stor-delay", &[1]);
    let base = base_data(5, DISK);
    let image = w.dir.path().join("delay.raw");
    std::fs::write(&image, &base).unwrap();
    let image_s = image.display().to_string();
    let delay = Duration::from_millis(5);
    let server = NbdServer::start(
        "nbdkit.sh",
        &[
            "--unix",
            "--image",
            &image_s,
            "--delay-read",
            "5ms",
            "--delay-write",
            "5ms",
            "--delay-trim",
            "5ms",
            "--delay-zero",
            "5ms",
        ],
    );
    let mut b = blkback(
        &w,
        "xvda",
        &format!("target={}", server.uri),
        &["--discard-zeroes"],
    );
    let mut f = front(&w, 51712, &mut b);
    let t = Instant::now();
    let mut one = vec![0u8; 4096];
    f.read_at(0, &mut one).unwrap();
    let lone = t.elapsed();
    assert!(
        lone >= delay,
        "a 4 KiB read took {lone:?}, less than the filter's {delay:?}: no delay filter?"
    );
    assert!(one[..] == base[..4096], "the first block");
    let t = Instant::now();
    let mut shadow = base.clone();
    let did = replay(&mut [&mut f], &mut shadow, 500);
    let took = t.elapsed();
    f.close().unwrap();
    assert!(b.stop().success(), "blkback exit status");
    drop(server);
    assert!(
        std::fs::read(&image).unwrap() == shadow,
        "the exported file differs from the script's model"
    );
    eprintln!("nbdkit with 5 ms delays: {did}; {took:?} (a lone 4 KiB read {lone:?})");
}

/// Two NBD devices served by one backend process (this one: `Server` on two
/// threads), nbdkit behind `xvda` and qemu-nbd behind `xvdb`. nbdkit is
/// SIGKILLed and stays away: a write to xvda waits for the reconnect timeout
/// (3 s here), then fails with an I/O error, and no earlier than the timeout
/// after the kill; meanwhile xvdb serves writes and reads that verify, and
/// keeps serving. A second write to xvda fails too. nbdkit restarted on the
/// same socket: xvda serves again, with its data.
#[test]
fn nbd_server_that_stays_away_fails_only_its_own_device() {
    use xenio_blkback::storage::NbdStorage;
    use xenio_blkback::{BackendConfig, OpenOptions, Outcome, Server};
    if missing(&[
        ("nbdkit", "nbdkit"),
        ("qemu-nbd", "qemu-utils"),
        ("nbdinfo", "libnbd-bin"),
    ]) {
        return;
    }
    let w = World::new("stor-away", &[1]);
    let (img_a, img_b) = (w.image("away.raw", DISK), w.image("stays.raw", DISK));
    let (a_s, b_s) = (img_a.display().to_string(), img_b.display().to_string());
    let srv_a = NbdServer::start("nbdkit.sh", &["--unix", "--image", &a_s]);
    let srv_b = NbdServer::start("qemu-nbd.sh", &["--unix", "--image", &b_s]);
    let reconnect = Duration::from_secs(3);
    let opts = OpenOptions {
        reconnect_timeout: reconnect,
        ..OpenOptions::default()
    };
    let sto_a = NbdStorage::connect(&srv_a.uri, &opts).unwrap();
    let sto_b = NbdStorage::connect(&srv_b.uri, &opts).unwrap();
    let server = |vdev: &str| {
        Server::new()
            .frontend(DomId(1))
            .vdev(vdev)
            .create_device(true)
            .config(BackendConfig {
                max_queues: 2,
                ..Default::default()
            })
    };
    let (serv_a, serv_b) = (server("xvda"), server("xvdb"));
    let (dom0a, dom0b) = (w.platform(0), w.platform(0));
    std::thread::scope(|s| {
        let th_a = s.spawn(|| serv_a.serve_on(&dom0a, &sto_a));
        let th_b = s.spawn(|| serv_b.serve_on(&dom0b, &sto_b));
        // A failed assertion must not leave the scope waiting for the servers.
        let stop = StopOnDrop(vec![serv_a.stop_flag(), serv_b.stop_flag()]);
        let dom1 = domain1(&w);
        let mut fa = front_ready(&dom1, 51712, &th_a);
        let mut fb = front_ready(&dom1, 51728, &th_b);
        fa.write_at(0, &[0xa1; 4096]).unwrap();
        fb.write_at(0, &[0xb1; 4096]).unwrap();

        let t_kill = Instant::now();
        srv_a.verb("kill");
        let buf = fa.alloc(4096).unwrap();
        fa.buf_write(&buf, 0, &[0xa2; 4096]).unwrap();
        let token = fa.submit(Op::Write { offset: 4096, buf }).unwrap();
        let mut rng = Rng(77);
        let mut b_ops = 0u64;
        let done = loop {
            let mut out = Vec::new();
            fa.poll(&mut out, Some(Duration::from_millis(20))).unwrap();
            if let Some(d) = out.pop() {
                break d;
            }
            // xvdb meanwhile: a write and its read-back.
            let blk = rng.range(1, DISK / 4096 - 1);
            let data = rng.bytes(4096);
            fb.write_at(blk * 4096, &data).unwrap();
            let mut got = vec![0u8; 4096];
            fb.read_at(blk * 4096, &mut got).unwrap();
            assert!(got == data, "xvdb block {blk} while xvda's server is away");
            b_ops += 2;
            assert!(
                t_kill.elapsed() < Duration::from_secs(60),
                "xvda's write is still waiting a minute after the kill"
            );
        };
        let failed_after = t_kill.elapsed();
        assert_eq!(done.token, token);
        assert!(
            done.result.is_err(),
            "a write to a server that stays away succeeded"
        );
        if let Some(b) = done.buf {
            fa.free(b);
        }
        assert!(
            failed_after >= reconnect,
            "xvda failed {failed_after:?} after the kill, before the reconnect timeout {reconnect:?}"
        );
        assert!(
            b_ops > 0,
            "xvdb answered nothing while xvda waited for its server"
        );
        assert!(
            fa.write_at(8192, &[0xa3; 4096]).is_err(),
            "a second write to the absent server"
        );
        let mut got = vec![0u8; 4096];
        fb.read_at(0, &mut got).unwrap();
        assert!(got == [0xb1; 4096], "xvdb after xvda failed");

        // The server comes back: the device serves again.
        srv_a.verb("restart");
        let t_back = Instant::now();
        loop {
            match fa.write_at(8192, &[0xa4; 4096]) {
                Ok(()) => break,
                Err(e) => {
                    assert!(
                        t_back.elapsed() < Duration::from_secs(60),
                        "xvda not back a minute after the restart: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        // Each queue has its own NBD connection and reconnects on its own
        // (every reconnect_delay, as QEMU's client does after its
        // reconnect-delay: operations fail at once until then), so a request
        // on a queue that has not reconnected yet may still fail for a moment.
        let mut got = vec![0u8; 3 * 4096];
        while let Err(e) = fa.read_at(0, &mut got) {
            assert!(
                t_back.elapsed() < Duration::from_secs(60),
                "xvda's reads not back a minute after the restart: {e}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(got[..4096] == [0xa1; 4096], "xvda block 0 after the return");
        assert!(got[8192..] == [0xa4; 4096], "xvda block 2 after the return");
        // A flush goes to every queue: one that has not reconnected yet fails
        // it for a moment too (CI, 2026-12-07: `Io("flush")` right after the
        // read came back).
        while let Err(e) = fa.flush() {
            assert!(
                t_back.elapsed() < Duration::from_secs(60),
                "xvda's flush not back a minute after the restart: {e}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        fb.flush().unwrap();
        fa.close().unwrap();
        fb.close().unwrap();
        drop(stop);
        for th in [th_a, th_b] {
            let outcome = th.join().unwrap().unwrap();
            assert!(
                matches!(outcome, Outcome::Closed | Outcome::Shutdown),
                "{outcome:?}"
            );
        }
        eprintln!(
            "xvda failed {failed_after:?} after its server's SIGKILL (reconnect timeout {reconnect:?}); \
             xvdb answered {b_ops} requests meanwhile; xvda back {:?} after the restart",
            t_back.elapsed()
        );
    });
    drop(srv_a);
    drop(srv_b);
    assert!(
        std::fs::read(&img_b).unwrap()[..4096] == [0xb1; 4096],
        "xvdb's export"
    );
}

/// Sets every flag when dropped: in-process servers stop when a test fails.
struct StopOnDrop(Vec<Arc<std::sync::atomic::AtomicBool>>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for f in &self.0 {
            f.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// blkfront on `/local/domain/1/device/vbd/<devid>` served by an in-process
/// `Server` thread (which must not have ended).
fn front_ready<T>(
    p: &Arc<LocalPlatform>,
    devid: u32,
    server: &std::thread::ScopedJoinHandle<'_, T>,
) -> BlkFront<LocalPlatform> {
    let t = Instant::now();
    let dir = format!("/local/domain/1/device/vbd/{devid}");
    loop {
        let opts = Options {
            device_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            queues: 2,
            ..Default::default()
        };
        match BlkFront::connect(p.clone(), &dir, opts) {
            Ok(f) => return f,
            Err(e) => {
                assert!(!server.is_finished(), "the backend thread ended: {e}");
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "frontend cannot connect to {dir}: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// An RBD image of a one-node Ceph cluster (tests/servers/ceph.sh) served by
/// `target=rbd:...`: the random script verified (on the image's first 16
/// MiB, through a 16 MiB window of its own: the whole image is 1 GiB, so the
/// script runs on the device and the model covers what it touches), a flush,
/// then the OSD SIGKILLed and restarted under a write stream, every
/// acknowledged write read back.
#[test]
fn rbd_image_through_blkback_survives_an_osd_restart() {
    if !cfg!(feature = "rbd") {
        eprintln!(
            "SKIPPED: xenio built without the cargo feature rbd \
             (cargo test -p xenio --features rbd --test blk_storage; .ci/run does)"
        );
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the one-node Ceph cluster (tests/servers/ceph.sh) runs as root");
        return;
    }
    if missing(&[
        ("ceph-mon", "ceph-mon"),
        ("ceph-osd", "ceph-osd"),
        ("rbd", "ceph-common"),
    ]) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("xbceph")
        .tempdir_in("/tmp")
        .unwrap();
    struct Cluster(PathBuf);
    impl Drop for Cluster {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .arg(servers_dir().join("ceph.sh"))
                .arg("destroy")
                .arg(&self.0)
                .output();
        }
    }
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(servers_dir().join("ceph.sh"))
        .arg("start")
        .arg(dir.path())
        .output()
        .unwrap();
    let _cluster = Cluster(dir.path().to_path_buf());
    if !out.status.success() {
        eprintln!(
            "SKIPPED: the one-node Ceph cluster did not start: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let target = out
        .lines()
        .find_map(|l| l.strip_prefix("RBD_TARGET="))
        .unwrap_or_else(|| panic!("no RBD_TARGET in {out}"))
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    eprintln!("cluster up in {:?}", t0.elapsed());
    let w = World::new("stor-rbd", &[1]);
    let mut b = blkback(
        &w,
        "xvda",
        &format!("target={target}"),
        &["--discard-zeroes"],
    );
    let mut f = front(&w, 51712, &mut b);
    // The image starts zeroed; the script's model covers its first 16 MiB,
    // and replay() checks the size of that window, so give it a view.
    let size = f.size();
    assert!(size >= DISK, "image of {size} bytes");
    let mut shadow = vec![0u8; size as usize];
    let did = replay_window(&mut f, &mut shadow, 7);
    eprintln!("rbd: {did}");

    let restarter = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            run(Command::new("bash")
                .arg(servers_dir().join("ceph.sh"))
                .arg("restart-osd")
                .arg(&dir)
                .arg("--kill"))
        })
    };
    let mut acked: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut rng = Rng(11);
    let t = Instant::now();
    while !restarter.is_finished() || acked.len() < 100 {
        let blk = rng.range(0, DISK / 4096 - 1);
        let data = rng.bytes(4096);
        f.write_at(blk * 4096, &data).unwrap();
        acked.insert(blk, data);
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "the write stream stalled"
        );
    }
    eprintln!("restart-osd: {}", restarter.join().unwrap().trim());
    f.flush().unwrap();
    for (blk, data) in &acked {
        let mut got = vec![0u8; 4096];
        f.read_at(blk * 4096, &mut got).unwrap();
        assert!(&got == data, "acknowledged write to block {blk} lost");
    }
    f.close().unwrap();
    assert!(b.stop().success());
    eprintln!(
        "rbd: {} blocks written across an OSD SIGKILL and restart, all read back; {:?}",
        acked.len(),
        t0.elapsed()
    );
}

/// [`replay`] on the first [`DISK`] bytes of a larger device.
fn replay_window(f: &mut BlkFront<LocalPlatform>, shadow: &mut [u8], seed: u64) -> String {
    let mut rng = Rng(seed);
    let (mut writes, mut reads, mut discards) = (0, 0, 0);
    for _ in 0..200 {
        let len = rng.range(1, 256) * 512;
        let off = rng.range(0, (DISK - len) / 512) * 512;
        match rng.range(0, 9) {
            0..=4 => {
                let data = rng.bytes(len as usize);
                f.write_at(off, &data).unwrap();
                shadow[off as usize..][..len as usize].copy_from_slice(&data);
                writes += 1;
            }
            5..=7 => {
                let mut got = vec![0u8; len as usize];
                f.read_at(off, &mut got).unwrap();
                assert!(
                    got[..] == shadow[off as usize..][..len as usize],
                    "read at {off}"
                );
                reads += 1;
            }
            _ => {
                f.discard(off, len).unwrap();
                shadow[off as usize..][..len as usize].fill(0);
                discards += 1;
            }
        }
    }
    f.flush().unwrap();
    let mut got = vec![0u8; DISK as usize];
    f.read_at(0, &mut got).unwrap();
    assert!(got[..] == shadow[..DISK as usize], "final read-back");
    format!("{writes} writes, {reads} reads, {discards} discards, flush, read-back verified")
}
