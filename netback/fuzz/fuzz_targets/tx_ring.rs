//! A hostile frontend: arbitrary tx ring contents (every slot, the producer
//! index) and rx buffers fed to netback's real queue worker, with an in-memory
//! grant table and network. The worker must answer or disconnect: never panic,
//! never hang, never answer more than was asked, never send a frame it should
//! have refused.
//!
//! Knob bit 4 gives a network and a frontend that take every offload, so the
//! GSO extra and `NETTXF_csum_blank` of the slots are honoured: the granted
//! pages start with a TCP/IPv4 header (from the input) so that the header
//! checks are reached, and what the network gets must be a frame of at most
//! the MTU, or a large TCP segment whose MSS is at least 88 and whose segments
//! fit the MTU, with a partial checksum inside the packet. Packets for the
//! frontend come with offload metadata from the input, too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenio_netback::queue::{Counters, QueueConfig, QueueWorker, QueueRings, QueueState};
use xenio_netback::tx::TxLimits;
use xenio_netback::{Checksum, Error as NbError, Gso, GsoKind, MemFrames, Meta, Offloads};
use xenio_ring::BackRing;
use xenio_xen_sys::{DomId, GrantRef, Port};
use xenio_xenbus::{
    CopyBuf, Error, EventChannel, GrantCopy, GrantMapper, ReadOnlyRegion, Region, Result,
};

const PAGES: u32 = 16;
const FIRST_REF: u32 = 8;

/// 16 granted pages (refs 8..24).
struct Grants {
    pages: Vec<Mutex<Vec<u8>>>,
}

impl Grants {
    fn page(&self, r: GrantRef) -> Result<&Mutex<Vec<u8>>> {
        let i = r.0.checked_sub(FIRST_REF).filter(|i| *i < PAGES);
        let i = i.ok_or_else(|| Error::Grant {
            domid: DomId(1),
            gref: r,
            reason: "not granted".into(),
        })?;
        Ok(&self.pages[i as usize])
    }
}

impl GrantMapper for Grants {
    fn map(&self, _d: DomId, _refs: &[GrantRef]) -> Result<Region> {
        Err(Error::Limit("the tx path copies".into()))
    }
    fn map_readonly(&self, _d: DomId, _refs: &[GrantRef]) -> Result<ReadOnlyRegion> {
        Err(Error::Limit("the tx path copies".into()))
    }
    fn copy(&self, ops: &mut [GrantCopy<'_>]) -> Result<Vec<Result<()>>> {
        Ok(ops
            .iter_mut()
            .map(|op| {
                let at = usize::from(op.offset);
                match &mut op.local {
                    CopyBuf::FromGrant(b) => {
                        let p = self.page(op.gref)?.lock().unwrap();
                        b.copy_from_slice(
                            p.get(at..at + b.len())
                                .ok_or(Error::Limit("crosses page".into()))?,
                        );
                    }
                    CopyBuf::ToGrant(b) => {
                        let mut p = self.page(op.gref)?.lock().unwrap();
                        p.get_mut(at..at + b.len())
                            .ok_or(Error::Limit("crosses page".into()))?
                            .copy_from_slice(b);
                    }
                }
                Ok(())
            })
            .collect())
    }
}

struct Channel(std::io::PipeReader);
impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl EventChannel for Channel {
    fn port(&self) -> Port {
        Port(1)
    }
    fn notify(&self) -> Result<()> {
        Ok(())
    }
    fn take_pending(&self) -> Result<bool> {
        Ok(false)
    }
    fn wait(&self, _t: Option<Duration>) -> Result<bool> {
        Ok(false)
    }
    fn unmask(&self) -> Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let Some((prod, entries)) = rest.split_first_chunk::<2>() else {
        return;
    };
    // The tx ring: 256 slots of 12 bytes, whatever the input says, and a producer
    // index that is sometimes far ahead.
    let tx_mem = Region::anonymous(4096).unwrap();
    let (tx_entries, rx_entries) = entries.split_at(entries.len().min(256 * 12));
    for (i, e) in tx_entries.chunks(12).enumerate() {
        tx_mem.write(64 + i * 12, e).unwrap();
    }
    let req_prod = u32::from(u16::from_le_bytes(*prod)) % 512;
    tx_mem.write(0, &req_prod.to_ne_bytes()).unwrap();
    // The rx ring: up to 32 posted buffers from the rest of the input.
    let rx_mem = Region::anonymous(4096).unwrap();
    let nrx = (rx_entries.len() / 8).min(32);
    for (i, e) in rx_entries.chunks_exact(8).take(nrx).enumerate() {
        rx_mem.write(64 + i * 8, e).unwrap();
    }
    rx_mem.write(0, &(nrx as u32).to_ne_bytes()).unwrap();
    let offloads = if knobs & 16 != 0 {
        Offloads::ALL
    } else {
        Offloads::NONE
    };
    // A TCP/IPv4 header template from the last 40 bytes of the input (or
    // zeros): version, lengths and offsets as the input says.
    let mut hdr = [0u8; 54];
    hdr[12..14].copy_from_slice(&[0x08, 0x00]);
    let tail = &data[data.len().saturating_sub(40)..];
    hdr[14..14 + tail.len()].copy_from_slice(tail);
    let frames = Arc::new(MemFrames::default());
    for k in 0..(knobs >> 5) as usize {
        let mut f = vec![k as u8; 60 + k * 9000];
        f[..54].copy_from_slice(&hdr);
        let b = |i: usize| u16::from(*tail.get(i).unwrap_or(&0));
        let meta = Meta {
            checksum: match k % 3 {
                0 => Checksum::None,
                1 => Checksum::Validated,
                _ => Checksum::Partial {
                    start: b(0) * 7,
                    offset: b(1),
                },
            },
            gso: (k % 2 == 0).then_some(Gso {
                kind: if k % 4 == 0 { GsoKind::TcpV4 } else { GsoKind::TcpV6 },
                size: b(2) << 4 | b(3),
                hdr_len: b(4),
            }),
        };
        frames.incoming_meta.lock().unwrap().push_back((f, meta));
    }
    let grants = Grants {
        pages: (0..PAGES)
            .map(|p| {
                let mut page = vec![p as u8; 4096];
                page[..54].copy_from_slice(&hdr);
                Mutex::new(page)
            })
            .collect(),
    };
    let limits = TxLimits {
        max_frame: if knobs & 2 != 0 { 9018 } else { 1518 },
        sg: knobs & 1 != 0,
        offloads,
    };
    let (r1, _w1) = std::io::pipe().unwrap();
    let counters = Counters::default();
    let stop = AtomicBool::new(false);
    let mut worker = QueueWorker {
        rings: QueueRings {
            tx: BackRing::attach_at(tx_mem, 0).unwrap(),
            rx: BackRing::attach_at(rx_mem, 0).unwrap(),
            tx_channel: Channel(r1),
            rx_channel: None,
        },
        mapper: &grants,
        frontend: DomId(1),
        frames: frames.clone(),
        limits,
        rx_sg: knobs & 4 != 0,
        rx_offloads: offloads,
        config: QueueConfig {
            max_batch: if knobs & 8 != 0 { 7 } else { 256 },
            rx_queue: 4,
            ..QueueConfig::default()
        },
        counters: &counters,
        stop: &stop,
    };
    let mut st = QueueState::default();
    for _ in 0..600 {
        match worker.step(&mut st) {
            Ok(true) => {}
            Ok(false) => break,
            Err(NbError::Ring(e)) => {
                assert!(e.is_broken(), "{e}");
                break;
            }
            Err(NbError::Frontend(_)) => break,
            Err(e) => panic!("the worker failed on hostile input: {e}"),
        }
    }
    // Never more responses than requests, never a frame it should have refused.
    let rsp_prod = worker.rings.tx.rsp_prod_pvt();
    assert!(
        rsp_prod <= req_prod.min(256),
        "{rsp_prod} responses to {req_prod} requests"
    );
    let sent = frames.sent.lock().unwrap();
    let metas = frames.sent_meta.lock().unwrap();
    assert_eq!(sent.len(), metas.len());
    for (f, m) in sent.iter().zip(metas.iter()) {
        if offloads == Offloads::NONE {
            assert_eq!(*m, Meta::default(), "metadata for a network that takes none");
        }
        match m.gso {
            None => assert!(
                f.len() >= 14 && f.len() <= limits.max_frame,
                "sent a {}-byte frame",
                f.len()
            ),
            Some(g) => {
                assert!(f.len() <= 65535 && g.size >= 88, "{g:?} for {} bytes", f.len());
                assert!(
                    usize::from(g.hdr_len) + usize::from(g.size) <= limits.max_frame,
                    "{g:?}: segments over the MTU"
                );
                assert!(matches!(m.checksum, Checksum::Partial { .. }), "{m:?}");
            }
        }
        if let Checksum::Partial { start, offset } = m.checksum {
            assert!(
                usize::from(start) + usize::from(offset) + 2 <= f.len(),
                "checksum field of {m:?} past the {}-byte packet",
                f.len()
            );
        }
    }
});
