//! A record of the requests one queue has taken from its ring and not yet
//! answered, kept outside the backend process (a file on a tmpfs, mapped
//! shared), so that a backend started after this one died resumes the
//! connection in place: it finds which requests were taken, which answers were
//! published, serves the rest again, and answers each exactly once.
//!
//! Why a record is needed: the ring itself cannot say. A backend answers in
//! completion order, writing each response into the slot at `rsp_prod_pvt`,
//! which held some *other* consumed request; so after a crash the slots of the
//! requests still in flight may be overwritten by unpublished responses, and
//! the consumer index (`req_cons`) was private. A Linux frontend cannot be
//! asked to reconnect without losing its disk (`xen-blkfront` tears the disk
//! down when its backend says `Closing`), and it never re-sends a request it
//! is waiting for: without the record those requests would hang for ever.
//!
//! The protocol, in the order the worker follows it (each step a store into the
//! mapped file, which survives the process):
//!
//! 1. take a batch from the ring; record each request (its ring index, its
//!    copy) as *taken*, then the new consumer index. Nothing is answered before
//!    this, so a slot at or beyond the recorded consumer index still holds its
//!    request;
//! 2. before writing a response into the ring, record the request as
//!    *answered at* the response index it is about to use;
//! 3. after publishing responses (`rsp_prod`), free the answered entries.
//!
//! Recovery ([`Inflight::recover`]) reads the shared `rsp_prod`: an entry
//! answered below it was published (done); an entry taken, or answered at or
//! beyond it, is served again; an entry taken at or beyond the recorded
//! consumer index is dropped (the ring still has it). The count must equal
//! `req_cons - rsp_prod`, or the record is not trusted.
//!
//! The record names the connection it belongs to (frontend, protocol, ring
//! references, event channel): a frontend that reconnected meanwhile has a new
//! ring, and an old record is ignored.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use xenio_ring::{MmapRegion, SharedMemory};
use xenio_xen_sys::blkif::BlkifRequest;
use xenio_xen_sys::ring::RingIdx;

const MAGIC: u32 = 0x5849_4f31; // "XIO1"
const VERSION: u32 = 1;
const HEADER_WORDS: usize = 16;
const ENTRY_WORDS: usize = 32;
const REQ_WORDS: usize = std::mem::size_of::<BlkifRequest>() / 4;

// Header words.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_SIZE: usize = 2;
const H_REQ_CONS: usize = 3;
const H_ID_LO: usize = 4;
const H_ID_HI: usize = 5;
const H_VALID: usize = 6;

// Entry words.
const E_STATE: usize = 0;
const E_REQ_IDX: usize = 1;
const E_RSP_IDX: usize = 2;
const E_REQ: usize = 4;

const FREE: u32 = 0;
const TAKEN: u32 = 1;
const ANSWERED: u32 = 2;

const _: () = assert!(E_REQ + REQ_WORDS <= ENTRY_WORDS);

/// What a queue's record is for: the connection's identity, hashed.
pub fn identity(parts: &[&str]) -> u64 {
    // FNV-1a: stable across runs and versions (a std hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The file of queue `queue` of the device whose backend directory is
/// `backend_dir`, in `dir`.
pub fn path(dir: &Path, backend_dir: &str, queue: u32) -> PathBuf {
    let name: String = backend_dir
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    dir.join(format!("{name}.q{queue}"))
}

/// Remove the records of every queue of a device (a connection that ended).
pub fn remove_all(dir: &Path, backend_dir: &str) {
    for q in 0.. {
        let p = path(dir, backend_dir, q);
        if std::fs::remove_file(&p).is_err() {
            break;
        }
    }
}

/// What a dead backend's record says.
#[derive(Clone, Debug)]
pub struct Left {
    /// Its consumer index when it died.
    pub req_cons: RingIdx,
    /// The entries in use.
    pub entries: Vec<Entry>,
}

/// One request a dead backend had taken.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The ring index it was taken from.
    pub req_idx: RingIdx,
    /// The response index it was (about to be) answered at.
    pub answered_at: Option<RingIdx>,
    /// The request, in the native layout.
    pub req: BlkifRequest,
}

/// One queue's record, mapped.
pub struct Inflight {
    mem: MmapRegion,
    size: u32,
    free: Vec<u32>,
    answered: Vec<u32>,
    path: PathBuf,
    /// Requests a dead backend took and never answered (with their entries),
    /// to be served first.
    replay: Vec<(u32, BlkifRequest)>,
}

impl std::fmt::Debug for Inflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflight")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("in_use", &(self.size as usize - self.free.len()))
            .finish()
    }
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Storage(format!("{}: {what}: {e}", path.display()))
}

impl Inflight {
    /// A fresh record for a ring of `size` slots starting at consumer index
    /// `req_cons` (the file is created or overwritten).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the file cannot be created or mapped.
    pub fn create(path: &Path, size: u32, id: u64, req_cons: RingIdx) -> Result<Inflight> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "creating", e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io_err(path, "creating", e))?;
        let bytes = (HEADER_WORDS + size as usize * ENTRY_WORDS) * 4;
        file.set_len(bytes as u64)
            .map_err(|e| io_err(path, "sizing", e))?;
        let rec = Self::map(&file, path, size)?;
        let w = rec.mem.words();
        w[H_MAGIC].store(MAGIC, Ordering::Relaxed);
        w[H_VERSION].store(VERSION, Ordering::Relaxed);
        w[H_SIZE].store(size, Ordering::Relaxed);
        w[H_REQ_CONS].store(req_cons, Ordering::Relaxed);
        w[H_ID_LO].store(id as u32, Ordering::Relaxed);
        w[H_ID_HI].store((id >> 32) as u32, Ordering::Relaxed);
        w[H_VALID].store(1, Ordering::Release);
        Ok(rec)
    }

    fn map(file: &File, path: &Path, size: u32) -> Result<Inflight> {
        let mem = MmapRegion::from_file(file).map_err(|e| io_err(path, "mapping", e))?;
        Ok(Inflight {
            mem,
            size,
            free: (0..size).rev().collect(),
            answered: Vec::new(),
            path: path.to_path_buf(),
            replay: Vec::new(),
        })
    }

    /// The record a dead backend left for the same connection (`id`, a ring of
    /// `size` slots). `Ok(None)` when there is none, or it is for another
    /// connection or ring size.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when an existing file cannot be read or mapped.
    pub fn read(path: &Path, size: u32, id: u64) -> Result<Option<Left>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path, "opening", e)),
        };
        let want = (HEADER_WORDS + size as usize * ENTRY_WORDS) * 4;
        let len = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
        if len != want as u64 {
            return Ok(None);
        }
        let rec = Self::map(&file, path, size)?;
        let w = rec.mem.words();
        let got_id = u64::from(w[H_ID_LO].load(Ordering::Relaxed))
            | (u64::from(w[H_ID_HI].load(Ordering::Relaxed)) << 32);
        if w[H_VALID].load(Ordering::Acquire) != 1
            || w[H_MAGIC].load(Ordering::Relaxed) != MAGIC
            || w[H_VERSION].load(Ordering::Relaxed) != VERSION
            || w[H_SIZE].load(Ordering::Relaxed) != size
            || got_id != id
        {
            return Ok(None);
        }
        let mut entries = Vec::new();
        for e in 0..size as usize {
            let base = HEADER_WORDS + e * ENTRY_WORDS;
            let state = w[base + E_STATE].load(Ordering::Acquire);
            if state != TAKEN && state != ANSWERED {
                continue;
            }
            let mut words = [0u32; REQ_WORDS];
            for (i, x) in words.iter_mut().enumerate() {
                *x = w[base + E_REQ + i].load(Ordering::Relaxed);
            }
            entries.push(Entry {
                req_idx: w[base + E_REQ_IDX].load(Ordering::Relaxed),
                answered_at: (state == ANSWERED)
                    .then(|| w[base + E_RSP_IDX].load(Ordering::Relaxed)),
                req: bytemuck::cast(words),
            });
        }
        Ok(Some(Left {
            req_cons: w[H_REQ_CONS].load(Ordering::Relaxed),
            entries,
        }))
    }

    /// Take over what a dead backend [`Left`] for this connection, given the
    /// ring's published response index `rsp_prod`: the requests to serve again
    /// (in ring order) are kept for [`take_replay`](Self::take_replay), and the
    /// record is rewritten with just those, *taken*, so that dying again during
    /// the replay loses nothing either. `Ok(None)`: the record does not add up
    /// (the file is left alone and the connection cannot be resumed).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the file cannot be rewritten.
    pub fn recover(
        path: &Path,
        size: u32,
        id: u64,
        left: &Left,
        rsp_prod: RingIdx,
    ) -> Result<Option<Inflight>> {
        let req_cons = left.req_cons;
        // In flight: taken before req_cons and not published.
        let mut replay: Vec<(RingIdx, BlkifRequest)> = Vec::new();
        for e in &left.entries {
            if req_cons.wrapping_sub(e.req_idx).wrapping_sub(1) >= size {
                continue; // recorded, but the consumer index was not: the ring has it
            }
            let published = e
                .answered_at
                .is_some_and(|r| rsp_prod.wrapping_sub(r).wrapping_sub(1) < size);
            if !published {
                replay.push((e.req_idx, e.req));
            }
        }
        let expected = req_cons.wrapping_sub(rsp_prod);
        if replay.len() as u32 != expected {
            tracing::warn!(
                "{}: the record says {} request(s) in flight, the ring {expected}: not resuming",
                path.display(),
                replay.len(),
            );
            return Ok(None);
        }
        replay.sort_by_key(|(idx, _)| idx.wrapping_sub(rsp_prod));
        let mut rec = Self::create(path, size, id, req_cons)?;
        for (idx, req) in replay {
            let slot = rec.take(idx, &req);
            rec.replay.push((slot, req));
        }
        Ok(Some(rec))
    }

    /// Requests to serve before taking more from the ring, with their entries.
    pub fn take_replay(&mut self) -> Vec<(u32, BlkifRequest)> {
        std::mem::take(&mut self.replay)
    }

    /// Record a request taken from ring index `idx`; returns its entry.
    /// Call [`consumed`](Self::consumed) after a batch.
    pub fn take(&mut self, idx: RingIdx, req: &BlkifRequest) -> u32 {
        // At most a ring's worth is ever in flight (the ring refuses more).
        let slot = self.free.pop().unwrap_or(0);
        let base = HEADER_WORDS + slot as usize * ENTRY_WORDS;
        let w = self.mem.words();
        w[base + E_REQ_IDX].store(idx, Ordering::Relaxed);
        let words: [u32; REQ_WORDS] = bytemuck::cast(*req);
        for (i, x) in words.iter().enumerate() {
            w[base + E_REQ + i].store(*x, Ordering::Relaxed);
        }
        // Release: the copy above is in the record before the entry says taken.
        w[base + E_STATE].store(TAKEN, Ordering::Release);
        slot
    }

    /// Record the consumer index after a batch was recorded.
    pub fn consumed(&mut self, req_cons: RingIdx) {
        self.mem.words()[H_REQ_CONS].store(req_cons, Ordering::Release);
    }

    /// Record that entry `slot` is about to be answered at response index
    /// `rsp_idx` (before the response is written into the ring).
    pub fn answering(&mut self, slot: u32, rsp_idx: RingIdx) {
        let base = HEADER_WORDS + slot as usize * ENTRY_WORDS;
        let w = self.mem.words();
        w[base + E_RSP_IDX].store(rsp_idx, Ordering::Relaxed);
        w[base + E_STATE].store(ANSWERED, Ordering::Release);
        self.answered.push(slot);
    }

    /// Responses were published: their entries are free again.
    pub fn published(&mut self) {
        let w = self.mem.words();
        for slot in self.answered.drain(..) {
            w[HEADER_WORDS + slot as usize * ENTRY_WORDS + E_STATE].store(FREE, Ordering::Release);
            self.free.push(slot);
        }
    }

    /// Entries in use (taken or answered, not yet published).
    pub fn in_use(&self) -> usize {
        self.size as usize - self.free.len()
    }

    /// The record's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64) -> BlkifRequest {
        BlkifRequest {
            id,
            sector_number: id * 8,
            ..Default::default()
        }
    }

    /// Taken 10..14 (consumer 14), 10 answered at 10 and published (rsp_prod
    /// 11), 12 answered at 11 but not published, 14 recorded without the
    /// consumer index: 11, 12 and 13 are served again, in ring order.
    #[test]
    fn recovery_serves_again_exactly_what_was_taken_and_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.q0");
        let id = identity(&["1", "x86_64-abi", "ring 7"]);
        let mut rec = Inflight::create(&path, 32, id, 10).unwrap();
        let slots: Vec<u32> = (10..14).map(|i| rec.take(i, &req(u64::from(i)))).collect();
        rec.consumed(14);
        rec.answering(slots[0], 10);
        rec.published();
        rec.answering(slots[2], 11);
        rec.take(14, &req(14)); // its consumer index never made it
        drop(rec);

        assert!(
            Inflight::read(&path, 32, id + 1).unwrap().is_none(),
            "another connection"
        );
        assert!(
            Inflight::read(&path, 64, id).unwrap().is_none(),
            "another ring size"
        );
        let left = Inflight::read(&path, 32, id).unwrap().unwrap();
        assert_eq!(left.req_cons, 14);
        // rsp_prod 11: the response at 10 was published, the one at 11 was not.
        let mut rec = Inflight::recover(&path, 32, id, &left, 11)
            .unwrap()
            .unwrap();
        let ids: Vec<u64> = rec.take_replay().iter().map(|(_, r)| r.id).collect();
        assert_eq!(ids, [11, 12, 13]);
        assert_eq!(rec.in_use(), 3);
        // The rewritten record says the same, should this backend die too.
        drop(rec);
        let again = Inflight::read(&path, 32, id).unwrap().unwrap();
        assert_eq!(again.req_cons, 14);
        assert_eq!(again.entries.len(), 3);
        assert!(again.entries.iter().all(|e| e.answered_at.is_none()));
    }

    #[test]
    fn a_record_that_does_not_add_up_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.q0");
        let mut rec = Inflight::create(&path, 32, 5, 0).unwrap();
        rec.take(0, &req(0));
        rec.consumed(1);
        drop(rec);
        let left = Inflight::read(&path, 32, 5).unwrap().unwrap();
        // The ring says two were taken and not answered; the record knows one.
        assert!(
            Inflight::recover(&path, 32, 5, &left, u32::MAX)
                .unwrap()
                .is_none()
        );
        assert!(Inflight::recover(&path, 32, 5, &left, 0).unwrap().is_some());
    }

    #[test]
    fn indices_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.q0");
        let start = u32::MAX - 1;
        let mut rec = Inflight::create(&path, 32, 9, start).unwrap();
        let a = rec.take(start, &req(1));
        rec.take(start.wrapping_add(1), &req(2));
        rec.take(start.wrapping_add(2), &req(3));
        rec.consumed(start.wrapping_add(3));
        rec.answering(a, start);
        rec.published();
        drop(rec);
        let left = Inflight::read(&path, 32, 9).unwrap().unwrap();
        let mut rec = Inflight::recover(&path, 32, 9, &left, start.wrapping_add(1))
            .unwrap()
            .unwrap();
        let ids: Vec<u64> = rec.take_replay().iter().map(|(_, r)| r.id).collect();
        assert_eq!(ids, [2, 3]);
    }

    #[test]
    fn paths_name_the_device_and_queue() {
        let p = path(
            Path::new("/run/x"),
            "/local/domain/0/backend/vbd/3/51712",
            1,
        );
        assert_eq!(p, Path::new("/run/x/local_domain_0_backend_vbd_3_51712.q1"));
        let dir = tempfile::tempdir().unwrap();
        for q in 0..3 {
            Inflight::create(&path(dir.path(), "/a/b", q), 32, 1, 0).unwrap();
        }
        remove_all(dir.path(), "/a/b");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
