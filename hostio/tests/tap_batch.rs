//! Batched TAP I/O ([`xenio_hostio::tapring`]) against a real TAP device in
//! a network namespace of its own: more packets queued in the TAP than reads
//! armed come out all, in order, byte for byte, and a batch written goes into
//! the host's stack whole and in order, through io_uring and through the
//! plain path (`TapIo::Plain`, what `XENIO_TAP_IO=plain` selects). Needs root
//! (a namespace, a TAP): without it the tests say why and pass vacuously.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_hostio::tap::{Tap, TapConfig, VirtioNetHdr};
use xenio_hostio::tapring::{PacketBuf, TapIo, TapReader, TapWriter};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

fn ip(args: &[&str]) {
    let s = Command::new("ip").args(args).status().expect("running ip");
    assert!(s.success(), "ip {args:?}");
}

/// Run `f` on a thread in a new network namespace holding the TAP `tb0`
/// (up, 10.77.0.1/24, 10.77.0.2 a static neighbour behind it); `None`
/// without root.
fn in_namespace<T: Send + 'static>(f: impl FnOnce(Arc<Tap>) -> T + Send + 'static) -> Option<T> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (a network namespace and a TAP device)");
        return None;
    }
    let h = std::thread::spawn(move || {
        // A thread's namespace is its own; processes it starts inherit it.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let tap = Arc::new(
            Tap::open_with(
                "tb0",
                &TapConfig {
                    multi_queue: false,
                    vnet_hdr: true,
                },
            )
            .expect("a TAP"),
        );
        ip(&["addr", "add", "10.77.0.1/24", "dev", "tb0"]);
        ip(&["link", "set", "tb0", "up"]);
        ip(&[
            "neigh",
            "add",
            "10.77.0.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "tb0",
        ]);
        f(tap)
    });
    Some(h.join().expect("the namespace thread"))
}

/// The payload of datagram `seq`: its number, then a pattern, 60 to 1,460
/// bytes.
fn payload(seq: u32) -> Vec<u8> {
    let len = 60 + (seq as usize * 97) % 1400;
    let mut p = seq.to_be_bytes().to_vec();
    p.extend((4..len).map(|i| (i as u8) ^ (seq as u8).wrapping_mul(31)));
    p
}

/// The UDP payload of an IPv4 UDP frame to port 9, if it is one.
fn udp_payload(frame: &[u8]) -> Option<&[u8]> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let udp = 14 + ihl;
    if frame.get(udp + 2..udp + 4)? != [0, 9] {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([frame[udp + 4], frame[udp + 5]]));
    frame.get(udp + 8..udp + len)
}

fn read_all(io: TapIo) {
    let Some((got, mode)) = in_namespace(move |tap| {
        const N: u32 = 200;
        let s = UdpSocket::bind(SocketAddrV4::new(HOST, 0)).unwrap();
        // Queued in the TAP before any read is armed: 200 packets, 4 reads.
        for seq in 0..N {
            s.send_to(&payload(seq), SocketAddrV4::new(PEER, 9))
                .unwrap();
        }
        let mut r = TapReader::new(tap, 4, io);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let spare = std::cell::RefCell::new(Vec::<PacketBuf>::new());
        let t = Instant::now();
        while got.len() < N as usize && t.elapsed() < Duration::from_secs(10) {
            let n = r
                .read_batch(
                    4,
                    &mut || spare.borrow_mut().pop().unwrap_or_default(),
                    &mut |buf: PacketBuf, _h: VirtioNetHdr, len: usize| {
                        if let Some(p) = udp_payload(&buf.bytes()[..len]) {
                            got.push(p.to_vec());
                        }
                        spare.borrow_mut().push(buf);
                        true
                    },
                )
                .unwrap();
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(r.truncated(), 0);
        (got, r.mode())
    }) else {
        return;
    };
    eprintln!("{io:?}: read through {mode:?}");
    if io == TapIo::Plain {
        assert_eq!(mode, Some("readv per packet"));
    }
    assert_eq!(got.len(), 200, "every datagram read");
    for (seq, p) in got.iter().enumerate() {
        assert_eq!(*p, payload(seq as u32), "datagram {seq}, in order");
    }
}

#[test]
fn more_packets_queued_than_reads_armed_come_out_in_order() {
    read_all(TapIo::Batched);
}

#[test]
fn plain_path_reads_the_same() {
    read_all(TapIo::Plain);
}

/// An Ethernet + IPv4 + UDP frame from PEER:9 to HOST:`port` (UDP checksum
/// 0: none).
fn udp_frame(port: u16, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + data.len()) as u16;
    let mut iph = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    iph.extend_from_slice(&PEER.octets());
    iph.extend_from_slice(&HOST.octets());
    let mut sum: u32 = iph
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    iph[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&iph);
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(data);
    f
}

fn write_all(io: TapIo) {
    let Some((got, results, mode)) = in_namespace(move |tap| {
        const N: u32 = 150;
        let s = UdpSocket::bind(SocketAddrV4::new(HOST, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Room for the whole batch (the default buffer holds ~100 of them).
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))
            .unwrap();
        let port = s.local_addr().unwrap().port();
        let frames: Vec<Vec<u8>> = (0..N).map(|seq| udp_frame(port, &payload(seq))).collect();
        let packets: Vec<(VirtioNetHdr, &[u8])> = frames
            .iter()
            .map(|f| (VirtioNetHdr::default(), f.as_slice()))
            .collect();
        let mut w = TapWriter::new(tap, io);
        let mut results = Vec::new();
        // Two batches: more than one submission (64) in the first.
        w.write_batch(&packets[..100], &mut results).unwrap();
        w.write_batch(&packets[100..], &mut results).unwrap();
        let results: Vec<bool> = results.into_iter().map(|r| r.unwrap()).collect();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
            if got.len() == N as usize {
                break;
            }
        }
        (got, results, w.mode())
    }) else {
        return;
    };
    eprintln!("{io:?}: written through {mode:?}");
    assert_eq!(results.len(), 150, "a result per packet");
    assert!(results.iter().all(|&ok| ok), "every packet taken");
    assert_eq!(got.len(), 150, "every datagram arrived");
    for (seq, p) in got.iter().enumerate() {
        assert_eq!(*p, payload(seq as u32), "datagram {seq}, in order");
    }
}

#[test]
fn a_written_batch_arrives_whole_and_in_order() {
    write_all(TapIo::Batched);
}

#[test]
fn plain_path_writes_the_same() {
    write_all(TapIo::Plain);
}
