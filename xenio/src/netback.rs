//! `xenio netback`.

use crate::error::{Context, Error, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use xenio_hostio::tap::TapConfig;
use xenio_netback::{BackendConfig, Counters, QueueConfig, TapNetwork, Vif};
use xenio_xenbus::DomId;
use xenio_xenbus::handshake::keys::netif;

use xenio_xenbus::platform::{
    LocalPlatform, Platform, PlatformChoice, PlatformKind, XenPlatform, resolve,
};

/// Options of `xenio netback`.
#[derive(Args, Debug)]
pub struct NetbackArgs {
    /// The TAP device to attach to (created if missing; created devices go away
    /// when the backend exits). Needs CAP_NET_ADMIN or a device owned by this
    /// user, e.g. `ip tuntap add dev NAME mode tap user $USER`.
    #[arg(long, value_name = "NAME")]
    tap: String,

    /// The frontend's domain id.
    #[arg(long, value_name = "DOMID")]
    frontend: u16,

    /// This backend's domain id (on Xen: read from the store; locally: default 0).
    #[arg(long, value_name = "DOMID", default_value_t = 0)]
    backend: u16,

    /// The vif's device id (/local/domain/<frontend>/device/vif/<DEVID>).
    #[arg(long, value_name = "DEVID", default_value_t = 0)]
    devid: u32,

    /// Platform: local (processes on this host), xen, or auto (xen if /dev/xen is there).
    #[arg(long, value_name = "KIND", default_value = "auto")]
    platform: PlatformChoice,

    /// Local platform run directory (see `xenio store --help`).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,

    /// Write the backend and frontend directories first (with mac and mtu), as a
    /// toolstack does, and remove them when the backend exits. On SIGTERM or
    /// SIGINT the backend says Closing (online 0), gives a connected frontend 5 s
    /// to close, says Closed, and removes what it created.
    #[arg(long)]
    create_device: bool,

    /// The frontend's MAC address written by --create-device.
    #[arg(long, value_name = "MAC", default_value = "00:16:3e:00:00:01")]
    mac: String,

    /// MTU written by --create-device, and used when the backend directory has
    /// no `mtu` key. Tx packets longer than MTU + 18 bytes are dropped.
    #[arg(long, value_name = "BYTES", default_value_t = 1500)]
    mtu: u32,

    /// Queues offered (multi-queue-max-queues), one ring pair and one thread
    /// each. More than 1 needs a multi-queue TAP (`ip tuntap add ... multi_queue`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    max_queues: u32,

    /// Do not offer feature-sg (then every packet must fit one page).
    #[arg(long)]
    no_sg: bool,

    /// Do not offer feature-split-event-channels.
    #[arg(long)]
    no_split_event_channels: bool,

    /// Open the TAP without the virtio-net header (IFF_VNET_HDR): no offloads
    /// either way. By default the frontend may send TCP segments of up to 64 KiB
    /// (feature-gso-tcpv4/-tcpv6) with checksums left blank, which go to the
    /// host as they are, and the host's large segments and blank checksums go
    /// to the frontend when its keys say it takes them (TUNSETOFFLOAD is set to
    /// what it takes at every connection, and to none after).
    #[arg(long)]
    no_offloads: bool,

    /// Most tx slots taken from a ring in one batch.
    #[arg(long, value_name = "N", default_value_t = 256)]
    batch: usize,

    /// Frames from the TAP held while the frontend has no rx buffer posted.
    /// While this queue is full the TAP is not read (the kernel's queue holds
    /// frames back)...
    #[arg(long, value_name = "N", default_value_t = 256)]
    rx_queue: usize,

    /// ...until the frontend has taken nothing for this many milliseconds: then
    /// frames are read from the TAP and dropped (and counted) until it posts
    /// buffers again.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    rx_drain_ms: u64,

    /// Spin this many microseconds looking at the rings before sleeping
    /// (yielding the CPU every 10 us, so a frontend on the same CPU still runs).
    #[arg(long, value_name = "US", default_value_t = 0)]
    poll_us: u64,

    /// Exit when the frontend closes the device instead of waiting for it to return.
    #[arg(long)]
    once: bool,
}

/// Run `xenio netback`.
pub fn run(a: NetbackArgs) -> Result<()> {
    let shutdown = xenio_netback::stop_on_signals().context("handling SIGTERM")?;
    if xenio_netfront::parse_mac(&a.mac).is_none() {
        return Err(Error::Usage(format!(
            "--mac {:?}: expected aa:bb:cc:dd:ee:ff",
            a.mac
        )));
    }
    if !(68..=65535 - 18).contains(&a.mtu) {
        return Err(Error::Usage(format!(
            "--mtu {}: expected 68..=65517",
            a.mtu
        )));
    }
    let network = TapNetwork::open_with(
        &a.tap,
        TapConfig {
            multi_queue: a.max_queues > 1,
            vnet_hdr: !a.no_offloads,
        },
    )
    .with_context(|| format!("opening TAP device {}", a.tap))?;
    let config = BackendConfig {
        max_queues: a.max_queues.max(1),
        sg: !a.no_sg,
        split_event_channels: !a.no_split_event_channels,
        mtu: a.mtu,
        once: a.once,
        queue: QueueConfig {
            max_batch: a.batch.max(1),
            rx_queue: a.rx_queue.max(1),
            rx_drain: Duration::from_millis(a.rx_drain_ms),
            poll: Duration::from_micros(a.poll_us),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut counters = Arc::new(Counters::default());
    let kind = resolve(a.platform)?;
    let outcome = match kind {
        PlatformKind::Local => {
            let run_dir = a
                .run_dir
                .clone()
                .unwrap_or_else(xenio_xenbus::local::default_run_dir);
            let p = LocalPlatform::connect(&run_dir, DomId(a.backend))?;
            go(&p, &a, &network, &config, &mut counters, &shutdown)?
        }
        PlatformKind::Xen => {
            let p = XenPlatform::open()?;
            go(&p, &a, &network, &config, &mut counters, &shutdown)?
        }
    };
    eprintln!("netback: {outcome:?}: {}", counters.summary());
    Ok(())
}

fn go<P: Platform>(
    p: &P,
    a: &NetbackArgs,
    network: &TapNetwork,
    config: &BackendConfig,
    counters: &mut Arc<Counters>,
    shutdown: &Arc<AtomicBool>,
) -> Result<xenio_netback::Outcome> {
    let mut vif = Vif::new()
        .frontend(DomId(a.frontend))
        .devid(a.devid)
        .config(config.clone())
        .stop_flag(shutdown.clone());
    if a.create_device {
        let mac = xenio_netfront::parse_mac(&a.mac).expect("checked");
        vif = vif
            .create_device(mac)
            .device_key(netif::BRIDGE, a.tap.clone());
    }
    *counters = vif.counters();
    println!(
        "serving TAP {} to domain {} ({})",
        a.tap,
        a.frontend,
        vif.paths(p.domid())?.backend
    );
    Ok(vif.serve_on(p, network)?)
}
