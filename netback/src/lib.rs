//! The netif backend framework (tx/rx rings to a TAP device behind a frame source/sink trait): filled by the network-driver issue.
#![forbid(unsafe_code)]
