//! The store keys of the handshake, each named once: the keys every device
//! directory has, and those of the block ([`blkif`]) and network ([`netif`])
//! protocols, with the few helpers that build per-queue and per-page names and
//! the one parser every driver reads numbers with.
//!
//! The authorities are the comments of Xen's public headers
//! (`/usr/include/xen/io/blkif.h`, `netif.h`, from Debian's `libxen-dev`),
//! each constant quoting the section it comes from. Keys the headers mention
//! only in passing (the netif `feature-*` keys, which Linux's drivers
//! define) or not at all (what `libxl` writes for the hotplug scripts) say
//! where they come from.
//!
//! ```
//! use xenio_xenbus::handshake::keys::{self, blkif, netif};
//!
//! assert_eq!(keys::queue_key(0, 1, blkif::EVENT_CHANNEL), "event-channel");
//! assert_eq!(keys::queue_key(1, 4, netif::TX_RING_REF), "queue-1/tx-ring-ref");
//! assert_eq!(blkif::ring_ref_keys(0), ["ring-ref"]);
//! assert_eq!(blkif::ring_ref_keys(1), ["ring-ref0", "ring-ref1"]);
//! let order: u32 = keys::parse_key("/local/domain/0/backend/vbd/1/51712/max-ring-page-order", " 4\n")?;
//! assert_eq!(order, 4);
//! let bad = keys::parse_key::<u32>("/local/domain/1/device/vbd/51712/ring-ref", "x");
//! assert_eq!(
//!     bad.unwrap_err().to_string(),
//!     "store key /local/domain/1/device/vbd/51712/ring-ref: \"x\" is not a valid u32"
//! );
//! # Ok::<(), xenio_xenbus::Error>(())
//! ```

use crate::error::{Error, Result};
use std::str::FromStr;

// ---------------------------------------------------------------- every device

/// `state`: each end's `XenbusState`, as a decimal number (`io/xenbus.h`).
pub const STATE: &str = "state";
/// `backend`: in the frontend directory, the path of the backend directory.
pub const BACKEND: &str = "backend";
/// `backend-id`: in the frontend directory, the backend's domain id.
pub const BACKEND_ID: &str = "backend-id";
/// `frontend`: in the backend directory, the path of the frontend directory.
pub const FRONTEND: &str = "frontend";
/// `frontend-id`: in the backend directory, the frontend's domain id.
pub const FRONTEND_ID: &str = "frontend-id";
/// `online`: in the backend directory, `1` while the toolstack wants the
/// device (what `xl` writes).
pub const ONLINE: &str = "online";

// ---------------------------------------------------------------- hotplug
//
// What `libxl` writes for a device's hotplug script and what the script
// writes back (libxl_device.c, Xen's `tools/hotplug/Linux/xen-hotplug-common.sh`).

/// `script` (backend): the hotplug script `libxl` runs for the device once the
/// backend says `InitWait` (`add`) and after it says `Closed` (`remove`).
pub const SCRIPT: &str = "script";
/// `hotplug-status` (backend): `connected` once the hotplug script plugged the
/// device in (a vif bridged, a disk's target prepared), `error` when it failed.
/// `libxl` writes it empty for vifs. Linux's backends connect only after the
/// script did its part (netback waits for this node; blkback for the
/// `physical-device` the block script writes).
pub const HOTPLUG_STATUS: &str = "hotplug-status";
/// `hotplug-error` (backend): the script's reason, beside `hotplug-status = error`.
pub const HOTPLUG_ERROR: &str = "hotplug-error";

// ---------------------------------------------------------------- multi-queue

/// `multi-queue-max-queues` (backend): the most queues it serves. blkif.h and
/// netif.h, "Multiple hardware queues/rings" / "Multiple transmit and receive
/// queues".
pub const MULTI_QUEUE_MAX_QUEUES: &str = "multi-queue-max-queues";
/// `multi-queue-num-queues` (frontend): the queues it set up, written only
/// when there are two or more.
pub const MULTI_QUEUE_NUM_QUEUES: &str = "multi-queue-num-queues";
/// `event-channel` (frontend): the port the backend binds to (per queue).
pub const EVENT_CHANNEL: &str = "event-channel";

/// `queue-N`: the directory of queue `queue`'s keys when a frontend uses two
/// or more queues.
pub fn queue_dir(queue: u32) -> String {
    format!("queue-{queue}")
}

/// Where queue `queue` of `queues` keeps `key`: the device directory itself
/// with one queue (a frontend "requesting just one queue" writes "the usual
/// event-channel and ring-ref keys"), `queue-N/key` with more.
pub fn queue_key(queue: u32, queues: u32, key: &str) -> String {
    if queues > 1 {
        format!("{}/{key}", queue_dir(queue))
    } else {
        key.to_string()
    }
}

// ---------------------------------------------------------------- values

/// A boolean key's value: `1` or `0` (the headers' "0/1 (boolean)").
pub fn flag(on: bool) -> String {
    u8::from(on).to_string()
}

/// Parse the value of the key at `path` (surrounding whitespace ignored).
///
/// # Errors
///
/// [`Error::BadKey`] naming `path` and the value when it does not parse as a `T`.
pub fn parse_key<T: FromStr>(path: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        let ty = std::any::type_name::<T>();
        let ty = ty.rsplit("::").next().unwrap_or(ty);
        bad_key(path, format!("{value:?} is not a valid {ty}"))
    })
}

/// The error for the key at `path`: missing, malformed, or a value this end
/// cannot work with (`problem` says which).
pub fn bad_key(path: &str, problem: impl Into<String>) -> Error {
    Error::BadKey {
        path: path.to_string(),
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------- blkif

/// The block protocol's keys (`xen/io/blkif.h`, "Backend XenBus Nodes" and
/// "Frontend XenBus Nodes"), in the order of the header.
pub mod blkif {
    pub use crate::handshake::keys::{
        EVENT_CHANNEL, MULTI_QUEUE_MAX_QUEUES, MULTI_QUEUE_NUM_QUEUES,
    };

    // Backend: device identification (written by the toolstack).

    /// `mode`: `r` (read only) or `w` (writable).
    pub const MODE: &str = "mode";
    /// `params`: what the hotplug script attaches (for xenio: the image path).
    pub const PARAMS: &str = "params";
    /// `type`: the kind of backing object (`file`, `phy`, ...; xenio writes `xenio`).
    pub const TYPE: &str = "type";
    /// `dev`: the virtual device's name (`xvda`); written by `libxl`, not in
    /// blkif.h.
    pub const DEV: &str = "dev";
    /// `removable`: written by `libxl` (`0`), not in blkif.h.
    pub const REMOVABLE: &str = "removable";
    /// `bootable`: written by `libxl` (`1`), not in blkif.h.
    pub const BOOTABLE: &str = "bootable";

    // Backend: features.

    /// `feature-barrier`: `BLKIF_OP_WRITE_BARRIER` is served.
    pub const FEATURE_BARRIER: &str = "feature-barrier";
    /// `feature-flush-cache`: `BLKIF_OP_FLUSH_DISKCACHE` is served.
    pub const FEATURE_FLUSH_CACHE: &str = "feature-flush-cache";
    /// `feature-discard`: `BLKIF_OP_DISCARD` is served.
    pub const FEATURE_DISCARD: &str = "feature-discard";
    /// `feature-persistent` (both ends): grants are kept mapped / reused.
    pub const FEATURE_PERSISTENT: &str = "feature-persistent";
    /// `feature-max-indirect-segments` (backend): the most segments of a
    /// `BLKIF_OP_INDIRECT` request (absent: no indirect requests).
    pub const FEATURE_MAX_INDIRECT_SEGMENTS: &str = "feature-max-indirect-segments";

    // Backend: request transport parameters.

    /// `max-ring-page-order`: the largest ring, as log2 of its pages.
    pub const MAX_RING_PAGE_ORDER: &str = "max-ring-page-order";

    // Backend: device properties.

    /// `discard-alignment`: bytes from the start of the disk to the first
    /// discard extent.
    pub const DISCARD_ALIGNMENT: &str = "discard-alignment";
    /// `discard-granularity`: bytes of one discard extent.
    pub const DISCARD_GRANULARITY: &str = "discard-granularity";
    /// `discard-secure`: `BLKIF_DISCARD_SECURE` is honoured.
    pub const DISCARD_SECURE: &str = "discard-secure";
    /// `info`: `VDISK_*` bits (`VDISK_READONLY`, ...).
    pub const INFO: &str = "info";
    /// `sector-size`: the logical block size in bytes.
    pub const SECTOR_SIZE: &str = "sector-size";
    /// `physical-sector-size`: the physical block size in bytes.
    pub const PHYSICAL_SECTOR_SIZE: &str = "physical-sector-size";
    /// `sectors`: the disk's size in sectors.
    pub const SECTORS: &str = "sectors";

    // Frontend: request transport parameters.

    /// `ring-ref`: the grant of a one-page ring.
    pub const RING_REF: &str = "ring-ref";
    /// `protocol`: the ABI of the ring's requests (`XEN_IO_PROTO_ABI_*`).
    pub const PROTOCOL: &str = "protocol";
    /// `XEN_IO_PROTO_ABI_X86_64` (`xen/io/protocols.h`), the only ABI xenio
    /// speaks.
    pub const PROTOCOL_X86_64_ABI: &str = "x86_64-abi";
    /// `ring-page-order`: the ring the frontend set up, as log2 of its pages.
    pub const RING_PAGE_ORDER: &str = "ring-page-order";

    /// `ring-ref%u`: the grant of page `page` of a multi-page ring.
    pub fn ring_ref_page(page: u32) -> String {
        format!("{RING_REF}{page}")
    }

    /// The ring grant keys of a ring of `1 << order` pages, in page order:
    /// `ring-ref` for one page, `ring-ref0` .. `ring-refN` for more (note 6:
    /// "When using a multi-page ring, the 'ring-ref' node is not created").
    pub fn ring_ref_keys(order: u32) -> Vec<String> {
        if order == 0 {
            vec![RING_REF.to_string()]
        } else {
            (0..1u32 << order).map(ring_ref_page).collect()
        }
    }

    // Frontend: virtual device properties (written by the toolstack).

    /// `trusted`: `0` tells the frontend not to trust the backend.
    pub const TRUSTED: &str = "trusted";
    /// `device-type`: `disk`, `cdrom`, ... (libxl writes it in both directories).
    pub const DEVICE_TYPE: &str = "device-type";
    /// `virtual-device`: the device number (`docs/misc/vbd-interface.txt`).
    pub const VIRTUAL_DEVICE: &str = "virtual-device";
}

// ---------------------------------------------------------------- netif

/// The network protocol's keys (`xen/io/netif.h`; the `feature-*` keys it
/// names only in passing are those of Linux's `xen-netfront` and
/// `xen-netback`).
pub mod netif {
    pub use crate::handshake::keys::{
        EVENT_CHANNEL, MULTI_QUEUE_MAX_QUEUES, MULTI_QUEUE_NUM_QUEUES,
    };

    // Frontend: rings and event channels (per queue).

    /// `tx-ring-ref`: the grant of the tx ring's page.
    pub const TX_RING_REF: &str = "tx-ring-ref";
    /// `rx-ring-ref`: the grant of the rx ring's page.
    pub const RX_RING_REF: &str = "rx-ring-ref";
    /// `event-channel-tx`: the tx port with split event channels.
    pub const EVENT_CHANNEL_TX: &str = "event-channel-tx";
    /// `event-channel-rx`: the rx port with split event channels.
    pub const EVENT_CHANNEL_RX: &str = "event-channel-rx";

    // Frontend: requests and features.

    /// `request-rx-copy`: the backend is to copy received frames into the
    /// buffers the frontend posts.
    pub const REQUEST_RX_COPY: &str = "request-rx-copy";
    /// `feature-rx-notify`: the frontend notifies when it posts rx buffers.
    pub const FEATURE_RX_NOTIFY: &str = "feature-rx-notify";

    // Backend: features (and the frontend's, for the shared ones).

    /// `feature-rx-copy`: the backend can copy into posted buffers.
    pub const FEATURE_RX_COPY: &str = "feature-rx-copy";
    /// `feature-rx-flip`: page flipping (long obsolete; xenio writes `0`).
    pub const FEATURE_RX_FLIP: &str = "feature-rx-flip";
    /// `feature-sg`: packets over several slots.
    pub const FEATURE_SG: &str = "feature-sg";
    /// `feature-split-event-channels`: separate tx and rx event channels.
    pub const FEATURE_SPLIT_EVENT_CHANNELS: &str = "feature-split-event-channels";
    /// `feature-no-csum-offload`: IPv4 TCP/UDP checksum offload off (`1`) or on.
    pub const FEATURE_NO_CSUM_OFFLOAD: &str = "feature-no-csum-offload";
    /// `feature-ipv6-csum-offload`: IPv6 TCP/UDP checksum offload on (`1`).
    pub const FEATURE_IPV6_CSUM_OFFLOAD: &str = "feature-ipv6-csum-offload";
    /// `feature-gso-tcpv4`: large IPv4 TCP packets.
    pub const FEATURE_GSO_TCPV4: &str = "feature-gso-tcpv4";
    /// `feature-gso-tcpv6`: large IPv6 TCP packets.
    pub const FEATURE_GSO_TCPV6: &str = "feature-gso-tcpv6";

    // Toolstack (both directories; netif.h "MTU" documents `mtu`).

    /// `mac`: the interface's address, `aa:bb:cc:dd:ee:ff`.
    pub const MAC: &str = "mac";
    /// `mtu`: the MTU in octets (absent: 1500).
    pub const MTU: &str = "mtu";
    /// `bridge`: where the hotplug script attaches the backend's interface
    /// (for xenio: the TAP device); written by `libxl`.
    pub const BRIDGE: &str = "bridge";
    /// `type`: `vif`; written by `libxl`.
    pub const TYPE: &str = "type";
    /// `handle`: the device id; written by `libxl`.
    pub const HANDLE: &str = "handle";
    /// `vifname`: the name the backend's interface is to have (absent:
    /// `vif<domid>.<devid>`); written by `libxl` for `vifname=` in the vif spec.
    pub const VIFNAME: &str = "vifname";
    /// `hotplug-status` (every class; see [`super::HOTPLUG_STATUS`]).
    pub use super::HOTPLUG_STATUS;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_follow_the_headers_examples() {
        assert_eq!(queue_dir(3), "queue-3");
        assert_eq!(queue_key(0, 1, EVENT_CHANNEL), "event-channel");
        assert_eq!(queue_key(0, 0, EVENT_CHANNEL), "event-channel");
        assert_eq!(
            queue_key(1, 2, blkif::RING_REF),
            "queue-1/ring-ref",
            "blkif.h: /local/domain/1/device/vbd/0/queue-1/ring-ref"
        );
        assert_eq!(
            queue_key(0, 2, &blkif::ring_ref_page(1)),
            "queue-0/ring-ref1"
        );
        assert_eq!(
            queue_key(1, 2, netif::EVENT_CHANNEL_RX),
            "queue-1/event-channel-rx"
        );
    }

    #[test]
    fn ring_ref_keys_per_order() {
        assert_eq!(blkif::ring_ref_keys(0), ["ring-ref"]);
        assert_eq!(
            blkif::ring_ref_keys(2),
            ["ring-ref0", "ring-ref1", "ring-ref2", "ring-ref3"]
        );
        assert_eq!(blkif::ring_ref_keys(4).len(), 16);
        assert_eq!(blkif::ring_ref_keys(4)[15], "ring-ref15");
    }

    #[test]
    fn values_parse_and_print_as_the_drivers_wrote_them() {
        assert_eq!(flag(true), "1");
        assert_eq!(flag(false), "0");
        assert_eq!(parse_key::<u64>("p", "42").unwrap(), 42);
        assert_eq!(parse_key::<u32>("p", " 7\n").unwrap(), 7);
        let e = parse_key::<u16>("/a/backend-id", "70000").unwrap_err();
        assert_eq!(
            e.to_string(),
            "store key /a/backend-id: \"70000\" is not a valid u16"
        );
        assert!(matches!(e, Error::BadKey { ref path, .. } if path == "/a/backend-id"));
        assert_eq!(
            bad_key("/a/sectors", "missing").to_string(),
            "store key /a/sectors: missing"
        );
    }
}
