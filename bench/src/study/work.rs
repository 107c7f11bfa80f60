//! The study's workloads: Bonnie's six patterns as Youseff et al. describe them
//! (section 4.2) and fio-style workloads, each run over any [`Dev`].
//!
//! Bonnie's patterns, on a file of the device's size, in Bonnie's order:
//! - `putc out`: sequential output per character: every byte goes through a
//!   `putc`-like call into a stdio-like buffer of one chunk; a full buffer is
//!   written at the file position (`write()`), as the C library does.
//! - `block out`: sequential output per block: `write()` of a chunk-sized user
//!   buffer (its first word changed each time), chunk after chunk.
//! - `rewrite`: for each chunk in order: read it, dirty a word, seek back, write
//!   it back.
//! - `getc in`: sequential input per character: a chunk is read into the stdio
//!   buffer and consumed one `getc`-like call per byte.
//! - `block in`: sequential input per block: `read()` of a chunk after chunk into
//!   a user buffer.
//! - `seeks`: `seekers` concurrent seekers (Bonnie forks 3 processes) each seek
//!   to a random chunk and read it; 1 in 10 of them (Bonnie's `UpdateSeek`) is
//!   dirtied and written back. Reported as seeks per second.
//!
//! The sequential patterns keep `depth` chunks in flight (1: each call waits, as
//! Bonnie's system calls do with O_DIRECT; more stands for a guest kernel's
//! readahead and write-behind). Data moves between the user's buffer and the
//! device's buffer with one copy each way, on both paths (the guest kernel's
//! copy_to_user/copy_from_user; xenio's blkfront copies into granted pages like
//! Linux blkfront with persistent grants).
//!
//! fio-style workloads (`seq read 1M QD8`, ...) keep QD operations of one block
//! size in flight and never touch the data. Sequential ones walk the file from
//! the start (wrapping); random ones pick uniformly distributed aligned blocks
//! from a seeded PRNG.

use crate::common::error::{BenchError, Result};
use crate::common::rng::Rng;
use crate::study::types::{Dev, FIO, Params, Phase};
use std::hint::black_box;
use std::time::Instant;

/// What one phase did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseResult {
    /// Wall time from the first submission to the last completion.
    pub secs: f64,
    /// Bytes of the file covered (rewrite: once, as Bonnie counts it).
    pub bytes: u64,
    /// Jobs done (chunks, seeks, fio operations).
    pub jobs: u64,
    /// The metric: MB/s (10^6), or seeks/s for `seeks`.
    pub value: f64,
    /// Checksum of the bytes the per-character input consumed (keeps the work
    /// from being optimised away).
    pub checksum: u64,
}

/// One unit of work: a read, a write, or a read then a write of the same block.
#[derive(Clone, Copy, Debug)]
struct Job {
    offset: u64,
    read: bool,
    write: bool,
}

/// A slot: a buffer and the job it carries.
#[derive(Clone, Copy, Debug)]
struct Slot {
    job: Job,
    writing: bool,
}

/// The stdio-like buffer of the per-character patterns.
struct Stdio {
    buf: Vec<u8>,
    pos: usize,
}

impl Stdio {
    /// `putc`: one call per byte (not inlined, like a C library call).
    #[inline(never)]
    fn putc(&mut self, c: u8) {
        self.buf[self.pos] = c;
        self.pos += 1;
    }

    /// `getc`: one call per byte; `None` when the buffer is used up.
    #[inline(never)]
    fn getc(&mut self) -> Option<u8> {
        let c = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(c)
    }
}

/// The byte Bonnie's per-character output writes at file position `i`.
pub fn putc_byte(i: u64) -> u8 {
    (i & 0x7f) as u8
}

/// Run `phase` over `dev` (the whole device is the file).
pub fn run_phase(dev: &mut dyn Dev, phase: Phase, p: &Params) -> Result<PhaseResult> {
    let size = dev.size();
    let (len, slots) = match phase {
        Phase::Seeks => (p.chunk, p.seekers.max(1)),
        Phase::Fio(i) => (FIO[i].bs, FIO[i].qd),
        _ => (p.chunk, p.depth.max(1)),
    };
    let blocks = size / len as u64;
    if blocks == 0 {
        return Err(BenchError::Usage(format!(
            "`{}`: the file ({size} bytes) is smaller than one {len}-byte block",
            phase.name()
        )));
    }
    let jobs_total = match phase {
        Phase::Seeks => p.seeks.max(1),
        Phase::Fio(i) => {
            let bytes = if FIO[i].bs < (64 << 10) {
                p.fio_bytes / 16
            } else {
                p.fio_bytes
            };
            (bytes.min(size) / len as u64).max(1)
        }
        _ => blocks,
    };
    let mut rng = Rng::new(p.seed ^ (phase_seed(phase)));
    dev.buffers(slots, len)?;
    let mut stdio = Stdio {
        buf: vec![0u8; len],
        pos: 0,
    };
    let fio_write = matches!(phase, Phase::Fio(i) if FIO[i].write);
    if fio_write {
        // fio writes whatever its buffers hold: random data, once.
        rng.fill(&mut stdio.buf);
        for b in 0..slots {
            dev.copy_in(b, &stdio.buf)?;
        }
    }
    let mut next = 0u64;
    let mut next_job = |rng: &mut Rng| -> Option<Job> {
        if next >= jobs_total {
            return None;
        }
        let i = next;
        next += 1;
        Some(match phase {
            Phase::PutcOut | Phase::BlockOut => Job {
                offset: i * len as u64,
                read: false,
                write: true,
            },
            Phase::Rewrite => Job {
                offset: i * len as u64,
                read: true,
                write: true,
            },
            Phase::GetcIn | Phase::BlockIn => Job {
                offset: i * len as u64,
                read: true,
                write: false,
            },
            Phase::Seeks => Job {
                offset: rng.below(blocks) * len as u64,
                read: true,
                write: rng.below(10) == 0,
            },
            Phase::Fio(f) => {
                let block = if FIO[f].random {
                    rng.below(blocks)
                } else {
                    i % blocks
                };
                Job {
                    offset: block * len as u64,
                    read: !FIO[f].write,
                    write: FIO[f].write,
                }
            }
        })
    };

    let mut state: Vec<Option<Slot>> = vec![None; slots];
    let mut idle: Vec<usize> = (0..slots).rev().collect();
    let mut done = Vec::with_capacity(slots);
    let mut in_flight = 0usize;
    let mut jobs = 0u64;
    let mut checksum = 0u64;
    let mut stamp = 0u64;
    let start = Instant::now();
    loop {
        while let Some(&b) = idle.last() {
            let Some(job) = next_job(&mut rng) else { break };
            idle.pop();
            if job.read {
                dev.submit(b, false, job.offset, len)?;
                state[b] = Some(Slot {
                    job,
                    writing: false,
                });
            } else {
                match phase {
                    Phase::PutcOut => {
                        stdio.pos = 0;
                        for k in 0..len as u64 {
                            stdio.putc(putc_byte(job.offset + k));
                        }
                        dev.copy_in(b, black_box(&stdio.buf))?;
                    }
                    Phase::BlockOut => {
                        stamp += 1;
                        stdio.buf[..8].copy_from_slice(&stamp.to_le_bytes());
                        dev.copy_in(b, &stdio.buf)?;
                    }
                    _ => {}
                }
                dev.submit(b, true, job.offset, len)?;
                state[b] = Some(Slot { job, writing: true });
            }
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        done.clear();
        dev.wait(&mut done)?;
        for &b in &done {
            let Some(mut s) = state[b] else {
                return Err(BenchError::Usage(format!(
                    "the device completed buffer {b}, which had nothing in flight"
                )));
            };
            in_flight -= 1;
            if !s.writing {
                // A read finished: the data goes to the user (read()/getc);
                // fio-style workloads leave it where it is.
                if !matches!(phase, Phase::Fio(_)) {
                    dev.copy_out(b, &mut stdio.buf)?;
                }
                if phase == Phase::GetcIn {
                    stdio.pos = 0;
                    while let Some(c) = stdio.getc() {
                        checksum = checksum.wrapping_add(u64::from(c));
                    }
                }
                if s.job.write {
                    // Dirty one word and write the block back where it came from.
                    stdio.buf[0] = stdio.buf[0].wrapping_add(1);
                    dev.copy_in(b, &stdio.buf)?;
                    dev.submit(b, true, s.job.offset, len)?;
                    s.writing = true;
                    state[b] = Some(s);
                    in_flight += 1;
                    continue;
                }
            }
            state[b] = None;
            jobs += 1;
            idle.push(b);
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let bytes = jobs * len as u64;
    let value = match phase {
        Phase::Seeks => jobs as f64 / secs,
        _ => bytes as f64 / secs / 1e6,
    };
    Ok(PhaseResult {
        secs,
        bytes,
        jobs,
        value,
        checksum: black_box(checksum),
    })
}

fn phase_seed(phase: Phase) -> u64 {
    match phase {
        Phase::PutcOut => 1,
        Phase::BlockOut => 2,
        Phase::Rewrite => 3,
        Phase::GetcIn => 4,
        Phase::BlockIn => 5,
        Phase::Seeks => 6,
        Phase::Fio(i) => 100 + i as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::dev::{IoRec, NativeDev, Recorder};
    use crate::study::types::all_phases;

    const CHUNK: usize = 8192;
    const SIZE: u64 = 2 << 20;

    fn params() -> Params {
        Params {
            chunk: CHUNK,
            depth: 1,
            seeks: 2000,
            seekers: 3,
            fio_bytes: 1 << 20,
            seed: 42,
        }
    }

    /// A real file on a disk filesystem (O_DIRECT where it works) through the
    /// native path, every operation recorded.
    fn device(dir: &tempfile::TempDir) -> Recorder<NativeDev> {
        let path = dir.path().join("disk.img");
        std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
        let buffered = NativeDev::open(&path, false, false, 64).is_err();
        Recorder::new(NativeDev::open(&path, buffered, false, 64).unwrap())
    }

    fn tempdir() -> tempfile::TempDir {
        // /var/tmp is on a disk filesystem (O_DIRECT); /tmp may be tmpfs.
        tempfile::tempdir_in("/var/tmp").unwrap_or_else(|_| tempfile::tempdir().unwrap())
    }

    fn sequential(log: &[IoRec], write: bool, len: usize) {
        assert_eq!(log.len() as u64, SIZE / len as u64);
        for (i, r) in log.iter().enumerate() {
            assert_eq!(
                *r,
                IoRec {
                    write,
                    offset: i as u64 * len as u64,
                    len
                },
                "operation {i}"
            );
        }
    }

    #[test]
    fn sequential_output_walks_the_file_in_chunks_and_putc_writes_its_bytes() {
        let dir = tempdir();
        let mut dev = device(&dir);
        let r = run_phase(&mut dev, Phase::PutcOut, &params()).unwrap();
        assert_eq!((r.bytes, r.jobs), (SIZE, SIZE / CHUNK as u64));
        sequential(&dev.log, true, CHUNK);
        // What putc wrote is on the disk, byte for byte.
        let data = std::fs::read(dir.path().join("disk.img")).unwrap();
        assert!(
            data.iter()
                .enumerate()
                .all(|(i, &b)| b == putc_byte(i as u64))
        );
        dev.log.clear();
        run_phase(&mut dev, Phase::BlockOut, &params()).unwrap();
        sequential(&dev.log, true, CHUNK);
    }

    #[test]
    fn sequential_input_reads_every_chunk_in_order_and_getc_sees_every_byte() {
        let dir = tempdir();
        let mut dev = device(&dir);
        run_phase(&mut dev, Phase::PutcOut, &params()).unwrap();
        for phase in [Phase::GetcIn, Phase::BlockIn] {
            dev.log.clear();
            let r = run_phase(&mut dev, phase, &params()).unwrap();
            sequential(&dev.log, false, CHUNK);
            if phase == Phase::GetcIn {
                let want: u64 = (0..SIZE).map(|i| u64::from(putc_byte(i))).sum();
                assert_eq!(r.checksum, want);
            }
        }
    }

    #[test]
    fn rewrite_reads_then_writes_back_each_chunk_in_order() {
        let dir = tempdir();
        let mut dev = device(&dir);
        run_phase(&mut dev, Phase::PutcOut, &params()).unwrap();
        dev.log.clear();
        let r = run_phase(&mut dev, Phase::Rewrite, &params()).unwrap();
        assert_eq!(r.bytes, SIZE);
        let n = (SIZE / CHUNK as u64) as usize;
        assert_eq!(dev.log.len(), 2 * n);
        for (i, pair) in dev.log.chunks(2).enumerate() {
            let offset = (i * CHUNK) as u64;
            assert_eq!(
                pair[0],
                IoRec {
                    write: false,
                    offset,
                    len: CHUNK
                }
            );
            assert_eq!(
                pair[1],
                IoRec {
                    write: true,
                    offset,
                    len: CHUNK
                }
            );
        }
        // Each chunk was dirtied: its first byte went up by one.
        let data = std::fs::read(dir.path().join("disk.img")).unwrap();
        for c in 0..n {
            let at = c * CHUNK;
            assert_eq!(data[at], putc_byte(at as u64) + 1, "chunk {c}");
            assert_eq!(data[at + 1], putc_byte(at as u64 + 1));
        }
    }

    #[test]
    fn seeks_are_random_and_rewrite_about_one_in_ten() {
        let dir = tempdir();
        let mut dev = device(&dir);
        let p = params();
        let r = run_phase(&mut dev, Phase::Seeks, &p).unwrap();
        assert_eq!(r.jobs, p.seeks);
        let reads: Vec<&IoRec> = dev.log.iter().filter(|r| !r.write).collect();
        let writes = dev.log.len() - reads.len();
        assert_eq!(reads.len() as u64, p.seeks);
        // Binomial(2000, 0.1): mean 200, sd 13.4; 150..=250 is beyond 3.7 sd.
        assert!((150..=250).contains(&writes), "{writes} rewrites of 2000");
        // Every write goes back to a block that was read, aligned to the chunk.
        for (i, w) in dev.log.iter().enumerate().filter(|(_, r)| r.write) {
            assert!(
                dev.log[..i]
                    .iter()
                    .any(|r| !r.write && r.offset == w.offset),
                "write at {} without a read",
                w.offset
            );
        }
        let blocks = SIZE / CHUNK as u64;
        assert!(
            reads
                .iter()
                .all(|r| r.offset % CHUNK as u64 == 0 && r.offset < SIZE)
        );
        // Random, not sequential: few reads follow their predecessor's block, and
        // the reads spread over the file (each quarter gets 15-35%).
        let follow = reads
            .windows(2)
            .filter(|w| w[1].offset == w[0].offset + CHUNK as u64)
            .count();
        assert!(follow < 20, "{follow} of 2000 reads were sequential");
        let mut quarters = [0u32; 4];
        for r in &reads {
            quarters[(r.offset / CHUNK as u64 * 4 / blocks) as usize] += 1;
        }
        assert!(
            quarters.iter().all(|&q| (300..700).contains(&q)),
            "{quarters:?}"
        );
    }

    #[test]
    fn fio_workloads_do_what_their_names_say() {
        let dir = tempdir();
        let mut dev = device(&dir);
        let p = params();
        for (i, spec) in FIO.iter().enumerate() {
            dev.log.clear();
            let r = run_phase(&mut dev, Phase::Fio(i), &p).unwrap();
            let n = dev.log.len() as u64;
            assert_eq!(n, r.jobs, "{}", spec.name);
            assert!(
                dev.log
                    .iter()
                    .all(|x| x.write == spec.write && x.len == spec.bs)
            );
            let want_bytes = if spec.bs < (64 << 10) {
                p.fio_bytes / 16
            } else {
                p.fio_bytes
            };
            assert_eq!(n * spec.bs as u64, want_bytes, "{}", spec.name);
            let seq = dev
                .log
                .windows(2)
                .filter(|w| w[1].offset == w[0].offset + spec.bs as u64)
                .count() as u64;
            if spec.random {
                assert!(seq * 20 < n, "{}: {seq} of {n} sequential", spec.name);
            } else {
                assert_eq!(seq, n - 1, "{}", spec.name);
                assert_eq!(dev.log[0].offset, 0);
            }
        }
    }

    #[test]
    fn deeper_sequential_patterns_still_cover_the_file_once_each() {
        let dir = tempdir();
        let mut dev = device(&dir);
        let p = Params {
            depth: 4,
            ..params()
        };
        run_phase(&mut dev, Phase::BlockIn, &p).unwrap();
        let mut offsets: Vec<u64> = dev.log.iter().map(|r| r.offset).collect();
        // Submitted in file order even with 4 in flight.
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + CHUNK as u64));
        offsets.dedup();
        assert_eq!(offsets.len() as u64, SIZE / CHUNK as u64);
    }

    #[test]
    fn names_parse_back() {
        for p in all_phases() {
            assert_eq!(Phase::parse(p.name()), Some(p));
        }
        assert_eq!(Phase::parse("Block-In"), Some(Phase::BlockIn));
        assert_eq!(Phase::parse("rand_read_4k_qd32"), Some(Phase::Fio(3)));
        assert_eq!(Phase::parse("nothing"), None);
    }
}
