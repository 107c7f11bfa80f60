//! The blkif backend framework (serves real storage through io_uring behind a storage trait): filled by the block-driver issue.
#![forbid(unsafe_code)]
