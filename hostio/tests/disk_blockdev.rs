//! A real block device: a loop device over a file (root needed; skipped with a
//! message otherwise; CI runs as root). Geometry from BLKGETSIZE64 / BLKSSZGET /
//! BLKPBSZGET, discard limits from sysfs, BLKDISCARD, and checked random I/O.

mod disk_common;

use disk_common::*;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;
use xenio_hostio::Error;
use xenio_hostio::disk::{BlockFile, Direct, DiskOpen, DiskQueue, DiskQueueOptions, Io, IoSeg};
use xenio_xenbus::Region;

const SIZE: u64 = 32 << 20;

fn sysfs(dev: &std::path::Path, what: &str) -> String {
    let name = dev.file_name().unwrap().to_string_lossy().to_string();
    std::fs::read_to_string(format!("/sys/block/{name}/{what}"))
        .unwrap()
        .trim()
        .to_string()
}

fn run(e: &mut DiskQueue, io: Io) -> std::io::Result<usize> {
    e.submit(1, io).unwrap();
    e.flush_submissions().unwrap();
    let mut out = Vec::new();
    e.complete(&mut out, 1, Some(Duration::from_secs(60)))
        .unwrap();
    out.pop().unwrap().result
}

fn check_loop_device(sector_size: Option<u32>) {
    let dir = disk_dir();
    let backing = make_file(dir.path(), "backing.img", SIZE);
    let Some(dev) = LoopDevice::new(&backing, sector_size) else {
        return;
    };
    let f = Arc::new(BlockFile::open(&dev.path, DiskOpen::default()).unwrap());
    assert!(f.is_block_device());
    assert!(f.direct(), "block devices take O_DIRECT");
    assert_eq!(f.size_bytes(), SIZE);
    assert_eq!(f.sectors(), SIZE / 512);
    let logical: u32 = sysfs(&dev.path, "queue/logical_block_size")
        .parse()
        .unwrap();
    assert_eq!(f.logical_sector_size(), logical);
    assert_eq!(logical, sector_size.unwrap_or(512));
    assert_eq!(
        f.physical_sector_size(),
        sysfs(&dev.path, "queue/physical_block_size")
            .parse::<u32>()
            .unwrap()
    );
    let d = f
        .discard()
        .unwrap_or_else(|| panic!("{:?}", f.discard_unsupported_reason()));
    assert_eq!(
        d.granularity,
        sysfs(&dev.path, "queue/discard_granularity")
            .parse::<u32>()
            .unwrap()
    );
    assert_eq!(
        d.alignment,
        sysfs(&dev.path, "discard_alignment")
            .parse::<u32>()
            .unwrap()
    );
    eprintln!(
        "{}: {} sectors, logical {}, physical {}, discard {d:?}",
        dev.path.display(),
        f.sectors(),
        f.logical_sector_size(),
        f.physical_sector_size()
    );

    for sync in [false, true] {
        let mut e = DiskQueue::with_options(
            f.clone(),
            &DiskQueueOptions {
                depth: 64,
                force_sync: sync,
                completion_fd: false,
                ..DiskQueueOptions::default()
            },
        )
        .unwrap();
        let max = random_io_verify(&mut e, 11 + sync as u64, 256);
        if !sync {
            assert_eq!(max, 64);
        }

        // O_DIRECT alignment is the device's logical block size.
        let r = Arc::new(Region::anonymous(65536).unwrap());
        let l = logical as usize;
        if l > 512 {
            let err = e
                .submit(
                    2,
                    Io::Read {
                        offset: 512,
                        segs: vec![IoSeg::new(r.clone(), 0, l)],
                    },
                )
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("multiple of the {l}-byte")),
                "{err}"
            );
            let err = e
                .submit(
                    2,
                    Io::Read {
                        offset: 0,
                        segs: vec![IoSeg::new(r.clone(), 512, l)],
                    },
                )
                .unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
        }

        // BLKDISCARD: the loop driver punches a hole in the backing file.
        r.fill(0, 65536, 0xcd).unwrap();
        let at = 4u64 << 20;
        for k in 0..16 {
            let io = Io::Write {
                offset: at + k * 65536,
                segs: vec![IoSeg::new(r.clone(), 0, 65536)],
            };
            assert_eq!(run(&mut e, io).unwrap(), 65536);
        }
        assert_eq!(run(&mut e, Io::Flush).unwrap(), 0);
        let before = std::fs::metadata(&backing).unwrap().blocks();
        let len = 512 * 1024;
        assert_eq!(
            run(
                &mut e,
                Io::Discard {
                    offset: at + 256 * 1024,
                    len
                }
            )
            .unwrap(),
            len as usize
        );
        assert_eq!(run(&mut e, Io::Flush).unwrap(), 0);
        let after = std::fs::metadata(&backing).unwrap().blocks();
        assert!(
            after + len / 512 <= before,
            "backing st_blocks {before} -> {after}"
        );
        let back = read_all(&dev.path, (at + (1 << 20)) as usize);
        let a = at as usize;
        assert!(back[a..a + 256 * 1024].iter().all(|&b| b == 0xcd));
        assert!(
            back[a + 256 * 1024..a + 768 * 1024].iter().all(|&b| b == 0),
            "discarded range reads as zeros"
        );
        assert!(
            back[a + 768 * 1024..a + 1024 * 1024]
                .iter()
                .all(|&b| b == 0xcd)
        );
        // Not aligned to the logical block size: refused before the ioctl.
        let err = e
            .submit(
                3,
                Io::Discard {
                    offset: at + 100,
                    len: 4096,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("logical sector size"), "{err}");
        assert_eq!(e.in_flight(), 0);
    }

    // Read-only: no discard, no writes.
    let ro = Arc::new(
        BlockFile::open(
            &dev.path,
            DiskOpen {
                readonly: true,
                direct: Direct::Auto,
            },
        )
        .unwrap(),
    );
    assert!(ro.is_block_device() && ro.discard().is_none());
    let mut e = DiskQueue::new(ro, 4).unwrap();
    let r = Arc::new(Region::anonymous(4096).unwrap());
    assert!(
        e.submit(
            1,
            Io::Write {
                offset: 0,
                segs: vec![IoSeg::new(r.clone(), 0, 4096)]
            }
        )
        .is_err()
    );
    assert_eq!(
        run(
            &mut e,
            Io::Read {
                offset: 0,
                segs: vec![IoSeg::new(r, 0, 4096)]
            }
        )
        .unwrap(),
        4096
    );
}

#[test]
fn loop_device_512() {
    check_loop_device(None);
}

#[test]
fn loop_device_4096() {
    check_loop_device(Some(4096));
}
