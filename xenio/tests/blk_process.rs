//! blkfront (this test process, domain 1) <-> rings <-> `xenio blkback` (a child
//! process, domain 0) <-> a real file, on the local platform with the store
//! daemon: data verified end to end across configurations, and a backend killed
//! with SIGKILL in the middle of a write stream, again and again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_blkfront::{BlkFront, Options};
use xenio_xenbus::DomId;
use xenio_xenbus::platform::LocalPlatform;
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

const DISK: u64 = 16 << 20;
const FRONT_DIR: &str = "/local/domain/1/device/vbd/51712";

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct World {
    dir: tempfile::TempDir,
    _daemon: Daemon,
    image: PathBuf,
}

fn world(tag: &str) -> World {
    world_in(tag, Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// A world whose run directory (store socket, domain memory) and image are in `parent`.
fn world_in(tag: &str, parent: &Path) -> World {
    let dir = tempfile::Builder::new()
        .prefix(&format!("blk-{tag}-"))
        .tempdir_in(parent)
        .unwrap();
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(dir.path().join("run"))
    })
    .unwrap();
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(DISK)
        .unwrap();
    World {
        dir,
        _daemon: daemon,
        image,
    }
}

impl World {
    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn backend(&self, extra: &[&str], create: bool) -> Child {
        self.backend_command(extra, create).spawn().unwrap()
    }

    /// `xenio blkback` serving this world's image read-write to domain 1.
    fn backend_command(&self, extra: &[&str], create: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xenio"));
        c.arg("blkback")
            .args(["--platform", "local", "--frontend", "1"])
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--disk")
            .arg(format!(
                "format=raw,vdev=xvda,access=rw,target={}",
                self.image.display()
            ))
            .args(extra)
            .stdout(Stdio::null());
        if create {
            c.arg("--create-device");
        }
        c
    }

    fn frontend(&self, opts: Options) -> BlkFront<LocalPlatform> {
        connect_frontend(&self.run_dir(), opts)
    }
}

/// Connect domain 1's frontend in `run_dir`, waiting for the toolstack part
/// (the backend creates the device).
fn connect_frontend(run_dir: &Path, opts: Options) -> BlkFront<LocalPlatform> {
    let t = Instant::now();
    loop {
        let p = LocalPlatform::connect(run_dir, DomId(1)).unwrap();
        let p = Arc::new(p);
        match BlkFront::connect(p, FRONT_DIR, opts.clone()) {
            Ok(f) => return f,
            Err(e) if t.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("frontend cannot connect: {e}"),
        }
    }
}

fn finish(mut child: Child) {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "backend exited with {s}");
            return;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("backend did not exit after the frontend closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Random reads and writes checked against a shadow copy, then flush, discard,
/// a full read-back, and the file itself.
fn exercise(w: &World, backend_args: &[&str], opts: Options, seed: u64) {
    let child = w.backend(backend_args, true);
    let mut f = w.frontend(opts);
    let size = f.size();
    assert_eq!(size, DISK);
    let mut shadow = vec![0u8; size as usize];
    let mut rng = Rng(seed);
    for i in 0..200u64 {
        let len = ((rng.next() % 128 + 1) * 512) as usize * if i % 16 == 0 { 8 } else { 1 };
        let off = (rng.next() % ((size - len as u64) / 512)) * 512;
        if rng.next() % 2 == 0 {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            f.write_at(off, &data).unwrap();
            shadow[off as usize..][..len].copy_from_slice(&data);
        } else {
            let mut got = vec![0u8; len];
            f.read_at(off, &mut got).unwrap();
            assert!(
                got == shadow[off as usize..][..len],
                "read of {len} at {off} differs"
            );
        }
    }
    // Asynchronous writes in one go. On one queue they overlap, and reordering
    // must keep their order; across queues blkif (like Linux's block layer)
    // promises no order between requests in flight, so there they do not overlap.
    let overlap = f.info().queues == 1;
    let mut tokens = Vec::new();
    for k in 0..16u64 {
        let len = 8192;
        let off = if overlap { 4096 * (k % 4) } else { 8192 * k };
        let data: Vec<u8> = (0..len).map(|b| (k as u8) ^ (b as u8)).collect();
        let buf = f.alloc(len).unwrap();
        f.buf_write(&buf, 0, &data).unwrap();
        tokens.push(
            f.submit(xenio_blkfront::Op::Write { offset: off, buf })
                .unwrap(),
        );
        shadow[off as usize..][..len].copy_from_slice(&data);
    }
    let mut done = Vec::new();
    while done.len() < tokens.len() {
        f.poll(&mut done, Some(Duration::from_secs(5))).unwrap();
    }
    for d in done {
        d.result.unwrap();
        if let Some(b) = d.buf {
            f.free(b);
        }
    }
    f.flush().unwrap();
    if f.info().discard.is_some() {
        f.discard(2 << 20, 1 << 20).unwrap();
        shadow[2 << 20..3 << 20].fill(0);
    }
    let mut all = vec![0u8; size as usize];
    f.read_at(0, &mut all).unwrap();
    assert!(all == shadow, "full read-back differs");
    f.close().unwrap();
    finish(child);
    assert!(
        std::fs::read(&w.image).unwrap() == shadow,
        "the image file differs from what was written"
    );
}

#[test]
fn defaults_order4_indirect_persistent_merge() {
    let w = world("defaults");
    exercise(&w, &["--once"], Options::default(), 1);
}

#[test]
fn order0_no_indirect_no_persistent_reorder_off() {
    let w = world("order0");
    exercise(
        &w,
        &[
            "--once",
            "--no-persistent",
            "--reorder",
            "off",
            "--max-indirect-segments",
            "0",
        ],
        Options {
            max_ring_page_order: 0,
            indirect_segments: 0,
            persistent: false,
            ..Default::default()
        },
        2,
    );
}

/// Four queues, grant copy, sorting, and a fixed 100 us poll window.
#[test]
fn four_queues_order1_sort_grant_copy() {
    let w = world("queues");
    exercise(
        &w,
        &[
            "--once",
            "--reorder",
            "sort",
            "--grant-mode",
            "copy",
            "--max-queues",
            "4",
            "--poll-us",
            "100",
            "--poll-fixed",
        ],
        Options {
            max_ring_page_order: 1,
            queues: 4,
            indirect_segments: 64,
            ..Default::default()
        },
        3,
    );
}

/// With several queues and one request at a time, the frontend sleeps on all
/// queues' event channels at once: a response on any queue wakes it. (It used to
/// wait on each channel in turn, up to 25 ms each, so a response on the last
/// queue took tens of milliseconds: 300 reads took 5-10 s instead of well under
/// one. The bound below is 30x the normal time, a stall check, not a benchmark.)
#[test]
fn several_queues_one_request_at_a_time_do_not_stall() {
    let w = world("mq-qd1");
    let child = w.backend(&["--once", "--max-queues", "4"], true);
    let mut f = w.frontend(Options {
        queues: 4,
        ..Default::default()
    });
    assert_eq!(f.info().queues, 4);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    f.write_at(0, &data).unwrap();
    let mut got = vec![0u8; 4096];
    let t = Instant::now();
    for _ in 0..300 {
        f.read_at(0, &mut got).unwrap();
    }
    let took = t.elapsed();
    assert_eq!(got, data);
    f.close().unwrap();
    finish(child);
    assert!(
        took < Duration::from_secs(3),
        "300 reads at depth 1 over 4 queues took {took:?}: the frontend is not woken by every queue"
    );
}

/// Orders 2 and 3; the backend also spins (`--poll-us`) for requests and
/// completions before it sleeps, and the frontend for responses
/// (`Options::wait`), so those paths serve verified I/O too.
#[test]
fn orders_2_and_3_with_map_no_persistent_polling() {
    for order in [2, 3] {
        let w = world(&format!("order{order}"));
        exercise(
            &w,
            &["--once", "--no-persistent", "--poll-us", "200"],
            Options {
                max_ring_page_order: order,
                wait: xenio_blkfront::Wait::Fixed(Duration::from_micros(50)),
                indirect_segments: 256,
                ..Default::default()
            },
            10 + u64::from(order),
        );
    }
}

#[test]
fn readonly_disk_rejects_writes_and_is_never_written() {
    let w = world("ro");
    std::fs::write(&w.image, vec![0xabu8; DISK as usize]).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_xenio"));
    let child = c
        .arg("blkback")
        .args([
            "--platform",
            "local",
            "--frontend",
            "1",
            "--once",
            "--create-device",
        ])
        .arg("--run-dir")
        .arg(w.run_dir())
        .arg("--disk")
        .arg(format!(
            "format=raw,vdev=xvda,access=ro,target={}",
            w.image.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut f = w.frontend(Options::default());
    assert!(f.info().readonly);
    let mut b = vec![0u8; 4096];
    f.read_at(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0xab));
    // The library refuses, and a raw write request gets an error response.
    assert!(f.write_at(0, &[0u8; 512]).is_err());
    f.close().unwrap();
    finish(child);
    assert!(
        std::fs::read(&w.image).unwrap().iter().all(|&x| x == 0xab),
        "a read-only disk was written"
    );
}

/// `no-discard` in the disk specification takes discard away from the frontend,
/// and `devtype=cdrom` (or `cdrom`) makes a read-only CD-ROM whose `info` key has
/// `VDISK_CDROM`, as xl's disk syntax says (`xl-disk-configuration(5)`).
#[test]
fn no_discard_and_cdrom_reach_the_frontend() {
    use xenio_xen_sys::blkif::{VDISK_CDROM, VDISK_READONLY};
    use xenio_xenbus::{Store, Tx};
    let w = world("flags");
    let back_key = |k: &str| format!("/local/domain/0/backend/vbd/1/51712/{k}");
    for (spec, discard, info) in [
        ("vdev=xvda,access=rw", true, 0),
        ("vdev=xvda,access=rw,no-discard", false, 0),
        (
            "vdev=xvda,devtype=cdrom",
            false,
            VDISK_CDROM | VDISK_READONLY,
        ),
        ("vdev=xvda,cdrom", false, VDISK_CDROM | VDISK_READONLY),
    ] {
        let child = Command::new(env!("CARGO_BIN_EXE_xenio"))
            .arg("blkback")
            .args(["--platform", "local", "--frontend", "1", "--once"])
            .arg("--create-device")
            .arg("--run-dir")
            .arg(w.run_dir())
            .arg("--disk")
            .arg(format!("{spec},target={}", w.image.display()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let f = w.frontend(Options::default());
        let p = LocalPlatform::connect(w.run_dir(), DomId(0)).unwrap();
        let store = xenio_xenbus::platform::Platform::store(&p);
        let read = |k: &str| store.read_string(Tx::NONE, &back_key(k)).unwrap();
        assert_eq!(f.info().discard.is_some(), discard, "{spec}: discard");
        assert_eq!(
            read("feature-discard"),
            if discard { "1" } else { "0" },
            "{spec}"
        );
        assert_eq!(read("info").parse::<u32>().unwrap(), info, "{spec}: info");
        assert_eq!(f.info().readonly, info & VDISK_READONLY != 0, "{spec}");
        f.close().unwrap();
        finish(child);
    }
}

/// Kill the backend with SIGKILL many times while a stream of writes runs; restart
/// it each time. Every write the frontend saw acknowledged (then flushed) must be
/// in the file afterwards.
#[test]
fn backend_killed_mid_stream_loses_no_acknowledged_write() {
    let kills: usize = std::env::var("XENIO_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let w = world("kill");
    let mut child = w.backend(&[], true);
    let mut f = w.frontend(Options {
        timeout: Duration::from_secs(30),
        ..Default::default()
    });
    let blocks = DISK / 4096;
    let mut order: Vec<u64> = (0..blocks).collect();
    let mut rng = Rng(99);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut acked = std::collections::HashMap::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w_dir = w.run_dir();
    let image = w.image.clone();
    // The killer runs beside the writer.
    let killer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(7);
            let mut n = 0;
            while n < kills && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(60 + rng.next() % 120));
                let _ = child.kill();
                let _ = child.wait();
                n += 1;
                child = spawn_backend(&w_dir, &image);
            }
            (child, n)
        })
    };
    let t = Instant::now();
    // Keep writing (block after block, pass after pass) until every kill happened.
    for (k, blk) in order.iter().cycle().enumerate() {
        let data = block(*blk, k as u64);
        f.write_at(blk * 4096, &data)
            .unwrap_or_else(|e| panic!("write {k} failed: {e}"));
        acked.insert(*blk, k as u64);
        if killer.is_finished() && k > 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "the write stream stalled"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (child, n) = killer.join().unwrap();
    f.flush().unwrap();
    let reconnects = f.reconnects();
    f.close().unwrap();
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    let file = std::fs::read(&w.image).unwrap();
    for (blk, k) in &acked {
        assert!(
            file[*blk as usize * 4096..][..4096] == block(*blk, *k)[..],
            "acknowledged write {k} (block {blk}) is not on disk"
        );
    }
    eprintln!(
        "{} acknowledged writes survived {n} backend kills ({reconnects} reconnects)",
        acked.len()
    );
    assert_eq!(n, kills, "only {n} kills happened");
    // A restarted backend never attaches to the rings the frontend set up for
    // the killed one (the frontend may be resetting them at that moment): it
    // makes the frontend reconnect, and the frontend re-issues what was in flight.
}

/// A backend started while the frontend is still Connected to a killed one does
/// not attach to that connection's ring (the frontend resets it when it notices
/// the restart, and a backend serving it meanwhile would answer into a ring
/// being reinitialised: "response for id .. which is not in flight"). It asks
/// the frontend to reconnect; the idle frontend does so on its next operation,
/// and the data written before and after is intact.
#[test]
fn restarted_backend_makes_a_stale_frontend_reconnect() {
    let w = world("stale");
    let mut a = w.backend(&[], true);
    let mut f = w.frontend(Options {
        timeout: Duration::from_secs(30),
        ..Default::default()
    });
    let before = block(3, 1);
    f.write_at(3 * 4096, &before).unwrap();
    f.flush().unwrap();
    a.kill().unwrap();
    a.wait().unwrap();
    // The frontend is idle: it still believes it is Connected.
    let b = spawn_backend(&w.run_dir(), &w.image);
    let store = LocalPlatform::connect(w.run_dir(), DomId(0)).unwrap();
    let state_path = "/local/domain/0/backend/vbd/1/51712/state";
    let state = || {
        xenio_xenbus::handshake::read_state(
            xenio_xenbus::platform::Platform::store(&store),
            state_path,
        )
        .unwrap()
    };
    // The killed backend's `Connected` stays in the store until the new one
    // starts its handshake; from then on, watch every state it goes through.
    let t = Instant::now();
    while state() == xenio_xen_sys::xenbus::XenbusState::Connected {
        assert!(t.elapsed() < Duration::from_secs(20), "no new backend");
        std::thread::sleep(Duration::from_millis(2));
    }
    let t = Instant::now();
    let mut seen = Vec::new();
    while t.elapsed() < Duration::from_millis(1500) {
        let s = state();
        if seen.last() != Some(&s) {
            seen.push(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !seen.contains(&xenio_xen_sys::xenbus::XenbusState::Connected),
        "the new backend connected to the killed one's ring: states {seen:?}"
    );
    // The frontend's next operation finds out, reconnects and goes on.
    let after = block(4, 2);
    f.write_at(4 * 4096, &after).unwrap();
    let mut got = vec![0u8; 4096];
    f.read_at(3 * 4096, &mut got).unwrap();
    assert_eq!(got, before);
    f.read_at(4 * 4096, &mut got).unwrap();
    assert_eq!(got, after);
    assert_eq!(f.reconnects(), 1);
    f.close().unwrap();
    let mut b = b;
    let _ = b.kill();
    let _ = b.wait();
    let file = std::fs::read(&w.image).unwrap();
    assert_eq!(&file[3 * 4096..4 * 4096], &before[..]);
    assert_eq!(&file[4 * 4096..5 * 4096], &after[..]);
}

fn block(blk: u64, k: u64) -> Vec<u8> {
    let mut r = Rng(blk.wrapping_mul(0x9e3779b97f4a7c15) ^ k ^ 1);
    (0..4096).map(|_| r.next() as u8).collect()
}

fn spawn_backend(run_dir: &Path, image: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xenio"))
        .arg("blkback")
        .args(["--platform", "local", "--frontend", "1"])
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--disk")
        .arg(format!(
            "format=raw,vdev=xvda,access=rw,target={}",
            image.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// The same end-to-end check with a block device as the target (a loop device
/// over the image). Needs root for losetup; skips with a message otherwise.
#[test]
fn block_device_target() {
    let w = world("loop");
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&w.image)
        .output();
    let dev = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => {
            eprintln!(
                "SKIPPED block_device_target: losetup failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED block_device_target: no losetup ({e})");
            return;
        }
    };
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    let child = Command::new(env!("CARGO_BIN_EXE_xenio"))
        .arg("blkback")
        .args([
            "--platform",
            "local",
            "--frontend",
            "1",
            "--once",
            "--create-device",
        ])
        .arg("--run-dir")
        .arg(w.run_dir())
        .arg("--disk")
        .arg(format!("vdev=xvda,target={dev}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut f = w.frontend(Options::default());
    assert_eq!(f.size(), DISK);
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8).collect();
    f.write_at(3 << 20, &data).unwrap();
    f.flush().unwrap();
    let mut back = vec![0u8; 1 << 20];
    f.read_at(3 << 20, &mut back).unwrap();
    assert!(back == data);
    if f.info().discard.is_some() {
        f.discard(3 << 20, 1 << 20).unwrap();
    }
    f.close().unwrap();
    finish(child);
}

/// `xenio blkfront` (a child process, domain 1) verifies a disk served by
/// `xenio blkback --create-device --backend-type xenio`, and SIGTERM to the backend
/// detaches: both store directories are gone and the backend exits cleanly.
#[test]
fn blkfront_command_and_toolstack_style_attach_detach() {
    use xenio_xenbus::{Store, Tx};
    let w = world("cli");
    let backend = w.backend(&["--backend-type", "xenio"], true);
    let store = LocalPlatform::connect(w.run_dir(), DomId(0)).unwrap();
    let store = xenio_xenbus::platform::Platform::store(&store);
    let back_dir = "/local/domain/0/backend/xenio/1/51712";
    let t = Instant::now();
    while store
        .read_opt(Tx::NONE, &format!("{back_dir}/state"))
        .unwrap()
        .is_none()
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no backend directory"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        store
            .read_string(Tx::NONE, &format!("{FRONT_DIR}/virtual-device"))
            .unwrap(),
        "51712"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_xenio"))
        .arg("blkfront")
        .args(["--platform", "local", "--domid", "1", "--device", "xvda"])
        .arg("--run-dir")
        .arg(w.run_dir())
        .args(["--writes", "40", "--pool-pages", "64", "--seed", "9"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("verified: 40 writes"),
        "xenio blkfront: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(backend.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    finish(backend);
    for dir in [FRONT_DIR, back_dir] {
        assert!(
            store.read_opt(Tx::NONE, dir).unwrap().is_none(),
            "{dir} left behind after detach"
        );
    }
}

/// The CPUs this test may run on, from `/proc/self/status`.
fn allowed_cpus() -> Vec<usize> {
    cpu_list_of(&std::fs::read_to_string("/proc/self/status").unwrap())
}

/// `Cpus_allowed_list` of a `/proc/.../status` text, expanded.
fn cpu_list_of(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("no Cpus_allowed_list")
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// `--cpus`: each queue thread runs on its CPU of the list (round robin), and
/// the disk still serves verified I/O; a CPU the machine does not have is
/// refused at start, with the CPU named, before anything is offered to a
/// frontend.
#[test]
fn queue_threads_run_on_the_cpus_given() {
    let allowed = allowed_cpus();
    let (first, last) = (allowed[0], *allowed.last().unwrap());
    let w = world("cpus");
    let mut child = w.backend(
        &[
            "--once",
            "--max-queues",
            "2",
            "--cpus",
            &format!("{last},{first}"),
        ],
        true,
    );
    let mut f = w.frontend(Options {
        queues: 2,
        ..Default::default()
    });
    assert_eq!(f.info().queues, 2);
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 13 + 5) as u8).collect();
    f.write_at(1 << 20, &data).unwrap();
    let mut got = vec![0u8; data.len()];
    f.read_at(1 << 20, &mut got).unwrap();
    assert!(got == data, "read back differs");
    // Each queue thread's own affinity, while connected.
    let mut seen = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if let Some(q) = comm.trim().strip_prefix("blkback-q") {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            seen.push((q.to_string(), cpu_list_of(&status)));
        }
    }
    seen.sort();
    let want = vec![
        ("0".to_string(), vec![last]),
        ("1".to_string(), vec![first]),
    ];
    if seen != want {
        let _ = child.kill();
        panic!("queue threads' CPUs: {seen:?}, wanted {want:?}");
    }
    f.close().unwrap();
    finish(child);

    // A CPU this machine does not have (one past the last possible one).
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let bad = possible
        .trim()
        .rsplit([',', '-'])
        .next()
        .unwrap()
        .parse::<usize>()
        .unwrap()
        + 1;
    let out = w
        .backend_command(&["--once", "--cpus", &format!("{first},{bad}")], true)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--cpus {bad} was accepted: {err}");
    assert!(
        err.contains(&format!("CPU {bad} cannot be used here")),
        "unclear error for --cpus {bad}: {err}"
    );
    // And a list that does not parse is refused by the command line.
    let out = Command::new(env!("CARGO_BIN_EXE_xenio"))
        .args(["blkback", "--cpus", "3-1", "--disk", "target=/nonexistent"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("a range goes upwards"),
        "--cpus 3-1: {err}"
    );
}

/// Persistent grants in shared memory (the run directory in /dev/shm, where
/// the bench keeps it) are registered with the kernel, and one-segment I/O goes
/// through them (the backend's exit line counts it); the data is the same. With
/// domain memory in files on disk the kernel refuses to register it, and the
/// same I/O goes the ordinary way.
#[test]
fn persistent_grants_in_shared_memory_are_registered() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("SKIPPED: no /dev/shm");
        return;
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // The last run keeps 4 persistent grants: mappings are evicted, and
    // unregistered, all the time.
    for (parent, must_register, extra) in [
        (shm, true, &[][..]),
        (shm, true, &["--max-persistent-grants", "4"][..]),
        (target, false, &[][..]),
    ] {
        let w = world_in("registered", parent);
        let mut c = w.backend_command(&[&["--once"][..], extra].concat(), true);
        let child = c.stderr(Stdio::piped()).spawn().unwrap();
        let mut f = w.frontend(Options::default());
        let mut rng = Rng(41);
        let mut shadow = vec![0u8; 1 << 20];
        for i in 0..64u64 {
            let off = (rng.next() % 256) * 4096;
            let data: Vec<u8> = (0..4096u64).map(|b| (b ^ i ^ rng.next()) as u8).collect();
            f.write_at(off, &data).unwrap();
            shadow[off as usize..][..4096].copy_from_slice(&data);
            let mut got = vec![0u8; 4096];
            f.read_at(off, &mut got).unwrap();
            assert!(got == data, "4 KiB at {off} differs");
        }
        let mut all = vec![0u8; 1 << 20];
        f.read_at(0, &mut all).unwrap();
        assert!(all == shadow, "read-back differs");
        f.close().unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let registered: u64 = err
            .lines()
            .find_map(|l| l.split_once(" I/Os into registered memory"))
            .and_then(|(l, _)| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of registered I/Os: {err}"));
        assert!(
            err.contains(", 0 missed wake-ups"),
            "the backend slept through ready work: {err}"
        );
        eprintln!(
            "domain memory in {}: {registered} I/Os into registered memory",
            parent.display()
        );
        if must_register {
            assert!(
                registered >= 128,
                "{registered} I/Os into registered memory: {err}"
            );
        }
        assert!(
            std::fs::read(&w.image).unwrap()[..1 << 20] == shadow[..],
            "the image differs"
        );
    }
}

/// User plus system CPU time, in clock ticks, from a `/proc/.../stat` line
/// (fields 14 and 15, counted after the parenthesised command name).
fn cpu_ticks(stat_path: &str) -> u64 {
    let stat = std::fs::read_to_string(stat_path).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The adaptive waiting (the default on both sides) is no hidden busy loop:
/// after a burst of I/O at one request in flight (which teaches both sides to
/// spin) the device stays connected and idle for 10 s, and the backend process
/// and the frontend's thread each use less than 0.5% of a CPU over that time,
/// read from /proc.
#[test]
fn an_idle_connected_device_costs_almost_no_cpu() {
    let w = world("idle");
    let child = w.backend(&["--once"], true);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let (go, done) = std::sync::mpsc::channel::<()>();
    let run_dir = w.run_dir();
    let front = std::thread::spawn(move || {
        let mut f = connect_frontend(&run_dir, Options::default());
        // Many reads, one at a time: the waits are short, so both sides learn
        // to spin.
        let mut buf = vec![0u8; 4096];
        for i in 0..3000u64 {
            f.read_at((i * 7919 % 4000) * 4096, &mut buf).unwrap();
        }
        let tid = nix::unistd::gettid().as_raw();
        tx.send(tid).unwrap();
        // Idle, connected, until told.
        done.recv().unwrap();
        f.close().unwrap();
    });
    let tid = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let back_stat = format!("/proc/{pid}/stat");
    let front_stat = format!("/proc/self/task/{tid}/stat");
    // Let the last waits end (the backend's spin after the last answer).
    std::thread::sleep(Duration::from_millis(200));
    let (b0, f0) = (cpu_ticks(&back_stat), cpu_ticks(&front_stat));
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let (b1, f1) = (cpu_ticks(&back_stat), cpu_ticks(&front_stat));
    let secs = t.elapsed().as_secs_f64();
    go.send(()).unwrap();
    front.join().unwrap();
    finish(child);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let share = |ticks: u64| ticks as f64 / hz / secs;
    eprintln!(
        "idle for {secs:.1} s: backend {:.3}% of a CPU, frontend thread {:.3}%",
        100.0 * share(b1 - b0),
        100.0 * share(f1 - f0)
    );
    assert!(
        share(b1 - b0) < 0.005,
        "the idle backend used {} ticks",
        b1 - b0
    );
    assert!(
        share(f1 - f0) < 0.005,
        "the idle frontend used {} ticks",
        f1 - f0
    );
}
