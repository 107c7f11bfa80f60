//! `xenio backendd --class vif`: the network devices of the daemon. Each
//! `backend/vif/<domid>/<devid>` directory libxl writes gets a TAP device
//! (named by the `vifname` node, else `vif<domid>.<devid>` as Linux's
//! xen-netback names its interface), opened by the device's thread and
//! served with [`xenio_netback::serve`] (one thread per queue); the TAP is
//! created for the device and goes with it (the kernel removes a TAP that is
//! not persistent when its last descriptor closes). The hotplug script
//! (tools/hotplug/vif-xenio) plugs the TAP into the bridge; the device says
//! Connected once it wrote `hotplug-status = connected`, as Linux's netback
//! does.

use crate::error::{Context, Error, Result};
use clap::Args;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use xenio_hostio::tap::TapConfig;
use xenio_netback::{BackendConfig, Counters, Outcome, QueueConfig, TapNetwork};
use xenio_xenbus::handshake::keys::netif;
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{Store, Tx};

/// The backend class of network devices (what libxl writes for a vif).
pub const VIF_CLASS: &str = "vif";

/// The longest a vif waits for its frontend to close (`--close-timeout` may
/// say less).
const VIF_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of the vif devices (`--class vif`): as `xenio netback`'s.
#[derive(Args, Debug, Clone)]
pub struct VifArgs {
    /// Queues offered per vif (multi-queue-max-queues), one ring pair and one
    /// thread each (the TAP is created multi-queue when above 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    vif_max_queues: u32,

    /// MTU of a vif whose backend directory has no `mtu` node (libxl writes
    /// one only when it is not 1500). Tx packets longer than MTU + 18 bytes
    /// are dropped.
    #[arg(long, value_name = "BYTES", default_value_t = 1500)]
    vif_mtu: u32,

    /// Do not offer feature-sg to vif frontends.
    #[arg(long)]
    vif_no_sg: bool,

    /// Do not offer feature-split-event-channels to vif frontends.
    #[arg(long)]
    vif_no_split_event_channels: bool,

    /// Open the vifs' TAPs without the virtio-net header: no offloads
    /// either way (see `xenio netback --help`, --no-offloads).
    #[arg(long)]
    vif_no_offloads: bool,

    /// Most tx slots taken from a vif's ring in one batch.
    #[arg(long, value_name = "N", default_value_t = 256)]
    vif_batch: usize,

    /// Frames from a TAP held while the frontend has no rx buffer posted
    /// (see `xenio netback --help`, --rx-queue).
    #[arg(long, value_name = "N", default_value_t = 256)]
    vif_rx_queue: usize,

    /// Milliseconds a frontend may take no frames before the TAP is read and
    /// its frames dropped (see `xenio netback --help`, --rx-drain-ms).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    vif_rx_drain_ms: u64,

    /// Spin this many microseconds looking at a vif's rings before sleeping.
    #[arg(long, value_name = "US", default_value_t = 0)]
    vif_poll_us: u64,
}

impl VifArgs {
    /// Check the knobs once, at start.
    pub fn check(&self) -> Result<()> {
        if !(68..=65535 - 18).contains(&self.vif_mtu) {
            return Err(Error::Usage(format!(
                "--vif-mtu {}: expected 68..=65517",
                self.vif_mtu
            )));
        }
        Ok(())
    }

    fn config(&self, close_timeout: Duration) -> BackendConfig {
        BackendConfig {
            max_queues: self.vif_max_queues.max(1),
            sg: !self.vif_no_sg,
            split_event_channels: !self.vif_no_split_event_channels,
            mtu: self.vif_mtu,
            // A frontend that does not close when the toolstack detaches
            // gets this long before the vif says Closed anyway: less than
            // libxl's own 10 s wait for Closed.
            close_timeout: close_timeout.min(VIF_CLOSE_TIMEOUT),
            queue: QueueConfig {
                max_batch: self.vif_batch.max(1),
                rx_queue: self.vif_rx_queue.max(1),
                rx_drain: Duration::from_millis(self.vif_rx_drain_ms),
                poll: Duration::from_micros(self.vif_poll_us),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// What the toolstack asked for, from a vif's backend directory.
#[derive(Debug, PartialEq, Eq)]
pub struct VifNodes {
    /// The TAP's name: `vifname`, else `vif<domid>.<devid>`.
    pub ifname: String,
    /// `mac` (the frontend's address; checked, as Linux's netback reads it).
    pub mac: [u8; 6],
}

impl VifNodes {
    fn read<S: Store>(store: &S, dir: &str) -> Result<VifNodes> {
        let get = |k: &str| -> Option<String> {
            store
                .read_opt(Tx::NONE, &format!("{dir}/{k}"))
                .ok()
                .flatten()
        };
        let mut ids = dir.rsplit('/');
        let (devid, domid) = (ids.next().unwrap_or(""), ids.next().unwrap_or(""));
        VifNodes::parse(domid, devid, get)
    }

    /// Parse the nodes `get` returns (`None`: absent) of device `devid` of
    /// domain `domid` (the directory's last two components).
    pub fn parse(domid: &str, devid: &str, get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad = |k: &str, v: &str, want: &str| Error::Usage(format!("{k} = {v:?}: {want}"));
        let (Ok(domid), Ok(devid)) = (domid.parse::<u16>(), devid.parse::<u32>()) else {
            return Err(Error::Usage(format!(
                "backend/vif/{domid}/{devid}: expected numbers"
            )));
        };
        let mac = get(netif::MAC)
            .ok_or_else(|| Error::Usage(format!("no {}: the frontend's address?", netif::MAC)))?;
        let mac = xenio_netfront::parse_mac(mac.trim())
            .ok_or_else(|| bad(netif::MAC, &mac, "expected aa:bb:cc:dd:ee:ff"))?;
        let ifname = match get(netif::VIFNAME) {
            None => format!("vif{domid}.{devid}"),
            Some(v) => {
                let n = v.trim();
                // IFNAMSIZ is 16 with the NUL; the kernel refuses '/', ':'
                // and white space in a name, and "." and "..".
                let ok = !n.is_empty()
                    && n.len() < 16
                    && n != "."
                    && n != ".."
                    && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
                if !ok {
                    return Err(bad(
                        netif::VIFNAME,
                        &v,
                        "not an interface name (1-15 characters, no '/', ':' or spaces)",
                    ));
                }
                n.to_string()
            }
        };
        if let Some(v) = get(netif::MTU) {
            match v.trim().parse::<u32>() {
                Ok(m) if (68..=65535 - 18).contains(&m) => {}
                _ => return Err(bad(netif::MTU, &v, "expected 68..=65517")),
            }
        }
        match get(netif::TYPE).as_deref().map(str::trim) {
            None | Some("vif") | Some("vif_ioemu") => {}
            Some(v) => return Err(bad(netif::TYPE, v, "expected vif or vif_ioemu")),
        }
        if let Some(v) = get("rate") {
            return Err(bad(
                "rate",
                &v,
                "rate limiting is not done by xenio's netback (use tc on the TAP)",
            ));
        }
        Ok(VifNodes { ifname, mac })
    }
}

/// Serve the vif behind `dir` on its TAP until it ends.
pub fn serve_vif<P: Platform>(
    p: &P,
    dir: &str,
    args: &VifArgs,
    close_timeout: Duration,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<Outcome> {
    let nodes = VifNodes::read(p.store(), dir)?;
    let config = args.config(close_timeout);
    let network = TapNetwork::open_with(
        &nodes.ifname,
        TapConfig {
            multi_queue: config.max_queues > 1,
            vnet_hdr: !args.vif_no_offloads,
        },
    )
    .with_context(|| format!("opening TAP device {}", nodes.ifname))?;
    tracing::info!("{dir}: TAP {}", nodes.ifname);
    Ok(xenio_netback::serve(
        p, dir, &network, &config, counters, stop,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn nodes(kv: &[(&str, &str)]) -> Result<VifNodes> {
        let m: HashMap<String, String> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VifNodes::parse("3", "1", |k| m.get(k).cloned())
    }

    #[test]
    fn the_nodes_libxl_writes_are_honoured() {
        let mac = ("mac", "00:16:3e:01:02:03");
        let n = nodes(&[
            mac,
            ("bridge", "xenbr0"),
            ("handle", "1"),
            ("type", "vif"),
            ("script", "/etc/xen/scripts/vif-xenio"),
            ("hotplug-status", ""),
        ])
        .unwrap();
        assert_eq!(
            n,
            VifNodes {
                ifname: "vif3.1".into(),
                mac: [0, 0x16, 0x3e, 1, 2, 3]
            }
        );
        let n = nodes(&[mac, ("vifname", "guest-eth0"), ("mtu", "9000")]).unwrap();
        assert_eq!(n.ifname, "guest-eth0");
        for bad in [
            vec![("bridge", "xenbr0")],
            vec![("mac", "nonsense")],
            vec![mac, ("vifname", "")],
            vec![mac, ("vifname", "a-name-far-too-long")],
            vec![mac, ("vifname", "../eth0")],
            vec![mac, ("vifname", "eth0:1")],
            vec![mac, ("mtu", "huge")],
            vec![mac, ("mtu", "20")],
            vec![mac, ("type", "ioemu-only")],
            vec![mac, ("rate", "10000000,50000")],
        ] {
            assert!(nodes(&bad).is_err(), "{bad:?} accepted");
        }
        assert!(VifNodes::parse("x", "1", |_| None).is_err());
    }
}
