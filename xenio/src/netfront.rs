//! `xenio netfront`: connect a userspace netif frontend to a backend and check it
//! with ARP and ICMP echo (ping) over raw Ethernet frames.

use crate::error::{Context, Error, Result};
use clap::Args;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_netfront::{NetFront, Options, parse_mac};
use xenio_xenbus::DomId;
use xenio_xenbus::platform::{
    LocalPlatform, Platform, PlatformChoice, PlatformKind, XenPlatform, resolve,
};

/// Options of `xenio netfront`.
#[derive(Args, Debug)]
pub struct NetfrontArgs {
    /// The frontend directory, /local/domain/<me>/device/vif/<devid>, or just the
    /// device id. The toolstack (xl network-attach, or `xenio netback
    /// --create-device`) has written it.
    #[arg(long, value_name = "DIR|DEVID")]
    device: String,

    /// Platform: local, xen, or auto (xen if /dev/xen is there).
    #[arg(long, value_name = "KIND", default_value = "auto")]
    platform: PlatformChoice,

    /// This domain's id on the local platform (on Xen it is read from the store).
    #[arg(long, value_name = "DOMID", default_value_t = 1)]
    domid: u16,

    /// Local platform run directory (see `xenio store --help`).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<std::path::PathBuf>,

    /// This frontend's IPv4 address (answers ARP for it).
    #[arg(long, value_name = "ADDR")]
    ip: Ipv4Addr,

    /// The address to ping (the backend side, e.g. an address on its vif or TAP).
    #[arg(long, value_name = "ADDR")]
    ping: Ipv4Addr,

    /// Echo requests to send; every one must be answered with its payload.
    #[arg(long, value_name = "N", default_value_t = 5)]
    count: u16,

    /// Bytes of payload per echo request (up to 1472 for a 1500-byte MTU).
    #[arg(long, value_name = "BYTES", default_value_t = 1000)]
    size: usize,

    /// The MAC address (default: the toolstack's `mac` key).
    #[arg(long, value_name = "MAC")]
    mac: Option<String>,

    /// How long to wait for each answer, in seconds.
    #[arg(long, value_name = "S", default_value_t = 5)]
    timeout: u64,
}

/// Run `xenio netfront`.
pub fn run(a: NetfrontArgs) -> Result<()> {
    match resolve(a.platform)? {
        PlatformKind::Local => {
            let run_dir = a
                .run_dir
                .clone()
                .unwrap_or_else(xenio_xenbus::local::default_run_dir);
            let p = LocalPlatform::connect(&run_dir, DomId(a.domid))?;
            go(Arc::new(p), &a)
        }
        PlatformKind::Xen => go(Arc::new(XenPlatform::open()?), &a),
    }
}

const ETH_ARP: u16 = 0x0806;
const ETH_IP: u16 = 0x0800;

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(dst: [u8; 6], src: [u8; 6], ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    p
}

fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(data);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&seq.to_be_bytes());
    ip.extend_from_slice(&[0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

fn ip4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// What a received frame is, as far as this check cares.
enum Got {
    ArpReply([u8; 6], Ipv4Addr),
    ArpRequest([u8; 6], Ipv4Addr, Ipv4Addr),
    EchoReply(u16, u16, Vec<u8>),
    Other,
}

fn parse(f: &[u8]) -> Got {
    if f.len() < 14 {
        return Got::Other;
    }
    let ty = u16::from_be_bytes([f[12], f[13]]);
    let p = &f[14..];
    if ty == ETH_ARP && p.len() >= 28 {
        let mut sha = [0u8; 6];
        sha.copy_from_slice(&p[8..14]);
        return match u16::from_be_bytes([p[6], p[7]]) {
            2 => Got::ArpReply(sha, ip4(&p[14..18])),
            1 => Got::ArpRequest(sha, ip4(&p[14..18]), ip4(&p[24..28])),
            _ => Got::Other,
        };
    }
    if ty == ETH_IP && p.len() >= 28 && p[9] == 1 {
        let ihl = usize::from(p[0] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
        if ihl >= 20 && total >= ihl + 8 {
            let icmp = &p[ihl..total];
            if icmp[0] == 0 && checksum(icmp) == 0 {
                let id = u16::from_be_bytes([icmp[4], icmp[5]]);
                let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
                return Got::EchoReply(id, seq, icmp[8..].to_vec());
            }
        }
    }
    Got::Other
}

fn go<P: Platform>(p: Arc<P>, a: &NetfrontArgs) -> Result<()> {
    let dir = if a.device.starts_with('/') {
        a.device.clone()
    } else {
        let devid: u32 = a.device.parse().map_err(|_| {
            Error::Usage(format!(
                "--device {:?}: a store path or a device id",
                a.device
            ))
        })?;
        format!("/local/domain/{}/device/vif/{devid}", p.domid().0)
    };
    let mac = match &a.mac {
        Some(m) => Some(
            parse_mac(m)
                .ok_or_else(|| Error::Usage(format!("--mac {m:?}: expected aa:bb:cc:dd:ee:ff")))?,
        ),
        None => None,
    };
    if a.size > 1472 {
        return Err(Error::Usage(format!("--size {}: at most 1472", a.size)));
    }
    let t0 = Instant::now();
    let mut nf = NetFront::connect(
        p,
        &dir,
        Options {
            mac,
            ..Options::default()
        },
    )
    .with_context(|| format!("connecting {dir}"))?;
    let me = nf.info().mac;
    println!(
        "connected {dir} in {:.1?}: mac {}, {} queue(s), sg {}, split event channels {}, mtu {}",
        t0.elapsed(),
        me.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        nf.info().queues,
        nf.info().sg,
        nf.info().split_event_channels,
        nf.info().mtu
    );
    let result = ping(&mut nf, a, me);
    let closed = nf.close();
    result?;
    closed.context("closing")?;
    println!("closed {dir}");
    Ok(())
}

fn ping<P: Platform>(nf: &mut NetFront<P>, a: &NetfrontArgs, me: [u8; 6]) -> Result<()> {
    let wait = Duration::from_secs(a.timeout);
    let send = |nf: &mut NetFront<P>, f: &[u8]| -> Result<()> {
        let until = Instant::now() + wait;
        while !nf.send(f).context("send")? {
            if Instant::now() > until {
                return Err(Error::Check("the tx ring stayed full".into()));
            }
            nf.wait(Duration::from_millis(10))?;
        }
        Ok(())
    };
    // Take frames until `want` says yes; answer ARP requests for our address.
    let mut buf = Vec::new();
    let mut recv_until =
        |nf: &mut NetFront<P>, what: &str, want: &mut dyn FnMut(Got) -> bool| -> Result<()> {
            let until = Instant::now() + wait;
            loop {
                while nf.recv(&mut buf).context("recv")? {
                    match parse(&buf) {
                        Got::ArpRequest(sha, spa, tpa) if tpa == a.ip => {
                            let r = eth(sha, me, ETH_ARP, &arp(2, me, a.ip, sha, spa));
                            send(nf, &r)?;
                        }
                        g => {
                            if want(g) {
                                return Ok(());
                            }
                        }
                    }
                }
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Check(format!("no {what} within {} s", a.timeout)));
                }
                nf.wait(left.min(Duration::from_millis(100)))?;
            }
        };
    // ARP for the peer.
    send(
        nf,
        &eth([0xff; 6], me, ETH_ARP, &arp(1, me, a.ip, [0; 6], a.ping)),
    )?;
    let mut peer = None;
    recv_until(nf, "ARP reply", &mut |g| match g {
        Got::ArpReply(sha, spa) if spa == a.ping => {
            peer = Some(sha);
            true
        }
        _ => false,
    })?;
    let peer = peer.ok_or_else(|| Error::Check("no ARP reply".into()))?;
    let id = std::process::id() as u16;
    let t0 = Instant::now();
    for seq in 1..=a.count {
        let data: Vec<u8> = (0..a.size)
            .map(|i| (i as u16).wrapping_mul(31).wrapping_add(seq) as u8)
            .collect();
        send(
            nf,
            &eth(peer, me, ETH_IP, &icmp_echo(a.ip, a.ping, id, seq, &data)),
        )?;
        let mut ok = false;
        recv_until(nf, &format!("echo reply {seq}"), &mut |g| match g {
            Got::EchoReply(i, s, d) if i == id && s == seq => {
                ok = d == data;
                true
            }
            _ => false,
        })?;
        if !ok {
            return Err(Error::Check(format!(
                "echo reply {seq}: the payload differs"
            )));
        }
    }
    println!(
        "ping {}: {} echo replies of {} bytes, payloads equal, {:.1} ms per round trip",
        a.ping,
        a.count,
        a.size,
        t0.elapsed().as_secs_f64() * 1000.0 / f64::from(a.count.max(1))
    );
    Ok(())
}
