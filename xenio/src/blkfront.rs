//! `xenio blkfront`: connect a userspace blkif frontend to a backend and check
//! it with verified I/O.

use crate::error::{Context, Error, Result};
use clap::Args;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_blkfront::{BlkFront, Options};
use xenio_xenbus::DomId;
use xenio_xenbus::platform::{
    LocalPlatform, Platform, PlatformChoice, PlatformKind, XenPlatform, resolve,
};

/// Options of `xenio blkfront`.
#[derive(Args, Debug)]
pub struct BlkfrontArgs {
    /// The frontend directory, /local/domain/<me>/device/vbd/<devid>, or just the
    /// vdev (xvdb) or device number (51728) for this domain's vbd of that number.
    /// The toolstack (xl block-attach, or `xenio blkback --create-device`) has
    /// written it.
    #[arg(long, value_name = "DIR|VDEV")]
    device: String,

    /// Platform: local, xen, or auto (xen if /dev/xen is there).
    #[arg(long, value_name = "KIND", default_value = "auto")]
    platform: PlatformChoice,

    /// This domain's id on the local platform (on Xen it is read from the store).
    #[arg(long, value_name = "DOMID", default_value_t = 1)]
    domid: u16,

    /// Local platform run directory (see `xenio store --help`).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<std::path::PathBuf>,

    /// Largest ring page order to use (the backend caps it).
    #[arg(long, value_name = "N", default_value_t = 4)]
    ring_page_order: u32,

    /// Queues to use (the backend caps it).
    #[arg(long, value_name = "N", default_value_t = 1)]
    queues: u32,

    /// Indirect segments per request (0: none; the backend caps it).
    #[arg(long, value_name = "N", default_value_t = 32)]
    indirect_segments: u32,

    /// Do not advertise feature-persistent.
    #[arg(long)]
    no_persistent: bool,

    /// Pages of the data pool granted to the backend. On Xen every granted page
    /// (pool, rings, indirect pages) counts against /dev/xen/gntalloc's limit,
    /// 1024 pages per domain by default (module parameter xen_gntalloc.limit).
    #[arg(long, value_name = "PAGES", default_value_t = 256)]
    pool_pages: usize,

    /// Random writes to verify (each then read back, and all again at the end).
    #[arg(long, value_name = "N", default_value_t = 200)]
    writes: usize,

    /// Largest write in KiB (sizes are random multiples of 512 bytes up to this).
    #[arg(long, value_name = "KIB", default_value_t = 256)]
    max_kib: usize,

    /// Check only the first BYTES of the disk (default: all of it, up to 1 GiB,
    /// which is also the size of the in-memory model).
    #[arg(long, value_name = "BYTES")]
    span: Option<u64>,

    /// Seed of the offsets, sizes and contents.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// How long to wait for the backend at each handshake step, in seconds.
    #[arg(long, value_name = "S", default_value_t = 30)]
    timeout: u64,
}

/// splitmix64: small, seeded, good enough for offsets and contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_ne_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const SECTOR: u64 = 512;
const MAX_MODEL: u64 = 1 << 30;

/// The frontend directory `device` names for domain `me`.
fn frontend_dir(device: &str, me: DomId) -> Result<String> {
    if device.starts_with('/') {
        return Ok(device.to_string());
    }
    let devid = xenio_blkback::config::vdev_to_devid(device).ok_or_else(|| {
        Error::Usage(format!(
            "--device {device:?}: neither a store path nor a vdev (xvdb) or device number"
        ))
    })?;
    Ok(format!("/local/domain/{}/device/vbd/{devid}", me.0))
}

/// Run `xenio blkfront`.
pub fn run(a: BlkfrontArgs) -> Result<()> {
    match resolve(a.platform)? {
        PlatformKind::Local => {
            let run_dir = a
                .run_dir
                .clone()
                .unwrap_or_else(xenio_xenbus::local::default_run_dir);
            let p = LocalPlatform::connect(&run_dir, DomId(a.domid))?;
            go(Arc::new(p), &a)
        }
        PlatformKind::Xen => go(Arc::new(XenPlatform::open()?), &a),
    }
}

fn go<P: Platform>(p: Arc<P>, a: &BlkfrontArgs) -> Result<()> {
    let dir = frontend_dir(&a.device, p.domid())?;
    let options = Options {
        max_ring_page_order: a.ring_page_order,
        queues: a.queues.max(1),
        indirect_segments: a.indirect_segments,
        persistent: !a.no_persistent,
        pool_pages: a.pool_pages,
        timeout: Duration::from_secs(a.timeout),
        device_timeout: Duration::from_secs(a.timeout),
        ..Options::default()
    };
    let t0 = Instant::now();
    let mut front =
        BlkFront::connect(p, &dir, options).with_context(|| format!("connecting {dir}"))?;
    let info = front.info().clone();
    println!(
        "connected {dir} in {:.1?}: {} sectors ({} MiB), ring order {}, {} queue(s), {} segments per request, persistent {}, flush {}, discard {:?}, readonly {}",
        t0.elapsed(),
        info.sectors,
        info.size() >> 20,
        info.ring_page_order,
        info.queues,
        info.max_segments,
        info.persistent,
        info.flush,
        info.discard,
        info.readonly
    );
    let result = verify(&mut front, a, &info);
    let closed = front.close();
    result?;
    closed.context("closing")?;
    println!("closed {dir}");
    Ok(())
}

fn verify<P: Platform>(
    front: &mut BlkFront<P>,
    a: &BlkfrontArgs,
    info: &xenio_blkfront::Info,
) -> Result<()> {
    let span = a
        .span
        .unwrap_or(info.size())
        .min(info.size())
        .min(MAX_MODEL);
    let span = span - span % SECTOR;
    if span < SECTOR {
        return Err(Error::Check(format!(
            "the disk ({} bytes) is too small to check",
            info.size()
        )));
    }
    let t0 = Instant::now();
    let mut rng = Rng(a.seed);
    // The model: the bytes this run wrote, and which sectors it knows.
    let mut model = vec![0u8; span as usize];
    let mut known = vec![false; (span / SECTOR) as usize];
    let max = ((a.max_kib as u64 * 1024).max(SECTOR)).min(span);
    let mut bytes = 0u64;
    let mut data = Vec::new();
    let mut back = Vec::new();
    let mut extents = Vec::new();
    if info.readonly {
        // A read-only disk: reads only (of whatever is there), twice, equal.
        for _ in 0..a.writes {
            let len = (1 + rng.below(max / SECTOR)) * SECTOR;
            let off = rng.below((span - len) / SECTOR + 1) * SECTOR;
            data.resize(len as usize, 0);
            back.resize(len as usize, 0);
            front
                .read_at(off, &mut data)
                .with_context(|| format!("read {len} at {off}"))?;
            front
                .read_at(off, &mut back)
                .with_context(|| format!("read {len} at {off}"))?;
            if data != back {
                return Err(Error::Check(format!(
                    "two reads of {len} bytes at {off} differ"
                )));
            }
            bytes += 2 * len;
        }
        println!(
            "read-only disk: {} pairs of reads agree ({} KiB)",
            a.writes,
            bytes >> 10
        );
        return Ok(());
    }
    for i in 0..a.writes {
        let len = (1 + rng.below(max / SECTOR)) * SECTOR;
        let off = rng.below((span - len) / SECTOR + 1) * SECTOR;
        data.resize(len as usize, 0);
        rng.fill(&mut data);
        front
            .write_at(off, &data)
            .with_context(|| format!("write #{i} of {len} bytes at {off}"))?;
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
        for s in off / SECTOR..(off + len) / SECTOR {
            known[s as usize] = true;
        }
        back.resize(len as usize, 0);
        front
            .read_at(off, &mut back)
            .with_context(|| format!("read-back #{i} of {len} bytes at {off}"))?;
        if back != data {
            return Err(mismatch("read-back", off, &data, &back));
        }
        bytes += 2 * len;
        extents.push((off, len));
    }
    if info.flush || info.barrier {
        front.flush().context("flush")?;
    }
    // Every extent again, after all the overlapping writes: the last write wins.
    for &(off, len) in &extents {
        back.resize(len as usize, 0);
        front
            .read_at(off, &mut back)
            .with_context(|| format!("final read of {len} bytes at {off}"))?;
        let want = &model[off as usize..(off + len) as usize];
        if back != want {
            return Err(mismatch("final read", off, want, &back));
        }
        bytes += len;
    }
    let mut discarded = "not offered".to_string();
    if let Some((granularity, _)) = info.discard {
        // Discard an aligned range, then write it again and check: the disk still
        // works and holds what was written last.
        let g = granularity.max(SECTOR);
        let len = (span / 4 / g).max(1) * g;
        if len <= span {
            front
                .discard(0, len)
                .with_context(|| format!("discard of {len} bytes at 0"))?;
            data.resize(SECTOR as usize * 8, 0);
            rng.fill(&mut data);
            let l = (data.len() as u64).min(span);
            front
                .write_at(0, &data[..l as usize])
                .context("write after discard")?;
            back.resize(l as usize, 0);
            front.read_at(0, &mut back).context("read after discard")?;
            if back[..] != data[..l as usize] {
                return Err(mismatch(
                    "read after discard",
                    0,
                    &data[..l as usize],
                    &back,
                ));
            }
            discarded = format!("{len} bytes ok");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let known_kib = known.iter().filter(|k| **k).count() as u64 / 2;
    println!(
        "verified: {} writes ({} KiB of the disk known), {} KiB moved in {secs:.1} s ({:.1} MiB/s), flush {}, discard {discarded}",
        a.writes,
        known_kib,
        bytes >> 10,
        bytes as f64 / secs.max(1e-9) / 1048576.0,
        if info.flush || info.barrier {
            "ok"
        } else {
            "not offered"
        }
    );
    Ok(())
}

fn mismatch(what: &str, off: u64, want: &[u8], got: &[u8]) -> Error {
    let at = want.iter().zip(got).position(|(w, g)| w != g).unwrap_or(0);
    Error::Check(format!(
        "{what}: data differs at disk byte {} (wanted {:#04x}, read {:#04x})",
        off + at as u64,
        want.get(at).copied().unwrap_or(0),
        got.get(at).copied().unwrap_or(0)
    ))
}
