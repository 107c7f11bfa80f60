//! A one-connection TCP mover over the raw-packet API (feature `test-utils`):
//! what a stack that gives large segments does with [`NetFront::send_packet`]
//! and [`NetFront::recv_packet`], for the namespace tests and the benchmark
//! (smoltcp sends one MSS per packet and takes no offloads).
//!
//! It is a bulk mover, not a TCP stack: IPv4 only, one connection it opens
//! itself, window scaling and MSS from the peer's SYN-ACK, cumulative ACKs,
//! go-back-N after 200 ms without progress or three duplicate ACKs, no
//! congestion control beyond the peer's window (the path is a host-local
//! namespace), a reset to end. With GSO negotiated it sends segments of up to
//! 64 KiB (`csum_blank` and a GSO extra); without, MSS-sized frames with their
//! checksums done. Received large segments are taken as they come.

use crate::front::NetFront;
use crate::packet::{Gso, GsoKind, PacketMeta};
use std::time::{Duration, Instant};
use xenio_xenbus::platform::Platform;

const ETH: usize = 14;
const IP: usize = 20;
const TCP: usize = 20;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
/// Our receive window: 4 MiB, advertised with window scale 7.
const RCV_WINDOW: u32 = 4 << 20;
const RCV_WSCALE: u8 = 7;

/// One end of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Ethernet address.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ip: [u8; 4],
    /// TCP port.
    pub port: u16,
}

/// What moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkStats {
    /// Packets sent (a large segment counts once).
    pub sent: u64,
    /// Large segments sent (with a GSO extra).
    pub gso_sent: u64,
    /// Packets received.
    pub received: u64,
    /// Large segments received (with a GSO extra).
    pub gso_received: u64,
    /// The biggest packet received.
    pub largest_received: usize,
    /// Go-back-N retransmissions.
    pub retransmits: u64,
}

/// One TCP connection from this frontend to a peer (see the module).
pub struct BulkTcp<'a, P: Platform> {
    nic: &'a mut NetFront<P>,
    me: Endpoint,
    peer: Endpoint,
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    peer_window: u32,
    peer_wscale: u8,
    mss: u16,
    rcv_nxt: u32,
    /// The peer's first data byte's sequence number.
    peer_iss_plus_one: u32,
    ip_id: u16,
    gso: bool,
    tx: Vec<u8>,
    rx: Vec<u8>,
    dup_acks: u32,
    last_progress: Instant,
    /// What moved so far.
    pub stats: BulkStats,
}

type R<T> = Result<T, String>;

fn sum(mut s: u32, data: &[u8]) -> u32 {
    let mut c = data.chunks_exact(2);
    for w in &mut c {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = c.remainder() {
        s += u32::from(*b) << 8;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a, P: Platform> BulkTcp<'a, P> {
    /// Open a connection to `peer` (a listening socket) from `me`, within
    /// `timeout`. Large segments are sent when the frontend negotiated GSO
    /// ([`Info::gso_tcpv4`](crate::Info::gso_tcpv4)) and `use_gso`.
    ///
    /// # Errors
    ///
    /// A message when the peer does not answer the SYN in time, resets, or
    /// the frontend fails.
    pub fn connect(
        nic: &'a mut NetFront<P>,
        me: Endpoint,
        peer: Endpoint,
        use_gso: bool,
        timeout: Duration,
    ) -> R<Self> {
        let gso = use_gso && nic.info().gso_tcpv4;
        let iss = 0x1000_0000u32.wrapping_add(u32::from(me.port) << 8);
        let mut c = BulkTcp {
            nic,
            me,
            peer,
            iss,
            snd_una: iss,
            snd_nxt: iss.wrapping_add(1),
            peer_window: 0,
            peer_wscale: 0,
            mss: 536,
            rcv_nxt: 0,
            peer_iss_plus_one: 0,
            ip_id: 1,
            gso,
            tx: Vec::with_capacity(1 << 16),
            rx: Vec::with_capacity(1 << 16),
            dup_acks: 0,
            last_progress: Instant::now(),
            stats: BulkStats::default(),
        };
        let deadline = Instant::now() + timeout;
        let mut last_syn = None::<Instant>;
        loop {
            if last_syn.is_none_or(|t| t.elapsed() > Duration::from_millis(300)) {
                c.emit(iss, SYN, 0, |_, _| {}, None)?;
                last_syn = Some(Instant::now());
            }
            while let Some(_meta) = c.nic.recv_packet(&mut c.rx).map_err(|e| e.to_string())? {
                let rx = std::mem::take(&mut c.rx);
                let got = c.synack(&rx);
                c.rx = rx;
                if got? {
                    c.snd_una = iss.wrapping_add(1);
                    c.emit(c.snd_nxt, ACK, 0, |_, _| {}, None)?;
                    c.last_progress = Instant::now();
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                return Err("no SYN-ACK".into());
            }
            c.nic
                .wait(Duration::from_millis(20))
                .map_err(|e| e.to_string())?;
        }
    }

    /// The peer's segment in `f`, if it is one of this connection: (offset of
    /// the TCP header, its length, payload length).
    fn ours(&self, f: &[u8]) -> Option<(usize, usize, usize)> {
        if f.len() < ETH + IP + TCP || f[12..14] != [0x08, 0x00] || f[ETH + 9] != 6 {
            return None;
        }
        let ihl = usize::from(f[ETH] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([f[ETH + 2], f[ETH + 3]]));
        let l4 = ETH + ihl;
        if f[ETH + 12..ETH + 16] != self.peer.ip
            || f[ETH + 16..ETH + 20] != self.me.ip
            || total < ihl + TCP
            || ETH + total > f.len()
        {
            return None;
        }
        let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
        let dport = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
        if sport != self.peer.port || dport != self.me.port {
            return None;
        }
        let thl = usize::from(f[l4 + 12] >> 4) * 4;
        if thl < TCP || ihl + thl > total {
            return None;
        }
        Some((l4, thl, total - ihl - thl))
    }

    fn synack(&mut self, f: &[u8]) -> R<bool> {
        let Some((l4, thl, _)) = self.ours(f) else {
            return Ok(false);
        };
        let flags = f[l4 + 13];
        if flags & RST != 0 {
            return Err("the peer reset the connection".into());
        }
        if flags & (SYN | ACK) != SYN | ACK || be32(f, l4 + 8) != self.iss.wrapping_add(1) {
            return Ok(false);
        }
        self.rcv_nxt = be32(f, l4 + 4).wrapping_add(1);
        self.peer_iss_plus_one = self.rcv_nxt;
        // Options: MSS (2), window scale (3).
        let mut i = l4 + TCP;
        while i < l4 + thl {
            match f[i] {
                0 => break,
                1 => i += 1,
                k => {
                    let len = usize::from(*f.get(i + 1).unwrap_or(&2)).max(2);
                    if k == 2 && len == 4 && i + 4 <= f.len() {
                        self.mss = u16::from_be_bytes([f[i + 2], f[i + 3]]);
                    }
                    if k == 3 && len == 3 && i + 3 <= f.len() {
                        self.peer_wscale = f[i + 2].min(14);
                    }
                    i += len;
                }
            }
        }
        self.peer_window = u32::from(u16::from_be_bytes([f[l4 + 14], f[l4 + 15]]));
        Ok(true)
    }

    /// Build and send one segment: `seq`, `flags`, `len` payload bytes from
    /// `fill(offset in the stream, buffer)`, as a large segment when `gso`.
    fn emit(
        &mut self,
        seq: u32,
        flags: u8,
        len: usize,
        fill: impl Fn(u64, &mut [u8]),
        gso: Option<u16>,
    ) -> R<bool> {
        let syn = flags & SYN != 0;
        let thl = if syn { TCP + 8 } else { TCP };
        let total = IP + thl + len;
        let f = &mut self.tx;
        f.clear();
        f.resize(ETH + total, 0);
        f[0..6].copy_from_slice(&self.peer.mac);
        f[6..12].copy_from_slice(&self.me.mac);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH..ETH + IP];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&self.me.ip);
        ip[16..20].copy_from_slice(&self.peer.ip);
        let c = !fold(sum(0, ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        self.ip_id = self.ip_id.wrapping_add(1);
        let l4 = ETH + IP;
        let t = &mut f[l4..l4 + thl];
        t[0..2].copy_from_slice(&self.me.port.to_be_bytes());
        t[2..4].copy_from_slice(&self.peer.port.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        let ack = if flags & ACK != 0 { self.rcv_nxt } else { 0 };
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((thl / 4) as u8) << 4;
        t[13] = flags;
        let win = if syn {
            65535
        } else {
            (RCV_WINDOW >> RCV_WSCALE).min(65535) as u16
        };
        t[14..16].copy_from_slice(&win.to_be_bytes());
        if syn {
            // MSS 1460, NOP, window scale.
            t[20..28].copy_from_slice(&[2, 4, 0x05, 0xb4, 1, 3, 3, RCV_WSCALE]);
        }
        let off = u64::from(seq.wrapping_sub(self.iss.wrapping_add(1)));
        fill(off, &mut f[l4 + thl..]);
        // The pseudo-header sum; the whole checksum unless the segment is
        // left to an offload.
        let mut s = sum(0, &self.me.ip);
        s = sum(s, &self.peer.ip);
        s += 6 + (thl + len) as u32;
        let meta = match gso {
            Some(mss) => {
                let p = fold(s);
                f[l4 + 16..l4 + 18].copy_from_slice(&p.to_be_bytes());
                PacketMeta {
                    csum_blank: true,
                    data_validated: false,
                    gso: Some(Gso {
                        kind: GsoKind::TcpV4,
                        mss,
                    }),
                }
            }
            None => {
                let c = !fold(sum(s, &f[l4..]));
                f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
                PacketMeta::default()
            }
        };
        let sent = self
            .nic
            .send_packet(&self.tx, &meta)
            .map_err(|e| e.to_string())?;
        if sent {
            self.stats.sent += 1;
            if gso.is_some() {
                self.stats.gso_sent += 1;
            }
        }
        Ok(sent)
    }

    /// Take a segment of this connection: ACKs move `snd_una`, in-order data
    /// goes to `data`; returns whether to acknowledge now.
    fn on_segment(&mut self, data: &mut dyn FnMut(u64, &[u8]) -> R<()>) -> R<bool> {
        let f = std::mem::take(&mut self.rx);
        let r = self.on_segment_in(&f, data);
        self.rx = f;
        r
    }

    fn on_segment_in(&mut self, f: &[u8], data: &mut dyn FnMut(u64, &[u8]) -> R<()>) -> R<bool> {
        let Some((l4, thl, len)) = self.ours(f) else {
            return Ok(false);
        };
        self.stats.received += 1;
        self.stats.largest_received = self.stats.largest_received.max(f.len());
        let flags = f[l4 + 13];
        if flags & RST != 0 {
            return Err("the peer reset the connection".into());
        }
        if flags & ACK != 0 {
            let ack = be32(f, l4 + 8);
            let wnd = u32::from(u16::from_be_bytes([f[l4 + 14], f[l4 + 15]])) << self.peer_wscale;
            let advanced = ack.wrapping_sub(self.snd_una) as i32 > 0
                && ack.wrapping_sub(self.snd_nxt) as i32 <= 0;
            if advanced {
                self.snd_una = ack;
                self.dup_acks = 0;
                self.last_progress = Instant::now();
            } else if ack == self.snd_una && len == 0 && self.snd_una != self.snd_nxt {
                self.dup_acks += 1;
            }
            self.peer_window = wnd;
        }
        if len == 0 && flags & FIN == 0 {
            return Ok(false);
        }
        let seq = be32(f, l4 + 4);
        if seq != self.rcv_nxt {
            // Out of order or old: say where we are.
            return Ok(true);
        }
        let off = u64::from(seq.wrapping_sub(self.rcv_base()));
        data(off, &f[l4 + thl..l4 + thl + len])?;
        self.rcv_nxt = self.rcv_nxt.wrapping_add(len as u32);
        if flags & FIN != 0 {
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
        self.last_progress = Instant::now();
        Ok(true)
    }

    /// The peer's first data byte's sequence number.
    fn rcv_base(&self) -> u32 {
        self.peer_iss_plus_one
    }

    /// Send `total` bytes, byte `i` being what `fill(i, ..)` writes, and
    /// wait until the peer acknowledged them all.
    ///
    /// # Errors
    ///
    /// A message when the peer resets, nothing moves for `timeout`, or the
    /// frontend fails.
    pub fn send(&mut self, total: u64, fill: impl Fn(u64, &mut [u8]), timeout: Duration) -> R<()> {
        let start = self.iss.wrapping_add(1);
        let sent_off = |s: &Self| u64::from(s.snd_nxt.wrapping_sub(start));
        let acked_off = |s: &Self| u64::from(s.snd_una.wrapping_sub(start));
        let mut ignore = |_: u64, _: &[u8]| Ok(());
        let seg_max = if self.gso {
            let m = usize::from(self.mss.max(1));
            ((65535 - ETH - IP - TCP) / m * m).max(m)
        } else {
            usize::from(self.mss.max(1))
        };
        self.last_progress = Instant::now();
        while acked_off(self) < total {
            let mut busy = false;
            while self
                .nic
                .recv_packet(&mut self.rx)
                .map_err(|e| e.to_string())?
                .is_some()
            {
                self.on_segment(&mut ignore)?;
                busy = true;
            }
            if self.dup_acks >= 3 || self.last_progress.elapsed() > Duration::from_millis(200) {
                if self.snd_nxt != self.snd_una {
                    self.stats.retransmits += 1;
                    self.snd_nxt = self.snd_una;
                }
                self.dup_acks = 0;
                self.last_progress = Instant::now();
            }
            loop {
                let in_flight = u64::from(self.snd_nxt.wrapping_sub(self.snd_una));
                let window = u64::from(self.peer_window.max(u32::from(self.mss)));
                let left = total - sent_off(self);
                let room = window.saturating_sub(in_flight);
                let n = (seg_max as u64).min(left).min(room) as usize;
                if n == 0 {
                    break;
                }
                let flags = ACK | if n as u64 == left { PSH } else { 0 };
                let gso = (self.gso && n > usize::from(self.mss)).then_some(self.mss);
                if !self.emit(self.snd_nxt, flags, n, &fill, gso)? {
                    break;
                }
                self.snd_nxt = self.snd_nxt.wrapping_add(n as u32);
                busy = true;
            }
            if !busy {
                self.nic
                    .wait(Duration::from_millis(2))
                    .map_err(|e| e.to_string())?;
            }
            if self.last_progress.elapsed() > timeout {
                return Err(format!(
                    "sending: {} of {total} bytes acknowledged, nothing moved for {timeout:?}",
                    acked_off(self)
                ));
            }
        }
        Ok(())
    }

    /// Receive `total` bytes, each chunk handed to `data(offset, bytes)` in
    /// stream order (an error from it ends the transfer), acknowledging as
    /// they come.
    ///
    /// # Errors
    ///
    /// A message when `data` fails, the peer resets, nothing arrives for
    /// `timeout`, or the frontend fails.
    pub fn receive(
        &mut self,
        total: u64,
        mut data: impl FnMut(u64, &[u8]) -> R<()>,
        timeout: Duration,
    ) -> R<()> {
        let mut unacked = 0u32;
        self.last_progress = Instant::now();
        loop {
            let mut got = false;
            while let Some(meta) = self
                .nic
                .recv_packet(&mut self.rx)
                .map_err(|e| e.to_string())?
            {
                if meta.gso.is_some() {
                    self.stats.gso_received += 1;
                }
                if self.on_segment(&mut data)? {
                    unacked += 1;
                }
                got = true;
                if unacked >= 8 {
                    self.emit(self.snd_nxt, ACK, 0, |_, _| {}, None)?;
                    unacked = 0;
                }
            }
            let done = u64::from(self.rcv_nxt.wrapping_sub(self.rcv_base())) >= total;
            if unacked > 0 && (!got || done) {
                self.emit(self.snd_nxt, ACK, 0, |_, _| {}, None)?;
                unacked = 0;
            }
            if done {
                return Ok(());
            }
            if !got {
                self.nic
                    .wait(Duration::from_millis(2))
                    .map_err(|e| e.to_string())?;
            }
            if self.last_progress.elapsed() > timeout {
                return Err(format!(
                    "receiving: {} of {total} bytes, nothing came for {timeout:?}",
                    self.rcv_nxt.wrapping_sub(self.rcv_base())
                ));
            }
        }
    }

    /// End the connection with a reset.
    ///
    /// # Errors
    ///
    /// A message when the frontend fails.
    pub fn abort(mut self) -> R<()> {
        self.emit(self.snd_nxt, RST | ACK, 0, |_, _| {}, None)?;
        Ok(())
    }
}
