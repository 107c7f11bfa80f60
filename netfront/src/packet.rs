//! The offload metadata of a packet sent with
//! [`NetFront::send_packet`](crate::NetFront::send_packet) or received with
//! [`NetFront::recv_packet`](crate::NetFront::recv_packet): a checksum left
//! blank, a TCP segment of up to 64 KiB for the backend (or the host behind it)
//! to cut (`xen/io/netif.h`: `NETTXF_csum_blank`, `NETRXF_data_validated`, the
//! GSO extra info).

/// The kind of a large segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4 (`XEN_NETIF_GSO_TYPE_TCPV4`).
    TcpV4,
    /// TCP over IPv6 (`XEN_NETIF_GSO_TYPE_TCPV6`).
    TcpV6,
}

/// A TCP segment of up to 64 KiB to be cut into segments of `mss` payload
/// bytes (GSO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// TCP over IPv4 or IPv6.
    pub kind: GsoKind,
    /// Payload bytes per segment.
    pub mss: u16,
}

/// Offload metadata of one packet. `PacketMeta::default()` is a plain frame
/// with its checksums done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// The TCP/UDP checksum is not computed: its field holds the pseudo-header
    /// sum, or anything when sending (xenio's backend writes the sum itself).
    /// Sending it needs checksum offload (on unless the backend says
    /// `feature-no-csum-offload`; for IPv6, `feature-ipv6-csum-offload`).
    pub csum_blank: bool,
    /// The checksums were verified (received), or need no check (sent).
    pub data_validated: bool,
    /// A large TCP segment. Sending one needs [`Options::gso`](crate::Options::gso)
    /// and the backend's `feature-gso-tcpv4` / `-tcpv6` ([`Info::gso_tcpv4`](crate::Info::gso_tcpv4));
    /// it goes with `csum_blank`.
    pub gso: Option<Gso>,
}
