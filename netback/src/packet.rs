//! What travels with a packet between netback and a [`Network`](crate::Network):
//! its offload metadata ([`Meta`]: a checksum left to compute, a TCP segment
//! of up to 64 KiB to cut into MTU-sized ones), the offloads a network or a
//! frontend takes ([`Offloads`]), and the outcome of handing a packet over
//! ([`Sent`], [`Received`]).
//!
//! The meanings are those of the virtio-net header (`linux/virtio_net.h`) and
//! of Linux's `CHECKSUM_PARTIAL` / `CHECKSUM_UNNECESSARY`, so a network that is
//! a TAP device passes them through unchanged, and a network that ignores them
//! (the defaults) sees only whole frames with their checksums done.

/// The checksum state of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checksum {
    /// Nothing is claimed: the checksums are complete (or the receiver checks
    /// them).
    #[default]
    None,
    /// The transport checksum is still to compute: the 16 bits at `start +
    /// offset` hold the pseudo-header sum, and the checksum covers `start`
    /// to the end of the packet (virtio's `NEEDS_CSUM`, Linux's
    /// `CHECKSUM_PARTIAL`). `start` counts from the first byte of the
    /// Ethernet header.
    Partial {
        /// Where the checksummed part starts (the transport header).
        start: u16,
        /// Where the checksum field is, from `start` (16 for TCP, 6 for UDP).
        offset: u16,
    },
    /// The checksums were verified (virtio's `DATA_VALID`).
    Validated,
}

/// The kind of a large segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
}

/// A TCP segment of up to 64 KiB to be cut into segments of `size` payload
/// bytes (the MSS), each with the headers repeated (GSO, TSO). Such a packet
/// always has [`Checksum::Partial`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// TCP over IPv4 or IPv6.
    pub kind: GsoKind,
    /// Payload bytes per segment.
    pub size: u16,
    /// Bytes of the Ethernet, IP and TCP headers.
    pub hdr_len: u16,
}

/// The offload metadata of one packet. `Meta::default()` is a plain frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The checksum state.
    pub checksum: Checksum,
    /// Set for a large TCP segment.
    pub gso: Option<Gso>,
}

/// Offloads one side takes: partial checksums ([`Checksum::Partial`]) for
/// IPv4 and IPv6, and large TCP segments ([`Gso`]) of each kind. Without an
/// offload, packets of that kind come whole, their checksums done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Partial TCP/UDP checksums over IPv4.
    pub csum_ipv4: bool,
    /// Partial TCP/UDP checksums over IPv6.
    pub csum_ipv6: bool,
    /// Large TCP segments over IPv4 (implies `csum_ipv4`).
    pub tso4: bool,
    /// Large TCP segments over IPv6 (implies `csum_ipv6`).
    pub tso6: bool,
}

impl Offloads {
    /// None: whole frames, checksums done.
    pub const NONE: Offloads = Offloads {
        csum_ipv4: false,
        csum_ipv6: false,
        tso4: false,
        tso6: false,
    };
    /// Every offload netif can carry.
    pub const ALL: Offloads = Offloads {
        csum_ipv4: true,
        csum_ipv6: true,
        tso4: true,
        tso6: true,
    };

    /// Both sides take it.
    pub fn and(self, o: Offloads) -> Offloads {
        Offloads {
            csum_ipv4: self.csum_ipv4 && o.csum_ipv4,
            csum_ipv6: self.csum_ipv6 && o.csum_ipv6,
            tso4: self.tso4 && o.tso4,
            tso6: self.tso6 && o.tso6,
        }
        .normalized()
    }

    /// TSO only with the checksum offload it needs.
    pub fn normalized(self) -> Offloads {
        Offloads {
            tso4: self.tso4 && self.csum_ipv4,
            tso6: self.tso6 && self.csum_ipv6,
            ..self
        }
    }

    /// Whether a packet with `meta` may go as it is to a side that takes these
    /// offloads (`ipv6`: the packet's IP version is 6).
    pub fn takes(&self, meta: &Meta, ipv6: bool) -> bool {
        let csum = if ipv6 { self.csum_ipv6 } else { self.csum_ipv4 };
        let gso_ok = match meta.gso {
            None => true,
            Some(g) => match g.kind {
                GsoKind::TcpV4 => self.tso4,
                GsoKind::TcpV6 => self.tso6,
            },
        };
        gso_ok && (csum || !matches!(meta.checksum, Checksum::Partial { .. }))
    }
}

/// What became of a packet handed to [`Frames::send`](crate::Frames::send).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The network took it. The frontend sees `NETIF_RSP_OKAY`.
    Delivered,
    /// The network chose not to carry it (a filter said no, no port for that
    /// address, a full queue it does not wait for). The frontend sees
    /// `NETIF_RSP_OKAY`, as from a wire that lost it; counted in
    /// `tx_network_drops`.
    Dropped,
    /// The network cannot take it *now*: netback keeps the packet (and every
    /// later one of that queue, in order) and offers it again when
    /// [`Frames::ready_fd`](crate::Frames::ready_fd) polls writable, or after a
    /// millisecond. Its ring slots stay unanswered meanwhile, which is the
    /// frontend's back-pressure. Counted in `tx_busy`.
    Busy,
}

/// A packet [`Frames::recv`](crate::Frames::recv) put in the caller's buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Its bytes (the start of the buffer), Ethernet header included.
    pub len: usize,
    /// Its offload metadata (`Meta::default()` for a plain frame).
    pub meta: Meta,
}
