//! The buffer one packet from the network is read into on its way to the
//! frontend, its bytes starting on a page boundary.
//!
//! Why aligned: a grant copy (`IOCTL_GNTDEV_GRANT_COPY`) splits every segment
//! at the local buffer's page boundaries and pins each local page for its op,
//! and Xen's `GNTTABOP_copy` is issued 16 ops at a time. A 64 KiB packet read
//! into a heap buffer (which starts 16 bytes into a page) becomes 33 ops, each
//! 4 KiB slot of the frontend's straddling two local pages; aligned, it is 17.

/// Bytes of one rx buffer: the largest packet a TAP gives (64 KiB of IP
/// and an Ethernet header, with room to spare).
pub const RX_BUF: usize = xenio_hostio::tapring::PACKET_BUF;

/// [`RX_BUF`] bytes starting on a page boundary (hostio's buffer, so that a
/// TAP read in flight can fill it and hand it over without a copy).
pub type RxBuf = xenio_hostio::tapring::PacketBuf;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::PAGE;

    #[test]
    fn starts_on_a_page_and_holds_the_largest_packet() {
        for _ in 0..8 {
            let mut b = RxBuf::new();
            assert_eq!(b.bytes().as_ptr() as usize % PAGE, 0);
            assert_eq!(b.bytes().len(), RX_BUF);
            b.bytes_mut()[RX_BUF - 1] = 7;
            assert_eq!(b.bytes()[RX_BUF - 1], 7);
        }
    }
}
