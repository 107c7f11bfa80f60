//! Where the backend's packets go and come from: the [`Network`] trait a
//! custom network backend implements (a userspace switch, a packet filter), one
//! [`Frames`] per queue, a Linux TAP device ([`TapNetwork`]), and an in-memory
//! network for tests and fuzzing ([`MemNetwork`]).
//!
//! Both traits speak `std::io`. What each outcome means to the frontend:
//!
//! | a [`Frames`] method returns | the frontend sees | counted in |
//! | --- | --- | --- |
//! | `send`: `Ok(Sent::Delivered)` | `NETIF_RSP_OKAY` | `tx_packets`, `tx_bytes` |
//! | `send`: `Ok(Sent::Dropped)` | `NETIF_RSP_OKAY` (a wire that lost it) | `tx_network_drops` |
//! | `send`: `Ok(Sent::Busy)`, or `Err` of kind `WouldBlock` | nothing yet: offered again (back-pressure) | `tx_busy` |
//! | `send`: any other `Err` | `NETIF_RSP_ERROR` for that packet; the ring goes on | `tx_network_errors` |
//! | `recv`: `Ok(Some(_))` | the packet, in its posted buffers | `rx_packets`, `rx_bytes` |
//! | `recv`: `Ok(None)`, or `Err` of kind `WouldBlock` | nothing: the queue sleeps until `ready_fd` polls readable (or 1 ms) | |
//! | `recv`: any other `Err` | the queue stops and the frontend is disconnected (served again if it comes back) | |
//! | [`Network::queue`] or [`Network::set_rx_offloads`]: `Err` | disconnected at connection time | |
//!
//! Offloads are optional: a network that implements none of the offload
//! methods gets whole frames with their checksums done (netback finishes
//! checksums the frontend left blank, and offers no GSO), and its packets for
//! the frontend are plain frames.

use crate::packet::{Checksum, GsoKind, Meta, Offloads, Received, Sent};
use crate::rxbuf::RxBuf;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use xenio_hostio::tap::{
    Tap, TapConfig, TapOffload, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VirtioNetHdr,
};
use xenio_hostio::tapring::{TapIo, TapReader, TapWriter};

/// One queue's packet sink and source; each queue's thread owns its own.
pub trait Frames: Send {
    /// Hand a packet from the frontend to the network. `meta` carries only
    /// offloads the [`Network`] said it takes ([`Network::offloads`]); with
    /// none it is always `Meta::default()`.
    ///
    /// # Errors
    ///
    /// See the module's table: `WouldBlock` is [`Sent::Busy`], any other error
    /// fails this packet only.
    fn send(&mut self, frame: &[u8], meta: &Meta) -> io::Result<Sent>;

    /// Take one packet for the frontend into `buf` (65,550 bytes: the largest
    /// GSO packet), without blocking; `Ok(None)` if none is waiting. Offload
    /// metadata beyond what [`Network::set_rx_offloads`] last allowed is dealt
    /// with by netback (checksums completed, large segments cut).
    ///
    /// # Errors
    ///
    /// See the module's table: `WouldBlock` is `Ok(None)`, any other error
    /// disconnects the frontend.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Received>>;

    /// Hand packets to the network in order, pushing one result per packet to
    /// `out` as [`Frames::send`] answers; after a [`Sent::Busy`] (or
    /// `WouldBlock`) the rest are not offered (`out` is shorter). The default
    /// calls [`Frames::send`] for each; a network that can write several
    /// packets per system call (a TAP through io_uring) does so.
    fn send_many(&mut self, frames: &[(&[u8], Meta)], out: &mut Vec<io::Result<Sent>>) {
        for (frame, meta) in frames {
            let r = self.send(frame, meta);
            let busy = match &r {
                Ok(Sent::Busy) => true,
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                _ => false,
            };
            out.push(r);
            if busy {
                break;
            }
        }
    }

    /// Take up to `max` packets (at least one is tried) for the frontend
    /// without blocking, handing each to `f` with its buffer until `f`
    /// answers `false`; returns how many were handed over. Buffers come from
    /// `spare` (and a buffer not filled goes back to it). The default calls
    /// [`Frames::recv`] for each; a TAP keeps reads armed through io_uring
    /// and collects them with one system call.
    ///
    /// # Errors
    ///
    /// As [`Frames::recv`] (`WouldBlock` is no packet).
    fn recv_many(
        &mut self,
        max: usize,
        spare: &mut Vec<RxBuf>,
        f: &mut dyn FnMut(RxBuf, Received) -> bool,
    ) -> io::Result<usize> {
        recv_each(self, max, spare, f)
    }

    /// A second descriptor polled with [`Frames::ready_fd`]: one that polls
    /// readable while packets taken by [`Frames::recv_many`] wait to be
    /// handed over (a TAP's io_uring). Default: none.
    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// How packets are read and written, for the exit line (`reads io_uring,
    /// deferred task running, writes writev per packet`, say): what the
    /// queue chose at run time where it had a choice. Default: nothing to
    /// say.
    fn io_mode(&self) -> Option<String> {
        None
    }

    /// A descriptor that polls readable while [`Frames::recv`] has a packet
    /// (and writable when a [`Sent::Busy`] network can take one again), if
    /// there is one; otherwise the queue looks every millisecond while idle.
    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// A network the backend attaches a device's queues to.
pub trait Network: Send + Sync {
    /// One queue's packets.
    type Queue: Frames;

    /// The packets of queue `index` of `count` (called at every connection).
    ///
    /// # Errors
    ///
    /// Any error disconnects the frontend (served again if it comes back).
    fn queue(&self, index: u32, count: u32) -> io::Result<Self::Queue>;

    /// What to call it in messages.
    fn describe(&self) -> String {
        "network".into()
    }

    /// The offloads [`Frames::send`] takes: netback offers the frontend GSO of
    /// the kinds it takes (`feature-gso-tcpv4`, `-tcpv6`) and passes partial
    /// checksums through; without them it finishes checksums itself. Default:
    /// none.
    fn offloads(&self) -> Offloads {
        Offloads::NONE
    }

    /// At each connection (and with [`Offloads::NONE`] after it): the
    /// offloads the frontend takes, so that a network that can leave work
    /// undone (a TAP's `TUNSETOFFLOAD`) leaves only that. Default: nothing to
    /// do (netback finishes anything the frontend cannot take).
    ///
    /// # Errors
    ///
    /// Any error disconnects the frontend.
    fn set_rx_offloads(&self, frontend_takes: Offloads) -> io::Result<()> {
        let _ = frontend_takes;
        Ok(())
    }
}

/// The virtio-net header for a packet with `meta`.
pub fn vnet_hdr(meta: &Meta) -> VirtioNetHdr {
    let mut h = VirtioNetHdr::default();
    match meta.checksum {
        Checksum::Partial { start, offset } => {
            h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
            h.csum_start = start;
            h.csum_offset = offset;
        }
        Checksum::Validated => h.flags = VIRTIO_NET_HDR_F_DATA_VALID,
        Checksum::None => {}
    }
    if let Some(g) = meta.gso {
        h.gso_type = match g.kind {
            GsoKind::TcpV4 => VIRTIO_NET_HDR_GSO_TCPV4,
            GsoKind::TcpV6 => VIRTIO_NET_HDR_GSO_TCPV6,
        };
        h.gso_size = g.size;
        h.hdr_len = g.hdr_len;
    }
    h
}

/// The metadata a virtio-net header gives; `None` for a GSO type netif cannot
/// carry (UDP fragmentation: never asked for, so never given).
pub fn meta_of(h: &VirtioNetHdr) -> Option<Meta> {
    let checksum = if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        Checksum::Partial {
            start: h.csum_start,
            offset: h.csum_offset,
        }
    } else if h.flags & VIRTIO_NET_HDR_F_DATA_VALID != 0 {
        Checksum::Validated
    } else {
        Checksum::None
    };
    let kind = match h.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => None,
        VIRTIO_NET_HDR_GSO_TCPV4 => Some(GsoKind::TcpV4),
        VIRTIO_NET_HDR_GSO_TCPV6 => Some(GsoKind::TcpV6),
        _ => return None,
    };
    Some(Meta {
        checksum,
        gso: kind.map(|kind| crate::packet::Gso {
            kind,
            size: h.gso_size,
            hdr_len: h.hdr_len,
        }),
    })
}

/// [`Frames::recv_many`] by one [`Frames::recv`] per packet: the default, and
/// a TAP's path without io_uring.
fn recv_each<F: Frames + ?Sized>(
    frames: &mut F,
    max: usize,
    spare: &mut Vec<RxBuf>,
    f: &mut dyn FnMut(RxBuf, Received) -> bool,
) -> io::Result<usize> {
    let mut got = 0;
    for _ in 0..max.max(1) {
        let mut buf = spare.pop().unwrap_or_default();
        match frames.recv(buf.bytes_mut()) {
            Ok(Some(r)) => {
                got += 1;
                if !f(buf, r) {
                    break;
                }
            }
            Ok(None) => {
                spare.push(buf);
                break;
            }
            Err(e) => {
                spare.push(buf);
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
        }
    }
    Ok(got)
}

/// Reads armed at once on a TAP queue (each with a 64 KiB buffer).
const TAP_READS: usize = 32;

/// One queue of a TAP device. With the virtio-net header, packets are read
/// and written in batches through io_uring ([`TapReader`], [`TapWriter`]),
/// one system call per batch; `XENIO_TAP_IO=plain` in the environment (or no
/// io_uring in the kernel) makes it one `readv`/`writev` per packet.
pub struct TapQueue {
    tap: Arc<Tap>,
    reader: Option<TapReader>,
    writer: Option<TapWriter>,
    /// Headers and frames of one `send_many`, kept between batches.
    hdrs: Vec<VirtioNetHdr>,
    results: Vec<xenio_hostio::Result<bool>>,
}

impl std::fmt::Debug for TapQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapQueue")
            .field("tap", &self.tap)
            .field("reads", &self.reader.as_ref().and_then(TapReader::mode))
            .field("writes", &self.writer.as_ref().and_then(TapWriter::mode))
            .finish()
    }
}

impl TapQueue {
    fn new(tap: Arc<Tap>, io: TapIo) -> TapQueue {
        let batched = tap.vnet_hdr();
        TapQueue {
            reader: batched.then(|| TapReader::new(tap.clone(), TAP_READS, io)),
            writer: batched.then(|| TapWriter::new(tap.clone(), io)),
            tap,
            hdrs: Vec::new(),
            results: Vec::new(),
        }
    }
}

fn sent_of(r: xenio_hostio::Result<bool>) -> io::Result<Sent> {
    Ok(if r? { Sent::Delivered } else { Sent::Dropped })
}

impl Frames for TapQueue {
    fn send(&mut self, frame: &[u8], meta: &Meta) -> io::Result<Sent> {
        let ok = if self.tap.vnet_hdr() {
            self.tap.write_packet(&vnet_hdr(meta), frame)?
        } else {
            self.tap.write(frame)?
        };
        Ok(if ok { Sent::Delivered } else { Sent::Dropped })
    }

    fn io_mode(&self) -> Option<String> {
        // `None` for a side never used (its ring is set up at first use).
        let side = |name: &str, batched: Option<Option<&'static str>>, plain: &str| match batched {
            Some(Some(m)) => Some(format!("{name} {m}")),
            Some(None) => None,
            None => Some(format!("{name} {plain}")),
        };
        let parts: Vec<String> = [
            side(
                "reads",
                self.reader.as_ref().map(TapReader::mode),
                "read per packet",
            ),
            side(
                "writes",
                self.writer.as_ref().map(TapWriter::mode),
                "write per packet",
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    fn send_many(&mut self, frames: &[(&[u8], Meta)], out: &mut Vec<io::Result<Sent>>) {
        let Some(w) = &mut self.writer else {
            out.extend(frames.iter().map(|(f, m)| self.send(f, m)));
            return;
        };
        self.hdrs.clear();
        self.hdrs.extend(frames.iter().map(|(_, m)| vnet_hdr(m)));
        let packets: Vec<(VirtioNetHdr, &[u8])> = self
            .hdrs
            .iter()
            .zip(frames)
            .map(|(h, (f, _))| (*h, *f))
            .collect();
        self.results.clear();
        let failed = w.write_batch(&packets, &mut self.results).err();
        out.extend(self.results.drain(..).map(sent_of));
        if let Some(e) = failed {
            let e = io::Error::from(e);
            // The ring failed: what was not written fails with it.
            for _ in out.len()..frames.len() {
                out.push(Err(io::Error::new(e.kind(), e.to_string())));
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        if !self.tap.vnet_hdr() {
            return Ok(self.tap.read(buf)?.map(|len| Received {
                len,
                meta: Meta::default(),
            }));
        }
        loop {
            let Some((h, len)) = self.tap.read_packet(buf)? else {
                return Ok(None);
            };
            match meta_of(&h) {
                Some(meta) => return Ok(Some(Received { len, meta })),
                // A kind of packet never asked for: not for this frontend.
                None => tracing::debug!("{}: dropping a packet with {h:?}", self.tap.name()),
            }
        }
    }

    fn recv_many(
        &mut self,
        max: usize,
        spare: &mut Vec<RxBuf>,
        f: &mut dyn FnMut(RxBuf, Received) -> bool,
    ) -> io::Result<usize> {
        let Some(r) = &mut self.reader else {
            return recv_each(self, max, spare, f);
        };
        let name = self.tap.name();
        let mut take = || spare.pop().unwrap_or_default();
        Ok(
            r.read_batch(max, &mut take, &mut |buf, h, len| match meta_of(&h) {
                Some(meta) => f(buf, Received { len, meta }),
                None => {
                    // A kind of packet never asked for: not for this frontend.
                    tracing::debug!("{name}: dropping a packet with {h:?}");
                    true
                }
            })?,
        )
    }

    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        self.reader.as_ref().and_then(TapReader::completion_fd)
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.tap.as_fd())
    }
}

/// A Linux TAP device (`IFF_TAP | IFF_NO_PI`, and `IFF_VNET_HDR` unless asked
/// not to). Queue 0 is opened at once and kept for the backend's lifetime (so
/// a device the backend created lives as long as it); further queues need a
/// device created with `multi_queue` and are opened per connection.
///
/// With the virtio-net header, frames go to the host with their offloads
/// (checksums left to the host, TCP segments of up to 64 KiB), and the device
/// is told at every connection which offloads the frontend takes
/// (`TUNSETOFFLOAD`), and none between connections: a persistent TAP that
/// another frontend used keeps none of its offloads.
#[derive(Debug)]
pub struct TapNetwork {
    first: Arc<Tap>,
    config: TapConfig,
}

impl TapNetwork {
    /// Attach to (or create) the TAP device `name`, with the virtio-net header.
    /// `multi_queue` must match an existing device's and is needed for more
    /// than one queue.
    ///
    /// # Errors
    ///
    /// As [`Tap::open_with`].
    pub fn open(name: &str, multi_queue: bool) -> io::Result<Self> {
        Self::open_with(
            name,
            TapConfig {
                multi_queue,
                vnet_hdr: true,
            },
        )
    }

    /// As [`TapNetwork::open`], with or without the virtio-net header (without
    /// it, no offloads: whole frames both ways).
    ///
    /// # Errors
    ///
    /// As [`Tap::open_with`].
    pub fn open_with(name: &str, config: TapConfig) -> io::Result<Self> {
        Ok(TapNetwork {
            first: Arc::new(Tap::open_with(name, &config)?),
            config,
        })
    }

    /// Whether more than one queue can be attached.
    pub fn multi_queue(&self) -> bool {
        self.config.multi_queue
    }
}

impl Network for TapNetwork {
    type Queue = TapQueue;

    fn queue(&self, index: u32, _count: u32) -> io::Result<TapQueue> {
        if index == 0 {
            return Ok(TapQueue::new(self.first.clone(), TapIo::from_env()));
        }
        if !self.config.multi_queue {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("queue {index}: TAP {} is single-queue", self.first.name()),
            ));
        }
        Ok(TapQueue::new(
            Arc::new(Tap::open_with(self.first.name(), &self.config)?),
            TapIo::from_env(),
        ))
    }

    fn describe(&self) -> String {
        format!(
            "TAP {}{}",
            self.first.name(),
            if self.config.vnet_hdr {
                " (virtio-net header: offloads)"
            } else {
                ""
            }
        )
    }

    fn offloads(&self) -> Offloads {
        if self.config.vnet_hdr {
            Offloads::ALL
        } else {
            Offloads::NONE
        }
    }

    fn set_rx_offloads(&self, takes: Offloads) -> io::Result<()> {
        if !self.config.vnet_hdr {
            return Ok(());
        }
        let takes = takes.normalized();
        // One checksum bit for both IP versions: netback finishes the version
        // the frontend does not take.
        Ok(self.first.set_offload(&TapOffload {
            csum: takes.csum_ipv4 || takes.csum_ipv6,
            tso4: takes.tso4,
            tso6: takes.tso6,
            tso_ecn: false,
        })?)
    }
}

/// Packets in memory: what the frontend sent (`sent`, and their metadata in
/// `sent_meta`), and packets to deliver to it (`incoming` as plain frames,
/// `incoming_meta` with metadata, taken first). For tests and fuzzing.
#[derive(Debug, Default)]
pub struct MemFrames {
    /// Frames the backend handed to the network.
    pub sent: Mutex<Vec<Vec<u8>>>,
    /// The metadata of each, in the same order.
    pub sent_meta: Mutex<Vec<Meta>>,
    /// Frames waiting to go to the frontend.
    pub incoming: Mutex<VecDeque<Vec<u8>>>,
    /// Packets with metadata waiting to go to the frontend (before `incoming`).
    pub incoming_meta: Mutex<VecDeque<(Vec<u8>, Meta)>>,
}

fn poisoned<T>(_: T) -> io::Error {
    io::Error::other("poisoned")
}

impl Frames for Arc<MemFrames> {
    fn send(&mut self, frame: &[u8], meta: &Meta) -> io::Result<Sent> {
        self.sent.lock().map_err(poisoned)?.push(frame.to_vec());
        self.sent_meta.lock().map_err(poisoned)?.push(*meta);
        Ok(Sent::Delivered)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let copy = |f: &[u8], buf: &mut [u8]| {
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            n
        };
        if let Some((f, meta)) = self.incoming_meta.lock().map_err(poisoned)?.pop_front() {
            return Ok(Some(Received {
                len: copy(&f, buf),
                meta,
            }));
        }
        let mut q = self.incoming.lock().map_err(poisoned)?;
        Ok(q.pop_front().map(|f| Received {
            len: copy(&f, buf),
            meta: Meta::default(),
        }))
    }
}

/// An in-memory network: every queue shares one [`MemFrames`]; it takes the
/// offloads in `offloads` (none by default).
#[derive(Debug, Default, Clone)]
pub struct MemNetwork {
    /// The packets.
    pub frames: Arc<MemFrames>,
    /// What its queues' `send` takes.
    pub offloads: Offloads,
}

impl Network for MemNetwork {
    type Queue = Arc<MemFrames>;
    fn queue(&self, _index: u32, _count: u32) -> io::Result<Arc<MemFrames>> {
        Ok(self.frames.clone())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
    fn offloads(&self) -> Offloads {
        self.offloads
    }
}
