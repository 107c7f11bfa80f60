//! The frontend program for `echo_backend`: a domain's netfront, driven with
//! raw Ethernet frames. It waits for the vif to appear, asks for the echo
//! host's address (ARP), pings it, sends UDP datagrams to its echo port (one
//! with the checksum left to the offload, one with it done) and checks every
//! reply byte for byte; with `--wait-close` it then waits for the backend to
//! close the device and says how it went.
//!
//!     cargo run -p xenio-netback --example echo_client -- \
//!         --run-dir /dev/shm/xenio [--domid 1] [--devid 0] [--count 3] [--wait-close]

use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_sdk::netfront::{NetFront, Options, PacketMeta};
use xenio_sdk::platform::{DomId, LocalPlatform, default_run_dir};

const ME: [u8; 4] = [10, 0, 0, 2];
const HOST: [u8; 4] = [10, 0, 0, 1];

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn csum(data: &[u8], mut s: u32) -> u16 {
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 packet of protocol `proto` to the host with `l4` as its payload.
fn ipv4(me: [u8; 6], host: [u8; 6], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = [&host[..], &me[..], &[0x08, 0x00]].concat();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&ME);
    ip.extend_from_slice(&HOST);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// Send `frame` and return the first frame that `want` accepts.
fn exchange(
    nic: &mut NetFront<LocalPlatform>,
    frame: &[u8],
    meta: PacketMeta,
    want: impl Fn(&[u8]) -> bool,
) -> R<(Vec<u8>, PacketMeta)> {
    while !nic.send_packet(frame, &meta)? {
        nic.wait(Duration::from_millis(10))?;
    }
    let t = Instant::now();
    let mut buf = Vec::new();
    while t.elapsed() < Duration::from_secs(5) {
        match nic.recv_packet(&mut buf)? {
            Some(m) if want(&buf) => return Ok((buf, m)),
            Some(_) => {}
            None => nic.wait(Duration::from_millis(20))?,
        }
    }
    Err("no reply within 5 s".into())
}

fn main() -> R<()> {
    let mut args = std::env::args().skip(1);
    let (mut run_dir, mut domid, mut devid, mut count, mut wait_close) =
        (default_run_dir(), 1u16, 0u32, 3usize, false);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--run-dir" => run_dir = v()?.into(),
            "--domid" => domid = v()?.parse()?,
            "--devid" => devid = v()?.parse()?,
            "--count" => count = v()?.parse()?,
            "--wait-close" => wait_close = true,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let dir = format!("/local/domain/{domid}/device/vif/{devid}");
    let options = Options {
        csum_offload: true,
        ..Options::default()
    };
    // The backend creates the device: wait for it (20 s at most).
    let t = Instant::now();
    let mut nic = loop {
        let p = Arc::new(LocalPlatform::connect(&run_dir, DomId(domid))?);
        match NetFront::connect(p, &dir, options.clone()) {
            Ok(n) => break n,
            Err(e) if t.elapsed() > Duration::from_secs(20) => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let me = nic.info().mac;
    // ARP: who has 10.0.0.1?
    let mut arp = [
        &[0xff; 6][..],
        &me[..],
        &[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1],
        &me[..],
        &ME[..],
        &[0; 6],
        &HOST[..],
    ]
    .concat();
    arp.resize(60, 0);
    let (reply, _) = exchange(&mut nic, &arp, PacketMeta::default(), |f| {
        f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[21] == 2
    })?;
    let host: [u8; 6] = reply[22..28].try_into()?;
    // Pings with 1000 bytes of payload each.
    for seq in 0..count as u16 {
        let payload: Vec<u8> = (0..1000).map(|i| (i as u8) ^ seq as u8).collect();
        let mut icmp = [&[8, 0, 0, 0, 0x12, 0x34][..], &seq.to_be_bytes(), &payload].concat();
        let c = csum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let frame = ipv4(me, host, 1, &icmp);
        let (r, _) = exchange(&mut nic, &frame, PacketMeta::default(), |f| {
            f.len() > 42 && f[23] == 1 && f[34] == 0 && f[40..42] == seq.to_be_bytes()
        })?;
        if r[42..] != payload[..] || csum(&r[34..], 0) != 0 {
            return Err(format!("echo reply {seq} differs").into());
        }
    }
    // UDP to port 7, its checksum done here, then left to the offload.
    for (k, blank) in [(0u8, false), (1, true)] {
        let data: Vec<u8> = (0..700).map(|i| (i as u8).wrapping_mul(3) ^ k).collect();
        let mut udp = [
            &[0x40, k][..],
            &[0, 7],
            &((8 + data.len()) as u16).to_be_bytes(),
            &[0, 0],
            &data,
        ]
        .concat();
        let pseudo = [
            &ME[..],
            &HOST[..],
            &[0, 17],
            &((8 + data.len()) as u16).to_be_bytes(),
        ]
        .concat();
        let mut s = 0u32;
        for c in pseudo.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        let c = if blank { !csum(&[], s) } else { csum(&udp, s) };
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let meta = PacketMeta {
            csum_blank: blank,
            ..PacketMeta::default()
        };
        let frame = ipv4(me, host, 17, &udp);
        let (r, m) = exchange(&mut nic, &frame, meta, |f| {
            f.len() > 42 && f[23] == 17 && f[36..38] == [0x40, k]
        })?;
        if r[42..] != data[..] {
            return Err(format!("UDP echo {k} differs").into());
        }
        println!(
            "udp echo {k}: {} bytes, reply checksum {}",
            data.len(),
            if m.csum_blank {
                "left to the offload"
            } else {
                "done"
            }
        );
    }
    println!("echo ok: ARP, {count} pings, 2 datagrams");
    if !wait_close {
        nic.close()?;
        return Ok(());
    }
    // Until the backend closes the device.
    let t = Instant::now();
    let mut buf = Vec::new();
    loop {
        let r = nic.recv(&mut buf).and_then(|got| {
            if got {
                Ok(())
            } else {
                nic.wait(Duration::from_millis(50))
            }
        });
        if let Err(e) = r {
            println!(
                "backend closed the device after {:.1} s: {e}",
                t.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err("the backend did not close in 30 s".into());
        }
    }
}
