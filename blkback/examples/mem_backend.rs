//! A custom blkback storage in one page: a disk held in memory.
//!
//! blkback's framework does the rings, grants, validation, reordering and the event
//! loop; a storage only performs the I/O it is handed. Run the demo (a frontend
//! and this backend as threads of one process):
//!
//!     cargo run -p xenio-blkback --example mem_backend
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenio_blkback::storage::{Completion, DiskInfo, Io, IoMem, IoSeg, Storage, StorageQueue};

/// A disk of `size` bytes in memory.
pub struct MemStorage {
    data: Arc<Mutex<Vec<u8>>>,
}

impl MemStorage {
    /// A zeroed disk of `size` bytes (a multiple of 512).
    pub fn new(size: usize) -> Self {
        MemStorage {
            data: Arc::new(Mutex::new(vec![0; size])),
        }
    }
}

impl Storage for MemStorage {
    type Queue = MemQueue;

    fn info(&self) -> DiskInfo {
        let len = self.data.lock().unwrap().len() as u64;
        DiskInfo {
            sectors: len / 512,
            sector_size: 512,
            physical_sector_size: 512,
            readonly: false,
            flush: true,
            discard: None,
            description: format!("{len} bytes of memory"),
        }
    }

    fn queue(&self, _depth: u32) -> xenio_xenbus::Result<MemQueue> {
        Ok(MemQueue {
            data: self.data.clone(),
            done: Vec::new(),
        })
    }
}

/// One queue: I/O happens at submission; completions wait in `done`.
pub struct MemQueue {
    data: Arc<Mutex<Vec<u8>>>,
    done: Vec<Completion>,
}

fn copy(
    data: &mut [u8],
    offset: u64,
    segs: &[IoSeg],
    into_segs: bool,
) -> xenio_xenbus::Result<usize> {
    let mut at = offset as usize;
    for s in segs {
        let disk = data
            .get_mut(at..at + s.len)
            .ok_or_else(|| xenio_xenbus::Error::Limit("past the end".into()))?;
        match (&s.mem, into_segs) {
            (IoMem::ReadWrite(r), true) => r.write(s.offset, disk)?,
            (IoMem::ReadWrite(r), false) => r.read(s.offset, disk)?,
            (IoMem::ReadOnly(r), false) => r.read(s.offset, disk)?,
            (IoMem::ReadOnly(_), true) => {
                return Err(xenio_xenbus::Error::Limit(
                    "read into read-only memory".into(),
                ));
            }
        }
        at += s.len;
    }
    Ok(at - offset as usize)
}

impl StorageQueue for MemQueue {
    fn submit(&mut self, tag: u64, io: Io) -> xenio_xenbus::Result<()> {
        let mut data = self.data.lock().unwrap();
        let result = match io {
            Io::Read { offset, segs } => copy(&mut data, offset, &segs, true),
            Io::Write { offset, segs } => copy(&mut data, offset, &segs, false),
            Io::Flush => Ok(0),
            Io::Discard { offset, len } => {
                data[offset as usize..(offset + len) as usize].fill(0);
                Ok(len as usize)
            }
        };
        self.done.push(Completion {
            tag,
            result: result.map_err(std::io::Error::other),
        });
        Ok(())
    }

    fn flush_submissions(&mut self) -> xenio_xenbus::Result<()> {
        Ok(())
    }

    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        _wait_for: usize,
        _timeout: Option<Duration>,
    ) -> xenio_xenbus::Result<()> {
        out.append(&mut self.done);
        Ok(())
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
    let storage = MemStorage::new(4 << 20);
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
    let data = storage.data.lock().unwrap();
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
