//! The traffic both paths carry: a checked TCP byte stream, and small UDP
//! datagrams counted per second (sent from raw frames or from a socket).

use crate::net::types::R;
use smoltcp::wire::Ipv4Address;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Byte `i` of a TCP stream (checked on arrival).
pub fn stream_byte(i: u64) -> u8 {
    ((i >> 10) as u8) ^ (i as u8).wrapping_mul(31)
}

/// Fill `buf` with the stream's bytes from position `from`.
pub fn fill(buf: &mut [u8], from: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = stream_byte(from + k as u64);
    }
}

/// Read `bytes` from `s`, checking the stream.
pub fn read_check(s: &mut TcpStream, bytes: u64) -> R<u64> {
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

/// Write `bytes` of the stream to `s`.
pub fn write_stream(s: &mut TcpStream, bytes: u64) -> R<()> {
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

/// UDP payload bytes of a small frame.
pub const PAYLOAD: usize = 18; // 14 + 20 + 8 + 18 = 60-byte frames

/// A UDP/IPv4 frame with checksum 0 (none), sequence number in the payload.
pub fn udp_frame(
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
pub fn udp_count(addr: (&'static str, u16), secs: f64, ready: Arc<AtomicBool>) -> R<f64> {
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
pub fn udp_blast(
    src: (&'static str, u16),
    dst: (&'static str, u16),
    stop: Arc<AtomicBool>,
) -> R<u64> {
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
