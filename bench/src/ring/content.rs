//! What the ring benchmark's requests carry, and how each side checks what it
//! got.
//!
//! Request number `seq` (counting from 0 in each measurement) has `id = seq`, a
//! sector number, operation, segment count and grant references all derived from
//! `seq`, so the backend can check every request it takes and the frontend every
//! response (its `id`, `operation` and status, in order). The checks return a
//! small `Copy` [`Mismatch`] on failure and allocate nothing.

use std::fmt;
use xenio_xen_sys::blkif::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_OKAY,
    BLKIF_SECTORS_PER_PAGE, BlkifRequest, BlkifRequestSegment, BlkifResponse,
};

/// The virtual device handle every benchmark request carries.
pub const BENCH_VDEV: u16 = 0x51;

/// The operation of request `seq`: reads and writes alternate.
pub fn operation(seq: u64) -> u8 {
    if seq & 1 == 0 {
        BLKIF_OP_READ
    } else {
        BLKIF_OP_WRITE
    }
}

/// The segment count of request `seq`: 1 to 11, cycling.
pub fn nr_segments(seq: u64) -> u8 {
    1 + (seq % BLKIF_MAX_SEGMENTS_PER_REQUEST as u64) as u8
}

/// The start sector of request `seq`: each request covers a fresh 44 KiB stretch.
pub fn sector_number(seq: u64) -> u64 {
    seq.wrapping_mul(BLKIF_MAX_SEGMENTS_PER_REQUEST as u64 * u64::from(BLKIF_SECTORS_PER_PAGE))
}

/// The grant reference of segment `i` of request `seq`.
pub fn gref(seq: u64, i: usize) -> u32 {
    (seq as u32).wrapping_mul(16).wrapping_add(i as u32)
}

/// Request number `seq`.
#[inline]
pub fn request(seq: u64) -> BlkifRequest {
    let nr = nr_segments(seq);
    let mut req = BlkifRequest {
        operation: operation(seq),
        nr_segments: nr,
        handle: BENCH_VDEV,
        id: seq,
        sector_number: sector_number(seq),
        ..Default::default()
    };
    for (i, seg) in req.seg.iter_mut().take(usize::from(nr)).enumerate() {
        *seg = BlkifRequestSegment {
            gref: gref(seq, i),
            first_sect: 0,
            last_sect: BLKIF_SECTORS_PER_PAGE - 1,
            _pad: [0; 2],
        };
    }
    req
}

/// The response the backend sends for `req`: its id and operation echoed, OKAY.
#[inline]
pub fn response(req: &BlkifRequest) -> BlkifResponse {
    BlkifResponse::new(req.id, req.operation, BLKIF_RSP_OKAY)
}

/// An entry that did not carry what it should have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The request number expected at this position.
    pub expected_id: u64,
    /// The id found.
    pub got_id: u64,
    /// The first field found wrong.
    pub field: &'static str,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "id" {
            write!(
                f,
                "expected id {}, got id {}",
                self.expected_id, self.got_id
            )
        } else {
            write!(f, "entry with id {}: wrong {}", self.got_id, self.field)
        }
    }
}

/// The backend's check: is `req` request number `expected_id`, intact?
#[inline]
pub fn check_request(req: &BlkifRequest, expected_id: u64) -> Result<(), Mismatch> {
    let bad = |field| {
        Err(Mismatch {
            expected_id,
            got_id: req.id,
            field,
        })
    };
    if req.id != expected_id {
        return bad("id");
    }
    if req.operation != operation(expected_id) {
        return bad("operation");
    }
    if req.handle != BENCH_VDEV {
        return bad("handle");
    }
    if req.sector_number != sector_number(expected_id) {
        return bad("sector_number");
    }
    let nr = req.nr_segments;
    if nr != nr_segments(expected_id) {
        return bad("nr_segments");
    }
    for (i, seg) in req.seg.iter().enumerate() {
        let ok = if i < usize::from(nr) {
            seg.gref == gref(expected_id, i)
                && seg.first_sect == 0
                && seg.last_sect == BLKIF_SECTORS_PER_PAGE - 1
        } else {
            *seg == BlkifRequestSegment::default()
        };
        if !ok {
            return bad("segment");
        }
    }
    Ok(())
}

/// The frontend's check: is `rsp` the answer to request number `expected_id`?
#[inline]
pub fn check_response(rsp: &BlkifResponse, expected_id: u64) -> Result<(), Mismatch> {
    let bad = |field| {
        Err(Mismatch {
            expected_id,
            got_id: rsp.id,
            field,
        })
    };
    if rsp.id != expected_id {
        return bad("id");
    }
    if rsp.operation != operation(expected_id) {
        return bad("operation");
    }
    if rsp.status != BLKIF_RSP_OKAY {
        return bad("status");
    }
    Ok(())
}

/// Verification errors seen by one side during one measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Entries found wrong.
    pub errors: u64,
    /// The first of them.
    pub first: Option<Mismatch>,
}

impl Tally {
    /// Count the outcome of one check.
    #[inline]
    pub fn record(&mut self, check: Result<(), Mismatch>) {
        if let Err(m) = check {
            self.errors += 1;
            self.first.get_or_insert(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_check_out() {
        for seq in [0, 1, 10, 11, 12, u64::from(u32::MAX) + 5] {
            let req = request(seq);
            assert_eq!(check_request(&req, seq), Ok(()));
            assert_eq!(check_response(&response(&req), seq), Ok(()));
        }
    }

    #[test]
    fn a_wrong_entry_is_caught() {
        let mut req = request(12);
        assert_eq!(check_request(&req, 13).unwrap_err().field, "id");
        req.seg[5].gref ^= 1;
        assert_eq!(check_request(&req, 12).unwrap_err().field, "segment");
        let rsp = response(&request(3));
        assert_eq!(
            check_response(&rsp, 4).unwrap_err().to_string(),
            "expected id 4, got id 3"
        );
        let mut t = Tally::default();
        t.record(check_response(&rsp, 3));
        t.record(check_response(&rsp, 4));
        t.record(check_response(&rsp, 5));
        assert_eq!(t.errors, 2);
        assert_eq!(t.first.map(|m| m.expected_id), Some(4));
    }
}
