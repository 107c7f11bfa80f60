//! The netif frontend library (send/receive frames, smoltcp phy::Device): filled by the network-driver issue.
#![forbid(unsafe_code)]
