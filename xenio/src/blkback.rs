//! `xenio blkback`.

use crate::error::{Context, Error, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use xenio_blkback::reorder::ReorderMode;
use xenio_blkback::{BackendConfig, DiskSpec, GrantMode, OpenOptions, QueueConfig, Server, Wait};
use xenio_hostio::disk::Direct;
use xenio_xenbus::DomId;
use xenio_xenbus::handshake::keys::blkif;
use xenio_xenbus::platform::PlatformChoice;

/// Options of `xenio blkback`.
#[derive(Args, Debug)]
pub struct BlkbackArgs {
    /// The disk, in xl's disk syntax: comma-separated key=value items with
    /// `target=` last (it takes the rest of the line, commas included), or the
    /// positional form TARGET,FORMAT,VDEV,ACCESS. Keys: vdev= (xvda, hdb, sdc,
    /// or a device number; required), access=rw|ro, devtype=disk|cdrom,
    /// discard|no-discard, format=, target=. What format= and target= serve:
    ///
    ///   format=raw (default), target=/path/disk.img or /dev/...: a raw image
    ///     file or block device, through io_uring with O_DIRECT (--direct, --sync-io);
    ///
    ///   format=qcow2, target=/path/disk.qcow2: a qcow2 image and its backing
    ///     chain (as qemu-img create -f qcow2 [-b BASE -F FMT] makes them; backing
    ///     files opened read-only, relative names from the image's directory);
    ///     discarded ranges read as zeros; stays clean for qemu-img check
    ///     (--qcow2-threads, --direct);
    ///
    ///   format=raw, target=`nbd://HOST[:PORT]/EXPORT` (port 10809 by default),
    ///     target=nbd+unix:///EXPORT?socket=PATH, and nbds:// / nbds+unix:// with
    ///     TLS: an NBD export through libnbd, pipelined, one connection per queue
    ///     when the server offers multi-conn (else one queue); a server that
    ///     goes away is reconnected to and unanswered requests re-issued
    ///     (--nbd-connect-timeout, --nbd-reconnect-timeout, --nbd-io-timeout);
    ///
    ///   format=raw,
    ///     target=`rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:conf=CEPH.CONF][:id=CLIENT][:keyring=PATH][:OPTION=VALUE...]`:
    ///     a Ceph RBD image through librbd, as QEMU spells it (conf= the
    ///     cluster's ceph.conf, default /etc/ceph/ceph.conf; id= the client name
    ///     without "client.", default admin; keyring= its key; any other Ceph
    ///     option, e.g. rados_osd_op_timeout=30 so that I/O fails rather than
    ///     waits for an OSD that stays down; a backslash escapes ':'). Only in
    ///     builds with the cargo feature rbd (librbd-dev).
    ///
    /// Refused with the way out: format=vhd/vpc/vhdx (convert with qemu-img
    /// convert -O qcow2), qcow, qed, vmdk, empty, and qcow2 over NBD or RBD
    /// (export the image with qemu-nbd, which serves it as raw).
    #[arg(long, value_name = "SPEC", verbatim_doc_comment)]
    disk: DiskSpec,

    /// The frontend's domain id.
    #[arg(long, value_name = "DOMID")]
    frontend: u16,

    /// This backend's domain id (on Xen: read from the store; locally: default 0).
    #[arg(long, value_name = "DOMID", default_value_t = 0)]
    backend: u16,

    /// Platform: local (processes on this host), xen, or auto (xen if /dev/xen is there).
    #[arg(long, value_name = "KIND", default_value = "auto")]
    platform: PlatformChoice,

    /// Local platform run directory (see `xenio store --help`).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,

    /// Write the backend and frontend directories first, as a toolstack does
    /// (the frontend's virtual-device, device-type, backend, backend-id and state;
    /// the backend's frontend, frontend-id, online, state, params, mode, type,
    /// dev, device-type), and remove them again when the backend stops: on
    /// SIGINT/SIGTERM it says Closing, waits (at most 10 s) for the frontend to
    /// close, says Closed and deletes both directories, so a Linux frontend
    /// detaches its disk. This is how a xenio backend is attached without xl.
    #[arg(long)]
    create_device: bool,

    /// The class of the backend directory:
    /// /local/domain/<backend>/backend/<TYPE>/<frontend>/<devid>. The default
    /// `vbd` is the standard one; in a Xen domain where the kernel's xen-blkback is
    /// loaded it also claims every backend/vbd device, so give xenio its own class
    /// there (e.g. --backend-type xenio, as QEMU uses `qdisk`). Frontends follow
    /// their `backend` key whatever the class.
    #[arg(long, value_name = "TYPE", default_value = "vbd")]
    backend_type: String,

    /// Largest ring page order offered (max-ring-page-order; Linux offers 4).
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_ring_page_order: u32,

    /// Queues offered (multi-queue-max-queues), one ring and one thread each.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_queues: u32,

    /// Indirect segments per request offered (feature-max-indirect-segments; 0: none).
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_indirect_segments: u32,

    /// Do not offer persistent grants (feature-persistent).
    #[arg(long)]
    no_persistent: bool,

    /// Most persistent grants kept mapped per queue (least recently used go first).
    #[arg(long, value_name = "N", default_value_t = 16384)]
    max_persistent_grants: usize,

    /// How to reach the frontend's pages: map (zero copy) or copy (grant copy into
    /// bounce buffers, like QEMU's qdisk).
    #[arg(long, value_name = "MODE", default_value = "map")]
    grant_mode: GrantMode,

    /// Request reordering within a batch: off, sort (by sector) or merge (sort and
    /// merge adjacent requests). Results always equal in-order execution.
    #[arg(long, value_name = "MODE", default_value = "merge")]
    reorder: ReorderMode,

    /// Largest merged I/O in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    max_merge_kib: u64,

    /// Most requests taken from a ring in one batch (the reordering window).
    #[arg(long, value_name = "N", default_value_t = 512)]
    batch: usize,

    /// How long each queue spins before it sleeps. Without this option
    /// (the default) waiting adapts: a queue spins only while something is
    /// outstanding and its recent waits say the next event is due soon (it
    /// learns, separately for "waiting for requests" and "waiting for I/O",
    /// the share of waits that a spin of at most 150 us would have caught and
    /// the mean and deviation of those short waits; it spins while at least
    /// two thirds would have been caught, for the mean plus three deviations
    /// plus 5 us, and sleeps on the event channel otherwise, or when the CPU
    /// turns out to be shared and a spin is kept off it). While I/O is in
    /// flight, the wait for the frontend's next requests is not spun when the
    /// storage is slow against what the spin saves (mean service time over 32
    /// times the spin or a 50 us wake-up: 1 MiB reads, say). An idle device
    /// sleeps. With N: always spin N
    /// microseconds (looking for requests when idle, for requests and I/O
    /// completions while I/O is in flight) before sleeping; 0 is purely
    /// event-driven. Spins yield the CPU every 10 us, so a frontend that shares
    /// the CPU still runs; a fixed window costs a core while it spins.
    #[arg(long, value_name = "US")]
    poll_us: Option<u64>,

    /// Accepted for old scripts: --poll-us windows are always fixed now (the
    /// adaptive waiting is the default without --poll-us).
    #[arg(long, hide = true)]
    poll_fixed: bool,

    /// Storage operations in flight per queue (io_uring depth).
    #[arg(long, value_name = "N", default_value_t = 128)]
    io_depth: u32,

    /// Storage operations handed to the kernel per system call (0: a whole
    /// batch at once). Between chunks blkback answers what already completed,
    /// so the frontend refills the ring while the rest is submitted; submitting
    /// a large batch in one go leaves the disk's queue running dry meanwhile.
    #[arg(long, value_name = "N", default_value_t = 4)]
    submit_chunk: usize,

    /// O_DIRECT for raw and qcow2 images: auto (fall back to the page cache,
    /// and say so, where refused), on, off.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    direct: String,

    /// Raw images: synchronous system calls instead of io_uring.
    #[arg(long)]
    sync_io: bool,

    /// qcow2: worker threads per queue for what cannot go straight to the file
    /// (allocating writes, compressed clusters, flush, discard; 0: min(--io-depth, 32)).
    #[arg(long, value_name = "N", default_value_t = 0)]
    qcow2_threads: usize,

    /// NBD and RBD: seconds connecting may take before the disk is refused.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    nbd_connect_timeout: u64,

    /// NBD: seconds a server may stay away (reconnecting every 200 ms) before
    /// the requests waiting for it fail with an I/O error; new requests then
    /// fail at once until it is back. The device and other devices keep serving.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    nbd_reconnect_timeout: u64,

    /// NBD: seconds without a reply before a connection counts as hung (it is
    /// closed, reconnected, and its requests re-issued; 0: wait forever).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    nbd_io_timeout: u64,

    /// NBD and RBD: discard by writing zeros (NBD_CMD_WRITE_ZEROES,
    /// rbd_aio_write_zeroes), so that discarded ranges read back as zeros.
    #[arg(long)]
    discard_zeroes: bool,

    /// Exit when the frontend closes the device instead of waiting for it to return.
    #[arg(long)]
    once: bool,

    /// Pin the queue threads: queue i runs on the i-th CPU of LIST, round robin
    /// (`0`, `0,1`, `0-3`, `0,2-3`). Default: unpinned, where the scheduler puts
    /// them. On a small VM, the frontend's CPU saves the cross-core wake-up of
    /// every notification, at the price of sharing that CPU.
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    cpus: Option<CpuList>,
}

/// A list of CPU numbers, as `--cpus` takes it.
#[derive(Clone, Debug)]
struct CpuList(Vec<usize>);

/// Parse `0,2-3` into `[0, 2, 3]`: comma-separated CPU numbers and inclusive
/// ranges, as taskset's `--cpu-list` takes them (at most 4096 CPUs).
fn parse_cpu_list(s: &str) -> Result<CpuList> {
    const MAX: usize = 4096;
    let num = |t: &str| -> Result<usize> {
        let n: usize = t
            .trim()
            .parse()
            .map_err(|_| Error::Usage(format!("{t:?} is not a CPU number")))?;
        if n >= MAX {
            return Err(Error::Usage(format!(
                "CPU {n} is beyond the {MAX} this takes"
            )));
        }
        Ok(n)
    };
    let mut cpus = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(Error::Usage(format!("{part:?}: a range goes upwards")));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    Ok(CpuList(cpus))
}

/// Run `xenio blkback`.
pub fn run(a: BlkbackArgs) -> Result<()> {
    let direct = match a.direct.as_str() {
        "auto" => Direct::Auto,
        "on" => Direct::On,
        "off" => Direct::Off,
        o => {
            return Err(Error::Usage(format!(
                "--direct {o:?}: expected auto, on or off"
            )));
        }
    };
    let open = OpenOptions {
        readonly: a.disk.readonly,
        direct,
        force_sync: a.sync_io,
        depth: a.io_depth.max(1),
        qcow2_threads: a.qcow2_threads,
        connect_timeout: Duration::from_secs(a.nbd_connect_timeout.max(1)),
        reconnect_timeout: Duration::from_secs(a.nbd_reconnect_timeout),
        io_timeout: (a.nbd_io_timeout > 0).then(|| Duration::from_secs(a.nbd_io_timeout)),
        discard_zeroes: a.discard_zeroes,
    };
    let storage = a.disk.storage.open(&open).context("opening the disk")?;
    let config = BackendConfig {
        max_ring_page_order: a.max_ring_page_order,
        max_queues: a.max_queues.max(1),
        max_indirect_segments: a.max_indirect_segments,
        persistent: !a.no_persistent,
        once: a.once,
        queue: QueueConfig {
            grant_mode: a.grant_mode,
            persistent: !a.no_persistent,
            max_persistent_grants: a.max_persistent_grants,
            reorder: a.reorder,
            max_merge_sectors: a.max_merge_kib * 2,
            max_batch: a.batch.max(1),
            wait: a
                .poll_us
                .map_or(Wait::Adaptive, |us| Wait::Fixed(Duration::from_micros(us))),
            io_depth: a.io_depth.max(1),
            submit_chunk: a.submit_chunk,
            on_io_error: None,
        },
        cpus: a.cpus.as_ref().map(|c| c.0.clone()).unwrap_or_default(),
        discard: a.disk.discard,
        cdrom: a.disk.cdrom,
        ..Default::default()
    };
    // Before the device is created: a frontend should never see a disk whose
    // backend is about to give up.
    xenio_blkback::backend::check_cpus(&config.cpus).context("--cpus")?;
    let mut server = Server::new()
        .platform(a.platform)
        .backend_domid(DomId(a.backend))
        .frontend(DomId(a.frontend))
        .vdev(a.disk.vdev.clone())
        .backend_type(a.backend_type.clone())
        .create_device(a.create_device)
        .cdrom(a.disk.cdrom)
        .device_key(blkif::PARAMS, a.disk.target.display().to_string())
        .config(config)
        .handle_signals(true);
    if let Some(dir) = &a.run_dir {
        server = server.run_dir(dir);
    }
    server.paths(DomId(a.backend)).context("--backend-type")?;
    println!(
        "serving {} as {} to domain {}",
        a.disk.storage, a.disk.vdev, a.frontend,
    );
    let outcome = server.serve(&storage)?;
    eprintln!("blkback: {outcome:?}: {}", server.counters());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_parse_as_taskset_writes_them() {
        let ok = |s: &str| parse_cpu_list(s).map(|c| c.0).map_err(|e| e.to_string());
        assert_eq!(ok("0"), Ok(vec![0]));
        assert_eq!(ok("0,1"), Ok(vec![0, 1]));
        assert_eq!(ok("0-3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(ok("1,0,2-3"), Ok(vec![1, 0, 2, 3]));
        assert_eq!(ok(" 2 - 3 "), Ok(vec![2, 3]));
        for bad in ["", "a", "1,", "-1", "3-1", "1-", "4096", "0-4096", "1.5"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
