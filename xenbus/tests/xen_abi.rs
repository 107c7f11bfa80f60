//! The `/dev/xen` ioctl arguments xenio builds byte by byte (`xen::abi`), against
//! the same arguments filled by a C program through the kernel's headers
//! (`tests/c/xen_args.c`, compiled here with `$CC`), and against the offsets of
//! the `xenio-xen-sys` mirrors. Runs without Xen.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use xenio_xen_sys::grant_table::*;
use xenio_xen_sys::ioctl::gntalloc::*;
use xenio_xen_sys::ioctl::gntdev::*;
use xenio_xenbus::xen::UnmapNotify;
use xenio_xenbus::xen::abi::{self, ArgBuf, CopySegment};
use xenio_xenbus::{Access, DomId, Error, GrantRef, Port};

/// Compile `tests/c/xen_args.c` against the system headers, run it once, and
/// parse its `<name> <hex>` lines.
fn c_args() -> &'static HashMap<String, Vec<u8>> {
    static OUT: OnceLock<HashMap<String, Vec<u8>>> = OnceLock::new();
    OUT.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/xen_args.c");
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("xen_args");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&cc)
            .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} ({e}); install gcc"));
        assert!(
            out.status.success(),
            "compiling {} failed (are libxen-dev and linux-libc-dev installed?):\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let run = Command::new(&bin).output().expect("run xen_args");
        assert!(run.status.success(), "xen_args failed");
        let text = String::from_utf8(run.stdout).expect("utf-8 output");
        text.lines()
            .map(|l| {
                let (name, hex) = l.split_once(' ').expect("<name> <hex>");
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect();
                (name.to_string(), bytes)
            })
            .collect()
    })
}

fn c(name: &str) -> &'static [u8] {
    c_args()
        .get(name)
        .unwrap_or_else(|| panic!("xen_args printed no {name}"))
}

fn refs(v: &[u32]) -> Vec<GrantRef> {
    v.iter().copied().map(GrantRef).collect()
}

// ---------------------------------------------------------------- MAP_GRANT_REF

#[test]
fn map_grant_ref_for_three_grants_matches_c() {
    let a = abi::map_grant_ref(DomId(7), &refs(&[0x1234, 0x5678, 0x9abc])).unwrap();
    assert_eq!(a.len(), IoctlGntdevMapGrantRef::size_for(3));
    assert_eq!(a.as_bytes(), c("map_grant_ref"));
}

#[test]
fn map_grant_ref_fields_sit_at_the_xen_sys_offsets() {
    let r = refs(&[10, 20, 30]);
    let a = abi::map_grant_ref(DomId(0x1ff), &r).unwrap();
    assert_eq!(
        a.read_u32(offset_of!(IoctlGntdevMapGrantRef, count)),
        Some(3)
    );
    assert_eq!(a.read_u32(offset_of!(IoctlGntdevMapGrantRef, pad)), Some(0));
    assert_eq!(
        a.read_u64(offset_of!(IoctlGntdevMapGrantRef, index)),
        Some(0)
    );
    for (i, g) in r.iter().enumerate() {
        let at = offset_of!(IoctlGntdevMapGrantRef, refs) + i * size_of::<IoctlGntdevGrantRef>();
        assert_eq!(
            a.read_u32(at + offset_of!(IoctlGntdevGrantRef, domid)),
            Some(0x1ff)
        );
        assert_eq!(
            a.read_u32(at + offset_of!(IoctlGntdevGrantRef, ref_)),
            Some(g.0)
        );
    }
    // One grant still takes the whole struct (the kernel copies sizeof(op)).
    let one = abi::map_grant_ref(DomId(1), &refs(&[5])).unwrap();
    assert_eq!(one.len(), size_of::<IoctlGntdevMapGrantRef>());
}

#[test]
fn map_grant_ref_index_is_read_where_the_kernel_writes_it() {
    let out = ArgBuf::from_bytes(c("map_grant_ref_out"));
    assert_eq!(abi::map_grant_ref_index(&out), Some(0x3000));
}

#[test]
fn zero_grants_or_pages_are_refused_before_any_ioctl() {
    assert!(matches!(
        abi::map_grant_ref(DomId(1), &[]),
        Err(Error::Limit(_))
    ));
    assert!(matches!(
        abi::alloc_gref(DomId(1), Access::ReadWrite, 0),
        Err(Error::Limit(_))
    ));
}

// ---------------------------------------------------------------- ALLOC_GREF

#[test]
fn alloc_gref_for_three_pages_matches_c() {
    let rw = abi::alloc_gref(DomId(5), Access::ReadWrite, 3).unwrap();
    assert_eq!(rw.len(), IoctlGntallocAllocGref::size_for(3));
    assert_eq!(rw.as_bytes(), c("alloc_gref_rw"));
    let ro = abi::alloc_gref(DomId(0x7fef), Access::ReadOnly, 3).unwrap();
    assert_eq!(ro.as_bytes(), c("alloc_gref_ro"));
    // And at the xen-sys offsets.
    assert_eq!(
        rw.read_u16(offset_of!(IoctlGntallocAllocGref, flags)),
        Some(GNTALLOC_FLAG_WRITABLE)
    );
    assert_eq!(
        ro.read_u16(offset_of!(IoctlGntallocAllocGref, flags)),
        Some(0)
    );
    assert_eq!(
        rw.read_u16(offset_of!(IoctlGntallocAllocGref, domid)),
        Some(5)
    );
    assert_eq!(
        rw.read_u32(offset_of!(IoctlGntallocAllocGref, count)),
        Some(3)
    );
}

#[test]
fn alloc_gref_result_reads_index_and_refs_where_the_kernel_writes_them() {
    let out = ArgBuf::from_bytes(c("alloc_gref_out"));
    assert_eq!(
        abi::alloc_gref_result(&out, 3),
        Some((0x1234_5678_9000, refs(&[11, 22, 33])))
    );
    // A result shorter than the count asks for is refused, not read past.
    assert_eq!(abi::alloc_gref_result(&out, 4), None);
}

// ---------------------------------------------------------------- GRANT_COPY

fn copy_segments() -> [CopySegment; 2] {
    [
        CopySegment::FromGrant {
            domid: DomId(7),
            gref: GrantRef(0x1234),
            offset: 100,
            dest: 0x7f00_1122_3344,
            len: 512,
        },
        CopySegment::ToGrant {
            src: 0x7f00_5566_7788,
            domid: DomId(9),
            gref: GrantRef(0x4321),
            offset: 3584,
            len: 512,
        },
    ]
}

#[test]
fn grant_copy_segments_in_both_directions_match_c() {
    let segs = abi::grant_copy_segments(&copy_segments()).unwrap();
    assert_eq!(segs.len(), 2 * size_of::<GntdevGrantCopySegment>());
    assert_eq!(segs.as_bytes(), c("grant_copy_segments"));
    // The direction flags at the xen-sys offset.
    let seg = size_of::<GntdevGrantCopySegment>();
    let flags = offset_of!(GntdevGrantCopySegment, flags);
    assert_eq!(segs.read_u16(flags), Some(GNTCOPY_SOURCE_GREF));
    assert_eq!(segs.read_u16(seg + flags), Some(GNTCOPY_DEST_GREF));
}

#[test]
fn grant_copy_header_matches_c() {
    let a = abi::grant_copy_at(2, 0x7f00_aabb_cc00).unwrap();
    assert_eq!(a.as_bytes(), c("grant_copy"));
    // The header built for a real segment buffer points at that buffer.
    let mut segs = abi::grant_copy_segments(&copy_segments()).unwrap();
    let h = abi::grant_copy(&mut segs).unwrap();
    assert_eq!(h.read_u32(offset_of!(IoctlGntdevGrantCopy, count)), Some(2));
    assert_ne!(
        h.read_u64(offset_of!(IoctlGntdevGrantCopy, segments)),
        Some(0)
    );
}

#[test]
fn grant_copy_status_is_read_per_segment_where_the_kernel_writes_it() {
    let out = ArgBuf::from_bytes(c("grant_copy_segments_out"));
    assert_eq!(
        abi::grant_copy_status(&out, 0),
        Some(GNTST_PERMISSION_DENIED)
    );
    assert_eq!(abi::grant_copy_status(&out, 1), Some(GNTST_BAD_GNTREF));
    assert_eq!(abi::grant_copy_status(&out, 2), None);
    assert!(abi::gntst_reason(GNTST_PERMISSION_DENIED).contains("GNTST_permission_denied"));
    assert!(abi::gntst_reason(GNTST_BAD_GNTREF).contains("GNTST_bad_gntref"));
    assert!(abi::gntst_reason(-99).contains("unknown grant status -99"));
}

#[test]
fn grant_copy_ranges_must_stay_in_the_granted_page() {
    assert_eq!(CopySegment::check(0, 4096), Ok(4096));
    assert_eq!(CopySegment::check(4095, 1), Ok(1));
    assert_eq!(CopySegment::check(100, 0), Ok(0));
    for (offset, len) in [(4095, 2), (0, 4097), (u16::MAX, 0), (4000, 200)] {
        let e = CopySegment::check(offset, len).unwrap_err();
        assert!(e.contains("GNTST_bad_copy_arg"), "{e}");
    }
}

// ---------------------------------------------------------------- SET_UNMAP_NOTIFY

#[test]
fn unmap_notify_arguments_match_c() {
    let both = UnmapNotify {
        clear_byte: Some(4096 + 17),
        send_event: Some(Port(42)),
    };
    let event = UnmapNotify {
        clear_byte: None,
        send_event: Some(Port(42)),
    };
    let byte = UnmapNotify {
        clear_byte: Some(3),
        send_event: None,
    };
    let len = 2 * 4096;
    assert_eq!(
        abi::gntdev_unmap_notify(0x5000, len, both)
            .unwrap()
            .as_bytes(),
        c("gntdev_unmap_notify")
    );
    assert_eq!(
        abi::gntdev_unmap_notify(0x5000, len, event)
            .unwrap()
            .as_bytes(),
        c("gntdev_unmap_notify_event")
    );
    assert_eq!(
        abi::gntalloc_unmap_notify(0x5000, len, both)
            .unwrap()
            .as_bytes(),
        c("gntalloc_unmap_notify")
    );
    assert_eq!(
        abi::gntalloc_unmap_notify(0x5000, len, byte)
            .unwrap()
            .as_bytes(),
        c("gntalloc_unmap_notify_byte")
    );
    assert_eq!(size_of::<IoctlGntdevUnmapNotify>(), 16);
    assert_eq!(size_of::<IoctlGntallocUnmapNotify>(), 16);
}

#[test]
fn unmap_notify_refuses_a_byte_outside_the_region() {
    let n = UnmapNotify {
        clear_byte: Some(4096),
        send_event: None,
    };
    assert!(matches!(
        abi::gntdev_unmap_notify(0, 4096, n),
        Err(Error::Limit(_))
    ));
    assert!(matches!(
        abi::gntalloc_unmap_notify(0, 4096, n),
        Err(Error::Limit(_))
    ));
}
