//! The frontend's side of the handshake (`xen/io/netif.h`), for the first
//! connection and every reconnection, in two halves around setting up the
//! rings: [`negotiate`] (Initialising, wait for the backend's InitWait, read
//! its features and the toolstack's `mtu` and `mac`) and [`connect`] (publish
//! the rings and say Connected, wait for the backend's Connected).

use crate::error::Result;
use crate::options::{DEFAULT_MAC, Info, Options, parse_mac};
use std::time::Duration;
use xenio_xen_sys::Port;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::Store;
use xenio_xenbus::handshake::Endpoint;
use xenio_xenbus::handshake::keys::{self, netif};

/// Say Initialising, wait for the backend's InitWait, and cap `options` by
/// what it offers: what the connection will be.
pub(crate) fn negotiate<S: Store>(store: &S, dir: &str, options: &Options) -> Result<Info> {
    let mut ep = Endpoint::frontend(store, dir)?;
    ep.switch(XenbusState::Initialising, &[])?;
    ep.wait_peer(options.timeout, |s| s == XenbusState::InitWait)?;
    if !ep.peer_flag(netif::FEATURE_RX_COPY)? {
        return Err(keys::bad_key(
            &ep.peer_path(netif::FEATURE_RX_COPY),
            "the backend cannot copy into posted buffers",
        )
        .into());
    }
    let max_queues: u32 = ep.peer_parse(netif::MULTI_QUEUE_MAX_QUEUES)?.unwrap_or(1);
    let queues = options.queues.clamp(1, max_queues.max(1));
    let split_event_channels =
        options.split_event_channels && ep.peer_flag(netif::FEATURE_SPLIT_EVENT_CHANNELS)?;
    let sg = options.sg && ep.peer_flag(netif::FEATURE_SG)?;
    // The backend takes IPv4 checksums left blank unless it says otherwise
    // (netif.h: "If it is missing then the feature is assumed to be on").
    let csum_offload = options.csum_offload && !ep.peer_flag(netif::FEATURE_NO_CSUM_OFFLOAD)?;
    let gso = options.gso && csum_offload && sg;
    let gso_tcpv4 = gso && ep.peer_flag(netif::FEATURE_GSO_TCPV4)?;
    let gso_tcpv6 = gso
        && ep.peer_flag(netif::FEATURE_GSO_TCPV6)?
        && ep.peer_flag(netif::FEATURE_IPV6_CSUM_OFFLOAD)?;
    let mtu: usize = ep.own_parse(netif::MTU)?.unwrap_or(1500);
    let mac = match (options.mac, ep.own_key(netif::MAC)?) {
        (Some(m), _) => m,
        (None, Some(s)) => parse_mac(&s).ok_or_else(|| {
            keys::bad_key(
                &ep.own_path(netif::MAC),
                format!("{s:?} is not a MAC address"),
            )
        })?,
        (None, None) => DEFAULT_MAC,
    };
    Ok(Info {
        queues,
        sg,
        split_event_channels,
        mtu,
        mac,
        csum_offload,
        gso_tcpv4,
        gso_tcpv6,
    })
}

/// What one queue publishes.
pub(crate) struct QueueRefs {
    /// The tx ring's grant reference.
    pub(crate) tx_ring_ref: u32,
    /// The rx ring's.
    pub(crate) rx_ring_ref: u32,
    /// The (tx) event channel's port.
    pub(crate) tx_port: Port,
    /// The rx event channel's port, when split.
    pub(crate) rx_port: Option<Port>,
}

/// The keys that publish the rings of `queues` (in queue order) and the
/// frontend's features (`sg`: whether it takes multi-slot packets; `csum`:
/// checksums left blank; `gso`: large TCP segments), in the order they are
/// written.
pub(crate) fn ring_keys(
    queues: &[QueueRefs],
    sg: bool,
    csum: bool,
    gso: bool,
) -> Vec<(String, String)> {
    let n = queues.len() as u32;
    let mut keys: Vec<(String, String)> = Vec::new();
    if n > 1 {
        keys.push((netif::MULTI_QUEUE_NUM_QUEUES.into(), n.to_string()));
    }
    for (i, q) in queues.iter().enumerate() {
        let key = |k: &str| keys::queue_key(i as u32, n, k);
        keys.push((key(netif::TX_RING_REF), q.tx_ring_ref.to_string()));
        keys.push((key(netif::RX_RING_REF), q.rx_ring_ref.to_string()));
        match q.rx_port {
            Some(rx) => {
                keys.push((key(netif::EVENT_CHANNEL_TX), q.tx_port.0.to_string()));
                keys.push((key(netif::EVENT_CHANNEL_RX), rx.0.to_string()));
            }
            None => keys.push((key(netif::EVENT_CHANNEL), q.tx_port.0.to_string())),
        }
    }
    keys.push((netif::REQUEST_RX_COPY.into(), keys::flag(true)));
    keys.push((netif::FEATURE_RX_NOTIFY.into(), keys::flag(true)));
    keys.push((netif::FEATURE_SG.into(), keys::flag(sg)));
    let gso = gso && sg && csum;
    keys.push((netif::FEATURE_GSO_TCPV4.into(), keys::flag(gso)));
    keys.push((netif::FEATURE_GSO_TCPV6.into(), keys::flag(gso)));
    keys.push((netif::FEATURE_NO_CSUM_OFFLOAD.into(), keys::flag(!csum)));
    keys.push((netif::FEATURE_IPV6_CSUM_OFFLOAD.into(), keys::flag(csum)));
    keys
}

/// Write `ring_keys` and say Connected, then wait for the backend's Connected.
pub(crate) fn connect<S: Store>(
    store: &S,
    dir: &str,
    ring_keys: &[(String, String)],
    timeout: Duration,
) -> Result<()> {
    let mut ep = Endpoint::frontend(store, dir)?;
    let refs: Vec<(&str, String)> = ring_keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    // Straight to Connected with the keys, as Linux's xen-netfront does: Linux's
    // xen-netback ignores Initialised and connects only when the frontend says
    // Connected (found in the Xen lab: it stayed in InitWait).
    ep.switch(XenbusState::Connected, &refs)?;
    ep.wait_peer(timeout, |s| s == XenbusState::Connected)?;
    Ok(())
}
