//! The baseline of `xenio-bench net`: the kernel's own path between two
//! namespaces over a veth pair.

use crate::net::cpu::thread_cpu;
use crate::net::netns::{Netns, join};
use crate::net::traffic::{read_check, udp_blast, udp_count, write_stream};
use crate::net::types::R;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The baseline: two namespaces joined by a veth pair, Linux sockets on both
/// ends.
pub struct VethPath {
    a: Netns,
    b: Netns,
}

impl VethPath {
    /// Create both namespaces and the veth pair (`mtu` on both ends).
    pub fn start(mtu: u32) -> R<VethPath> {
        let pid = std::process::id();
        let a = Netns::new(format!("xbn-a-{pid}"))?;
        let b = Netns::new(format!("xbn-b-{pid}"))?;
        a.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            b.name(),
        ])?;
        a.ip(&["addr", "add", "198.51.100.1/24", "dev", "veth0"])?;
        b.ip(&["addr", "add", "198.51.100.2/24", "dev", "veth1"])?;
        a.ip(&["link", "set", "veth0", "mtu", &mtu.to_string()])?;
        b.ip(&["link", "set", "veth1", "mtu", &mtu.to_string()])?;
        a.ip(&["link", "set", "veth0", "up"])?;
        b.ip(&["link", "set", "veth1", "up"])?;
        Ok(VethPath { a, b })
    }

    /// Turn the veth pair's offloads (TSO, GSO, GRO, scatter-gather and
    /// checksums) on or off, with ethtool.
    pub fn set_offloads(&self, on: bool) -> R<()> {
        let v = if on { "on" } else { "off" };
        for (ns, dev) in [(&self.a, "veth0"), (&self.b, "veth1")] {
            crate::net::netns::sh(
                ns.exec()
                    .args(["ethtool", "-K", dev])
                    .args(["tso", v, "gso", v, "gro", v, "sg", v, "tx", v, "rx", v]),
            )
            .map_err(|e| format!("{e} (veth offloads need ethtool)"))?;
        }
        Ok(())
    }

    /// One TCP stream of `bytes` from a to b: MB/s received, and the CPU
    /// seconds both threads used.
    pub fn tcp(&self, bytes: u64, port: u16) -> R<(f64, f64)> {
        let server = self.b.thread(move || -> R<(f64, f64)> {
            let l = TcpListener::bind(("198.51.100.2", port)).map_err(|e| e.to_string())?;
            let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
            let (t, cpu) = (Instant::now(), thread_cpu());
            read_check(&mut c, bytes)?;
            Ok((
                bytes as f64 / t.elapsed().as_secs_f64() / 1e6,
                thread_cpu() - cpu,
            ))
        });
        std::thread::sleep(Duration::from_millis(100));
        let client = self.a.thread(move || -> R<f64> {
            let mut c = TcpStream::connect(("198.51.100.2", port)).map_err(|e| e.to_string())?;
            let cpu = thread_cpu();
            write_stream(&mut c, bytes)?;
            Ok(thread_cpu() - cpu)
        });
        let client_cpu = join(client)??;
        let (mbs, server_cpu) = join(server)??;
        Ok((mbs, client_cpu + server_cpu))
    }

    /// Datagrams per second from a socket in a to a socket in b.
    pub fn pps(&self, secs: f64) -> R<f64> {
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
