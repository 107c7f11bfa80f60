//! The buffer one packet from the network is read into on its way to the
//! frontend, its bytes starting on a page boundary.
//!
//! Why aligned: a grant copy (`IOCTL_GNTDEV_GRANT_COPY`) splits every segment
//! at the local buffer's page boundaries and pins each local page for its op,
//! and Xen's `GNTTABOP_copy` is issued 16 ops at a time. A 64 KiB packet read
//! into a heap buffer (which starts 16 bytes into a page) becomes 33 ops, each
//! 4 KiB slot of the frontend's straddling two local pages; aligned, it is 17.

use crate::tx::PAGE;

/// Bytes of one rx buffer: the largest packet a TAP gives (64 KiB of IP
/// and an Ethernet header, with room to spare).
pub const RX_BUF: usize = 65_550;

/// [`RX_BUF`] bytes starting on a page boundary, inside a heap allocation one
/// page larger (no `unsafe`: the aligned window is found with
/// `align_offset`). Never grows or moves once made.
pub struct RxBuf {
    mem: Vec<u8>,
    start: usize,
}

impl RxBuf {
    /// A zeroed buffer.
    pub fn new() -> Self {
        let mem = vec![0u8; RX_BUF + PAGE];
        // (align_offset may answer usize::MAX when it cannot tell: then the
        // window starts at 0, unaligned, which only costs grant-copy ops.)
        let start = match mem.as_ptr().align_offset(PAGE) {
            n if n < PAGE => n,
            _ => 0,
        };
        RxBuf { mem, start }
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + RX_BUF]
    }

    /// The packet's bytes, to read into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + RX_BUF]
    }
}

impl Default for RxBuf {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
