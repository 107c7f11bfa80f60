//! Online resize: an image file that grows while a frontend is connected is
//! announced as Linux's blkback announces it (new `sectors`, `state` written
//! again), blkfront sees the new size, and I/O past the old end works.
//! blkfront <-> blkback <-> a real
//! file as threads of one process; the same through `xenio blkd` processes is
//! in `xenio/tests/blkd.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xenio_blkback::storage::FileStorage;
use xenio_blkback::{BackendConfig, Counters, serve};
use xenio_blkfront::{BlkFront, Options};
use xenio_hostio::disk::Direct;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
use xenio_xenbus::platform::{InProcess, Platform};
use xenio_xenbus::{DomId, Store, Tx};

#[test]
fn a_file_that_grows_is_announced_and_served() {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("resize-{}.img", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let storage = FileStorage::open(&path, false, Direct::Auto).unwrap();
    let config = BackendConfig {
        once: true,
        ..Default::default()
    };
    let (counters, stop) = (Counters::default(), AtomicBool::new(false));
    /// Stops the backend when the test thread leaves the scope, even panicking.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let backend = s.spawn(|| serve(&dom0, &paths.backend, &storage, &config, &counters, &stop));
        let _stop = StopOnDrop(&stop);
        let mut f = BlkFront::connect(guest.clone(), &paths.frontend, Options::default()).unwrap();
        assert_eq!(f.size(), 4 << 20);
        f.write_at((4 << 20) - 4096, &[1u8; 4096]).unwrap();
        assert!(!f.refresh().unwrap(), "nothing changed yet");
        // Grow the image by 4 MiB under the running backend.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let t = Instant::now();
        while !f.refresh().unwrap() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "no new size after 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(f.size(), 8 << 20);
        let sectors = guest
            .store()
            .read_string(Tx::NONE, &format!("{}/sectors", paths.backend))
            .unwrap();
        assert_eq!(sectors, (16384u64).to_string());
        let data: Vec<u8> = (0..8192).map(|i| (i % 253) as u8).collect();
        f.write_at((8 << 20) - 8192, &data).unwrap();
        let mut back = vec![0u8; 8192];
        f.read_at((8 << 20) - 8192, &mut back).unwrap();
        assert_eq!(back, data);
        f.close().unwrap();
        backend.join().unwrap().unwrap();
    });
    let file = std::fs::read(&path).unwrap();
    assert_eq!(file.len(), 8 << 20);
    assert_eq!(&file[(4 << 20) - 4096..4 << 20], &[1u8; 4096][..]);
    let data: Vec<u8> = (0..8192).map(|i| (i % 253) as u8).collect();
    assert_eq!(&file[(8 << 20) - 8192..], &data[..]);
    std::fs::remove_file(&path).unwrap();
}
