//! From an [`Op`] to blkif requests: the checks against the disk, and the
//! splitting of a buffer into requests of at most `max_segments` page segments
//! (11 in the ring slot, or up to the negotiated count in indirect pages).

use crate::error::{Error, Result};
use crate::op::Op;
use crate::options::Info;
use crate::pool::Buf;
use xenio_xen_sys::GrantRef;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::ring::XEN_PAGE_SIZE as PAGE;

const SECTOR: u64 = BLKIF_SECTOR_SIZE as u64;

/// One request waiting for a ring slot, or in one.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// `BLKIF_OP_*` (the indirect operation for an indirect request).
    pub(crate) operation: u8,
    pub(crate) sector: u64,
    pub(crate) segs: Vec<BlkifRequestSegment>,
    /// Sectors of a discard.
    pub(crate) discard_sectors: u64,
    /// The op this request belongs to (its token's number).
    pub(crate) pending: u64,
}

/// An op turned into requests.
pub(crate) struct Planned {
    /// Its requests, in disk order.
    pub(crate) specs: Vec<Spec>,
    /// Its buffer, back to the caller when the op completes.
    pub(crate) buf: Option<Buf>,
    /// What it is, for errors.
    pub(crate) what: &'static str,
}

/// Check `op` against the disk described by `info` and split it into
/// requests over the pool pages whose grants are `refs`. A refused op gives its
/// buffer back with the error (for the pool).
pub(crate) fn plan(
    op: Op,
    info: &Info,
    refs: &[GrantRef],
) -> std::result::Result<Planned, (Error, Option<Buf>)> {
    let check = |offset: u64, len: u64, what: &str, info: &Info| -> Result<()> {
        if offset % SECTOR != 0 || len % SECTOR != 0 || len == 0 {
            return Err(Error::Invalid(format!(
                "{what} of {len} bytes at {offset}: offset and length must be non-zero multiples of 512"
            )));
        }
        if offset.checked_add(len).is_none_or(|end| end > info.size()) {
            return Err(Error::Invalid(format!(
                "{what} of {len} bytes at {offset} is past the end of a {}-byte disk",
                info.size()
            )));
        }
        Ok(())
    };
    let planned = |specs, buf, what| Ok(Planned { specs, buf, what });
    match op {
        Op::Read { offset, buf } | Op::Write { offset, buf } | Op::WriteBarrier { offset, buf }
            if check(offset, buf.len as u64, "I/O", info).is_err() =>
        {
            let e = check(offset, buf.len as u64, "I/O", info).unwrap_err();
            Err((e, Some(buf)))
        }
        Op::Read { offset, buf } => planned(
            split(BLKIF_OP_READ, offset, &buf, info.max_segments, refs),
            Some(buf),
            "read",
        ),
        Op::Write { offset, buf } | Op::WriteBarrier { offset, buf } if info.readonly => Err((
            Error::Invalid(format!("write at {offset}: the disk is read-only")),
            Some(buf),
        )),
        Op::Write { offset, buf } => planned(
            split(BLKIF_OP_WRITE, offset, &buf, info.max_segments, refs),
            Some(buf),
            "write",
        ),
        Op::WriteBarrier { offset, buf } => {
            if buf.pages.len() > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                let n = buf.len;
                return Err((
                    Error::Invalid(format!(
                        "a barrier write carries at most 44 KiB, not {n} bytes"
                    )),
                    Some(buf),
                ));
            }
            planned(
                split(
                    BLKIF_OP_WRITE_BARRIER,
                    offset,
                    &buf,
                    BLKIF_MAX_SEGMENTS_PER_REQUEST,
                    refs,
                ),
                Some(buf),
                "barrier write",
            )
        }
        Op::Flush => planned(
            vec![Spec {
                operation: BLKIF_OP_FLUSH_DISKCACHE,
                sector: 0,
                segs: vec![],
                discard_sectors: 0,
                pending: 0,
            }],
            None,
            "flush",
        ),
        Op::Discard { offset, len } => {
            check(offset, len, "discard", info).map_err(|e| (e, None))?;
            if info.discard.is_none() {
                return Err((
                    Error::NotSupported("discard (the backend has no feature-discard)".into()),
                    None,
                ));
            }
            planned(
                vec![Spec {
                    operation: BLKIF_OP_DISCARD,
                    sector: offset / SECTOR,
                    segs: vec![],
                    discard_sectors: len / SECTOR,
                    pending: 0,
                }],
                None,
                "discard",
            )
        }
    }
}

/// Split a buffer I/O at byte `offset` into requests of at most `per` page
/// segments.
fn split(operation: u8, offset: u64, buf: &Buf, per: usize, refs: &[GrantRef]) -> Vec<Spec> {
    let mut out = Vec::new();
    let mut sector = offset / SECTOR;
    let mut left = buf.len as u64;
    for chunk in buf.pages.chunks(per) {
        let mut segs = Vec::with_capacity(chunk.len());
        let start = sector;
        for &p in chunk {
            let n = left.min(PAGE as u64);
            let sects = n.div_ceil(SECTOR) as u8;
            segs.push(BlkifRequestSegment {
                gref: refs[p as usize].0,
                first_sect: 0,
                last_sect: sects - 1,
                _pad: [0; 2],
            });
            sector += u64::from(sects);
            left -= n;
        }
        out.push(Spec {
            operation,
            sector: start,
            segs,
            discard_sectors: 0,
            pending: 0,
        });
    }
    out
}
