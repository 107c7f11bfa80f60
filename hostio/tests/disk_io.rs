//! Reads, writes, flushes and discards through the engine on real files, with
//! io_uring and with the synchronous fallback, checked byte for byte.

mod disk_common;

use disk_common::*;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_hostio::Error;
use xenio_hostio::disk::{
    BlockFile, Direct, DiskOpen, DiskQueue, DiskQueueOptions, Io, IoMode, IoSeg,
};
use xenio_xenbus::Region;

const MIB: u64 = 1 << 20;

fn disk(path: &Path, direct: Direct) -> Arc<BlockFile> {
    Arc::new(
        BlockFile::open(
            path,
            DiskOpen {
                readonly: false,
                direct,
            },
        )
        .unwrap(),
    )
}

fn engine(file: &Arc<BlockFile>, depth: u32, sync: bool) -> DiskQueue {
    let e = DiskQueue::with_options(
        file.clone(),
        &DiskQueueOptions {
            depth,
            force_sync: sync,
            completion_fd: false,
            ..DiskQueueOptions::default()
        },
    )
    .unwrap();
    assert_eq!(matches!(e.mode(), IoMode::Uring), !sync, "{:?}", e.mode());
    e
}

/// The kind and message of a refused submission.
fn refused(r: xenio_hostio::Result<()>) -> (ErrorKind, String) {
    match r {
        Err(e @ Error::Io { .. }) => {
            let Error::Io { source, .. } = &e else {
                unreachable!()
            };
            (source.kind(), e.to_string())
        }
        Err(e) => (ErrorKind::Other, e.to_string()),
        Ok(()) => panic!("accepted"),
    }
}

/// Run one operation to completion.
fn run(e: &mut DiskQueue, io: Io) -> std::io::Result<usize> {
    e.submit(42, io).expect("submit");
    e.flush_submissions().unwrap();
    let mut out = Vec::new();
    e.complete(&mut out, 1, Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].tag, 42);
    out.pop().unwrap().result
}

#[test]
fn random_io_uring_o_direct() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "r.img", 16 * MIB), Direct::Auto);
    assert!(f.direct());
    let mut e = engine(&f, 64, false);
    let max = random_io_verify(&mut e, 1, 256);
    assert_eq!(
        max, 64,
        "the engine should have had its whole depth in flight"
    );
}

#[test]
fn random_io_sync_fallback_o_direct() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "s.img", 16 * MIB), Direct::Auto);
    let mut e = engine(&f, 64, true);
    random_io_verify(&mut e, 2, 256);
}

#[test]
fn random_io_uring_page_cache() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "p.img", 16 * MIB), Direct::Off);
    let mut e = engine(&f, 16, false);
    random_io_verify(&mut e, 3, 256);
}

#[test]
fn random_io_tmpfs_uring_and_sync() {
    let dir = shm_dir();
    let f = disk(&make_file(dir.path(), "t.img", 16 * MIB), Direct::Auto);
    assert!(!f.direct());
    random_io_verify(&mut engine(&f, 64, false), 4, 256);
    random_io_verify(&mut engine(&f, 8, true), 5, 256);
}

/// Eleven segments of 512..4096 bytes at scattered offsets of one region, in an
/// order that is not the region's, written and read back through another layout.
#[test]
fn scattered_segments_of_one_region() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "seg.img", 4 * MIB), Direct::Auto);
    let sector = f.logical_sector_size() as usize;
    for sync in [false, true] {
        let mut e = engine(&f, 8, sync);
        let mut rng = Rng(99 + sync as u64);
        let src = Arc::new(Region::anonymous(64 * 1024).unwrap());
        // Page i of the region used in a shuffled order, at varying offsets.
        let pages = [9, 2, 14, 0, 7, 11, 3, 15, 5, 12, 1];
        let segs: Vec<IoSeg> = pages
            .iter()
            .map(|&p| {
                let len = rng.range(1, 4096 / sector) * sector;
                let at = rng.range(0, (4096 - len) / sector) * sector;
                IoSeg::new(src.clone(), p * 4096 + at, len)
            })
            .collect();
        let total: usize = segs.iter().map(|s| s.len).sum();
        let data = rng.bytes(total);
        scatter(&segs, &data);
        let offset = 3 * 4096 * 7 + sector as u64 * 3;
        assert_eq!(run(&mut e, Io::Write { offset, segs }).unwrap(), total);

        // Read back into a different layout: a few big segments of another region.
        let first = (total / 3) / sector * sector;
        let high = first.div_ceil(4096) * 4096;
        let dst = Arc::new(Region::anonymous(high + total).unwrap());
        dst.fill(0, dst.len(), 0x5a).unwrap();
        let segs = vec![
            IoSeg::new(dst.clone(), high, total - first),
            IoSeg::new(dst.clone(), 0, first),
        ];
        assert_eq!(
            run(
                &mut e,
                Io::Read {
                    offset,
                    segs: segs.clone()
                }
            )
            .unwrap(),
            total
        );
        assert!(
            gather(&segs) == data,
            "scattered segments read back differently"
        );
        let on_disk = read_all(f.path(), (offset as usize) + total);
        assert!(on_disk[offset as usize..] == data[..]);
    }
}

#[test]
fn the_engine_holds_the_memory_until_the_completion_is_reaped() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "arc.img", MIB), Direct::Auto);
    for sync in [false, true] {
        let mut e = engine(&f, 4, sync);
        let r = Arc::new(Region::anonymous(4096).unwrap());
        e.submit(
            1,
            Io::Read {
                offset: 0,
                segs: vec![IoSeg::new(r.clone(), 0, 4096)],
            },
        )
        .unwrap();
        if !sync {
            assert_eq!(
                Arc::strong_count(&r),
                2,
                "the engine holds the region while in flight"
            );
        }
        e.flush_submissions().unwrap();
        let mut out = Vec::new();
        e.complete(&mut out, 1, None).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(Arc::strong_count(&r), 1, "released once completed");
    }
}

#[test]
fn refusals_before_submission() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "ref.img", MIB), Direct::Auto);
    assert!(f.direct());
    let l = f.logical_sector_size() as usize;
    let shown = f.path().display().to_string();
    for sync in [false, true] {
        let mut e = engine(&f, 4, sync);
        let r = Arc::new(Region::anonymous(8192).unwrap());
        let seg = |off, len| IoSeg::new(r.clone(), off, len);
        let cases: Vec<(Io, ErrorKind, &str)> = vec![
            (
                Io::Read {
                    offset: 0,
                    segs: vec![IoSeg::new(read_only_region(&[0; 4096]), 0, 4096)],
                },
                ErrorKind::PermissionDenied,
                "segment 0 is read-only memory: a read cannot fill it",
            ),
            (
                Io::Read {
                    offset: 100,
                    segs: vec![seg(0, l)],
                },
                ErrorKind::InvalidInput,
                "offset must be a multiple",
            ),
            (
                Io::Write {
                    offset: 0,
                    segs: vec![seg(0, l), seg(l + 1, l)],
                },
                ErrorKind::InvalidInput,
                "segment 1 is",
            ),
            (
                Io::Write {
                    offset: 0,
                    segs: vec![seg(0, l + 100)],
                },
                ErrorKind::InvalidInput,
                "segment 0 is",
            ),
            (
                Io::Read {
                    offset: 0,
                    segs: vec![seg(0, 4096), seg(4096, 8192)],
                },
                ErrorKind::InvalidInput,
                "segment 1 (8192 bytes at offset 4096) is outside its region of 8192 bytes",
            ),
            (
                Io::Read {
                    offset: 0,
                    segs: vec![seg(usize::MAX - 10, 4096)],
                },
                ErrorKind::InvalidInput,
                "outside its region",
            ),
            (
                Io::Read {
                    offset: MIB - 4096,
                    segs: vec![seg(0, 8192)],
                },
                ErrorKind::InvalidInput,
                "past the end of the disk (1048576 bytes)",
            ),
            (
                Io::Write {
                    offset: u64::MAX - 4095,
                    segs: vec![seg(0, 4096)],
                },
                ErrorKind::InvalidInput,
                "past the end of the disk",
            ),
            (
                Io::Read {
                    offset: 0,
                    segs: vec![],
                },
                ErrorKind::InvalidInput,
                "0 segments",
            ),
            (
                Io::Read {
                    offset: 0,
                    segs: vec![seg(0, l); 1025],
                },
                ErrorKind::InvalidInput,
                "1025 segments",
            ),
            (
                Io::Read {
                    offset: 0,
                    segs: vec![seg(512, 0)],
                },
                ErrorKind::InvalidInput,
                "segment 0 is empty",
            ),
            (
                Io::Discard {
                    offset: 100,
                    len: 4096,
                },
                ErrorKind::InvalidInput,
                "logical sector size",
            ),
            (
                Io::Discard { offset: 0, len: 0 },
                ErrorKind::InvalidInput,
                "logical sector size",
            ),
            (
                Io::Discard {
                    offset: 0,
                    len: 2 * MIB,
                },
                ErrorKind::InvalidInput,
                "past the end",
            ),
        ];
        for (io, kind, text) in cases {
            let what = format!("{io:?}").chars().take(60).collect::<String>();
            let (k, msg) = refused(e.submit(7, io));
            assert_eq!(k, kind, "{what}: {msg}");
            assert!(msg.contains(text), "{what}: {msg:?} lacks {text:?}");
            assert!(msg.starts_with(&shown), "{msg}");
            assert_eq!(e.in_flight(), 0);
        }
        assert_eq!(
            Arc::strong_count(&r),
            1,
            "refused operations keep no reference"
        );
        // The engine still works afterwards.
        assert_eq!(
            run(
                &mut e,
                Io::Read {
                    offset: 0,
                    segs: vec![seg(0, 8192)]
                }
            )
            .unwrap(),
            8192
        );
    }
}

#[test]
fn read_only_memory_is_a_write_source() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "rom.img", MIB), Direct::Auto);
    for sync in [false, true] {
        let mut e = engine(&f, 4, sync);
        let data = Rng(5 + sync as u64).bytes(8192);
        let ro = read_only_region(&data);
        let w = Io::Write {
            offset: 65536,
            segs: vec![IoSeg::new(ro.clone(), 4096, 4096), IoSeg::new(ro, 0, 4096)],
        };
        assert_eq!(run(&mut e, w).unwrap(), 8192);
        let back = read_all(f.path(), 65536 + 8192);
        assert!(back[65536..65536 + 4096] == data[4096..] && back[65536 + 4096..] == data[..4096]);
    }
}

#[test]
fn read_only_disks_refuse_writes_and_discards() {
    let dir = disk_dir();
    let path = make_file(dir.path(), "ro.img", MIB);
    let f = Arc::new(
        BlockFile::open(
            &path,
            DiskOpen {
                readonly: true,
                direct: Direct::Auto,
            },
        )
        .unwrap(),
    );
    for sync in [false, true] {
        let mut e = engine(&f, 4, sync);
        let r = Arc::new(Region::anonymous(4096).unwrap());
        let (k, msg) = refused(e.submit(
            1,
            Io::Write {
                offset: 0,
                segs: vec![IoSeg::new(r.clone(), 0, 4096)],
            },
        ));
        assert_eq!(k, ErrorKind::PermissionDenied);
        assert!(
            msg.contains("write of") && msg.contains("opened read-only"),
            "{msg}"
        );
        let (k, msg) = refused(e.submit(
            1,
            Io::Discard {
                offset: 0,
                len: 4096,
            },
        ));
        assert_eq!(k, ErrorKind::PermissionDenied, "{msg}");
        assert_eq!(
            run(
                &mut e,
                Io::Read {
                    offset: 0,
                    segs: vec![IoSeg::new(r.clone(), 0, 4096)]
                }
            )
            .unwrap(),
            4096
        );
        assert_eq!(run(&mut e, Io::Flush).unwrap(), 0);
    }
}

#[test]
fn page_cache_accepts_unaligned_io() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "u.img", MIB), Direct::Off);
    for sync in [false, true] {
        let mut e = engine(&f, 4, sync);
        let r = Arc::new(Region::anonymous(8192).unwrap());
        let data = Rng(77).bytes(777 + 33);
        r.write(1, &data[..777]).unwrap();
        r.write(5000, &data[777..]).unwrap();
        let segs = vec![
            IoSeg::new(r.clone(), 1, 777),
            IoSeg::new(r.clone(), 5000, 33),
        ];
        assert_eq!(run(&mut e, Io::Write { offset: 100, segs }).unwrap(), 810);
        let r2 = Arc::new(Region::anonymous(4096).unwrap());
        let segs = vec![IoSeg::new(r2.clone(), 3, 810)];
        assert_eq!(
            run(
                &mut e,
                Io::Read {
                    offset: 100,
                    segs: segs.clone()
                }
            )
            .unwrap(),
            810
        );
        assert_eq!(gather(&segs), data);
    }
}

#[test]
fn at_most_depth_operations_in_flight() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "depth.img", MIB), Direct::Auto);
    for sync in [false, true] {
        let mut e = engine(&f, 16, sync);
        let r = Arc::new(Region::anonymous(4096).unwrap());
        for t in 0..16 {
            e.submit(
                t,
                Io::Read {
                    offset: t * 4096,
                    segs: vec![IoSeg::new(r.clone(), 0, 4096)],
                },
            )
            .unwrap();
        }
        assert_eq!(e.in_flight(), 16);
        let err = e.submit(16, Io::Flush).unwrap_err();
        assert!(matches!(err, Error::Limit(_)), "{err}");
        assert!(err.to_string().contains("16 operations in flight"), "{err}");
        e.flush_submissions().unwrap();
        let mut out = Vec::new();
        while e.in_flight() > 0 {
            e.complete(&mut out, 1, Some(Duration::from_secs(30)))
                .unwrap();
        }
        let mut tags: Vec<u64> = out.iter().map(|c| c.tag).collect();
        tags.sort();
        assert_eq!(tags, (0..16).collect::<Vec<_>>());
        assert!(out.iter().all(|c| *c.result.as_ref().unwrap() == 4096));
        // Nothing in flight: no waiting.
        let t = Instant::now();
        out.clear();
        e.complete(&mut out, 5, None).unwrap();
        assert!(out.is_empty() && t.elapsed() < Duration::from_secs(1));
    }
}

#[test]
fn flush_completes() {
    let dir = disk_dir();
    for direct in [Direct::Auto, Direct::Off] {
        let f = disk(
            &make_file(dir.path(), &format!("f{direct:?}.img"), MIB),
            direct,
        );
        for sync in [false, true] {
            let mut e = engine(&f, 4, sync);
            let r = Arc::new(Region::anonymous(65536).unwrap());
            r.fill(0, 65536, 0x42).unwrap();
            assert_eq!(
                run(
                    &mut e,
                    Io::Write {
                        offset: 0,
                        segs: vec![IoSeg::new(r, 0, 65536)]
                    }
                )
                .unwrap(),
                65536
            );
            assert_eq!(run(&mut e, Io::Flush).unwrap(), 0);
        }
    }
}

fn discard_punches_a_hole(path: &Path, direct: Direct, sync: bool) {
    let f = disk(path, direct);
    let d = f
        .discard()
        .unwrap_or_else(|| panic!("{:?}", f.discard_unsupported_reason()));
    let mut e = engine(&f, 8, sync);
    let r = Arc::new(Region::anonymous(MIB as usize).unwrap());
    r.fill(0, MIB as usize, 0xaa).unwrap();
    assert_eq!(
        run(
            &mut e,
            Io::Write {
                offset: MIB,
                segs: vec![IoSeg::new(r, 0, MIB as usize)]
            }
        )
        .unwrap(),
        MIB as usize
    );
    assert_eq!(run(&mut e, Io::Flush).unwrap(), 0);
    let before = std::fs::metadata(path).unwrap().blocks();
    let (off, len) = (MIB + 256 * 1024, 512 * 1024);
    assert_eq!(off % u64::from(d.granularity), 0);
    assert_eq!(
        run(&mut e, Io::Discard { offset: off, len }).unwrap(),
        len as usize
    );
    let after = std::fs::metadata(path).unwrap().blocks();
    assert!(
        after + len / 512 <= before,
        "{}: st_blocks {before} -> {after}: the hole freed less than {len} bytes",
        path.display()
    );
    // Zeros in the hole, the pattern around it; the size is kept.
    let back = read_all(path, (3 * MIB) as usize);
    let (o, l) = (off as usize, len as usize);
    assert!(back[MIB as usize..o].iter().all(|&b| b == 0xaa));
    assert!(back[o..o + l].iter().all(|&b| b == 0));
    assert!(back[o + l..2 * MIB as usize].iter().all(|&b| b == 0xaa));
    assert_eq!(std::fs::metadata(path).unwrap().len(), 4 * MIB);
    // Read through the engine too (O_DIRECT sees the hole as well).
    let r2 = Arc::new(Region::anonymous(l).unwrap());
    r2.fill(0, l, 1).unwrap();
    let segs = vec![IoSeg::new(r2.clone(), 0, l)];
    assert_eq!(
        run(
            &mut e,
            Io::Read {
                offset: off,
                segs: segs.clone()
            }
        )
        .unwrap(),
        l
    );
    assert!(gather(&segs).iter().all(|&b| b == 0));
}

#[test]
fn discard_punches_holes_in_files() {
    let dir = disk_dir();
    let shm = shm_dir();
    for sync in [false, true] {
        discard_punches_a_hole(
            &make_file(dir.path(), &format!("d{sync}.img"), 4 * MIB),
            Direct::Auto,
            sync,
        );
        discard_punches_a_hole(
            &make_file(dir.path(), &format!("dp{sync}.img"), 4 * MIB),
            Direct::Off,
            sync,
        );
        discard_punches_a_hole(
            &make_file(shm.path(), &format!("d{sync}.img"), 4 * MIB),
            Direct::Auto,
            sync,
        );
    }
}

#[test]
fn discard_is_refused_where_unsupported() {
    let Some(ramfs) = RamfsMount::new() else {
        return;
    };
    let f = disk(
        &make_file(ramfs.dir.path(), "nodiscard.img", MIB),
        Direct::Auto,
    );
    for sync in [false, true] {
        let mut e = engine(&f, 4, sync);
        let (k, msg) = refused(e.submit(
            1,
            Io::Discard {
                offset: 0,
                len: 4096,
            },
        ));
        assert_eq!(k, ErrorKind::Unsupported, "{msg}");
        assert!(
            msg.contains("discard is not supported") && msg.contains("FALLOC_FL_PUNCH_HOLE"),
            "{msg}"
        );
        assert_eq!(e.in_flight(), 0);
    }
}

/// A file that shrank under the engine: the read hits the end of the file, the
/// engine continues the short read, gets 0 and reports an error naming the file.
#[test]
fn a_read_past_the_end_of_a_shrunk_file_is_an_error() {
    let dir = disk_dir();
    let path = make_file(dir.path(), "shrink.img", MIB);
    let f = disk(&path, Direct::Auto);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(512 * 1024)
        .unwrap();
    for sync in [false, true] {
        let mut e = engine(&f, 4, sync);
        let r = Arc::new(Region::anonymous(65536).unwrap());
        let segs = vec![
            IoSeg::new(r.clone(), 0, 32768),
            IoSeg::new(r.clone(), 32768, 32768),
        ];
        e.submit(
            9,
            Io::Read {
                offset: 512 * 1024 - 16384,
                segs,
            },
        )
        .unwrap();
        e.flush_submissions().unwrap();
        let mut out = Vec::new();
        e.complete(&mut out, 1, None).unwrap();
        let c = out.pop().unwrap();
        assert_eq!(c.tag, 9);
        assert_eq!(c.errno(), None);
        let err = c.result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("read of 65536 bytes at offset 507904"),
            "{msg}"
        );
        assert!(
            msg.contains("end of file after 16384 of 65536 bytes"),
            "{msg}"
        );
        assert_eq!(Arc::strong_count(&r), 1);
    }
}

#[test]
fn completion_fd_becomes_readable() {
    use nix::poll::{PollFd, PollFlags, poll};
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "efd.img", MIB), Direct::Auto);
    // io_uring (its own descriptor), io_uring with deferred task running (an
    // eventfd), synchronous (an eventfd).
    for (sync, defer) in [(false, false), (false, true), (true, false)] {
        let mut e = DiskQueue::with_options(
            f.clone(),
            &DiskQueueOptions {
                depth: 8,
                force_sync: sync,
                completion_fd: true,
                defer_taskrun: defer,
            },
        )
        .unwrap();
        let readable = |e: &DiskQueue, ms: u16| {
            let mut fds = [PollFd::new(e.completion_fd().unwrap(), PollFlags::POLLIN)];
            poll(&mut fds, ms).unwrap() == 1
        };
        assert!(!readable(&e, 0));
        let r = Arc::new(Region::anonymous(4096).unwrap());
        for t in 0..4 {
            e.submit(
                t,
                Io::Read {
                    offset: t * 4096,
                    segs: vec![IoSeg::new(r.clone(), 0, 4096)],
                },
            )
            .unwrap();
        }
        e.flush_submissions().unwrap();
        let mut out = Vec::new();
        while out.len() < 4 {
            assert!(readable(&e, 10_000), "no completion signalled within 10 s");
            e.complete(&mut out, 0, None).unwrap();
        }
        assert!(out.iter().all(|c| c.result.is_ok()));
        assert!(
            !readable(&e, 0),
            "nothing unreaped: not readable (sync {sync}, deferred {defer})"
        );
    }
}

/// Dropping an engine with operations in flight (submitted, queued, half reaped)
/// waits for them; it neither hangs nor lets the kernel write into freed memory
/// (the regions are dropped by the test first: the engine holds the last
/// references).
#[test]
fn dropping_an_engine_with_operations_in_flight() {
    let dir = disk_dir();
    let f = disk(&make_file(dir.path(), "drop.img", 64 * MIB), Direct::Auto);
    for (variant, sync) in [
        ("submitted", false),
        ("queued", false),
        ("half reaped", false),
        ("sync", true),
    ] {
        let mut e = engine(&f, 64, sync);
        let mut weak = Vec::new();
        for t in 0..64u64 {
            let r = Arc::new(Region::anonymous(MIB as usize).unwrap());
            r.fill(0, MIB as usize, t as u8).unwrap();
            weak.push(Arc::downgrade(&r));
            let segs = vec![IoSeg::new(r, 0, MIB as usize)];
            let io = if t % 2 == 0 {
                Io::Write {
                    offset: t * MIB,
                    segs,
                }
            } else {
                Io::Read {
                    offset: t * MIB,
                    segs,
                }
            };
            e.submit(t, io).unwrap();
        }
        if variant != "queued" {
            e.flush_submissions().unwrap();
        }
        if variant == "half reaped" {
            let mut out = Vec::new();
            e.complete(&mut out, 32, None).unwrap();
            assert!(out.len() >= 32);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            drop(e);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{variant}: dropping the engine hung"));
        eprintln!("{variant}: dropped in {:?}", t0.elapsed());
        assert!(
            weak.iter().all(|w| w.upgrade().is_none()),
            "{variant}: regions freed after the drop"
        );
    }
}

/// io_uring refused by the kernel (here: `io_uring_setup` fails with EMFILE
/// because the process is out of descriptors; seccomp, `io_uring_disabled` and
/// old kernels fail the same call): the engine falls back to synchronous I/O and
/// says why. Runs in a child process, whose descriptor limit it lowers.
#[test]
fn io_uring_refused_falls_back_to_sync() {
    const CHILD: &str = "XENIO_DISK_FALLBACK_CHILD";
    const NAME: &str = "io_uring_refused_falls_back_to_sync";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(
            text.contains("1 passed") && text.contains("fallback: io_uring unavailable"),
            "{text}"
        );
        return;
    }

    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let dir = disk_dir();
    let f = disk(
        &make_file(dir.path(), "nouring.img", 16 * MIB),
        Direct::Auto,
    );
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 64, hard).unwrap();
    let mut held = Vec::new();
    while let Ok(h) = std::fs::File::open("/dev/null") {
        held.push(h);
    }
    let e = DiskQueue::new(f.clone(), 64);
    drop(held);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let mut e = e.unwrap();
    let IoMode::Sync { reason } = e.mode().clone() else {
        panic!("io_uring_setup succeeded without descriptors")
    };
    eprintln!("fallback: {reason}");
    assert!(
        reason.contains("io_uring_setup") && reason.contains("synchronously"),
        "{reason}"
    );
    random_io_verify(&mut e, 6, 256);
}
