//! `xenio blkback`.

use crate::error::{Context, Error, Result};
use crate::serving::ServeArgs;
use clap::Args;
use std::path::PathBuf;
use xenio_blkback::{BackendConfig, DiskSpec, Server};
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

    #[command(flatten)]
    serve: ServeArgs,

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
    let storage = a
        .disk
        .storage
        .open(&a.serve.open_options(a.disk.readonly))
        .context("opening the disk")?;
    let config = BackendConfig {
        once: a.once,
        cpus: a.cpus.as_ref().map(|c| c.0.clone()).unwrap_or_default(),
        discard: a.disk.discard,
        cdrom: a.disk.cdrom,
        ..a.serve.backend_config()
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
