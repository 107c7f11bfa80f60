//! `xenio`: one command for xenio's daemons and tools.
#![forbid(unsafe_code)]
// The doc comments of this binary are its `--help` text (clap prints them as they
// are), so paths like /local/domain/<domid> stay plain text, not Markdown.
#![allow(rustdoc::invalid_html_tags)]

use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use xenio_xenbus::DomId;
use xenio_xenstore::daemon::{Daemon, DaemonConfig, Quotas};

use crate::error::{Context, Result};

/// xenio: Xen split-driver I/O in userspace.
#[derive(Parser, Debug)]
#[command(name = "xenio", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the local platform's store daemon (xenstored) in the foreground.
    ///
    /// It speaks the xenstore wire protocol (xen/io/xs_wire.h) on Unix sockets, so
    /// xenstore-utils (with XENSTORED_PATH set to a socket), xenstore-rs and xenio's
    /// own client work against it. Each connection acts as the domain of the socket
    /// it came through:
    ///
    ///   RUN/xenstored/socket           dom0 (privileged: may do anything)
    ///   RUN/xenstored/domain/<domid>   domain <domid>, created when dom0 sends
    ///                                  XS_INTRODUCE (or --domains), removed on
    ///                                  XS_RELEASE
    ///
    /// Quotas apply to unprivileged domains (dom0 is trusted, as with xenstored);
    /// the defaults are xenstored's. The socket paths are printed on standard
    /// output once the daemon listens. SIGINT or SIGTERM stop it and remove its
    /// sockets. Log level: RUST_LOG (default warn; info shows domains coming and
    /// going, debug each failed request).
    #[command(verbatim_doc_comment)]
    Store(StoreArgs),
    /// Serve a disk to a blkif frontend (blkback): a raw image or block device,
    /// a qcow2 image, an NBD export or a Ceph RBD image.
    ///
    /// The disk is given in xl's disk specification syntax, e.g.
    ///   --disk format=raw,vdev=xvda,access=rw,target=/srv/disk.img
    ///   --disk format=qcow2,vdev=xvda,target=/srv/overlay.qcow2
    ///   --disk vdev=xvda,target=nbd+unix:///disk?socket=/run/nbd.sock
    ///   --disk vdev=xvda,target=nbd://192.0.2.7:10809/disk
    ///   --disk vdev=xvda,target=rbd:rbd/vm1:conf=/etc/ceph/ceph.conf:id=xen
    /// (access=ro makes a read-only disk whose writes get an error response;
    /// --disk below lists every form).
    ///
    /// On the local platform (the default without Xen) the store daemon must run
    /// (`xenio store --run-dir RUN --domains <frontend>`); --create-device then
    /// writes both device directories as a toolstack would, so a frontend
    /// process can connect to /local/domain/<frontend>/device/vbd/<devid>.
    /// The backend serves until SIGINT/SIGTERM, or until the frontend closes when
    /// --once is given; a frontend that reinitialises is served again.
    #[command(verbatim_doc_comment)]
    Blkback(blkback::BlkbackArgs),
    /// Serve every disk (and vif) the toolstack creates: a backend daemon for
    /// a Xen host's (or a local platform's) backend classes.
    ///
    /// It watches /local/domain/<self>/backend/<CLASS>/ and serves each device
    /// directory that appears there (libxl writes one per disk: `xl create`,
    /// `xl block-attach`), each with its own queues and threads, in this one
    /// process. From each device's nodes it honours:
    ///   params          a plain absolute path (an image file or a block
    ///                   device) or format:target as libxl writes it for
    ///                   qdisk: raw:, aio:, qcow2: images, nbd:// URIs,
    ///                   rbd:pool/image (as blkback --disk); vhd, vmdk and
    ///                   the like are refused on that device, named
    ///   mode            w (read-write) or r (read-only)
    ///   device-type     disk, or cdrom (VDISK_CDROM, served read-only)
    ///   removable       1: VDISK_REMOVABLE in info
    ///   discard-enable  0: no feature-discard
    /// and the frontend's protocol (native, x86_32-abi, x86_64-abi). A device
    /// whose nodes make no sense or whose storage cannot be opened gets the
    /// reason in /local/domain/<self>/error/backend/<CLASS>/<fe>/<devid>/error
    /// and state Closing; the other devices are not disturbed. A device ends
    /// when the toolstack takes it offline (online = 0: it says Closed once
    /// the frontend closed, as `xl block-detach` waits for), when its directory
    /// is removed, or when its frontend's domain is gone (@releaseDomain).
    ///
    /// On a Xen host, with Linux's xen-blkback not loaded (it claims every
    /// backend/vbd device), install the hotplug script and start the daemon:
    ///   install -m 755 tools/hotplug/block-xenio /etc/xen/scripts/
    ///   rmmod xen-blkback; xenio backendd --platform xen &
    ///   xl block-attach <dom> 'vdev=xvdb,access=rw,backendtype=phy,script=block-xenio,target=/srv/b.img'
    ///
    /// With --class vbd,vif it serves vifs too (Linux's xen-netback not
    /// loaded: it claims every backend/vif device): each gets a TAP device,
    /// named by the vif's `vifname` node, else vif<domid>.<devid>, created for
    /// the device and gone with it, served as `xenio netback` serves one (the
    /// --vif-* options); `mac`, `mtu` and `type` are checked, `rate` is
    /// refused. The hotplug script plugs the TAP into the `bridge` node's
    /// bridge and writes hotplug-status = connected, which the device waits
    /// for before it says Connected (as Linux's netback does):
    ///   install -m 755 tools/hotplug/vif-xenio /etc/xen/scripts/
    ///   rmmod xen-netback; xenio backendd --platform xen --class vbd,vif &
    ///   xl network-attach <dom> bridge=xenbr0 script=vif-xenio
    /// (or vif = ['bridge=xenbr0,script=vif-xenio'] in the domain's config).
    /// SIGINT/SIGTERM close every device (or, with --keep-on-exit, leave the
    /// disks for the next daemon; vifs are always closed). Log: RUST_LOG (info
    /// shows devices coming and going).
    #[command(verbatim_doc_comment)]
    Backendd(backendd::BackenddArgs),
    /// Stand in for the QEMU that libxl starts for a PV domain with
    /// backendtype=qdisk disks, so that `xenio backendd --class qdisk` serves
    /// those disks with no QEMU on the host.
    ///
    /// libxl runs it with QEMU's command line (xl config:
    /// device_model_override = "/usr/local/lib/xenio/xenio-device-model",
    /// the wrapper in tools/device-model/). It answers QMP on the monitor
    /// sockets that command line names (/var/run/xen/qmp-libxl-<domid>, ...)
    /// as QEMU does for a PV domain with no emulated device (the greeting,
    /// qmp_capabilities, query-chardev, query-vnc, query-status, query-name,
    /// query-version, query-commands, query-blockstats, stop, cont, quit;
    /// any other command: CommandNotFound), writes
    /// /local/domain/<self>/device-model/<domid>/state = running (what libxl
    /// waits for), and runs until SIGHUP (what libxl's destroy sends),
    /// SIGTERM, SIGINT, QMP quit, or the domain is gone; then it removes its
    /// sockets, its -pidfile and device-model/<domid>, and exits 0. It serves
    /// no device itself (no console, vfb, vkbd, 9pfs, usb or nic backend).
    /// Install and use:
    ///   install -D -m 755 tools/device-model/xenio-device-model /usr/local/lib/xenio/xenio-device-model
    ///   xenio backendd --platform xen --class qdisk &
    ///   xl config: disk = ['vdev=xvda,access=rw,backendtype=qdisk,target=/srv/a.img']
    ///              device_model_override = "/usr/local/lib/xenio/xenio-device-model"
    /// The store: $XENSTORED_PATH, else /run/xenstored/socket, else
    /// /dev/xen/xenbus. Log: RUST_LOG.
    #[command(verbatim_doc_comment)]
    DeviceModel(device_model::DeviceModelArgs),
    /// Serve a virtual network interface to a netif frontend (netback), with the
    /// frames going to and coming from a Linux TAP device.
    ///
    /// The TAP device is attached with IFF_TAP | IFF_NO_PI (created if missing);
    /// give it an address or put it in a bridge as for any interface, e.g.
    ///   ip tuntap add dev xtap0 mode tap && ip addr add 192.0.2.1/24 dev xtap0
    ///   ip link set xtap0 up
    ///   xenio netback --tap xtap0 --frontend 1 --create-device
    /// The backend copies (feature-rx-copy), offers feature-sg, split event
    /// channels and --max-queues queues; packets the frontend sends with blank
    /// checksums get them completed. Frames arriving while the frontend has
    /// posted no buffers are held up to --rx-queue, then dropped and counted.
    /// With the virtio-net header (the default), each queue reads and writes
    /// the TAP in batches through io_uring (reads kept armed, one
    /// io_uring_enter per round); XENIO_TAP_IO=plain in the environment makes
    /// it one readv/writev per packet, which is also what happens where
    /// io_uring is unavailable (e.g. the kernel.io_uring_disabled sysctl).
    /// On the local platform the store daemon must run (`xenio store --run-dir
    /// RUN --domains <frontend>`). The backend serves until SIGINT/SIGTERM, or
    /// until the frontend closes when --once is given; the counters are printed
    /// on exit.
    #[command(verbatim_doc_comment)]
    Netback(netback::NetbackArgs),
    /// Connect a userspace blkif frontend to a backend and check the disk with
    /// verified I/O (blkfront).
    ///
    /// Random writes over the disk (or --span of it), each read back at once, a
    /// flush, every extent read again, then a discard when offered; a mismatch
    /// names the first differing byte. The device directory must exist (xl
    /// block-attach, or `xenio blkback --create-device`). On Xen the data pool,
    /// rings and indirect pages are granted through /dev/xen/gntalloc, whose
    /// default limit is 1024 pages (modprobe xen-gntalloc limit=N for more).
    #[command(verbatim_doc_comment)]
    Blkfront(blkfront::BlkfrontArgs),
    /// Connect a userspace netif frontend to a backend and check it: ARP for the
    /// --ping address, then ICMP echo requests whose replies must carry the same
    /// payload (netfront). ARP requests for --ip are answered meanwhile.
    ///
    /// The device directory must exist (xl network-attach, or `xenio netback
    /// --create-device`).
    #[command(verbatim_doc_comment)]
    Netfront(netfront::NetfrontArgs),
}

mod backendd;
mod backendd_vif;
mod blkback;
mod blkfront;
mod device_model;
mod error;
mod netback;
mod netfront;
mod serving;

/// Options of `xenio store`.
#[derive(Args, Debug)]
struct StoreArgs {
    /// Run directory. Default: $XENIO_RUN_DIR, else /run/xenio for root, else
    /// $XDG_RUNTIME_DIR/xenio, else /tmp/xenio-<uid>.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,

    /// Domains to introduce at start-up, as if dom0 had sent XS_INTRODUCE:
    /// their sockets exist and /local/domain/<id> is theirs. E.g. --domains 1,2,3
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    domains: Vec<u16>,

    /// Nodes an unprivileged domain may own (xenstored: nodes). Beyond: ENOSPC.
    #[arg(long, value_name = "N", default_value_t = Quotas::default().nodes)]
    quota_nodes: usize,

    /// Watches per unprivileged connection (xenstored: watches). Beyond: E2BIG.
    #[arg(long, value_name = "N", default_value_t = Quotas::default().watches)]
    quota_watches: usize,

    /// Open transactions per unprivileged connection (xenstored: transactions).
    /// Beyond: ENOSPC.
    #[arg(long, value_name = "N", default_value_t = Quotas::default().transactions)]
    quota_transactions: usize,

    /// Nodes one unprivileged transaction may touch (xenstored:
    /// transaction-nodes). Beyond: ENOSPC.
    #[arg(long, value_name = "N", default_value_t = Quotas::default().transaction_nodes)]
    quota_transaction_nodes: usize,

    /// Largest node an unprivileged domain may write, in bytes: 16 + 8 per
    /// permission + value + children names (xenstored: node-size). Beyond: ENOSPC.
    #[arg(long, value_name = "BYTES", default_value_t = Quotas::default().node_size)]
    quota_node_size: usize,

    /// Permission entries per node set by an unprivileged domain (xenstored:
    /// node-permissions). Beyond: ENOSPC.
    #[arg(long, value_name = "N", default_value_t = Quotas::default().node_permissions)]
    quota_node_permissions: usize,

    /// Longest path below /local/domain/<id>/ for unprivileged domains
    /// (xenstored: path-max). Beyond: EINVAL. Absolute paths are limited to
    /// 3072 bytes for everyone.
    #[arg(long, value_name = "BYTES", default_value_t = Quotas::default().path_max)]
    quota_path_max: usize,

    /// Unsent replies after which the daemon stops reading a connection
    /// (xenstored: outstanding).
    #[arg(long, value_name = "N", default_value_t = Quotas::default().outstanding)]
    quota_outstanding: usize,

    /// Unsent watch events per connection (every connection, dom0's too); more
    /// are dropped, with a warning, until the client reads.
    #[arg(long, value_name = "N", default_value_t = Quotas::default().queued_events)]
    max_queued_events: usize,

    /// Connections one unprivileged domain may hold open at once; more are
    /// closed at once (dom0 is limited only by --max-connections).
    #[arg(long, value_name = "N", default_value_t = Quotas::default().connections)]
    quota_connections: usize,

    /// Connections served at once (all sockets together); more are closed. An
    /// eighth of them (at most 64) is kept for dom0.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
}

fn main() -> ExitCode {
    // RUST_LOG decides; without it, warnings and errors are shown.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Store(a) => store(a),
        Command::Blkback(a) => blkback::run(a),
        Command::Backendd(a) => backendd::run(a),
        Command::DeviceModel(a) => device_model::run(a),
        Command::Netback(a) => netback::run(a),
        Command::Blkfront(a) => blkfront::run(a),
        Command::Netfront(a) => netfront::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenio: {e}");
            e.exit_code()
        }
    }
}

fn store(a: StoreArgs) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    // Block the stop signals in every thread (threads inherit the mask), then
    // take them synchronously with sigwait: no handler, no unsafe.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().context("blocking signals")?;

    let run_dir = a
        .run_dir
        .unwrap_or_else(xenio_xenbus::local::default_run_dir);
    let config = DaemonConfig {
        run_dir,
        quotas: Quotas {
            nodes: a.quota_nodes,
            watches: a.quota_watches,
            transactions: a.quota_transactions,
            transaction_nodes: a.quota_transaction_nodes,
            node_size: a.quota_node_size,
            node_permissions: a.quota_node_permissions,
            path_max: a.quota_path_max,
            outstanding: a.quota_outstanding,
            queued_events: a.max_queued_events,
            connections: a.quota_connections,
        },
        domains: a.domains.iter().map(|&d| DomId(d)).collect(),
        max_connections: a.max_connections,
    };
    let domains = config.domains.clone();
    let daemon = Daemon::start(config)?;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "dom0: {}", daemon.socket_path().display());
    for d in &domains {
        let _ = writeln!(
            out,
            "domain {d}: {}",
            daemon.domain_socket_path(*d).display()
        );
    }
    let _ = writeln!(
        out,
        "export XENSTORED_PATH={}",
        daemon.socket_path().display()
    );
    let _ = out.flush();
    drop(out);

    let sig = stop.wait().context("waiting for signals")?;
    tracing::info!("{sig:?}: stopping");
    daemon.shutdown();
    Ok(())
}
