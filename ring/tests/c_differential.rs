//! Differential tests of the ring against Xen's own C macros.
//!
//! `tests/c/ringpeer.c` is a blkif frontend or backend written only with the
//! macros of `xen/io/ring.h` (through `xen/io/blkif.h`, Debian's libxen-dev). It is
//! compiled at test time and run as a separate process over a ring file shared
//! with this one (`/dev/shm`, `MAP_SHARED` on both sides):
//!
//! 1. `ring_size_matches_const_ring_size`: `__CONST_RING_SIZE` and `RING_SIZE` of
//!    the blkif, netif tx and netif rx rings, orders 0..=8, against `size()`.
//! 2. `stream_c_front_rust_back`, `stream_rust_front_c_back`: 20,000 requests
//!    per ring order 0..=4, indices starting just below `u32::MAX`, event-driven
//!    with one eventfd per direction; every field of every request and response is
//!    checked and the notification counts must balance exactly.
//! 3. `lockstep_notify_decisions`: one seeded script of pushes, takes and final
//!    checks run by (C front, Rust back), (Rust front, C back), (C front, C back)
//!    and (Rust front, Rust back); every notify decision, final-check result,
//!    count, id and index must be the same in all four logs, for orders 0..=4
//!    and start indices 0 and just below `u32::MAX`.
//!    `lockstep_detects_a_flipped_notify` checks that this comparison can fail:
//!    with the Rust frontend's decisions inverted it must report a difference.
//! 4. `known_differences_from_the_c_macros`: the two places where the Rust ring
//!    deliberately does not do what the macros do (a peer that rewrites our
//!    producer index, a producer index that moves backwards), pinned down.
//!
//! `main` runs them in order, prints PASS/FAIL for each and exits non-zero on any
//! failure. Nothing can hang: every wait has a timeout, the C peers die with this
//! process (`PR_SET_PDEATHSIG`) and a watchdog ends the run after two minutes.
//! Arguments that do not start with `-` select tests by substring.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use xenio_ring::{
    BlkifBackRing, BlkifFrontRing, HeapMemory, MmapRegion, NetifRxFrontRing, NetifTxFrontRing,
    RingIdx, SharedMemory,
};
use xenio_xen_sys::blkif::{BLKIF_MAX_SEGMENTS_PER_REQUEST, BlkifRequest, BlkifResponse};

type TestResult = Result<(), String>;

/// Ring orders the streaming and lockstep tests cover (Linux blkback's maximum).
const ORDERS: std::ops::RangeInclusive<u32> = 0..=4;
/// Requests per streaming run.
const STREAM_COUNT: u64 = 20_000;
/// Steps per lockstep script.
const SCRIPT_STEPS: usize = 2_500;
/// A start index that makes every index wrap early in a run.
const HIGH_START: RingIdx = u32::MAX - 100;
/// Longest wait for a notification or a reply line with no progress.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole binary is killed after this long, whatever it is doing.
const WATCHDOG: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Request and response contents, and the batching policies of the streaming
// test. Mirrored from ringpeer.c: change both together.

const ID_BASE: u64 = 0xa5a5_0000_0000_0000;

/// splitmix64's finaliser.
fn mix(x: u64) -> u64 {
    let x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The request numbered `seq`: every field a function of `seq`.
fn make_request(seq: u64) -> BlkifRequest {
    let h = mix(seq);
    let mut req = BlkifRequest {
        operation: (h % 4) as u8,
        nr_segments: (1 + (h >> 8) % BLKIF_MAX_SEGMENTS_PER_REQUEST as u64) as u8,
        handle: (h >> 16) as u16,
        id: ID_BASE + seq,
        sector_number: mix(h),
        ..Default::default()
    };
    for i in 0..u64::from(req.nr_segments) {
        let s = mix(seq * 16 + i + 1);
        let first = ((s >> 32) % 8) as u8;
        let seg = &mut req.seg[i as usize];
        seg.gref = s as u32;
        seg.first_sect = first;
        seg.last_sect = first + ((s >> 40) % u64::from(8 - first)) as u8;
    }
    req
}

/// Whether every field (padding excepted: C does not promise to copy it) of `got`
/// is that of request `seq`.
fn request_ok(seq: u64, got: &BlkifRequest) -> bool {
    let want = make_request(seq);
    got.operation == want.operation
        && got.nr_segments == want.nr_segments
        && got.handle == want.handle
        && got.id == want.id
        && got.sector_number == want.sector_number
        && got.seg.iter().zip(&want.seg).all(|(g, w)| {
            g.gref == w.gref && g.first_sect == w.first_sect && g.last_sect == w.last_sect
        })
}

fn status_of(id: u64) -> i16 {
    (mix(id ^ 0x5717) >> 48) as i16
}

fn response_ok(seq: u64, got: &BlkifResponse) -> bool {
    let req = make_request(seq);
    got.id == req.id && got.operation == req.operation && got.status == status_of(req.id)
}

/// Most requests the streaming frontend keeps outstanding: the whole ring, one,
/// or a random depth, in phases of 1000 requests.
fn front_limit(seq: u64, size: u32) -> u32 {
    match (seq / 1000) % 3 {
        0 => size,
        1 => 1,
        _ => 1 + (mix(seq ^ 0x11) % u64::from(size)) as u32,
    }
}

/// Most requests the streaming frontend pushes in one batch.
fn front_batch(seq: u64, size: u32) -> u32 {
    match (seq / 1000) % 3 {
        0 => size,
        1 => 1,
        _ => 1 + (mix(seq ^ 0x22) % u64::from(size)) as u32,
    }
}

/// Most requests the streaming backend takes in one go.
fn back_max(served: u64, size: u32) -> u32 {
    match (served / 777) % 3 {
        0 => size,
        1 => 1,
        _ => 1 + (mix(served ^ 0x33) % 7) as u32,
    }
}

/// The streaming backend publishes its responses in chunks of this many.
fn back_chunk(served: u64) -> u32 {
    1 + (mix(served ^ 0x44) % 5) as u32
}

// ---------------------------------------------------------------------------
// The C program.

/// Compile `tests/c/ringpeer.c` once per run; the path of the binary.
fn ringpeer() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(compile_ringpeer)
        .as_deref()
        .map_err(Clone::clone)
}

fn compile_ringpeer() -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/ringpeer.c");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let bin = dir.join("ringpeer");
    // Compile under a private name, then rename: another run of this test may be
    // executing the previous binary.
    let tmp = dir.join(format!("ringpeer.{}.tmp", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&tmp)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run the C compiler {cc:?} ({e}); install gcc"))?;
    if !out.status.success() {
        return Err(format!(
            "compiling {} failed (is libxen-dev installed?):\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &bin).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(bin)
}

/// A running `ringpeer`. Dropping it kills it.
struct Peer {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    buf: Vec<u8>,
}

impl Peer {
    fn spawn(args: &[String], with_stdin: bool) -> Result<Peer, String> {
        let what = format!("ringpeer {}", args.join(" "));
        let mut child = Command::new(ringpeer()?)
            .args(args)
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Peer {
            what,
            child,
            stdin,
            stdout,
            buf: Vec::new(),
        })
    }

    /// The next line the peer prints, waiting at most `WAIT_TIMEOUT` for it.
    fn line(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.failed(&format!("no output line within {WAIT_TIMEOUT:?}")));
            }
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, left.as_millis().min(1000) as u16) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            let mut chunk = [0u8; 4096];
            match nix::unistd::read(&self.stdout, &mut chunk) {
                Ok(0) => return Err(self.failed("its output ended")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    fn expect_ready(&mut self) -> TestResult {
        match self.line()?.as_str() {
            "ready" => Ok(()),
            other => Err(self.failed(&format!("said {other:?} instead of \"ready\""))),
        }
    }

    /// Send one command (step mode) and return the line it answers.
    fn send(&mut self, cmd: &str) -> Result<String, String> {
        let stdin = self.stdin.as_mut().expect("step peers have a stdin");
        if let Err(e) = writeln!(stdin, "{cmd}").and_then(|()| stdin.flush()) {
            return Err(self.failed(&format!("cannot send {cmd:?}: {e}")));
        }
        self.line()
    }

    /// Wait (at most `WAIT_TIMEOUT`) for the peer to exit by itself.
    fn wait(&mut self) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) => return Err(self.failed("did not exit")),
                Err(e) => return Err(format!("wait for {}: {e}", self.what)),
            }
        }
    }

    /// Wait for a successful exit.
    fn finish(&mut self) -> TestResult {
        self.stdin = None;
        let status = self.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failed(&format!("exited with {status}")))
        }
    }

    /// Kill the peer (if it still runs) and describe the failure with what it
    /// wrote on stderr.
    fn failed(&mut self, why: &str) -> String {
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        format!("{}: {why}\n  exit: {status}; stderr:\n{stderr}", self.what)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The shared ring file.

/// A ring file under `/dev/shm` (removed on drop), filled with a junk pattern so
/// that neither side can depend on zeroed memory.
struct RingFile {
    path: PathBuf,
    file: File,
}

impl RingFile {
    fn new(order: u32) -> Result<RingFile, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!(
            "xenio-c-differential-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        file.write_all(&vec![0xa5; 4096 << order])
            .map_err(|e| format!("fill {}: {e}", path.display()))?;
        Ok(RingFile { path, file })
    }

    fn map(&self) -> Result<MmapRegion, String> {
        MmapRegion::from_file(&self.file).map_err(|e| format!("mmap {}: {e}", self.path.display()))
    }

    fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for RingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The four shared indices, as a log suffix.
fn shared_indices(mem: &MmapRegion) -> [RingIdx; 4] {
    let w = mem.words();
    [0, 1, 2, 3].map(|i| w[i].load(Ordering::SeqCst))
}

// ---------------------------------------------------------------------------
// Test 1: ring sizes.

fn ring_size_matches_const_ring_size() -> TestResult {
    let mut peer = Peer::spawn(&["sizes".into()], false)?;
    let mut checked = 0;
    let mut problems = Vec::new();
    for _ in 0..27 {
        let line = peer.line()?;
        let f: Vec<&str> = line.split(' ').collect();
        let [kind, order, const_size, ring_size] = f[..] else {
            return Err(format!("malformed line {line:?}"));
        };
        let order: u32 = order
            .parse()
            .map_err(|_| format!("bad order in {line:?}"))?;
        let rust = match kind {
            "blkif" => BlkifFrontRing::init(HeapMemory::pages(order)).map(|r| r.size()),
            "netif_tx" => NetifTxFrontRing::init(HeapMemory::pages(order)).map(|r| r.size()),
            "netif_rx" => NetifRxFrontRing::init(HeapMemory::pages(order)).map(|r| r.size()),
            _ => return Err(format!("unknown ring {kind:?}")),
        }
        .map_err(|e| format!("{kind} order {order}: {e}"))?;
        for (what, c) in [
            ("__CONST_RING_SIZE", const_size),
            ("RING_SIZE after XEN_FRONT_RING_INIT", ring_size),
        ] {
            if c != rust.to_string() {
                problems.push(format!(
                    "{kind} order {order}: {what} is {c}, FrontRing::size() is {rust}"
                ));
            }
        }
        checked += 1;
    }
    peer.finish()?;
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    println!("    {checked} ring sizes (3 entry types x orders 0..=8) agree");
    Ok(())
}

// ---------------------------------------------------------------------------
// Test 2: streaming between processes.

/// What one side of a streaming run counted. The C side prints the same fields.
#[derive(Debug, Default)]
struct Stats {
    requests: u64,
    responses: u64,
    /// Kicks sent to the peer.
    notifies: u64,
    /// Sum of the eventfd counts read (kicks received).
    received: u64,
    /// Times it slept and was woken.
    wakeups: u64,
    /// Times the frontend's pushes filled the ring (`RING_FULL`).
    fulls: u64,
    errors: u64,
}

impl Stats {
    fn parse(line: &str) -> Result<Stats, String> {
        let mut st = Stats::default();
        let mut fields = line.split(' ');
        if fields.next() != Some("stats") {
            return Err(format!("expected a stats line, got {line:?}"));
        }
        for f in fields {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| format!("bad stats field {f:?}"))?;
            let v: u64 = v.parse().map_err(|_| format!("bad stats field {f:?}"))?;
            match k {
                "requests" => st.requests = v,
                "responses" => st.responses = v,
                "notifies" => st.notifies = v,
                "received" => st.received = v,
                "wakeups" => st.wakeups = v,
                "fulls" => st.fulls = v,
                "errors" => st.errors = v,
                _ => return Err(format!("unknown stats field {f:?}")),
            }
        }
        Ok(st)
    }
}

/// A non-blocking eventfd the C child inherits (CLOEXEC cleared).
fn inheritable_eventfd() -> Result<EventFd, String> {
    let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| format!("eventfd: {e}"))?;
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| format!("fcntl: {e}"))?;
    Ok(fd)
}

fn kick(fd: &EventFd, st: &mut Stats) -> TestResult {
    fd.write(1).map_err(|e| format!("eventfd write: {e}"))?;
    st.notifies += 1;
    Ok(())
}

/// Whatever count is left in an eventfd (kicks nobody read).
fn drain(fd: &EventFd) -> Result<u64, String> {
    match fd.read() {
        Ok(v) => Ok(v),
        Err(Errno::EAGAIN) => Ok(0),
        Err(e) => Err(format!("eventfd read: {e}")),
    }
}

/// Sleep until the peer kicks `fd`. The final check said there is no work, so a
/// timeout is a lost wake-up, and so is the peer exiting while we wait.
fn wait_kick(fd: &EventFd, st: &mut Stats, peer: &mut Peer) -> TestResult {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, 100u16) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => match fd.read() {
                Ok(v) => {
                    st.received += v;
                    st.wakeups += 1;
                    return Ok(());
                }
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(format!("eventfd read: {e}")),
            },
            Err(e) => return Err(format!("poll: {e}")),
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            return Err(peer.failed(&format!(
                "exited ({status}) while we slept waiting for its notification, after \
                 {} requests / {} responses",
                st.requests, st.responses
            )));
        }
        if Instant::now() >= deadline {
            return Err(peer.failed(&format!(
                "sent no notification within {WAIT_TIMEOUT:?} while our final check said \
                 there was no work (a lost wake-up?), after {} requests / {} responses",
                st.requests, st.responses
            )));
        }
    }
}

/// The frontend of a streaming run, in Rust (ringpeer.c `stream_front`).
fn rust_stream_front(
    ring: &mut BlkifFrontRing<MmapRegion>,
    count: u64,
    kick_fd: &EventFd,
    wait_fd: &EventFd,
    peer: &mut Peer,
) -> Result<Stats, String> {
    let mut st = Stats::default();
    let size = ring.size();
    let mut rsps = Vec::new();
    while st.responses < count {
        let (limit, batch) = (
            front_limit(st.requests, size),
            front_batch(st.requests, size),
        );
        let mut pushed = 0;
        while st.requests < count && pushed < batch && ring.outstanding() < limit && !ring.is_full()
        {
            ring.push_request(&make_request(st.requests))
                .map_err(|e| format!("push_request: {e}"))?;
            st.requests += 1;
            pushed += 1;
        }
        st.fulls += u64::from(pushed > 0 && ring.is_full());
        if pushed > 0 && ring.push_requests_and_check_notify().is_required() {
            kick(kick_fd, &mut st)?;
        }

        rsps.clear();
        let consumed = ring
            .take_responses(&mut rsps)
            .map_err(|e| format!("take_responses: {e}"))?;
        for rsp in &rsps {
            if !response_ok(st.responses, rsp) {
                st.errors += 1;
                if st.errors <= 5 {
                    eprintln!("    Rust front: bad response #{}: {rsp:?}", st.responses);
                }
            }
            st.responses += 1;
        }
        if pushed > 0 || consumed > 0 {
            continue;
        }
        if !ring
            .final_check_for_responses()
            .map_err(|e| format!("final check: {e}"))?
        {
            wait_kick(wait_fd, &mut st, peer)?;
        }
    }
    Ok(st)
}

/// The backend of a streaming run, in Rust (ringpeer.c `stream_back`).
fn rust_stream_back(
    ring: &mut BlkifBackRing<MmapRegion>,
    count: u64,
    kick_fd: &EventFd,
    wait_fd: &EventFd,
    peer: &mut Peer,
) -> Result<Stats, String> {
    let mut st = Stats::default();
    let size = ring.size();
    let mut reqs = Vec::new();
    while st.requests < count {
        let (max, chunk) = (
            back_max(st.requests, size) as usize,
            back_chunk(st.requests) as usize,
        );
        reqs.clear();
        let took = ring
            .take_requests_up_to(&mut reqs, max)
            .map_err(|e| format!("take_requests: {e}"))?;
        for (i, req) in reqs.iter().enumerate() {
            if !request_ok(st.requests, req) {
                st.errors += 1;
                if st.errors <= 5 {
                    eprintln!("    Rust back: bad request #{}: {req:?}", st.requests);
                }
            }
            ring.push_response(&BlkifResponse::new(
                req.id,
                req.operation,
                status_of(req.id),
            ))
            .map_err(|e| format!("push_response: {e}"))?;
            st.requests += 1;
            st.responses += 1;
            if (i + 1) % chunk == 0 && ring.push_responses_and_check_notify().is_required() {
                kick(kick_fd, &mut st)?;
            }
        }
        if took % chunk != 0 && ring.push_responses_and_check_notify().is_required() {
            kick(kick_fd, &mut st)?;
        }
        if took > 0 {
            continue;
        }
        if !ring
            .final_check_for_requests()
            .map_err(|e| format!("final check: {e}"))?
        {
            wait_kick(wait_fd, &mut st, peer)?;
        }
    }
    Ok(st)
}

fn stream_c_front_rust_back() -> TestResult {
    for order in ORDERS {
        stream_once(order, true)?;
    }
    Ok(())
}

fn stream_rust_front_c_back() -> TestResult {
    for order in ORDERS {
        stream_once(order, false)?;
    }
    Ok(())
}

/// One streaming run of `STREAM_COUNT` requests over a ring of `order`, with the C
/// program as the frontend (`c_front`) or as the backend.
fn stream_once(order: u32, c_front: bool) -> TestResult {
    let file = RingFile::new(order)?;
    let to_back = inheritable_eventfd()?; // the frontend kicks, the backend sleeps on it
    let to_front = inheritable_eventfd()?;
    let fd = |e: &EventFd| e.as_raw_fd().to_string();
    let count = STREAM_COUNT;
    let name = if c_front {
        "C front -> Rust back"
    } else {
        "Rust front -> C back"
    };
    let context = |e: String| format!("order {order}, {name}: {e}");

    let (size, front, back) = if c_front {
        let args = [
            "stream-front".into(),
            file.arg(),
            order.to_string(),
            HIGH_START.to_string(),
            count.to_string(),
            fd(&to_back),
            fd(&to_front),
        ];
        let mut peer = Peer::spawn(&args, false)?;
        peer.expect_ready().map_err(context)?;
        // The C frontend initialised the ring: resume at its rsp_prod, like blkback.
        let mut ring = BlkifBackRing::attach(file.map()?).map_err(|e| context(e.to_string()))?;
        let back =
            rust_stream_back(&mut ring, count, &to_front, &to_back, &mut peer).map_err(context)?;
        let line = peer.line().map_err(context)?;
        peer.finish().map_err(context)?;
        (ring.size(), Stats::parse(&line)?, back)
    } else {
        let mut ring =
            BlkifFrontRing::init_at(file.map()?, HIGH_START).map_err(|e| context(e.to_string()))?;
        let args = [
            "stream-back".into(),
            file.arg(),
            order.to_string(),
            count.to_string(),
            fd(&to_front),
            fd(&to_back),
        ];
        let mut peer = Peer::spawn(&args, false)?;
        peer.expect_ready().map_err(context)?;
        let front =
            rust_stream_front(&mut ring, count, &to_back, &to_front, &mut peer).map_err(context)?;
        let line = peer.line().map_err(context)?;
        peer.finish().map_err(context)?;
        (ring.size(), front, Stats::parse(&line)?)
    };
    // Kicks sent after the receiver's last read are still in the eventfds.
    let (left_at_back, left_at_front) = (drain(&to_back)?, drain(&to_front)?);

    let mut problems = Vec::new();
    let mut expect = |what: &str, got: u64, want: u64| {
        if got != want {
            problems.push(format!("{what}: {got}, expected {want}"));
        }
    };
    expect("frontend requests", front.requests, count);
    expect("frontend responses", front.responses, count);
    expect("frontend verification errors", front.errors, 0);
    expect("backend requests", back.requests, count);
    expect("backend responses", back.responses, count);
    expect("backend verification errors", back.errors, 0);
    expect(
        "kicks the backend received",
        back.received + left_at_back,
        front.notifies,
    );
    expect(
        "kicks the frontend received",
        front.received + left_at_front,
        back.notifies,
    );
    if front.notifies == 0 || back.notifies == 0 {
        problems.push("a side never notified".into());
    }
    // Deterministic: each batch of the fill phases pushes until RING_FULL.
    if front.fulls == 0 {
        problems.push("the frontend never filled the ring".into());
    }
    if !problems.is_empty() {
        return Err(context(format!(
            "{}\nfront: {front:?}\nback: {back:?}",
            problems.join("\n")
        )));
    }
    println!(
        "    order {order} ({size:3} slots) {name}: {count} requests; front filled the ring {:4} times, \
         kicked {:5}, slept {:5}; back kicked {:5}, slept {:5}",
        front.fulls, front.notifies, front.wakeups, back.notifies, back.wakeups
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Test 3: lockstep differential of the notify decisions.

/// One end of a ring in the lockstep test: executes a command, answers one line.
/// The Rust ends print exactly what `ringpeer step-front` / `step-back` print.
trait Side {
    fn exec(&mut self, cmd: &str) -> Result<String, String>;

    /// End the side; a C side must exit cleanly when its stdin closes.
    fn close(&mut self) -> TestResult {
        Ok(())
    }
}

type BoxedSide = Box<dyn Side>;

struct CSide(Peer);

impl Side for CSide {
    fn exec(&mut self, cmd: &str) -> Result<String, String> {
        self.0.send(cmd)
    }

    fn close(&mut self) -> TestResult {
        self.0.finish()
    }
}

fn parse_cmd(cmd: &str) -> (&str, u64) {
    match cmd.split_once(' ') {
        Some((verb, n)) => (verb, n.parse().unwrap_or(0)),
        None => (cmd, 0),
    }
}

struct RustFront {
    ring: BlkifFrontRing<MmapRegion>,
    next: u64,
    done: u64,
    /// A test hook: flip every notify decision (to check that the test can fail).
    flip_notify: bool,
}

impl Side for RustFront {
    fn exec(&mut self, cmd: &str) -> Result<String, String> {
        let ring = &mut self.ring;
        let body = match parse_cmd(cmd) {
            ("write", k) => {
                let (first, mut n) = (self.next, 0);
                while n < k && !ring.is_full() {
                    if let Err(e) = ring.push_request(&make_request(self.next)) {
                        return Ok(format!("F write error: {e}"));
                    }
                    self.next += 1;
                    n += 1;
                }
                format!(
                    "F write n={n} first={first} full={}",
                    u8::from(ring.is_full())
                )
            }
            ("push", _) => {
                let notify = ring.push_requests_and_check_notify().is_required() ^ self.flip_notify;
                format!("F push notify={}", u8::from(notify))
            }
            ("pushonly", _) => {
                ring.push_requests();
                "F pushonly".into()
            }
            ("take", m) => match ring.unconsumed_responses() {
                Err(e) => format!("F take error: {e}"),
                Ok(avail) => {
                    let (first, mut n, mut bad) = (self.done, 0, 0);
                    while n < m {
                        match ring.take_response() {
                            Ok(Some(rsp)) => {
                                bad += u64::from(!response_ok(self.done, &rsp));
                                self.done += 1;
                                n += 1;
                            }
                            Ok(None) => break,
                            Err(e) => return Ok(format!("F take error: {e}")),
                        }
                    }
                    format!("F take avail={avail} n={n} first={first} bad={bad}")
                }
            },
            ("final", _) => match ring.final_check_for_responses() {
                Ok(work) => format!("F final work={}", u8::from(work)),
                Err(e) => format!("F final error: {e}"),
            },
            _ => "F unknown command".into(),
        };
        Ok(format!(
            "{body} | pvt={} cons={}",
            ring.req_prod_pvt(),
            ring.rsp_cons()
        ))
    }
}

struct RustBack {
    ring: BlkifBackRing<MmapRegion>,
    taken: u64,
    answered: u64,
    /// (id, operation) of each consumed request not answered yet.
    pending: VecDeque<(u64, u8)>,
}

impl Side for RustBack {
    fn exec(&mut self, cmd: &str) -> Result<String, String> {
        let ring = &mut self.ring;
        let body = match parse_cmd(cmd) {
            ("take", m) => match ring.unconsumed_requests() {
                Err(e) => format!("B take error: {e}"),
                Ok(avail) => {
                    let first = self.taken;
                    let mut reqs = Vec::new();
                    match ring.take_requests_up_to(&mut reqs, m as usize) {
                        Err(e) => format!("B take error: {e}"),
                        Ok(n) => {
                            let mut bad = 0;
                            for req in &reqs {
                                bad += u64::from(!request_ok(self.taken, req));
                                self.pending.push_back((req.id, req.operation));
                                self.taken += 1;
                            }
                            format!("B take avail={avail} n={n} first={first} bad={bad}")
                        }
                    }
                }
            },
            ("write", j) => {
                let (first, mut n) = (self.answered, 0);
                while n < j {
                    let Some(&(id, op)) = self.pending.front() else {
                        break;
                    };
                    if let Err(e) = ring.push_response(&BlkifResponse::new(id, op, status_of(id))) {
                        return Ok(format!("B write error: {e}"));
                    }
                    self.pending.pop_front();
                    self.answered += 1;
                    n += 1;
                }
                format!("B write n={n} first={first}")
            }
            ("push", _) => {
                format!(
                    "B push notify={}",
                    u8::from(ring.push_responses_and_check_notify().is_required())
                )
            }
            ("pushonly", _) => {
                ring.push_responses();
                "B pushonly".into()
            }
            ("final", _) => match ring.final_check_for_requests() {
                Ok(work) => format!("B final work={}", u8::from(work)),
                Err(e) => format!("B final error: {e}"),
            },
            _ => "B unknown command".into(),
        };
        Ok(format!(
            "{body} | pvt={} cons={}",
            ring.rsp_prod_pvt(),
            ring.req_cons()
        ))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Front,
    Back,
}

/// One step of a script: who, what, and optionally a piece its output must contain.
struct Step {
    role: Role,
    cmd: String,
    expect: Option<&'static str>,
}

/// splitmix64 as a PRNG.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0) % n
    }
}

/// A deterministic random script for a ring of `size` entries.
fn script(seed: u64, size: u32) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut steps = Vec::new();
    let mut add = |role, cmd: String, expect| steps.push(Step { role, cmd, expect });
    let size = u64::from(size);
    let (f, b) = (Role::Front, Role::Back);
    let amount = |rng: &mut Rng| match rng.below(10) {
        0..=5 => 1 + rng.below(4),
        6..=8 => 1 + rng.below(size),
        _ => size + 2,
    };
    let mut n = 0;
    while n < SCRIPT_STEPS {
        let before = n;
        match rng.below(100) {
            // Front: write k requests, publish, check notify.
            0..=24 => {
                add(f, format!("write {}", amount(&mut rng)), None);
                add(f, "push".into(), None);
                n += 2;
            }
            // Front: write without publishing (the next push covers more).
            25..=29 => {
                add(f, format!("write {}", amount(&mut rng)), None);
                n += 1;
            }
            // Front: publish without the notify check (RING_PUSH_REQUESTS).
            30..=32 => {
                add(f, "pushonly".into(), None);
                n += 1;
            }
            33..=50 => {
                add(b, format!("take {}", amount(&mut rng)), None);
                n += 1;
            }
            // Back: answer j requests, publish, check notify.
            51..=67 => {
                add(b, format!("write {}", amount(&mut rng)), None);
                add(b, "push".into(), None);
                n += 2;
            }
            68..=70 => {
                add(b, format!("write {}", amount(&mut rng)), None);
                n += 1;
            }
            71..=72 => {
                add(b, "pushonly".into(), None);
                n += 1;
            }
            73..=80 => {
                add(b, "final".into(), None);
                n += 1;
            }
            81..=92 => {
                add(f, format!("take {}", amount(&mut rng)), None);
                n += 1;
            }
            93..=97 => {
                add(f, "final".into(), None);
                n += 1;
            }
            // Both ends drain the ring and go idle: the next push must notify.
            _ => {
                let all = size + 1;
                add(b, format!("take {all}"), None);
                add(b, format!("write {all}"), None);
                add(b, "push".into(), None);
                add(b, "final".into(), Some("B final work=0"));
                add(f, format!("take {all}"), None);
                add(f, "final".into(), Some("F final work=0"));
                add(f, "write 1".into(), Some("F write n=1"));
                add(f, "push".into(), Some("F push notify=1"));
                n += 8;
            }
        }
        debug_assert!(n > before);
    }
    steps
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    C,
    Rust,
}

/// Start the two ends of a lockstep pairing on `file`: the frontend initialises
/// the ring (every index at `start`), then the backend attaches to it.
fn open_pair(
    file: &RingFile,
    order: u32,
    start: RingIdx,
    front: Impl,
    back: Impl,
    flip_rust_front_notify: bool,
) -> Result<(BoxedSide, BoxedSide), String> {
    let f: Box<dyn Side> = match front {
        Impl::C => {
            let mut p = Peer::spawn(
                &[
                    "step-front".into(),
                    file.arg(),
                    order.to_string(),
                    start.to_string(),
                ],
                true,
            )?;
            p.expect_ready()?;
            Box::new(CSide(p))
        }
        Impl::Rust => Box::new(RustFront {
            ring: BlkifFrontRing::init_at(file.map()?, start).map_err(|e| e.to_string())?,
            next: 0,
            done: 0,
            flip_notify: flip_rust_front_notify,
        }),
    };
    let b: Box<dyn Side> = match back {
        Impl::C => {
            let mut p = Peer::spawn(&["step-back".into(), file.arg(), order.to_string()], true)?;
            p.expect_ready()?;
            Box::new(CSide(p))
        }
        Impl::Rust => Box::new(RustBack {
            ring: BlkifBackRing::attach(file.map()?).map_err(|e| e.to_string())?,
            taken: 0,
            answered: 0,
            pending: VecDeque::new(),
        }),
    };
    Ok((f, b))
}

/// Run `steps` with a `front`/`back` pairing on a fresh ring; the log, one line per
/// step with the four shared indices after it.
fn run_pairing(
    steps: &[Step],
    order: u32,
    start: RingIdx,
    front: Impl,
    back: Impl,
    flip_rust_front_notify: bool,
) -> Result<Vec<String>, String> {
    let file = RingFile::new(order)?;
    let view = file.map()?;
    let (mut f, mut b) = open_pair(&file, order, start, front, back, flip_rust_front_notify)?;
    let mut log = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let side = match step.role {
            Role::Front => &mut f,
            Role::Back => &mut b,
        };
        let out = side
            .exec(&step.cmd)
            .map_err(|e| format!("step {i} ({:?} {}): {e}", step.role, step.cmd))?;
        let [req_prod, req_event, rsp_prod, rsp_event] = shared_indices(&view);
        log.push(format!(
            "{i:5} {:<11} -> {out} | req_prod={req_prod} req_event={req_event} rsp_prod={rsp_prod} rsp_event={rsp_event}",
            format!("{} {}", if step.role == Role::Front { "F" } else { "B" }, step.cmd)
        ));
    }
    f.close()?;
    b.close()?;
    Ok(log)
}

/// The first line where two logs differ, with the lines around it.
fn first_difference(a_name: &str, a: &[String], b_name: &str, b: &[String]) -> Option<String> {
    let i = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))?;
    let window = |log: &[String]| {
        let lo = i.saturating_sub(4);
        let hi = (i + 3).min(log.len());
        log[lo.min(hi)..hi]
            .iter()
            .enumerate()
            .map(|(k, l)| format!("    {} {l}", if lo + k == i { ">>" } else { "  " }))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Some(format!(
        "first difference at step {i}:\n  {a_name}:\n{}\n  {b_name}:\n{}",
        window(a),
        window(b)
    ))
}

/// Checks on one log that do not need another: verification, script
/// expectations, both notify decisions seen, indices wrapped.
fn check_log(steps: &[Step], log: &[String], start: RingIdx) -> TestResult {
    let mut problems = Vec::new();
    for (step, line) in steps.iter().zip(log) {
        if line.contains("error")
            || line.contains("unknown")
            || (line.contains("bad=") && !line.contains("bad=0 "))
        {
            problems.push(format!("bad step: {line}"));
        }
        if let Some(want) = step.expect {
            if !line.contains(want) {
                problems.push(format!("expected {want:?}: {line}"));
            }
        }
    }
    for needle in [
        "F push notify=1",
        "F push notify=0",
        "B push notify=1",
        "B push notify=0",
        "F final work=1",
        "F final work=0",
        "B final work=1",
        "B final work=0",
        "full=1",
    ] {
        if !log.iter().any(|l| l.contains(needle)) {
            problems.push(format!("the script never produced {needle:?}"));
        }
    }
    if start == HIGH_START {
        let wrapped = |key: &str| {
            log.iter().any(|l| {
                l.split(' ')
                    .find_map(|w| w.strip_prefix(key))
                    .and_then(|v| v.parse::<u32>().ok())
                    .is_some_and(|v| v < start)
            })
        };
        for key in ["req_prod=", "rsp_prod=", "req_event=", "rsp_event="] {
            if !wrapped(key) {
                problems.push(format!("{key} never wrapped past u32::MAX"));
            }
        }
    }
    problems.truncate(10);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

const PAIRINGS: [(Impl, Impl); 4] = [
    (Impl::C, Impl::Rust),
    (Impl::Rust, Impl::C),
    (Impl::C, Impl::C),
    (Impl::Rust, Impl::Rust),
];

fn lockstep_notify_decisions() -> TestResult {
    lockstep(false)
}

/// The lockstep test with the Rust frontend's notify decisions flipped: must fail.
fn lockstep_detects_a_flipped_notify() -> TestResult {
    match lockstep(true) {
        Ok(()) => Err("the lockstep test passed with every Rust notify decision flipped".into()),
        Err(e) if e.contains("first difference") && e.contains("notify=") => {
            println!(
                "    failed as it must: {}",
                e.lines().next().unwrap_or_default()
            );
            Ok(())
        }
        Err(e) => Err(format!(
            "the flipped run failed, but not on a notify decision:\n{e}"
        )),
    }
}

fn lockstep(flip: bool) -> TestResult {
    let mut total = 0;
    for order in ORDERS {
        let size = BlkifFrontRing::init(HeapMemory::pages(order))
            .map_err(|e| e.to_string())?
            .size();
        for start in [0, HIGH_START] {
            let steps = script(0x5eed ^ (u64::from(order) << 8) ^ u64::from(start), size);
            let context = format!("order {order}, start {start}");
            let mut logs = Vec::new();
            for (front, back) in PAIRINGS {
                let name = format!("{front:?} front + {back:?} back");
                let log = run_pairing(&steps, order, start, front, back, flip)
                    .map_err(|e| format!("{context}, {name}: {e}"))?;
                logs.push((name, log));
            }
            let (ref_name, reference) = &logs[2]; // C front + C back: the macros alone
            check_log(&steps, reference, start)
                .map_err(|e| format!("{context}, {ref_name}:\n{e}"))?;
            for (name, log) in &logs {
                if let Some(diff) = first_difference(ref_name, reference, name, log) {
                    return Err(format!("{context}: {name} differs from {ref_name}; {diff}"));
                }
            }
            total += steps.len();
            if !flip && order == 0 && start == HIGH_START {
                let count = |n: &str| reference.iter().filter(|l| l.contains(n)).count();
                println!(
                    "    e.g. order 0 from u32::MAX-100: {} steps, F push notify=1/0: {}/{}, B push notify=1/0: {}/{}",
                    steps.len(),
                    count("F push notify=1"),
                    count("F push notify=0"),
                    count("B push notify=1"),
                    count("B push notify=0")
                );
            }
        }
    }
    println!(
        "    {total} steps x 4 pairings gave identical logs (orders 0..=4, start 0 and u32::MAX-100)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Test 4: the deliberate differences.

/// Run `setup` on an order-0 ring, let `tamper` write into the shared ring, then
/// run `last` on `role`; once with the C implementation of `role` and once with
/// the Rust one (the other end is Rust both times). The two answers to `last`.
fn c_and_rust_answers(
    role: Role,
    start: RingIdx,
    setup: &[(Role, &str)],
    tamper: impl Fn(&MmapRegion),
    last: &str,
) -> Result<[String; 2], String> {
    let answer = |imp| -> Result<String, String> {
        let (front, back) = if role == Role::Front {
            (imp, Impl::Rust)
        } else {
            (Impl::Rust, imp)
        };
        let file = RingFile::new(0)?;
        let view = file.map()?;
        let (mut f, mut b) = open_pair(&file, 0, start, front, back, false)?;
        let mut side = |r: Role, cmd: &str| match r {
            Role::Front => f.exec(cmd),
            Role::Back => b.exec(cmd),
        };
        for &(r, cmd) in setup {
            side(r, cmd)?;
        }
        tamper(&view);
        let out = side(role, last)?;
        f.close()?;
        b.close()?;
        Ok(out)
    };
    Ok([answer(Impl::C)?, answer(Impl::Rust)?])
}

fn known_differences_from_the_c_macros() -> TestResult {
    let s = HIGH_START;
    let word = |v: &MmapRegion, i: usize, x: RingIdx| v.words()[i].store(x, Ordering::SeqCst);
    let size = BlkifFrontRing::init(HeapMemory::pages(0))
        .map_err(|e| e.to_string())?
        .size();

    // (a) The `__old` of RING_PUSH_REQUESTS_AND_CHECK_NOTIFY. One request went
    // round trip and the backend went idle (req_event = s + 2). Then the backend
    // (misbehaving) writes req_prod = s + 2 itself, and the frontend publishes
    // request s + 1 (req_prod_pvt s + 2). The macro re-reads req_prod as `__old`
    // and sees no movement: no notification, the backend sleeps forever. The Rust
    // ring remembers what it published (s + 1) and notifies.
    let [c, rust] = c_and_rust_answers(
        Role::Front,
        s,
        &[
            (Role::Front, "write 1"),
            (Role::Front, "push"),
            (Role::Back, "take 1"),
            (Role::Back, "write 1"),
            (Role::Back, "push"),
            (Role::Back, "final"),
            (Role::Front, "take 1"),
            (Role::Front, "write 1"),
        ],
        |v| word(v, 0, s.wrapping_add(2)),
        "push",
    )?;
    if !c.starts_with("F push notify=0") || !rust.starts_with("F push notify=1") {
        return Err(format!(
            "(a) req_prod rewritten by the peer before a push: expected C notify=0 and Rust notify=1\n  C:    {c}\n  Rust: {rust}"
        ));
    }
    println!("    (a) peer rewrote req_prod before a push: C macro {c:?}; Rust {rust:?}");

    // (b) req_prod moving backwards. The frontend published 4 requests, the
    // backend consumed them (none answered), then req_prod goes back by 2. The
    // macros' overflow test (req_prod - rsp_prod_pvt > size) does not see it, and
    // RING_HAS_UNCONSUMED_REQUESTS = min(huge, size - 4): the C backend (Linux
    // blkback's loop) consumes size - 4 stale slots. The Rust ring calls the ring
    // broken.
    let [c, rust] = c_and_rust_answers(
        Role::Back,
        s,
        &[
            (Role::Front, "write 4"),
            (Role::Front, "push"),
            (Role::Back, "take 4"),
        ],
        |v| word(v, 0, s.wrapping_add(2)),
        "take 100",
    )?;
    let c_want = format!(
        "B take avail={} n={} first=4 bad={}",
        size - 4,
        size - 4,
        size - 4
    );
    if !c.starts_with(&c_want) || !rust.starts_with("B take error: broken ring") {
        return Err(format!(
            "(b) req_prod moved back: expected C {c_want:?}... and Rust \"B take error: broken ring...\"\n  C:    {c}\n  Rust: {rust}"
        ));
    }
    println!("    (b) req_prod moved backwards: C macros {c:?}; Rust {rust:?}");
    Ok(())
}

// ---------------------------------------------------------------------------

type TestFn = fn() -> TestResult;

const TESTS: [(&str, TestFn); 6] = [
    (
        "ring_size_matches_const_ring_size",
        ring_size_matches_const_ring_size,
    ),
    ("stream_c_front_rust_back", stream_c_front_rust_back),
    ("stream_rust_front_c_back", stream_rust_front_c_back),
    ("lockstep_notify_decisions", lockstep_notify_decisions),
    (
        "lockstep_detects_a_flipped_notify",
        lockstep_detects_a_flipped_notify,
    ),
    (
        "known_differences_from_the_c_macros",
        known_differences_from_the_c_macros,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("c_differential: still running after {WATCHDOG:?}: giving up");
        std::process::exit(3);
    });

    let started = Instant::now();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in TESTS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        println!("{name} ...");
        let t = Instant::now();
        let result = std::panic::catch_unwind(test).unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panicked".into()))
        });
        match result {
            Ok(()) => println!("{name} PASS ({:.1?})", t.elapsed()),
            Err(e) => {
                println!("{name} FAIL ({:.1?})\n{e}", t.elapsed());
                failed.push(name);
            }
        }
    }
    println!(
        "c_differential: {} of {ran} passed in {:.1?}",
        ran - failed.len(),
        started.elapsed()
    );
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
