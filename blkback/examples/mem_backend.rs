//! A custom blkback storage in one page: a disk held in memory.
//!
//! blkback's framework does the rings, grants, validation, reordering and the event
//! loop; a storage only performs the I/O it is handed. Run the demo (a frontend
//! and this backend as threads of one process):
//!
//!     cargo run -p xenio-blkback --example mem_backend
use std::io;
use std::sync::{Arc, Mutex};
use xenio_blkback::storage::{DiskInfo, SyncStorage, Synchronous};

/// A disk of `size` bytes in memory.
pub struct MemStorage {
    data: Mutex<Vec<u8>>,
}

impl MemStorage {
    /// A zeroed disk of `size` bytes (a multiple of 512).
    pub fn new(size: usize) -> Self {
        MemStorage {
            data: Mutex::new(vec![0; size]),
        }
    }
}

/// The framework hands over whole sectors inside the disk: no checks needed.
impl SyncStorage for MemStorage {
    fn info(&self) -> DiskInfo {
        let len = self.data.lock().unwrap().len() as u64;
        DiskInfo {
            sectors: len / 512,
            flush: true,
            description: format!("{len} bytes of memory"),
            ..Default::default()
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = self.data.lock().unwrap();
        buf.copy_from_slice(&data[offset as usize..][..buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut disk = self.data.lock().unwrap();
        disk[offset as usize..][..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(()) // memory is as durable as it gets
    }
}

/// Serve a 4 MiB memory disk to a frontend thread, write, read back, close.
pub fn demo() -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::atomic::AtomicBool;
    use xenio_blkback::{BackendConfig, Counters, serve};
    use xenio_blkfront::{BlkFront, Options};
    use xenio_xenbus::DomId;
    use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
    use xenio_xenbus::platform::{InProcess, Platform};

    let world = InProcess::new()?;
    let (dom0, guest) = (world.domain(DomId(0))?, Arc::new(world.domain(DomId(1))?));
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[])?;
    let storage = Synchronous::new(MemStorage::new(4 << 20));
    let config = BackendConfig {
        once: true,
        ..Default::default()
    };
    let (counters, stop) = (Counters::default(), AtomicBool::new(false));
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let backend = s.spawn(|| serve(&dom0, &paths.backend, &storage, &config, &counters, &stop));
        let mut disk = BlkFront::connect(guest.clone(), &paths.frontend, Options::default())?;
        disk.write_at(
            4096,
            b"hello from a memory-backed xenio disk!"
                .repeat(100)
                .get(..3584)
                .unwrap_or_default(),
        )?;
        let mut back = vec![0u8; 3584];
        disk.read_at(4096, &mut back)?;
        println!("read back: {:?}...", String::from_utf8_lossy(&back[..38]));
        disk.close()?;
        backend.join().map_err(|_| "backend panicked")??;
        Ok(())
    })?;
    let data = storage.disk().data.lock().unwrap();
    assert_eq!(
        &data[4096..4096 + 38],
        b"hello from a memory-backed xenio disk!"
    );
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    demo()
}
