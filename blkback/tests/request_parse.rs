//! Every way a frontend can get a request wrong, and every accepted form.
//!
//! Statuses are those Linux's xen-blkback gives: BLKIF_RSP_EOPNOTSUPP for an
//! operation the backend does not do (unknown or reserved opcodes answered by
//! `dispatch_other_io`, features not offered), BLKIF_RSP_ERROR for a malformed
//! or forbidden request (`dispatch_rw_block_io`'s `fail_response`,
//! `xen_vbd_translate`).

use xenio_blkback::request::{
    IndirectHeader, Limits, Op, Parsed, Reject, Request, Segment, parse, parse_indirect,
};
use xenio_xen_sys::GrantRef;
use xenio_xen_sys::blkif::*;

const DISK: u64 = 1 << 21; // 1 GiB

fn limits() -> Limits {
    Limits {
        sectors: DISK,
        readonly: false,
        max_indirect_segments: 256,
        flush: true,
        barrier: true,
        discard: true,
    }
}

fn ro() -> Limits {
    Limits {
        readonly: true,
        ..limits()
    }
}

/// A request with `nr` full-page segments (grefs 100, 101, ...).
fn rw(operation: u8, sector: u64, nr: u8) -> BlkifRequest {
    let mut r = BlkifRequest {
        operation,
        nr_segments: nr,
        handle: 3,
        id: 0x1234_5678_9abc_def0,
        sector_number: sector,
        ..Default::default()
    };
    for (k, s) in r.seg.iter_mut().enumerate().take(usize::from(nr)) {
        s.gref = 100 + k as u32;
        s.first_sect = 0;
        s.last_sect = 7;
    }
    r
}

fn discard(sector: u64, nr_sectors: u64, flag: u8) -> BlkifRequest {
    BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        flag,
        handle: 3,
        id: 77,
        sector_number: sector,
        nr_sectors,
        ..Default::default()
    }
    .into()
}

fn indirect(indirect_op: u8, sector: u64, nr_segments: u16) -> BlkifRequest {
    BlkifRequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op,
        nr_segments,
        id: 99,
        sector_number: sector,
        handle: 3,
        indirect_grefs: [11, 12, 13, 14, 15, 16, 17, 18],
        ..Default::default()
    }
    .into()
}

/// Indirect page bytes for `nr` segments, each made by `f(k)`.
fn pages(nr: usize, f: impl Fn(usize) -> (u32, u8, u8)) -> Vec<u8> {
    let mut v = vec![0u8; nr.div_ceil(512) * 4096];
    for k in 0..nr {
        let (gref, first, last) = f(k);
        let seg = BlkifRequestSegment {
            gref,
            first_sect: first,
            last_sect: last,
            _pad: [0xAA; 2],
        };
        v[k * 8..k * 8 + 8].copy_from_slice(bytemuck::bytes_of(&seg));
    }
    v
}

fn ready(raw: &BlkifRequest, l: &Limits) -> Request {
    match parse(raw, l) {
        Ok(Parsed::Ready(r)) => r,
        other => panic!("expected a ready request, got {other:?}"),
    }
}

fn header(raw: &BlkifRequest, l: &Limits) -> IndirectHeader {
    match parse(raw, l) {
        Ok(Parsed::Indirect(h)) => h,
        other => panic!("expected an indirect header, got {other:?}"),
    }
}

#[track_caller]
fn rejected(raw: &BlkifRequest, l: &Limits, status: i16, words: &str) -> Reject {
    let rej = match parse(raw, l) {
        Err(r) => r,
        Ok(p) => panic!("expected a rejection ({words}), got {p:?}"),
    };
    check_reject(&rej, status, words);
    rej
}

#[track_caller]
fn check_reject(rej: &Reject, status: i16, words: &str) {
    assert_eq!(rej.status, status, "{rej}");
    assert!(
        rej.reason.contains(words),
        "reason {:?} lacks {words:?}",
        rej.reason
    );
    // The response is what goes on the ring: id and op echoed, padding zero.
    let rsp = rej.response();
    assert_eq!(
        (rsp.id, rsp.operation, rsp.status),
        (rej.id, rej.operation, status)
    );
    assert_eq!((rsp._pad0, rsp._pad1), (0, [0; 4]));
}

// ---- accepted forms ----

#[test]
fn read_and_write_with_one_to_eleven_segments() {
    for op in [BLKIF_OP_READ, BLKIF_OP_WRITE] {
        for nr in 1..=11u8 {
            let r = ready(&rw(op, 4096, nr), &limits());
            assert_eq!(r.id, 0x1234_5678_9abc_def0);
            assert_eq!(r.operation, op);
            assert_eq!(
                r.op,
                if op == BLKIF_OP_READ {
                    Op::Read
                } else {
                    Op::Write
                }
            );
            assert_eq!(r.sector, 4096);
            assert_eq!(r.nr_sectors, 8 * u64::from(nr));
            assert_eq!(r.segments.len(), usize::from(nr));
            assert_eq!(r.segments[0].gref, GrantRef(100));
        }
    }
}

#[test]
fn partial_segments_add_up() {
    let mut raw = rw(BLKIF_OP_READ, 10, 3);
    raw.seg[0].first_sect = 7; // 1 sector at byte 3584
    raw.seg[1].first_sect = 2; // sectors 2..=5
    raw.seg[1].last_sect = 5;
    raw.seg[2].last_sect = 0; // 1 sector
    let r = ready(&raw, &limits());
    assert_eq!(r.nr_sectors, 1 + 4 + 1);
    let s: &Segment = &r.segments[0];
    assert_eq!((s.sectors(), s.byte_offset(), s.byte_len()), (1, 3584, 512));
    let s = &r.segments[1];
    assert_eq!(
        (s.sectors(), s.byte_offset(), s.byte_len()),
        (4, 1024, 2048)
    );
}

#[test]
fn range_ending_exactly_at_the_disk_end_is_fine() {
    let r = ready(&rw(BLKIF_OP_WRITE, DISK - 88, 11), &limits());
    assert_eq!(r.end(), DISK);
}

#[test]
fn empty_flush_and_barrier_are_allowed_as_in_linux() {
    // Linux: `nseg == 0 && operation_flags != REQ_PREFLUSH` is the error, and
    // both FLUSH_DISKCACHE and WRITE_BARRIER carry REQ_PREFLUSH.
    let f = ready(&rw(BLKIF_OP_FLUSH_DISKCACHE, 0, 0), &limits());
    assert_eq!((f.op, f.nr_sectors, f.segments.len()), (Op::Flush, 0, 0));
    let b = ready(&rw(BLKIF_OP_WRITE_BARRIER, 0, 0), &limits());
    assert_eq!((b.op, b.nr_sectors), (Op::Barrier, 0));
    // An empty one's sector is not a range: any value is accepted.
    let f = ready(&rw(BLKIF_OP_FLUSH_DISKCACHE, u64::MAX, 0), &limits());
    assert_eq!(f.nr_sectors, 0);
}

#[test]
fn flush_and_barrier_may_carry_data() {
    let f = ready(&rw(BLKIF_OP_FLUSH_DISKCACHE, 8, 2), &limits());
    assert_eq!((f.op, f.nr_sectors, f.segments.len()), (Op::Flush, 16, 2));
    let b = ready(&rw(BLKIF_OP_WRITE_BARRIER, 8, 11), &limits());
    assert_eq!(
        (b.op, b.nr_sectors, b.operation),
        (Op::Barrier, 88, BLKIF_OP_WRITE_BARRIER)
    );
}

#[test]
fn discard_forms() {
    let d = ready(&discard(100, 2048, 0), &limits());
    assert_eq!(
        (
            d.id,
            d.operation,
            d.op,
            d.sector,
            d.nr_sectors,
            d.segments.len()
        ),
        (
            77,
            BLKIF_OP_DISCARD,
            Op::Discard { secure: false },
            100,
            2048,
            0
        )
    );
    let d = ready(&discard(0, DISK, BLKIF_DISCARD_SECURE), &limits());
    assert_eq!(d.op, Op::Discard { secure: true });
    // A zero-length discard is accepted, as Linux's xen_vbd_translate skips
    // the range check for an empty range.
    let d = ready(&discard(DISK + 5, 0, 0), &limits());
    assert_eq!(d.nr_sectors, 0);
}

#[test]
fn reads_work_on_a_read_only_disk() {
    ready(&rw(BLKIF_OP_READ, 0, 11), &ro());
    let h = header(&indirect(BLKIF_OP_READ, 0, 20), &ro());
    let r = parse_indirect(&h, &pages(20, |k| (k as u32, 0, 7)), &ro()).unwrap();
    assert_eq!(r.nr_sectors, 160);
}

#[test]
fn indirect_read_and_write() {
    for (op, want) in [(BLKIF_OP_READ, Op::Read), (BLKIF_OP_WRITE, Op::Write)] {
        let h = header(&indirect(op, 1000, 256), &limits());
        assert_eq!(
            (h.id, h.operation, h.op, h.sector, h.nr_segments),
            (99, op, want, 1000, 256)
        );
        assert_eq!(h.indirect_grefs, [GrantRef(11)]);
        assert_eq!((h.nr_pages(), h.segment_bytes()), (1, 256 * 8));
        let p = pages(256, |k| (5000 + k as u32, (k % 8) as u8, 7));
        let r = parse_indirect(&h, &p, &limits()).unwrap();
        // Linux echoes indirect_op, and its blkfront insists on it.
        assert_eq!((r.operation, r.op, r.segments.len()), (op, want, 256));
        let expect: u64 = (0..256u64).map(|k| 8 - k % 8).sum();
        assert_eq!(r.nr_sectors, expect);
        assert_eq!(r.segments[3].gref, GrantRef(5003));
        assert_eq!(r.segments[3].first_sect, 3);
    }
}

#[test]
fn indirect_page_count_follows_nr_segments() {
    let l = Limits {
        max_indirect_segments: 4096,
        ..limits()
    };
    for (nr, pages_needed) in [
        (1u16, 1usize),
        (512, 1),
        (513, 2),
        (1024, 2),
        (4095, 8),
        (4096, 8),
    ] {
        let h = header(&indirect(BLKIF_OP_READ, 0, nr), &l);
        assert_eq!(h.indirect_grefs.len(), pages_needed, "nr {nr}");
        assert_eq!(h.nr_pages(), pages_needed);
        let expect: Vec<GrantRef> = (11..11 + pages_needed as u32).map(GrantRef).collect();
        assert_eq!(h.indirect_grefs, expect);
        let r = parse_indirect(&h, &pages(usize::from(nr), |_| (1, 0, 0)), &l).unwrap();
        assert_eq!(r.nr_sectors, u64::from(nr));
    }
}

#[test]
fn indirect_limit_above_eight_pages_is_capped() {
    let l = Limits {
        max_indirect_segments: u32::MAX,
        ..limits()
    };
    header(&indirect(BLKIF_OP_READ, 0, 4096), &l);
    rejected(
        &indirect(BLKIF_OP_READ, 0, 4097),
        &l,
        BLKIF_RSP_ERROR,
        "4097 segments",
    );
}

// ---- rejections ----

#[test]
fn unknown_and_reserved_operations_are_not_supported() {
    // Linux's dispatch_other_io answers EOPNOTSUPP, echoing the operation.
    for op in [BLKIF_OP_RESERVED_1, 7, 8, 42, 255] {
        let rej = rejected(
            &rw(op, 0, 1),
            &limits(),
            BLKIF_RSP_EOPNOTSUPP,
            "unknown operation",
        );
        assert_eq!((rej.id, rej.operation), (0x1234_5678_9abc_def0, op));
        assert!(rej.is_unsupported());
    }
}

#[test]
fn features_not_offered_are_not_supported() {
    let off = Limits {
        flush: false,
        barrier: false,
        discard: false,
        max_indirect_segments: 0,
        ..limits()
    };
    let r = rejected(
        &rw(BLKIF_OP_WRITE_BARRIER, 0, 1),
        &off,
        BLKIF_RSP_EOPNOTSUPP,
        "feature-barrier",
    );
    assert_eq!(r.operation, BLKIF_OP_WRITE_BARRIER);
    rejected(
        &rw(BLKIF_OP_WRITE_BARRIER, 0, 0),
        &off,
        BLKIF_RSP_EOPNOTSUPP,
        "feature-barrier",
    );
    rejected(
        &rw(BLKIF_OP_FLUSH_DISKCACHE, 0, 0),
        &off,
        BLKIF_RSP_EOPNOTSUPP,
        "feature-flush-cache",
    );
    let r = rejected(
        &discard(0, 8, 0),
        &off,
        BLKIF_RSP_EOPNOTSUPP,
        "feature-discard",
    );
    assert_eq!((r.id, r.operation), (77, BLKIF_OP_DISCARD));
    let r = rejected(
        &indirect(BLKIF_OP_READ, 0, 4),
        &off,
        BLKIF_RSP_EOPNOTSUPP,
        "feature-max-indirect-segments",
    );
    // Even refused, an indirect request is answered with its indirect_op.
    assert_eq!((r.id, r.operation), (99, BLKIF_OP_READ));
    // Not offering flush does not stop reads and writes.
    ready(&rw(BLKIF_OP_WRITE, 0, 1), &off);
}

#[test]
fn not_offered_wins_over_malformed() {
    // An unsupported operation is EOPNOTSUPP whatever else is wrong with it.
    let off = Limits {
        barrier: false,
        ..ro()
    };
    rejected(
        &rw(BLKIF_OP_WRITE_BARRIER, u64::MAX, 11),
        &off,
        BLKIF_RSP_EOPNOTSUPP,
        "feature-barrier",
    );
}

#[test]
fn zero_segments_for_read_or_write() {
    rejected(
        &rw(BLKIF_OP_READ, 0, 0),
        &limits(),
        BLKIF_RSP_ERROR,
        "0 segments for a read",
    );
    rejected(
        &rw(BLKIF_OP_WRITE, 0, 0),
        &limits(),
        BLKIF_RSP_ERROR,
        "0 segments for a write",
    );
}

#[test]
fn twelve_or_more_segments() {
    for nr in [12u8, 13, 100, 255] {
        let mut raw = rw(BLKIF_OP_READ, 0, 11);
        raw.nr_segments = nr;
        rejected(&raw, &limits(), BLKIF_RSP_ERROR, "segments for a read");
        raw.operation = BLKIF_OP_WRITE;
        rejected(&raw, &limits(), BLKIF_RSP_ERROR, "segments for a write");
        raw.operation = BLKIF_OP_FLUSH_DISKCACHE;
        rejected(&raw, &limits(), BLKIF_RSP_ERROR, "segments for a flush");
        raw.operation = BLKIF_OP_WRITE_BARRIER;
        rejected(&raw, &limits(), BLKIF_RSP_ERROR, "segments for a barrier");
    }
}

#[test]
fn first_sect_after_last_sect() {
    let mut raw = rw(BLKIF_OP_READ, 0, 3);
    raw.seg[2].first_sect = 5;
    raw.seg[2].last_sect = 4;
    rejected(&raw, &limits(), BLKIF_RSP_ERROR, "first_sect 5 last_sect 4");
}

#[test]
fn last_sect_past_the_page() {
    for last in [8u8, 9, 255] {
        let mut raw = rw(BLKIF_OP_WRITE, 0, 1);
        raw.seg[0].last_sect = last;
        rejected(&raw, &limits(), BLKIF_RSP_ERROR, "need first <= last <= 7");
        let mut raw = rw(BLKIF_OP_WRITE_BARRIER, 0, 2);
        raw.seg[1].first_sect = last;
        raw.seg[1].last_sect = last;
        rejected(&raw, &limits(), BLKIF_RSP_ERROR, "need first <= last <= 7");
    }
}

#[test]
fn unused_segment_slots_are_ignored() {
    // Garbage past nr_segments is not looked at.
    let mut raw = rw(BLKIF_OP_READ, 0, 2);
    raw.seg[5].first_sect = 200;
    raw.seg[10].last_sect = 99;
    assert_eq!(ready(&raw, &limits()).segments.len(), 2);
}

#[test]
fn range_past_the_end() {
    rejected(
        &rw(BLKIF_OP_READ, DISK, 1),
        &limits(),
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    rejected(
        &rw(BLKIF_OP_READ, DISK - 87, 11),
        &limits(),
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    rejected(
        &rw(BLKIF_OP_WRITE, DISK - 1, 1),
        &limits(),
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    rejected(
        &rw(BLKIF_OP_WRITE_BARRIER, DISK - 8, 2),
        &limits(),
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    rejected(
        &discard(DISK - 10, 11, 0),
        &limits(),
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    let empty = Limits {
        sectors: 0,
        ..limits()
    };
    rejected(
        &rw(BLKIF_OP_READ, 0, 1),
        &empty,
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
}

#[test]
fn sector_overflow_near_u64_max() {
    let huge = Limits {
        sectors: u64::MAX,
        ..limits()
    };
    // sector + 8 wraps to 6: must not look like a small range.
    rejected(
        &rw(BLKIF_OP_READ, u64::MAX - 1, 1),
        &huge,
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    rejected(
        &rw(BLKIF_OP_WRITE, u64::MAX, 11),
        &huge,
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    rejected(
        &discard(u64::MAX - 3, 8, 0),
        &huge,
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    rejected(
        &discard(8, u64::MAX, 0),
        &huge,
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    // The largest range that ends exactly at u64::MAX is fine.
    ready(&rw(BLKIF_OP_READ, u64::MAX - 8, 1), &huge);
    // Indirect: rejected at the header already when even one sector per
    // segment cannot fit, and after the pages otherwise.
    rejected(
        &indirect(BLKIF_OP_READ, u64::MAX, 2),
        &huge,
        BLKIF_RSP_ERROR,
        "outside the disk",
    );
    let h = header(&indirect(BLKIF_OP_READ, u64::MAX - 16, 4), &huge);
    let rej = parse_indirect(&h, &pages(4, |_| (1, 0, 7)), &huge).unwrap_err();
    check_reject(&rej, BLKIF_RSP_ERROR, "outside the disk");
}

#[test]
fn writes_barriers_discards_and_flushes_on_a_read_only_disk() {
    rejected(
        &rw(BLKIF_OP_WRITE, 0, 1),
        &ro(),
        BLKIF_RSP_ERROR,
        "write on a read-only disk",
    );
    rejected(
        &rw(BLKIF_OP_WRITE_BARRIER, 0, 1),
        &ro(),
        BLKIF_RSP_ERROR,
        "barrier on a read-only disk",
    );
    rejected(
        &rw(BLKIF_OP_WRITE_BARRIER, 0, 0),
        &ro(),
        BLKIF_RSP_ERROR,
        "barrier on a read-only disk",
    );
    rejected(
        &discard(0, 8, 0),
        &ro(),
        BLKIF_RSP_ERROR,
        "discard on a read-only disk",
    );
    rejected(
        &discard(0, 8, BLKIF_DISCARD_SECURE),
        &ro(),
        BLKIF_RSP_ERROR,
        "read-only disk",
    );
    // As Linux's xen_vbd_translate: every non-read is refused on a
    // read-only disk, flushes included (a backend should not offer
    // feature-flush-cache for one).
    rejected(
        &rw(BLKIF_OP_FLUSH_DISKCACHE, 0, 0),
        &ro(),
        BLKIF_RSP_ERROR,
        "flush on a read-only disk",
    );
    rejected(
        &rw(BLKIF_OP_FLUSH_DISKCACHE, 0, 1),
        &ro(),
        BLKIF_RSP_ERROR,
        "read-only disk",
    );
    // Indirect writes are refused before their pages are mapped.
    rejected(
        &indirect(BLKIF_OP_WRITE, 0, 200),
        &ro(),
        BLKIF_RSP_ERROR,
        "write on a read-only disk",
    );
}

#[test]
fn indirect_nr_segments_zero_or_over_the_limit() {
    rejected(
        &indirect(BLKIF_OP_READ, 0, 0),
        &limits(),
        BLKIF_RSP_ERROR,
        "0 segments",
    );
    rejected(
        &indirect(BLKIF_OP_WRITE, 0, 257),
        &limits(),
        BLKIF_RSP_ERROR,
        "257 segments for a write",
    );
    // A frontend claiming 65535 segments is refused before anything is
    // allocated for them.
    let l = Limits {
        max_indirect_segments: u32::MAX,
        ..limits()
    };
    let rej = rejected(
        &indirect(BLKIF_OP_READ, 0, u16::MAX),
        &l,
        BLKIF_RSP_ERROR,
        "65535 segments",
    );
    assert_eq!(rej.operation, BLKIF_OP_READ);
}

#[test]
fn bad_indirect_op() {
    // Linux: "Invalid indirect operation" -> fail_response -> ERROR, echoing
    // the indirect_op.
    for op in [
        BLKIF_OP_WRITE_BARRIER,
        BLKIF_OP_FLUSH_DISKCACHE,
        BLKIF_OP_RESERVED_1,
        BLKIF_OP_DISCARD,
        BLKIF_OP_INDIRECT,
        200,
    ] {
        let rej = rejected(
            &indirect(op, 0, 4),
            &limits(),
            BLKIF_RSP_ERROR,
            "indirect_op",
        );
        assert_eq!(rej.operation, op);
    }
}

#[test]
fn discard_flag_garbage() {
    for flag in [2u8, 3, 0x80, 0xff] {
        rejected(
            &discard(0, 8, flag),
            &limits(),
            BLKIF_RSP_ERROR,
            "discard flag",
        );
    }
}

#[test]
fn bad_segments_in_indirect_pages() {
    let h = header(&indirect(BLKIF_OP_WRITE, 0, 600), &limits_4096());
    assert_eq!(h.indirect_grefs.len(), 2);
    // The bad segment is on the second page.
    let p = pages(600, |k| if k == 599 { (1, 3, 2) } else { (1, 0, 7) });
    let rej = parse_indirect(&h, &p, &limits_4096()).unwrap_err();
    check_reject(&rej, BLKIF_RSP_ERROR, "first_sect 3 last_sect 2");
    assert_eq!((rej.id, rej.operation), (99, BLKIF_OP_WRITE));
    let p = pages(600, |k| if k == 0 { (1, 0, 8) } else { (1, 0, 7) });
    let rej = parse_indirect(&h, &p, &limits_4096()).unwrap_err();
    check_reject(&rej, BLKIF_RSP_ERROR, "last_sect 8");
}

#[test]
fn indirect_range_checked_after_the_pages() {
    let h = header(&indirect(BLKIF_OP_READ, DISK - 100, 20), &limits());
    // 20 one-sector segments fit; 20 full pages do not.
    parse_indirect(&h, &pages(20, |_| (1, 0, 0)), &limits()).unwrap();
    let rej = parse_indirect(&h, &pages(20, |_| (1, 0, 7)), &limits()).unwrap_err();
    check_reject(&rej, BLKIF_RSP_ERROR, "outside the disk");
}

#[test]
fn indirect_pages_too_short() {
    let h = header(&indirect(BLKIF_OP_READ, 0, 100), &limits());
    let rej = parse_indirect(&h, &[0u8; 799], &limits()).unwrap_err();
    check_reject(&rej, BLKIF_RSP_ERROR, "shorter");
    // Exactly the segments' bytes are enough: no need for whole pages.
    let p = pages(100, |_| (1, 0, 7));
    parse_indirect(&h, &p[..800], &limits()).unwrap();
}

#[test]
fn forged_indirect_header_is_rechecked() {
    // A header built by hand (not by parse) cannot exceed the limits either.
    let mut h = header(&indirect(BLKIF_OP_READ, 0, 4), &limits());
    h.nr_segments = u16::MAX;
    let big = vec![0u8; 65535 * 8];
    let rej = parse_indirect(&h, &big, &limits()).unwrap_err();
    check_reject(&rej, BLKIF_RSP_ERROR, "65535 segments");
    let mut h = header(&indirect(BLKIF_OP_READ, 0, 4), &limits());
    h.op = Op::Flush;
    let rej = parse_indirect(&h, &pages(4, |_| (1, 0, 7)), &limits()).unwrap_err();
    check_reject(&rej, BLKIF_RSP_ERROR, "indirect_op");
    // And the read-only check runs again for the segments.
    let h = header(&indirect(BLKIF_OP_WRITE, 0, 4), &limits());
    let rej = parse_indirect(&h, &pages(4, |_| (1, 0, 7)), &ro()).unwrap_err();
    check_reject(&rej, BLKIF_RSP_ERROR, "read-only");
}

#[test]
fn request_response_echoes_id_and_operation() {
    let r = ready(&rw(BLKIF_OP_WRITE, 0, 1), &limits());
    let rsp = r.response(BLKIF_RSP_OKAY);
    assert_eq!(
        (rsp.id, rsp.operation, rsp.status),
        (r.id, BLKIF_OP_WRITE, 0)
    );
}

fn limits_4096() -> Limits {
    Limits {
        max_indirect_segments: 4096,
        ..limits()
    }
}
