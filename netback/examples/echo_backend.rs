//! A custom network backend as its own process: a tiny host that lives inside
//! the backend. It answers ARP for its address, ICMP echo requests, and UDP
//! datagrams to port 7 (echo), and drops everything else. The frontend's
//! domain sees a vif with one neighbour on it.
//!
//!     cargo run -p xenio-netback --example echo_backend -- \
//!         --run-dir /dev/shm/xenio --frontend 1 [--devid 0] [--ip 10.0.0.1] [--platform local|xen]
//!
//! Options: the standard ones of `Vif::args` (`--platform local|xen|auto`,
//! `--run-dir DIR`, `--backend DOMID`, `--frontend DOMID` (1), `--devid N`
//! (0), `--backend-type TYPE` (vif), `--backend-dir PATH`), and its own
//! `--ip ADDR` (10.0.0.1).
//!
//! It creates the vif's store directories, serves until SIGTERM or SIGINT,
//! then closes the device cleanly and removes them. The whole backend is the
//! `Network` and `Frames` below: xenio's netback does the rings, the grants,
//! the handshake and the validation. Partial checksums are taken
//! (`Offloads::csum_ipv4`): an echoed UDP datagram keeps its metadata, since
//! swapping the addresses and ports leaves its pseudo-header sum as it was,
//! and netback finishes the checksum for a frontend that cannot take it.

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use xenio_sdk::netback::{Frames, Meta, Network, Offloads, Received, Sent, Vif};

/// The host: its addresses, and the replies waiting for the frontend.
struct EchoHost {
    mac: [u8; 6],
    ip: [u8; 4],
    replies: VecDeque<(Vec<u8>, Meta)>,
}

impl EchoHost {
    /// The reply to `f`, if it is for us.
    fn answer(&self, f: &[u8], meta: &Meta) -> Option<(Vec<u8>, Meta)> {
        let mut r = f.to_vec();
        r[0..6].copy_from_slice(&f[6..12]);
        r[6..12].copy_from_slice(&self.mac);
        match (f.get(12..14)?, f.get(14 + 9)) {
            // ARP request (Ethernet, IPv4) for our address: a reply.
            ([0x08, 0x06], _) if f.get(20..22)? == [0, 1] && f.get(38..42)? == self.ip => {
                r[21] = 2;
                r[22..28].copy_from_slice(&self.mac);
                r[28..32].copy_from_slice(&self.ip);
                r[32..42].copy_from_slice(&f[22..32]);
                Some((r, Meta::default()))
            }
            // IPv4 to us: ICMP echo or UDP port 7.
            ([0x08, 0x00], Some(&proto)) if f.get(30..34)? == self.ip => {
                let l4 = 14 + usize::from(f[14] & 0xf) * 4;
                r[26..30].copy_from_slice(&f[30..34]);
                r[30..34].copy_from_slice(&f[26..30]);
                match proto {
                    1 if *f.get(l4)? == 8 => {
                        // Echo reply: type 0, checksum adjusted by the type change.
                        r[l4] = 0;
                        let c = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
                        let sum = u32::from(c) + 0x0800;
                        let c = (sum + (sum >> 16)) as u16;
                        r[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
                        Some((r, Meta::default()))
                    }
                    17 if f.get(l4 + 2..l4 + 4)? == [0, 7] => {
                        r[l4..l4 + 2].copy_from_slice(&f[l4 + 2..l4 + 4]);
                        r[l4 + 2..l4 + 4].copy_from_slice(&f[l4..l4 + 2]);
                        Some((r, *meta))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// The host serves one queue; every queue shares it.
#[derive(Clone)]
struct Echo(Arc<Mutex<EchoHost>>);

impl Frames for Echo {
    fn send(&mut self, frame: &[u8], meta: &Meta) -> io::Result<Sent> {
        let mut host = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        match host.answer(frame, meta) {
            Some(reply) => {
                host.replies.push_back(reply);
                Ok(Sent::Delivered)
            }
            None => Ok(Sent::Dropped),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let mut host = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        Ok(host.replies.pop_front().map(|(f, meta)| {
            buf[..f.len()].copy_from_slice(&f);
            Received { len: f.len(), meta }
        }))
    }
}

impl Network for Echo {
    type Queue = Echo;
    fn queue(&self, _index: u32, _count: u32) -> io::Result<Echo> {
        Ok(self.clone())
    }
    fn describe(&self) -> String {
        "an echo host".into()
    }
    fn offloads(&self) -> Offloads {
        Offloads {
            csum_ipv4: true,
            ..Offloads::NONE
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // --platform, --run-dir, --frontend, --devid, --backend-type; then this program's own.
    let (vif, own) = Vif::new().args(std::env::args().skip(1))?;
    if let Some(unknown) = own.keys().find(|k| *k != "--ip") {
        return Err(format!("unknown option {unknown}").into());
    }
    let ip = own
        .get("--ip")
        .map_or("10.0.0.1", |v| v)
        .parse::<Ipv4Addr>()?;
    let host = Echo(Arc::new(Mutex::new(EchoHost {
        mac: [0x02, 0, 0, 0, 0, 1],
        ip: ip.octets(),
        replies: VecDeque::new(),
    })));
    let vif = vif
        .create_device([0x00, 0x16, 0x3e, 0x00, 0x00, 0x01])
        .handle_signals(true)
        .on_network_error(|failure| eprintln!("echo_backend: {failure}"));
    println!("echo_backend: serving {ip}");
    let outcome = vif.serve(&host)?;
    println!("{outcome:?}: {}", vif.counters().summary());
    Ok(())
}
