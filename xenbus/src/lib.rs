//! The platform layer (event channels, grants, xenstore and the device handshake; in-process, local and Xen implementations): filled by the platform issue.
