//! The xenio path of `xenio-bench net`: this process is the frontend (domain 1:
//! netfront, and smoltcp for TCP); `xenio netback` runs as a child process
//! (domain 0) inside a namespace, attached to a TAP device.

use crate::net::args::NetArgs;
use crate::net::cpu::{process_cpu, thread_cpu};
use crate::net::netns::{Netns, join};
use crate::net::traffic::{fill, read_check, udp_blast, udp_count, udp_frame, write_stream};
use crate::net::types::R;
use smoltcp::socket::tcp;
use smoltcp::wire::Ipv4Address;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xenio_netfront::stack::Stack;
use xenio_netfront::{NetFront, Options};
use xenio_xenbus::DomId;
use xenio_xenbus::platform::LocalPlatform;
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

/// The xenio path: netfront (and smoltcp) here, `xenio netback` in a namespace
/// behind a TAP device.
pub struct XenioPath {
    ns: Netns,
    _dir: tempfile::TempDir,
    _daemon: Daemon,
    backend: Option<Child>,
    stack: Stack<LocalPlatform>,
    tap_mac: [u8; 6],
    linux: Ipv4Address,
    front: Ipv4Address,
    backend_pid: u32,
}

const FRONT_DIR: &str = "/local/domain/1/device/vif/0";
const X_LINUX: Ipv4Address = Ipv4Address::new(192, 0, 2, 1);
const X_FRONT: Ipv4Address = Ipv4Address::new(192, 0, 2, 2);
const G_LINUX: Ipv4Address = Ipv4Address::new(192, 0, 3, 1);
const G_FRONT: Ipv4Address = Ipv4Address::new(192, 0, 3, 2);

/// The Linux end's address as a `&'static str` for sockets.
fn linux_str(ip: Ipv4Address) -> &'static str {
    if ip == G_LINUX {
        "192.0.3.1"
    } else {
        "192.0.2.1"
    }
}

impl XenioPath {
    /// Set up the namespace and TAP, start the store daemon and netback, and
    /// connect the frontend: for smoltcp (no offloads), or with `gso` for the
    /// frame engine (checksum offload and GSO negotiated) in a namespace,
    /// TAP and subnet of its own.
    pub fn start(a: &NetArgs, xenio: &PathBuf, gso: bool) -> R<XenioPath> {
        let (tag, tap, linux, front_ip) = if gso {
            ("g", "xgtap0", G_LINUX, G_FRONT)
        } else {
            ("x", "xtap0", X_LINUX, X_FRONT)
        };
        let ns = Netns::new(format!("xbn-{tag}-{}", std::process::id()))?;
        ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        ns.ip(&["link", "set", tap, "mtu", &a.mtu.to_string()])?;
        ns.ip(&["addr", "add", &format!("{linux}/24"), "dev", tap])?;
        ns.ip(&["link", "set", tap, "up"])?;
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
            .args(["--tap", tap, "--create-device"])
            .args(["--mtu", &a.mtu.to_string()])
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
            let options = Options {
                csum_offload: gso,
                gso,
                ..Options::default()
            };
            match NetFront::connect(p, FRONT_DIR, options) {
                Ok(f) => break f,
                Err(e) if t.elapsed() > Duration::from_secs(20) => {
                    return Err(format!("netfront: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let out = ns
            .exec()
            .args(["cat", &format!("/sys/class/net/{tap}/address")])
            .output()
            .map_err(|e| e.to_string())?;
        let tap_mac = xenio_netfront::parse_mac(&String::from_utf8_lossy(&out.stdout))
            .ok_or("reading the TAP's MAC")?;
        let mac = front.info().mac;
        // Static neighbour entries: no ARP in the measurements.
        ns.ip(&[
            "neigh",
            "replace",
            &front_ip.to_string(),
            "lladdr",
            &mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            "dev",
            tap,
        ])?;
        let backend_pid = backend.id();
        let stack = Stack::new(front, front_ip, 24);
        Ok(XenioPath {
            ns,
            _dir: dir,
            _daemon: daemon,
            backend: Some(backend),
            stack,
            tap_mac,
            linux,
            front: front_ip,
            backend_pid,
        })
    }

    /// CPU seconds netback (its `ip netns exec` child, whose image it is)
    /// has used so far.
    fn backend_cpu(&self) -> f64 {
        process_cpu(self.backend_pid)
    }

    /// The frame engine: one TCP connection of `bytes` from the frontend
    /// (`tx`) or to it, in 64 KiB segments when GSO was negotiated; MB/s and
    /// the CPU seconds of the frontend thread, netback and the Linux socket's
    /// thread.
    pub fn bulk(&mut self, tx: bool, bytes: u64, port: u16) -> R<(f64, f64)> {
        use xenio_netfront::bulk_tcp::{BulkTcp, Endpoint};
        let host = linux_str(self.linux);
        let linux = self.ns.thread(move || -> R<f64> {
            let l = TcpListener::bind((host, port)).map_err(|e| e.to_string())?;
            let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            let cpu = thread_cpu();
            if tx {
                read_check(&mut c, bytes)?;
            } else {
                write_stream(&mut c, bytes)?;
            }
            // Until the frontend's reset.
            let mut b = [0u8; 1];
            let _ = c.read(&mut b);
            Ok(thread_cpu() - cpu)
        });
        std::thread::sleep(Duration::from_millis(100));
        let me = Endpoint {
            mac: self.stack.dev.info().mac,
            ip: self.front.octets(),
            port: 40000 + port,
        };
        let peer = Endpoint {
            mac: self.tap_mac,
            ip: self.linux.octets(),
            port,
        };
        let (cpu0, be0) = (thread_cpu(), self.backend_cpu());
        let mut tcp =
            BulkTcp::connect(&mut self.stack.dev, me, peer, true, Duration::from_secs(10))?;
        let t = Instant::now();
        let limit = Duration::from_secs(30);
        if tx {
            tcp.send(bytes, |off, b| fill(b, off), limit)?;
        } else {
            let mut want = vec![0u8; 1 << 16];
            tcp.receive(
                bytes,
                |off, b| {
                    want.resize(b.len(), 0);
                    fill(&mut want, off);
                    if b == &want[..] {
                        Ok(())
                    } else {
                        Err(format!("frame engine: stream differs near byte {off}"))
                    }
                },
                limit,
            )?;
        }
        let secs = t.elapsed().as_secs_f64();
        tcp.abort()?;
        let cpu = thread_cpu() - cpu0 + self.backend_cpu() - be0;
        let linux_cpu = join(linux)??;
        Ok((bytes as f64 / secs / 1e6, cpu + linux_cpu))
    }

    /// The frontend's (notifications, sleeps, packets) so far.
    pub fn counters(&self) -> (u64, u64, u64) {
        let c = self.stack.dev.counters();
        (
            c.notifications.load(Ordering::Relaxed),
            c.sleeps.load(Ordering::Relaxed),
            c.tx_packets.load(Ordering::Relaxed) + c.rx_packets.load(Ordering::Relaxed),
        )
    }

    /// smoltcp -> Linux (`tx`) or Linux -> smoltcp, `bytes`: MB/s, and the
    /// CPU seconds of the frontend thread, netback and the Linux socket's
    /// thread.
    pub fn tcp(&mut self, tx: bool, bytes: u64, port: u16) -> R<(f64, f64)> {
        let host = linux_str(self.linux);
        let linux = self.ns.thread(move || -> R<f64> {
            let l = TcpListener::bind((host, port)).map_err(|e| e.to_string())?;
            let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            let cpu = thread_cpu();
            if tx {
                read_check(&mut c, bytes)?;
            } else {
                write_stream(&mut c, bytes)?;
                // Wait for the peer to close so that every byte was taken.
                let mut b = [0u8; 1];
                let _ = c.read(&mut b);
            }
            Ok(thread_cpu() - cpu)
        });
        let (cpu0, be0) = (thread_cpu(), self.backend_cpu());
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
                .connect(iface.context(), (self.linux, port), 40000 + port)
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
        let linux_cpu = join(linux)??;
        st.sockets.get_mut::<tcp::Socket>(h).abort();
        let _ = st.poll(Duration::from_millis(1));
        st.sockets.remove(h);
        let cpu = thread_cpu() - cpu0 + process_cpu(self.backend_pid) - be0;
        Ok((bytes as f64 / secs / 1e6, cpu + linux_cpu))
    }

    /// Raw 60-byte frames from the frontend to a Linux socket; datagrams/s received.
    pub fn pps_tx(&mut self, secs: f64) -> R<f64> {
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
    pub fn pps_rx(&mut self, secs: f64) -> R<f64> {
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
    pub fn finish(&mut self) -> String {
        let Some(mut b) = self.backend.take() else {
            return String::new();
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(b.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        // The backend closes cleanly: the frontend answers its Closing.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = b.try_wait() {
                break;
            }
            if self.stack.dev.wait(Duration::from_millis(10)).is_err() {
                break;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::traffic::udp_frame;

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
