//! netfront + smoltcp (this test process, domain 1) <-> rings <-> `xenio
//! netback` (a child process, domain 0, inside a network namespace the test
//! creates) <-> a TAP device with an address in that namespace <-> the Linux
//! network stack. No traffic leaves the namespace (192.0.2.0/24, TEST-NET-1).
//!
//! Shown here: the kernel pings smoltcp; a TCP connection between a Linux
//! socket and a smoltcp socket moves 100 MB each way with every byte checked;
//! UDP frames of every size from the smallest to the MTU go both ways, with
//! single- and multi-slot tx packets; checksums left blank by the frontend are
//! completed (the kernel drops the same frame without the flag); the backend
//! is killed and restarted and traffic resumes; jumbo frames span several rx
//! buffers (feature-sg); 64 KiB GSO segments go both ways through the
//! raw-packet API, and a frontend without offloads follows on the same TAP.
//! Needs root (network namespaces, TAP): without it the
//! tests say why and pass vacuously.

use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_netfront::stack::Stack;
use xenio_netfront::{NetFront, Options};
use xenio_xenbus::DomId;
use xenio_xenbus::platform::LocalPlatform;
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

const FRONT_DIR: &str = "/local/domain/1/device/vif/0";
const LINUX_IP: &str = "192.0.2.1";
const SMOL_IP: Ipv4Address = Ipv4Address::new(192, 0, 2, 2);
const LINUX: Ipv4Address = Ipv4Address::new(192, 0, 2, 1);

fn sh(cmd: &mut Command) -> Result<(), String> {
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

/// A network namespace of our own, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// `None` (with the reason printed) when namespaces cannot be made here.
    fn new(tag: &str) -> Option<Netns> {
        let name = format!("xenio-{tag}-{}", std::process::id());
        let _ = sh(Command::new("ip").args(["netns", "del", &name]));
        match sh(Command::new("ip").args(["netns", "add", &name])) {
            Ok(()) => Some(Netns { name }),
            Err(e) => {
                eprintln!(
                    "SKIPPED: cannot create a network namespace ({e}); these tests need root (CI runs them as root)"
                );
                None
            }
        }
    }

    fn ip(&self, args: &[&str]) {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        sh(&mut c).unwrap();
    }

    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]);
        c
    }

    /// Run `f` on a thread that entered the namespace (sockets made there stay there).
    fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }

    fn tap_mac(&self, dev: &str) -> [u8; 6] {
        let out = self
            .exec()
            .args(["cat", &format!("/sys/class/net/{dev}/address")])
            .output()
            .unwrap();
        xenio_netfront::parse_mac(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

struct World {
    ns: Netns,
    dir: tempfile::TempDir,
    _daemon: Daemon,
    mtu: u32,
    queues: u32,
}

fn world(tag: &str, mtu: u32) -> Option<World> {
    world_q(tag, mtu, 1)
}

fn world_q(tag: &str, mtu: u32, queues: u32) -> Option<World> {
    let ns = Netns::new(tag)?;
    ns.ip(&["link", "set", "lo", "up"]);
    if queues > 1 {
        ns.ip(&[
            "tuntap",
            "add",
            "dev",
            "xtap0",
            "mode",
            "tap",
            "multi_queue",
        ]);
    } else {
        ns.ip(&["tuntap", "add", "dev", "xtap0", "mode", "tap"]);
    }
    ns.ip(&["link", "set", "xtap0", "mtu", &mtu.to_string()]);
    ns.ip(&["addr", "add", &format!("{LINUX_IP}/24"), "dev", "xtap0"]);
    ns.ip(&["link", "set", "xtap0", "up"]);
    let dir = tempfile::Builder::new()
        .prefix(&format!("net-{tag}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(dir.path().join("run"))
    })
    .unwrap();
    Some(World {
        ns,
        dir,
        _daemon: daemon,
        mtu,
        queues,
    })
}

/// The backend child; SIGTERM and reaped on drop.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl World {
    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn backend(&self) -> Backend {
        let mut c = self.ns.exec();
        c.arg(env!("CARGO_BIN_EXE_xenio"))
            .args(["netback", "--platform", "local", "--frontend", "1"])
            .args(["--tap", "xtap0", "--create-device"])
            .args(["--mtu", &self.mtu.to_string()])
            .args(["--max-queues", &self.queues.to_string()])
            .arg("--run-dir")
            .arg(self.run_dir())
            .stdout(Stdio::null());
        Backend(c.spawn().unwrap())
    }

    fn frontend(&self, opts: Options) -> NetFront<LocalPlatform> {
        let t = Instant::now();
        loop {
            let p = Arc::new(LocalPlatform::connect(self.run_dir(), DomId(1)).unwrap());
            match NetFront::connect(p, FRONT_DIR, opts.clone()) {
                Ok(f) => return f,
                Err(e) if t.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("frontend cannot connect: {e}"),
            }
        }
    }
}

/// Poll the stack until `done` says so, failing after `limit`.
fn drive(
    stack: &mut Stack<LocalPlatform>,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&mut Stack<LocalPlatform>) -> bool,
) {
    let t = Instant::now();
    while !done(stack) {
        stack.poll(Duration::from_millis(5)).unwrap();
        assert!(t.elapsed() < limit, "{what}: not done after {limit:?}");
    }
}

/// The kernel pings the smoltcp address (smoltcp answers echo requests).
fn ping(w: &World, stack: &mut Stack<LocalPlatform>, count: u32) {
    let mut child =
        w.ns.exec()
            .args(["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "10"])
            .arg(SMOL_IP.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ping (iputils-ping) must be installed");
    let mut status = None;
    drive(stack, Duration::from_secs(30), "ping", |_| {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.unwrap().success(), "ping failed:\n{out}");
    assert!(
        out.contains(&format!("{count} received")),
        "ping lost packets:\n{out}"
    );
}

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + seed * 7 + 1) as u8).collect()
}

/// Every UDP payload size in `sizes`: smoltcp sends it, a Linux socket in the
/// namespace checks it and echoes it, smoltcp checks the echo.
fn udp_sweep(w: &World, stack: &mut Stack<LocalPlatform>, sizes: Vec<usize>, port: u16) {
    let n = sizes.len();
    let expected = sizes.clone();
    let server = w.ns.thread(move || {
        let s = UdpSocket::bind((LINUX_IP, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut seen = 0;
        while seen < n {
            let (len, from) = s.recv_from(&mut buf).expect("linux: datagram");
            let want = expected[seen];
            if len == want && buf[..len] == payload(want, want)[..] {
                seen += 1;
            } else if seen > 0 && len == expected[seen - 1] {
                // A retransmission of the previous size: echo it again.
            } else {
                panic!("linux: got {len} bytes, expected {want} (or corrupt)");
            }
            s.send_to(&buf[..len], from).unwrap();
        }
        seen
    });
    let cap = 64 * 1024;
    let sock = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; cap]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; cap]),
    );
    let h = stack.sockets.add(sock);
    stack
        .sockets
        .get_mut::<udp::Socket>(h)
        .bind(port + 1)
        .unwrap();
    let dst = IpEndpoint::new(IpAddress::Ipv4(LINUX), port);
    let mut resends = 0;
    for &size in &sizes {
        let data = payload(size, size);
        let mut sent_at = None::<Instant>;
        let t = Instant::now();
        loop {
            if sent_at.is_none_or(|s| s.elapsed() > Duration::from_millis(500)) {
                if sent_at.is_some() {
                    resends += 1;
                }
                stack
                    .sockets
                    .get_mut::<udp::Socket>(h)
                    .send_slice(&data, dst)
                    .unwrap();
                sent_at = Some(Instant::now());
            }
            stack.poll(Duration::from_millis(5)).unwrap();
            let s = stack.sockets.get_mut::<udp::Socket>(h);
            if let Ok((got, _)) = s.recv() {
                if got.len() == size {
                    assert!(got == &data[..], "echo of {size} bytes differs");
                    break;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no echo for {size} bytes"
            );
        }
    }
    stack.sockets.remove(h);
    assert_eq!(server.join().unwrap(), sizes.len());
    assert!(resends <= 3, "{resends} datagrams had to be sent again");
}

/// Byte `i` of the stream in direction `dir`.
fn stream_byte(i: u64, dir: u8) -> u8 {
    ((i >> 10) as u8) ^ (i as u8).wrapping_mul(31) ^ dir
}

fn fill(buf: &mut [u8], from: u64, dir: u8) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = stream_byte(from + k as u64, dir);
    }
}

/// `bytes` each way over one TCP connection, every byte checked.
fn tcp_both_ways(w: &World, stack: &mut Stack<LocalPlatform>, bytes: u64, port: u16) -> f64 {
    let server = w.ns.thread(move || {
        let l = TcpListener::bind((LINUX_IP, port)).unwrap();
        let (conn, _) = l.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut wr = conn.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0u64;
            while off < bytes {
                let n = buf.len().min((bytes - off) as usize);
                fill(&mut buf[..n], off, 0xa5);
                wr.write_all(&buf[..n]).unwrap();
                off += n as u64;
            }
        });
        let mut rd = conn;
        let mut buf = vec![0u8; 64 * 1024];
        let mut want = vec![0u8; 64 * 1024];
        let mut off = 0u64;
        while off < bytes {
            let n = rd.read(&mut buf).unwrap();
            assert!(n > 0, "linux: connection closed at {off}");
            fill(&mut want[..n], off, 0x5a);
            assert!(
                buf[..n] == want[..n],
                "linux: stream differs near byte {off}"
            );
            off += n as u64;
        }
        writer.join().unwrap();
        off
    });
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 1 << 20]),
        tcp::SocketBuffer::new(vec![0; 1 << 20]),
    );
    let h = stack.sockets.add(sock);
    // Give the listener a moment to exist, then connect (retrying on refusal).
    let t0 = Instant::now();
    let (mut sent, mut got) = (0u64, 0u64);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut connected_once = false;
    let mut report = Instant::now();
    while got < bytes || sent < bytes {
        if report.elapsed() > Duration::from_secs(5) {
            report = Instant::now();
            let s = stack.sockets.get::<tcp::Socket>(h);
            let c = stack.dev.counters();
            let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "TCP progress: sent {sent} got {got} state {} send_queue {} recv_queue {}; front tx {} rx {} txerr {} rxerr {}",
                s.state(),
                s.send_queue(),
                s.recv_queue(),
                n(&c.tx_packets),
                n(&c.rx_packets),
                n(&c.tx_errors),
                n(&c.rx_errors)
            );
        }
        {
            let (iface, sockets) = (&mut stack.iface, &mut stack.sockets);
            let s = sockets.get_mut::<tcp::Socket>(h);
            if !s.is_open() {
                assert!(!connected_once, "smoltcp: connection lost at {sent}/{got}");
                std::thread::sleep(Duration::from_millis(20));
                s.connect(iface.context(), (LINUX, port), 49152).unwrap();
            }
            if s.may_send() {
                connected_once = true;
            }
            while sent < bytes && s.can_send() {
                let n = chunk.len().min((bytes - sent) as usize);
                fill(&mut chunk[..n], sent, 0x5a);
                let k = s.send_slice(&chunk[..n]).unwrap();
                if k == 0 {
                    break;
                }
                sent += k as u64;
            }
            while s.can_recv() {
                let n = s.recv_slice(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                fill(&mut want[..n], got, 0xa5);
                assert!(
                    chunk[..n] == want[..n],
                    "smoltcp: stream differs near byte {got}"
                );
                got += n as u64;
            }
        }
        stack.poll(Duration::from_millis(5)).unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "TCP: {sent} sent, {got} received after 300 s"
        );
    }
    // Everything is in smoltcp's buffer or received: let it finish sending.
    drive(stack, Duration::from_secs(120), "TCP drain", |_| {
        server.is_finished()
    });
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(server.join().unwrap(), bytes);
    stack.sockets.get_mut::<tcp::Socket>(h).close();
    drive(stack, Duration::from_secs(5), "TCP close", |s| {
        !s.sockets.get::<tcp::Socket>(h).is_active()
            || s.sockets.get::<tcp::Socket>(h).state() == tcp::State::TimeWait
    });
    stack.sockets.remove(h);
    2.0 * bytes as f64 / secs / 1e6
}

/// A UDP frame built by hand, sent with or without `NETTXF_csum_blank` and a
/// wrong checksum: the kernel takes it only if the backend completed it.
fn raw_udp_checksum(w: &World, stack: &mut Stack<LocalPlatform>) {
    let tap_mac = w.ns.tap_mac("xtap0");
    let my_mac = stack.dev.info().mac;
    let server = w.ns.thread(|| {
        let s = UdpSocket::bind((LINUX_IP, 7300)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let frame = |tag: u8| {
        let payload = [tag; 32];
        let mut f = Vec::new();
        f.extend_from_slice(&tap_mac);
        f.extend_from_slice(&my_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&SMOL_IP.octets());
        ip.extend_from_slice(&LINUX.octets());
        let mut s: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&7301u16.to_be_bytes());
        f.extend_from_slice(&7300u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0xde, 0xad]); // wrong on purpose
        f.extend_from_slice(&payload);
        f
    };
    stack
        .dev
        .set_tx_flags(xenio_xen_sys::netif::NETTXF_CSUM_BLANK);
    assert!(stack.dev.send(&frame(1)).unwrap());
    stack.dev.set_tx_flags(0);
    assert!(stack.dev.send(&frame(2)).unwrap());
    drive(stack, Duration::from_secs(10), "checksum frames", |_| {
        server.is_finished()
    });
    let got = server.join().unwrap();
    assert_eq!(
        got,
        vec![vec![1u8; 32]],
        "only the csum_blank frame (checksum completed by netback) reaches the socket"
    );
}

/// Large TCP segments both ways (GSO): the frontend negotiates checksum
/// offload and GSO with `xenio netback` (a TAP with the virtio-net header),
/// sends a stream in 64 KiB segments through the raw-packet API to a Linux
/// socket, which checks every byte, and the socket sends one back, which
/// arrives in segments of up to 64 KiB (TSO on the TAP, the GSO extra on the
/// rx ring) and is checked byte for byte by the frontend. Then a frontend
/// that takes no offloads (smoltcp) connects to the same persistent TAP and
/// its traffic works: the TAP kept none of the first frontend's offloads.
#[test]
fn gso_segments_of_64_kib_both_ways_every_byte_compared() {
    use xenio_netfront::bulk_tcp::{BulkTcp, Endpoint};
    let Some(w) = world("gso", 1500) else {
        return;
    };
    let _backend = w.backend();
    let mut nic = w.frontend(Options {
        csum_offload: true,
        gso: true,
        ..Default::default()
    });
    let info = nic.info().clone();
    assert!(
        info.csum_offload && info.gso_tcpv4,
        "netback offers checksum offload and GSO: {info:?}"
    );
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    // The raw mover answers no ARP: a static neighbour entry.
    w.ns.ip(&[
        "neigh",
        "replace",
        &SMOL_IP.to_string(),
        "lladdr",
        &mac(info.mac),
        "dev",
        "xtap0",
    ]);
    let tap_mac = w.ns.tap_mac("xtap0");
    let bytes: u64 = 32 << 20;
    let server = w.ns.thread(move || {
        let l = TcpListener::bind((LINUX_IP, 7900)).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut want = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < bytes {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {got} bytes");
            fill(&mut want[..n], got, 1);
            assert!(
                buf[..n] == want[..n],
                "frontend -> Linux: bytes differ near {got}"
            );
            got += n as u64;
        }
        let mut sent = 0u64;
        while sent < bytes {
            let n = buf.len().min((bytes - sent) as usize);
            fill(&mut buf[..n], sent, 2);
            c.write_all(&buf[..n]).unwrap();
            sent += n as u64;
        }
        // Until the frontend's reset.
        let _ = c.read(&mut buf);
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let me = Endpoint {
        mac: info.mac,
        ip: SMOL_IP.octets(),
        port: 47900,
    };
    let peer = Endpoint {
        mac: tap_mac,
        ip: LINUX.octets(),
        port: 7900,
    };
    let t = Instant::now();
    let mut tcp = BulkTcp::connect(&mut nic, me, peer, true, Duration::from_secs(10)).unwrap();
    tcp.send(bytes, |off, b| fill(b, off, 1), Duration::from_secs(20))
        .unwrap();
    let tx_secs = t.elapsed().as_secs_f64();
    let mut want = Vec::new();
    tcp.receive(
        bytes,
        |off, b| {
            want.resize(b.len(), 0);
            fill(&mut want, off, 2);
            if b == &want[..] {
                Ok(())
            } else {
                Err(format!("Linux -> frontend: bytes differ near {off}"))
            }
        },
        Duration::from_secs(20),
    )
    .unwrap();
    let stats = tcp.stats;
    tcp.abort().unwrap();
    assert_eq!(server.join().unwrap(), bytes);
    eprintln!(
        "GSO: {} MiB each way in {:.2} s; {stats:?}",
        bytes >> 20,
        t.elapsed().as_secs_f64()
    );
    let _ = tx_secs;
    // Every data segment sent was a large one (the stream is cut at 64 KiB
    // minus headers, rounded to the MSS)...
    assert!(
        stats.gso_sent >= bytes / 65536,
        "{} large segments sent for {bytes} bytes",
        stats.gso_sent
    );
    // ...and the host's came as large segments too.
    assert!(
        stats.gso_received > 0,
        "no large segment received: {stats:?}"
    );
    assert!(
        stats.largest_received > 32 << 10,
        "largest received packet {} bytes",
        stats.largest_received
    );

    // The TAP outlives this frontend (it is persistent): the next frontend
    // takes no offloads (smoltcp), and the TAP keeps none of the first one's.
    nic.close().unwrap();
    // The kernel asks again (smoltcp learns the kernel's address from that).
    w.ns.ip(&["neigh", "del", &SMOL_IP.to_string(), "dev", "xtap0"]);
    let mut st = stack(w.frontend(Options::default()));
    assert!(!st.dev.info().gso_tcpv4 && !st.dev.info().csum_offload);
    ping(&w, &mut st, 2);
    let rate = tcp_both_ways(&w, &mut st, 4 << 20, 7910);
    eprintln!("after the GSO frontend, smoltcp: TCP {rate:.1} MB/s");
    if let Ok(out) = w.ns.exec().args(["ethtool", "-k", "xtap0"]).output() {
        let k = String::from_utf8_lossy(&out.stdout);
        if let Some(l) = k
            .lines()
            .find(|l| l.starts_with("tcp-segmentation-offload:"))
        {
            assert!(l.contains(": off"), "the TAP kept TSO: {l}");
        }
    }
}

fn stack(front: NetFront<LocalPlatform>) -> Stack<LocalPlatform> {
    Stack::new(front, SMOL_IP, 24)
}

#[test]
fn ping_tcp_every_frame_size_multislot_checksum_and_restart() {
    let Some(w) = world("main", 1500) else {
        return;
    };
    let backend = w.backend();
    let mut st = stack(w.frontend(Options::default()));
    assert!(st.dev.info().sg && st.dev.info().split_event_channels);
    ping(&w, &mut st, 3);

    // Every frame size, 42 (Ethernet + IPv4 + UDP headers) to 1514 bytes, both ways.
    let all: Vec<usize> = (0..=1472).collect();
    udp_sweep(&w, &mut st, all, 7000);

    let mb = std::env::var("XENIO_NET_TEST_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100u64);
    let rate = if mb > 0 {
        tcp_both_ways(&w, &mut st, mb << 20, 7100)
    } else {
        0.0
    };
    eprintln!("TCP: {mb} MiB each way, {rate:.1} MB/s in total");

    raw_udp_checksum(&w, &mut st);

    // Multi-slot tx: 256-byte slots starting at offset 100 (a 1514-byte frame
    // is 7 slots). The frontend closes and connects again with these options.
    let c = st.dev.counters().clone();
    st.dev.close().unwrap();
    let opts = Options {
        max_slot_bytes: 256,
        tx_offset: 100,
        ..Default::default()
    };
    let mut st = stack(w.frontend(opts));
    let sizes: Vec<usize> = (0..=1472).step_by(7).chain([1472]).collect();
    udp_sweep(&w, &mut st, sizes, 7200);
    let m = st.dev.counters();
    let (pk, sl) = (
        m.tx_packets.load(std::sync::atomic::Ordering::Relaxed),
        m.tx_slots.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(
        sl > 3 * pk,
        "multi-slot packets: {pk} packets in {sl} slots"
    );
    assert_eq!(m.tx_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(c.notifications.load(std::sync::atomic::Ordering::Relaxed) > 0);

    // Backend restart: SIGKILL, a new backend, the frontend reconnects.
    let mut backend = backend;
    backend.0.kill().unwrap();
    backend.0.wait().unwrap();
    drop(backend);
    let _backend2 = w.backend();
    let before = st
        .dev
        .counters()
        .reconnects
        .load(std::sync::atomic::Ordering::Relaxed);
    drive(&mut st, Duration::from_secs(30), "reconnect", |s| {
        s.dev
            .counters()
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            > before
    });
    ping(&w, &mut st, 3);
    udp_sweep(&w, &mut st, vec![0, 100, 1472], 7400);
    let rate = tcp_both_ways(&w, &mut st, 4 << 20, 7500);
    eprintln!("after restart: TCP {rate:.1} MB/s");
}

#[test]
fn jumbo_frames_span_rx_buffers() {
    let Some(w) = world("jumbo", 9000) else {
        return;
    };
    let _backend = w.backend();
    let mut st = stack(w.frontend(Options::default()));
    assert_eq!(st.dev.info().mtu, 9000);
    ping(&w, &mut st, 1);
    // Frames of 4096 +- 1, 8192 +- 1 and 9014 bytes: up to 3 rx buffers each.
    let sizes: Vec<usize> = [4095usize, 4096, 4097, 8191, 8192, 8193, 9014]
        .iter()
        .map(|f| f - 42)
        .collect();
    let before = st
        .dev
        .counters()
        .rx_slots
        .load(std::sync::atomic::Ordering::Relaxed);
    let pk0 = st
        .dev
        .counters()
        .rx_packets
        .load(std::sync::atomic::Ordering::Relaxed);
    udp_sweep(&w, &mut st, sizes, 7600);
    let slots = st
        .dev
        .counters()
        .rx_slots
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    let pk = st
        .dev
        .counters()
        .rx_packets
        .load(std::sync::atomic::Ordering::Relaxed)
        - pk0;
    assert!(slots >= pk + 7, "{pk} rx packets in only {slots} slots");
}

#[test]
fn two_queues_on_a_multi_queue_tap() {
    let Some(w) = world_q("mq", 1500, 2) else {
        return;
    };
    let _backend = w.backend();
    let mut st = stack(w.frontend(Options {
        queues: 2,
        ..Default::default()
    }));
    assert_eq!(st.dev.info().queues, 2);
    ping(&w, &mut st, 2);
    // Several flows (ports): the frontend spreads them over its queues, the
    // kernel over the TAP's queues; every one arrives.
    for port in [7700u16, 7710, 7720, 7730] {
        udp_sweep(&w, &mut st, vec![0, 18, 500, 1472], port);
    }
    let rate = tcp_both_ways(&w, &mut st, 8 << 20, 7800);
    let per_queue = st.dev.queue_frames();
    eprintln!("two queues: TCP {rate:.1} MB/s; frames (tx, rx) per queue {per_queue:?}");
    // The frontend's flow hash put these flows on both queues; which TAP queue
    // the kernel picks for each flow is its own (seeded) choice.
    assert!(per_queue.iter().all(|&(tx, _)| tx > 0), "{per_queue:?}");
    assert!(per_queue.iter().map(|q| q.1).sum::<u64>() > 4 * 4);
}

#[test]
fn netback_help_explains_every_knob_and_bad_arguments_say_why() {
    let out = Command::new(env!("CARGO_BIN_EXE_xenio"))
        .args(["netback", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for k in [
        "--tap",
        "--frontend",
        "--backend",
        "--devid",
        "--platform",
        "--run-dir",
        "--create-device",
        "--mac",
        "--mtu",
        "--max-queues",
        "--no-sg",
        "--no-split-event-channels",
        "--batch",
        "--rx-queue",
        "--rx-drain-ms",
        "--poll-us",
        "--once",
    ] {
        assert!(help.contains(k), "--help does not mention {k}");
    }
    // Exit status 2 for an argument that makes no sense (as clap's own
    // argument errors), 1 for a device that cannot be opened.
    for (args, why, code) in [
        (vec!["--mac", "zz:00:00:00:00:01"], "--mac", 2),
        (vec!["--mtu", "20"], "--mtu", 2),
        (vec!["--tap", "a/b"], "TAP device name", 1),
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xenio"));
        c.args(["netback", "--platform", "local", "--frontend", "1"]);
        if !args.contains(&"--tap") {
            c.args(["--tap", "xtap-none"]);
        }
        let out = c.args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

/// `xenio netfront` (a child process, domain 1): ARP and ICMP echo over raw
/// frames to the kernel's address on the TAP behind `xenio netback`, every
/// reply's payload compared by the command.
#[test]
fn netfront_command_pings_the_kernel() {
    let Some(w) = world("cli", 1500) else {
        return;
    };
    let _backend = w.backend();
    let t = Instant::now();
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_xenio"))
            .args(["netfront", "--platform", "local", "--domid", "1"])
            .arg("--run-dir")
            .arg(w.run_dir())
            .args(["--device", "0", "--ip", "192.0.2.2", "--ping", LINUX_IP])
            .args(["--count", "4", "--size", "1200"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            assert!(
                stdout.contains("4 echo replies of 1200 bytes, payloads equal"),
                "{stdout}"
            );
            return;
        }
        // The backend may not have created the device yet.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "xenio netfront: {}\n{stdout}\n{stderr}",
            out.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
