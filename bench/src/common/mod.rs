//! What the benchmarks share: the error type, summaries and the report's
//! ratios, OS services, child processes and scratch files that never outlive a
//! run, the seeded PRNG and the test file, and `xenio blkback` as a child
//! process with a frontend connected to it (the xenio path of `blk` and of the
//! study). Nothing here imports a benchmark.

pub mod blkback;
pub mod error;
pub mod image;
pub mod proc;
pub mod report;
pub mod rng;
pub mod stats;
pub mod sys;
