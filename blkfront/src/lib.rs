//! The blkif frontend library (connects through the handshake, submits I/O from its grant pool): filled by the block-driver issue.
#![forbid(unsafe_code)]
