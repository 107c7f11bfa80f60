//! What the frontend asks for ([`Options`]), what it got ([`Info`]), and the
//! limits of a frame.

use std::time::Duration;
use xenio_xen_sys::netif::XEN_NETIF_MAX_TX_SIZE;
use xenio_xen_sys::ring::XEN_PAGE_SIZE as PAGE;

/// Largest frame the protocol can describe.
pub const MAX_FRAME: usize = XEN_NETIF_MAX_TX_SIZE;

/// What the frontend asks for; the backend's features cap each.
#[derive(Clone, Debug)]
pub struct Options {
    /// Queues to use (capped by `multi-queue-max-queues`).
    pub queues: u32,
    /// Use split event channels if the backend offers them.
    pub split_event_channels: bool,
    /// Advertise `feature-sg` (receive frames over several buffers) and send
    /// frames over several slots when they need it (if the backend offers it).
    pub sg: bool,
    /// Most bytes per tx slot (at most 4096). Smaller values make every larger
    /// frame a multi-slot packet (tests, fragment handling).
    pub max_slot_bytes: usize,
    /// Offset of each frame's first fragment in its page (tests).
    pub tx_offset: u16,
    /// The MAC address; default: the toolstack's `mac` key, else 00:16:3e:00:00:01.
    pub mac: Option<[u8; 6]>,
    /// How long to wait for the backend at each handshake step.
    pub timeout: Duration,
    /// Take and send checksums left blank: advertise checksum offload
    /// (`feature-no-csum-offload` 0, `feature-ipv6-csum-offload` 1), so that
    /// received packets may come with `csum_blank` (the receiver finishes or
    /// trusts the checksum: [`NetFront::recv_packet`](crate::NetFront::recv_packet)).
    /// Off by default: smoltcp checks every checksum itself.
    pub csum_offload: bool,
    /// Take and send TCP segments of up to 64 KiB (`feature-gso-tcpv4`,
    /// `-tcpv6`; needs `sg` and `csum_offload`). Received packets may then be
    /// large segments, which smoltcp cannot take: for the raw-packet API.
    pub gso: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queues: 1,
            split_event_channels: true,
            sg: true,
            max_slot_bytes: PAGE,
            tx_offset: 0,
            mac: None,
            timeout: Duration::from_secs(30),
            csum_offload: false,
            gso: false,
        }
    }
}

/// What was negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Queues in use.
    pub queues: u32,
    /// Multi-slot packets in both directions.
    pub sg: bool,
    /// Two event channels per queue.
    pub split_event_channels: bool,
    /// The MTU (the `mtu` key, default 1500).
    pub mtu: usize,
    /// The MAC address.
    pub mac: [u8; 6],
    /// Checksum offload both ways (asked for, and the backend takes IPv4
    /// checksums left blank: it did not say `feature-no-csum-offload`).
    pub csum_offload: bool,
    /// Large IPv4 TCP segments may be sent (asked for, and the backend offers
    /// `feature-gso-tcpv4`) and may be received.
    pub gso_tcpv4: bool,
    /// The same for IPv6 (`feature-gso-tcpv6`).
    pub gso_tcpv6: bool,
}

/// The MAC address a frontend uses when neither the options nor the
/// toolstack give one.
pub(crate) const DEFAULT_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 1];

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
