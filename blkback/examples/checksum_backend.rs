//! A custom block backend as a real program: a disk in memory that keeps a
//! checksum of every 4 KiB block and refuses to return a block whose bytes no
//! longer match it (an `ERROR` for that request only, whatever was merged with
//! it). `--corrupt-block N` flips a byte of block N at start, as bit rot would.
//!
//! On the local platform (no Xen: each domain a process), with the store
//! running:
//!
//!     xenio store --run-dir /dev/shm/xenio --domains 1 &
//!     cargo run -p xenio-blkback --example checksum_backend -- --run-dir /dev/shm/xenio
//!     cargo run -p xenio-blkback --example checksum_frontend -- --run-dir /dev/shm/xenio
//!
//! In dom0 on Xen, serving domain 5's xvdb (`--backend-type xenio` where the
//! kernel's xen-blkback claims `vbd`):
//!
//!     checksum_backend --platform xen --frontend 5 --vdev xvdb --backend-type xenio
//!
//! It creates the device's store nodes, serves until SIGTERM or SIGINT, then
//! closes cleanly (the frontend sees the device go) and removes the nodes.
//! Options: `--platform local|xen|auto`, `--run-dir DIR`, `--frontend DOMID`
//! (1), `--vdev NAME` (xvda), `--backend-type TYPE` (vbd), `--size-mib N`
//! (64), `--corrupt-block N`.
use std::io;
use std::sync::Mutex;
use xenio_sdk::blkback::Server;
use xenio_sdk::blkback::storage::{DiscardInfo, DiskInfo, SyncStorage, Synchronous};

const BLOCK: usize = 4096;

/// The storage logic: the bytes, and one checksum per block.
struct ChecksumDisk {
    state: Mutex<(Vec<u8>, Vec<u64>)>,
}

/// FNV-1a, 64 bits.
fn checksum(block: &[u8]) -> u64 {
    block.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl ChecksumDisk {
    fn new(size: usize) -> Self {
        let sums = vec![checksum(&[0; BLOCK]); size / BLOCK];
        ChecksumDisk {
            state: Mutex::new((vec![0; size], sums)),
        }
    }

    /// Flip a byte of `block` behind the checksum's back.
    fn corrupt(&self, block: usize) {
        self.state.lock().unwrap().0[block * BLOCK + 7] ^= 0x40;
    }

    /// The blocks `len` bytes at `offset` touch.
    fn blocks(offset: u64, len: usize) -> std::ops::Range<usize> {
        offset as usize / BLOCK..(offset as usize + len).div_ceil(BLOCK)
    }
}

impl SyncStorage for ChecksumDisk {
    fn info(&self) -> DiskInfo {
        let size = self.state.lock().unwrap().0.len() as u64;
        DiskInfo {
            sectors: size / 512,
            flush: true,
            discard: Some(DiscardInfo {
                granularity: BLOCK as u32,
                alignment: 0,
            }),
            description: format!("{size} bytes of checksummed memory"),
            ..Default::default()
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let (data, sums) = &*self.state.lock().unwrap();
        for b in Self::blocks(offset, buf.len()) {
            if checksum(&data[b * BLOCK..][..BLOCK]) != sums[b] {
                let e = format!("block {b}: checksum mismatch");
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        buf.copy_from_slice(&data[offset as usize..][..buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let (data, sums) = &mut *self.state.lock().unwrap();
        data[offset as usize..][..bytes.len()].copy_from_slice(bytes);
        for b in Self::blocks(offset, bytes.len()) {
            sums[b] = checksum(&data[b * BLOCK..][..BLOCK]);
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(()) // memory: nothing volatile to flush
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_at(offset, &vec![0; len as usize])
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // --platform, --run-dir, --frontend, --vdev, --backend-type; then this program's own.
    let (server, own) = Server::new().args(std::env::args().skip(1))?;
    let size_mib: usize = own.get("--size-mib").map_or(Ok(64), |v| v.parse())?;
    let disk = ChecksumDisk::new(size_mib << 20);
    if let Some(block) = own.get("--corrupt-block") {
        disk.corrupt(block.parse()?);
    }
    let server = server
        .create_device(true)
        .handle_signals(true)
        .on_io_error(|failure| eprintln!("checksum_backend: {failure}"));
    println!("checksum_backend: serving {size_mib} MiB");
    let outcome = server.serve(&Synchronous::new(disk))?;
    eprintln!("checksum_backend: {outcome:?}: {}", server.counters());
    Ok(())
}
