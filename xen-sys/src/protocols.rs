//! The ABI names of `xen/io/protocols.h`: what a frontend writes into its
//! `protocol` key to say how it lays out ring entries.

/// `XEN_IO_PROTO_ABI_X86_32`: 32-bit x86 (see [`crate::blkif_x86_32`]).
pub const XEN_IO_PROTO_ABI_X86_32: &str = "x86_32-abi";
/// `XEN_IO_PROTO_ABI_X86_64`: 64-bit x86, the native layout of [`crate::blkif`].
pub const XEN_IO_PROTO_ABI_X86_64: &str = "x86_64-abi";
/// `XEN_IO_PROTO_ABI_ARM`: 32- and 64-bit Arm, laid out as x86_64 (every
/// `uint64_t` 8-byte aligned).
pub const XEN_IO_PROTO_ABI_ARM: &str = "arm-abi";
