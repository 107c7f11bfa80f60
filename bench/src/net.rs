//! `xenio-bench net`: TCP throughput and small-frame packets per second through
//! netfront -> rings -> `xenio netback` (a child process) -> a TAP device in a
//! network namespace, against the same traffic between two namespaces over a
//! veth pair (the kernel's own path), interleaved in the same run.

use crate::common::stats::summarize;
use clap::Args;
use smoltcp::socket::tcp;
use smoltcp::wire::Ipv4Address;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xenio_netfront::stack::Stack;
use xenio_netfront::{NetFront, Options};
use xenio_xenbus::DomId;
use xenio_xenbus::platform::LocalPlatform;
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

/// The long help of `xenio-bench net`.
pub const NET_ABOUT: &str = "\
Network benchmark (needs root: it creates network namespaces and a TAP device).

xenio path: this process is the frontend (domain 1: netfront, and smoltcp for
TCP); `xenio netback` runs as a child process (domain 0) inside namespace
xbn-x-<pid>, attached to TAP xtap0 (192.0.2.1/24); the frontend is 192.0.2.2.
Baseline: namespaces xbn-a-<pid> and xbn-b-<pid> joined by a veth pair
(198.51.100.1 and .2), Linux sockets on both ends. No traffic leaves the
namespaces. Each repetition runs every workload on both paths, alternating.

Workloads:
  tcp-tx   one TCP connection, frontend (smoltcp) -> Linux socket; baseline:
           Linux socket -> Linux socket over the veth. MB/s received.
  tcp-rx   Linux socket -> frontend (smoltcp); baseline as tcp-tx. MB/s.
  pps-tx   60-byte UDP frames (18-byte payload) from the frontend (raw frames,
           no stack) to a Linux UDP socket for --seconds; baseline: a Linux UDP
           socket sending the same datagrams over the veth. Datagrams received
           per second.
  pps-rx   a Linux UDP socket sends 18-byte datagrams to the frontend, which
           counts the frames it receives; baseline as pps-tx.
Reported per workload: median [min..max] over --reps for both paths, the ratio
xenio/veth (median of per-repetition ratios, with their spread), and for the
xenio path notifications per packet (frontend notifications + netback tx and rx
notifications, from the backend's counters) and frontend sleeps per packet.";

/// Options of `xenio-bench net`.
#[derive(Args, Debug)]
pub struct NetArgs {
    /// Repetitions of every workload on both paths.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub reps: usize,
    /// Seconds per packets-per-second run.
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    pub seconds: f64,
    /// Megabytes per TCP run.
    #[arg(long, value_name = "MB", default_value_t = 64)]
    pub tcp_mb: u64,
    /// The xenio binary (default: next to xenio-bench, else in PATH).
    #[arg(long, value_name = "PATH")]
    pub xenio: Option<PathBuf>,
    /// Spin this many microseconds in netback before sleeping (its --poll-us).
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub poll_us: u64,
}

type R<T> = Result<T, String>;

fn sh(cmd: &mut Command) -> R<()> {
    let out = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

struct Netns(String);

impl Netns {
    fn new(name: String) -> R<Netns> {
        let _ = sh(Command::new("ip").args(["netns", "del", &name]));
        sh(Command::new("ip").args(["netns", "add", &name]))
            .map_err(|e| format!("{e} (xenio-bench net needs root)"))?;
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
    fn ip(&self, args: &[&str]) -> R<()> {
        sh(Command::new("ip").args(["-n", &self.0]).args(args))
    }
    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }
    fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<R<T>> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
            Ok(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(Command::new("ip").args(["netns", "del", &self.0]));
    }
}

fn join<T>(h: std::thread::JoinHandle<R<T>>) -> R<T> {
    h.join()
        .map_err(|_| "a worker thread panicked".to_string())?
}

/// Byte `i` of a TCP stream (checked on arrival).
fn stream_byte(i: u64) -> u8 {
    ((i >> 10) as u8) ^ (i as u8).wrapping_mul(31)
}

fn fill(buf: &mut [u8], from: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = stream_byte(from + k as u64);
    }
}

/// Read `bytes` from `s`, checking the stream.
fn read_check(s: &mut TcpStream, bytes: u64) -> R<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < bytes {
        let n = s.read(&mut buf).map_err(|e| format!("tcp read: {e}"))?;
        if n == 0 {
            return Err(format!("tcp: closed after {off} bytes"));
        }
        fill(&mut want[..n], off);
        if buf[..n] != want[..n] {
            return Err(format!("tcp: stream differs near byte {off}"));
        }
        off += n as u64;
    }
    Ok(off)
}

fn write_stream(s: &mut TcpStream, bytes: u64) -> R<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < bytes {
        let n = buf.len().min((bytes - off) as usize);
        fill(&mut buf[..n], off);
        s.write_all(&buf[..n])
            .map_err(|e| format!("tcp write: {e}"))?;
        off += n as u64;
    }
    Ok(())
}

const PAYLOAD: usize = 18; // 14 + 20 + 8 + 18 = 60-byte frames

/// A UDP/IPv4 frame with checksum 0 (none), sequence number in the payload.
fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Address,
    dst: Ipv4Address,
    seq: u64,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + PAYLOAD) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut s: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&9001u16.to_be_bytes());
    f.extend_from_slice(&9000u16.to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    let mut p = [0u8; PAYLOAD];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&p);
    f
}

/// Count datagrams arriving at `addr` for `secs` after the first one.
fn udp_count(addr: (&'static str, u16), secs: f64, ready: Arc<AtomicBool>) -> R<f64> {
    let s = UdpSocket::bind(addr).map_err(|e| format!("bind {addr:?}: {e}"))?;
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &(8 << 20));
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    ready.store(true, Ordering::SeqCst);
    let mut buf = [0u8; 2048];
    let mut first = None;
    let mut n = 0u64;
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match s.recv(&mut buf) {
            Ok(_) => {
                let t = *first.get_or_insert_with(Instant::now);
                if t.elapsed().as_secs_f64() >= secs {
                    break;
                }
                n += 1;
            }
            Err(_) if first.is_none() && Instant::now() < give_up => {}
            Err(_) => break,
        }
    }
    let secs = first.map_or(secs, |t| t.elapsed().as_secs_f64().max(1e-9));
    Ok(n as f64 / secs)
}

/// Send datagrams to `dst` until `stop`.
fn udp_blast(src: (&'static str, u16), dst: (&'static str, u16), stop: Arc<AtomicBool>) -> R<u64> {
    let s = UdpSocket::bind(src).map_err(|e| format!("bind {src:?}: {e}"))?;
    let mut n = 0u64;
    let mut p = [0u8; PAYLOAD];
    while !stop.load(Ordering::Relaxed) {
        p[..8].copy_from_slice(&n.to_le_bytes());
        match s.send_to(&p, dst) {
            Ok(_) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc_enobufs()) => std::thread::yield_now(),
            Err(e) => return Err(format!("udp send: {e}")),
        }
    }
    Ok(n)
}

fn libc_enobufs() -> i32 {
    105
}

struct XenioPath {
    ns: Netns,
    _dir: tempfile::TempDir,
    _daemon: Daemon,
    backend: Option<Child>,
    stack: Stack<LocalPlatform>,
    tap_mac: [u8; 6],
}

const FRONT_DIR: &str = "/local/domain/1/device/vif/0";
const X_LINUX: Ipv4Address = Ipv4Address::new(192, 0, 2, 1);
const X_FRONT: Ipv4Address = Ipv4Address::new(192, 0, 2, 2);

impl XenioPath {
    fn start(a: &NetArgs, xenio: &PathBuf) -> R<XenioPath> {
        let ns = Netns::new(format!("xbn-x-{}", std::process::id()))?;
        ns.ip(&["tuntap", "add", "dev", "xtap0", "mode", "tap"])?;
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "xtap0"])?;
        ns.ip(&["link", "set", "xtap0", "up"])?;
        let dir = tempfile::Builder::new()
            .prefix("xenio-bench-net-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let run = dir.path().join("run");
        let daemon = Daemon::start(DaemonConfig {
            domains: vec![DomId(1)],
            ..DaemonConfig::new(run.clone())
        })
        .map_err(|e| format!("store daemon: {e}"))?;
        let backend = ns
            .exec()
            .arg(xenio)
            .args(["netback", "--platform", "local", "--frontend", "1"])
            .args(["--tap", "xtap0", "--create-device"])
            .args(["--poll-us", &a.poll_us.to_string()])
            .arg("--run-dir")
            .arg(&run)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", xenio.display()))?;
        let t = Instant::now();
        let front = loop {
            let p = Arc::new(
                LocalPlatform::connect(&run, DomId(1)).map_err(|e| format!("platform: {e}"))?,
            );
            match NetFront::connect(p, FRONT_DIR, Options::default()) {
                Ok(f) => break f,
                Err(e) if t.elapsed() > Duration::from_secs(20) => {
                    return Err(format!("netfront: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let out = ns
            .exec()
            .args(["cat", "/sys/class/net/xtap0/address"])
            .output()
            .map_err(|e| e.to_string())?;
        let tap_mac = xenio_netfront::parse_mac(&String::from_utf8_lossy(&out.stdout))
            .ok_or("reading the TAP's MAC")?;
        let mac = front.info().mac;
        // Static neighbour entries: no ARP in the measurements.
        ns.ip(&[
            "neigh",
            "replace",
            "192.0.2.2",
            "lladdr",
            &mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            "dev",
            "xtap0",
        ])?;
        let stack = Stack::new(front, X_FRONT, 24);
        Ok(XenioPath {
            ns,
            _dir: dir,
            _daemon: daemon,
            backend: Some(backend),
            stack,
            tap_mac,
        })
    }

    fn counters(&self) -> (u64, u64, u64) {
        let c = self.stack.dev.counters();
        (
            c.notifications.load(Ordering::Relaxed),
            c.sleeps.load(Ordering::Relaxed),
            c.tx_packets.load(Ordering::Relaxed) + c.rx_packets.load(Ordering::Relaxed),
        )
    }

    /// smoltcp -> Linux (`tx`) or Linux -> smoltcp, `bytes`; MB/s.
    fn tcp(&mut self, tx: bool, bytes: u64, port: u16) -> R<f64> {
        let linux = self.ns.thread(move || -> R<u64> {
            let l = TcpListener::bind(("192.0.2.1", port)).map_err(|e| e.to_string())?;
            let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            if tx {
                read_check(&mut c, bytes)
            } else {
                write_stream(&mut c, bytes)?;
                // Wait for the peer to close so that every byte was taken.
                let mut b = [0u8; 1];
                let _ = c.read(&mut b);
                Ok(bytes)
            }
        });
        let st = &mut self.stack;
        let h = st.sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4 << 20]),
            tcp::SocketBuffer::new(vec![0; 4 << 20]),
        ));
        std::thread::sleep(Duration::from_millis(100));
        {
            let (iface, sockets) = (&mut st.iface, &mut st.sockets);
            sockets
                .get_mut::<tcp::Socket>(h)
                .connect(iface.context(), (X_LINUX, port), 40000 + port)
                .map_err(|e| format!("connect: {e}"))?;
        }
        let mut chunk = vec![0u8; 256 * 1024];
        let mut want = vec![0u8; 256 * 1024];
        let (mut sent, mut got) = (0u64, 0u64);
        let mut t0 = None;
        let limit = Instant::now() + Duration::from_secs(300);
        loop {
            {
                let s = st.sockets.get_mut::<tcp::Socket>(h);
                if s.may_send() && t0.is_none() {
                    t0 = Some(Instant::now());
                }
                if tx {
                    while sent < bytes && s.can_send() {
                        let n = chunk.len().min((bytes - sent) as usize);
                        fill(&mut chunk[..n], sent);
                        let k = s.send_slice(&chunk[..n]).map_err(|e| e.to_string())?;
                        if k == 0 {
                            break;
                        }
                        sent += k as u64;
                    }
                } else {
                    while s.can_recv() {
                        let n = s.recv_slice(&mut chunk).map_err(|e| e.to_string())?;
                        if n == 0 {
                            break;
                        }
                        fill(&mut want[..n], got);
                        if chunk[..n] != want[..n] {
                            return Err(format!("smoltcp: stream differs near byte {got}"));
                        }
                        got += n as u64;
                    }
                    if got >= bytes {
                        s.close();
                    }
                }
            }
            if (tx && linux.is_finished()) || (!tx && got >= bytes && linux.is_finished()) {
                break;
            }
            st.poll(Duration::from_millis(5))
                .map_err(|e| e.to_string())?;
            if Instant::now() > limit {
                return Err(format!("tcp: {sent} sent, {got} received after 300 s"));
            }
        }
        let secs = t0.map_or(1e-9, |t| t.elapsed().as_secs_f64());
        join(linux)??;
        st.sockets.get_mut::<tcp::Socket>(h).abort();
        let _ = st.poll(Duration::from_millis(1));
        st.sockets.remove(h);
        Ok(bytes as f64 / secs / 1e6)
    }

    /// Raw 60-byte frames from the frontend to a Linux socket; datagrams/s received.
    fn pps_tx(&mut self, secs: f64) -> R<f64> {
        let ready = Arc::new(AtomicBool::new(false));
        let r = ready.clone();
        let counter = self
            .ns
            .thread(move || udp_count(("192.0.2.1", 9000), secs, r));
        while !ready.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let my_mac = self.stack.dev.info().mac;
        let dev = &mut self.stack.dev;
        let mut seq = 0u64;
        while !counter.is_finished() {
            let f = udp_frame(self.tap_mac, my_mac, X_FRONT, X_LINUX, seq);
            match dev.send(&f) {
                Ok(true) => seq += 1,
                Ok(false) => dev
                    .wait(Duration::from_millis(5))
                    .map_err(|e| e.to_string())?,
                Err(e) => return Err(format!("netfront send: {e}")),
            }
        }
        join(counter)?
    }

    /// A Linux socket sends to the frontend, which counts frames; frames/s.
    fn pps_rx(&mut self, secs: f64) -> R<f64> {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let blaster = self
            .ns
            .thread(move || udp_blast(("192.0.2.1", 9100), ("192.0.2.2", 9101), s2));
        let dev = &mut self.stack.dev;
        let mut buf = Vec::new();
        let mut first = None;
        let mut n = 0u64;
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if dev.recv(&mut buf).map_err(|e| e.to_string())? {
                let t = *first.get_or_insert_with(Instant::now);
                if t.elapsed().as_secs_f64() >= secs {
                    break;
                }
                if buf.len() == 60 {
                    n += 1;
                }
            } else {
                dev.wait(Duration::from_millis(5))
                    .map_err(|e| e.to_string())?;
                if first.is_none() && Instant::now() > give_up {
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        join(blaster)??;
        // Drain what is still in flight.
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(200) {
            if !dev.recv(&mut buf).map_err(|e| e.to_string())? {
                dev.wait(Duration::from_millis(5))
                    .map_err(|e| e.to_string())?;
            }
        }
        let secs = first.map_or(secs, |t| t.elapsed().as_secs_f64());
        Ok(n as f64 / secs.max(1e-9))
    }

    /// Stop the backend and return its counter line.
    fn finish(&mut self) -> String {
        let Some(mut b) = self.backend.take() else {
            return String::new();
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(b.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let mut err = String::new();
        if let Some(mut e) = b.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = b.wait();
        err.lines()
            .find(|l| l.starts_with("netback:"))
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for XenioPath {
    fn drop(&mut self) {
        if let Some(mut b) = self.backend.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
    }
}

struct VethPath {
    a: Netns,
    b: Netns,
}

impl VethPath {
    fn start() -> R<VethPath> {
        let pid = std::process::id();
        let a = Netns::new(format!("xbn-a-{pid}"))?;
        let b = Netns::new(format!("xbn-b-{pid}"))?;
        a.ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &b.0,
        ])?;
        a.ip(&["addr", "add", "198.51.100.1/24", "dev", "veth0"])?;
        b.ip(&["addr", "add", "198.51.100.2/24", "dev", "veth1"])?;
        a.ip(&["link", "set", "veth0", "up"])?;
        b.ip(&["link", "set", "veth1", "up"])?;
        // Ask for no offloads beyond what a 1500-byte path gives the xenio side.
        Ok(VethPath { a, b })
    }

    fn tcp(&self, bytes: u64, port: u16) -> R<f64> {
        let server = self.b.thread(move || -> R<f64> {
            let l = TcpListener::bind(("198.51.100.2", port)).map_err(|e| e.to_string())?;
            let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
            let t = Instant::now();
            read_check(&mut c, bytes)?;
            Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e6)
        });
        std::thread::sleep(Duration::from_millis(100));
        let client = self.a.thread(move || -> R<()> {
            let mut c = TcpStream::connect(("198.51.100.2", port)).map_err(|e| e.to_string())?;
            write_stream(&mut c, bytes)
        });
        join(client)??;
        join(server)?
    }

    fn pps(&self, secs: f64) -> R<f64> {
        let ready = Arc::new(AtomicBool::new(false));
        let r = ready.clone();
        let counter = self
            .b
            .thread(move || udp_count(("198.51.100.2", 9000), secs, r));
        while !ready.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let blaster = self
            .a
            .thread(move || udp_blast(("198.51.100.1", 9001), ("198.51.100.2", 9000), s2));
        let r = join(counter);
        stop.store(true, Ordering::Relaxed);
        join(blaster)??;
        r?
    }
}

/// One workload's samples on both paths.
#[derive(Default)]
struct Samples {
    xenio: Vec<f64>,
    veth: Vec<f64>,
    /// (notifications, sleeps, packets) deltas on the xenio path.
    notes: Vec<(u64, u64, u64)>,
}

/// Run the benchmark.
pub fn run(a: &NetArgs) -> R<()> {
    let xenio = match &a.xenio {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .ok()
            .map(|e| e.with_file_name("xenio"))
            .filter(|p| p.is_file())
            .ok_or("no xenio binary next to xenio-bench: build it (cargo build --release -p xenio) or pass --xenio PATH")?,
    };
    eprintln!("net: starting the xenio path (netback in a namespace) and the veth baseline");
    let mut x = XenioPath::start(a, &xenio)?;
    let v = VethPath::start()?;
    let names = ["tcp-tx", "tcp-rx", "pps-tx", "pps-rx"];
    let mut s: Vec<Samples> = names.iter().map(|_| Samples::default()).collect();
    let bytes = a.tcp_mb << 20;
    let mut port = 10000u16;
    for rep in 0..a.reps.max(1) {
        for (w, name) in names.iter().enumerate() {
            port += 1;
            let before = x.counters();
            let xv = match w {
                0 => x.tcp(true, bytes, port)?,
                1 => x.tcp(false, bytes, port)?,
                2 => x.pps_tx(a.seconds)?,
                _ => x.pps_rx(a.seconds)?,
            };
            let after = x.counters();
            port += 1;
            let vv = match w {
                0 | 1 => v.tcp(bytes, port)?,
                _ => v.pps(a.seconds)?,
            };
            eprintln!(
                "net: rep {}/{}: {name}: xenio {xv:.1}, veth {vv:.1} ({})",
                rep + 1,
                a.reps.max(1),
                if w < 2 { "MB/s" } else { "packets/s" }
            );
            s[w].xenio.push(xv);
            s[w].veth.push(vv);
            s[w].notes.push((
                after.0 - before.0,
                after.1 - before.1,
                (after.2 - before.2).max(1),
            ));
        }
    }
    let backend_line = x.finish();
    println!(
        "xenio-bench net: {} rep(s), TCP {} MB per run, {} s per pps run, netback --poll-us {}",
        a.reps.max(1),
        a.tcp_mb,
        a.seconds,
        a.poll_us
    );
    println!(
        "{:<8} {:>28} {:>28} {:>22} {:>12} {:>12}",
        "workload",
        "xenio median [min..max]",
        "veth median [min..max]",
        "ratio x/veth [spread]",
        "fe notif/pkt",
        "fe sleep/pkt"
    );
    for (w, name) in names.iter().enumerate() {
        let xs = summarize(&s[w].xenio).ok_or("no samples")?;
        let vs = summarize(&s[w].veth).ok_or("no samples")?;
        let ratios: Vec<f64> = s[w]
            .xenio
            .iter()
            .zip(&s[w].veth)
            .map(|(x, v)| x / v)
            .collect();
        let rs = summarize(&ratios).ok_or("no samples")?;
        let (n, sl, p) = s[w]
            .notes
            .iter()
            .fold((0, 0, 0), |(a, b, c), t| (a + t.0, b + t.1, c + t.2));
        let unit = if w < 2 { "MB/s" } else { "pps" };
        println!(
            "{:<8} {:>28} {:>28} {:>22} {:>12.3} {:>12.3}",
            name,
            format!("{:.1} [{:.1}..{:.1}] {unit}", xs.median, xs.min, xs.max),
            format!("{:.1} [{:.1}..{:.1}] {unit}", vs.median, vs.min, vs.max),
            format!("{:.3} [{:.3}..{:.3}]", rs.median, rs.min, rs.max),
            n as f64 / p as f64,
            sl as f64 / p as f64,
        );
    }
    if !backend_line.is_empty() {
        let c = parse_backend(&backend_line);
        println!("{backend_line}");
        if let Some((pk, tx_n, rx_n)) = c {
            println!(
                "netback notifications per packet (whole run): {:.3} ({} tx + {} rx notifications, {} packets)",
                (tx_n + rx_n) as f64 / pk.max(1) as f64,
                tx_n,
                rx_n,
                pk
            );
        }
    }
    Ok(())
}

/// (packets both ways, tx notifications, rx notifications) from netback's
/// exit line.
fn parse_backend(line: &str) -> Option<(u64, u64, u64)> {
    let num_after = |key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let tx = num_after("tx ")?;
    let rx = num_after("; rx ")?;
    let ntx = num_after("notifications tx ")?;
    let nrx = num_after("notifications tx ").and_then(|_| {
        let at = line.find("notifications tx ")?;
        let rest = &line[at..];
        let r = rest.find(" rx ")? + 4;
        rest[r..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })?;
    Some((tx + rx, ntx, nrx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_netback_exit_line() {
        let l = "netback: Shutdown: tx 10 packets / 50113 bytes / 17 slots (0 rejected, 0 grant errors, 0 network drops); rx 11 packets / 46698 bytes / 18 slots (0 dropped without buffers, 0 too big, 0 grant errors); notifications tx 1 rx 5; sleeps 27";
        assert_eq!(parse_backend(l), Some((21, 1, 5)));
    }

    #[test]
    fn udp_frames_are_60_bytes_with_a_valid_ip_checksum() {
        let f = udp_frame([1; 6], [2; 6], X_FRONT, X_LINUX, 7);
        assert_eq!(f.len(), 60);
        let mut s: u32 = f[14..34]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(s, 0xffff);
    }
}
