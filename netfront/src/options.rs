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
