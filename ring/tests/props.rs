//! Property tests of the index arithmetic: random sequences of ring operations,
//! run against an unbounded (u64) model of ring.h, from any start index, so
//! indices wrap past `u32::MAX` in the middle of a sequence.
#![cfg(not(loom))]

use proptest::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;
use xenio_ring::*;
use xenio_xen_sys::blkif::*;

#[derive(Clone, Debug)]
enum Op {
    /// Frontend writes up to n requests, then pushes and checks notify.
    Push(u32),
    /// Frontend writes up to n requests and publishes without the check.
    PushQuiet(u32),
    /// Backend takes up to n requests.
    Take(usize),
    /// Backend answers up to n consumed requests, then pushes and checks notify.
    Respond(u32),
    /// Backend's final check before sleeping.
    BackFinal,
    /// Frontend consumes up to n responses (one at a time, or in a batch).
    Collect(usize, bool),
    /// Frontend's final check before sleeping.
    FrontFinal,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..40).prop_map(Op::Push),
        (0u32..5).prop_map(Op::PushQuiet),
        (0usize..40).prop_map(Op::Take),
        (0u32..40).prop_map(Op::Respond),
        Just(Op::BackFinal),
        ((0usize..40), any::<bool>()).prop_map(|(n, b)| Op::Collect(n, b)),
        Just(Op::FrontFinal),
    ]
}

/// ring.h with indices that never wrap.
struct Model {
    size: u64,
    req_prod_pvt: u64,
    req_prod: u64,
    req_cons: u64,
    req_event: u64,
    rsp_prod_pvt: u64,
    rsp_prod: u64,
    rsp_cons: u64,
    rsp_event: u64,
}

impl Model {
    fn new(size: u32, start: u32) -> Self {
        let s = start as u64;
        Model {
            size: size as u64,
            req_prod_pvt: s,
            req_prod: s,
            req_cons: s,
            req_event: s + 1,
            rsp_prod_pvt: s,
            rsp_prod: s,
            rsp_cons: s,
            rsp_event: s + 1,
        }
    }
}

/// Everything observable, in order: the trace two runs must agree on.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Notify(bool),
    Ids(Vec<u64>),
    Final(bool),
    Free(u32),
}

fn run(order: u32, start: u32, ops: &[Op]) -> Result<Vec<Seen>, TestCaseError> {
    let mem = Arc::new(HeapMemory::pages(order));
    let mut front = BlkifFrontRing::init_at(mem.clone(), start).unwrap();
    let mut back = BlkifBackRing::attach(mem).unwrap();
    let mut m = Model::new(front.size(), start);
    let mut next_id = 0u64;
    let mut queued: VecDeque<u64> = VecDeque::new(); // requests taken, not answered
    let mut answered: VecDeque<u64> = VecDeque::new(); // responses pushed, not collected
    let mut trace = Vec::new();
    let mut scratch_req = Vec::new();
    let mut scratch_rsp = Vec::new();

    for op in ops {
        match *op {
            Op::Push(n) | Op::PushQuiet(n) => {
                for _ in 0..n {
                    let r = BlkifRequest {
                        id: next_id,
                        sector_number: next_id ^ 0x5555,
                        ..Default::default()
                    };
                    match front.push_request(&r) {
                        Ok(()) => {
                            prop_assert!(m.req_prod_pvt - m.rsp_cons < m.size);
                            next_id += 1;
                            m.req_prod_pvt += 1;
                        }
                        Err(RingError::Full { size }) => {
                            prop_assert_eq!(m.req_prod_pvt - m.rsp_cons, size as u64);
                            break;
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("push: {e}"))),
                    }
                }
                let old = m.req_prod;
                m.req_prod = m.req_prod_pvt;
                if matches!(op, Op::Push(_)) {
                    let want = old < m.req_event && m.req_event <= m.req_prod;
                    let got = front.push_requests_and_check_notify().is_required();
                    prop_assert_eq!(got, want, "request notify decision");
                    trace.push(Seen::Notify(got));
                } else {
                    front.push_requests();
                }
            }
            Op::Take(n) => {
                scratch_req.clear();
                let got = back.take_requests_up_to(&mut scratch_req, n).unwrap();
                let want = ((m.req_prod - m.req_cons) as usize).min(n);
                prop_assert_eq!(got, want);
                let ids: Vec<u64> = scratch_req.iter().map(|r| r.id).collect();
                for (k, r) in scratch_req.iter().enumerate() {
                    prop_assert_eq!(r.id, m.req_cons - start as u64 + k as u64);
                    prop_assert_eq!(r.sector_number, r.id ^ 0x5555);
                }
                m.req_cons += got as u64;
                queued.extend(&ids);
                trace.push(Seen::Ids(ids));
            }
            Op::Respond(n) => {
                for _ in 0..n {
                    let Some(id) = queued.front().copied() else {
                        prop_assert!(back.push_response(&BlkifResponse::default()).is_err());
                        break;
                    };
                    back.push_response(&BlkifResponse::new(id, 1, 0)).unwrap();
                    queued.pop_front();
                    answered.push_back(id);
                    m.rsp_prod_pvt += 1;
                }
                let old = m.rsp_prod;
                m.rsp_prod = m.rsp_prod_pvt;
                let want = old < m.rsp_event && m.rsp_event <= m.rsp_prod;
                let got = back.push_responses_and_check_notify().is_required();
                prop_assert_eq!(got, want, "response notify decision");
                trace.push(Seen::Notify(got));
            }
            Op::BackFinal => {
                let mut work = m.req_prod > m.req_cons;
                if !work {
                    m.req_event = m.req_cons + 1;
                    work = m.req_prod > m.req_cons;
                }
                let got = back.final_check_for_requests().unwrap();
                prop_assert_eq!(got, work);
                trace.push(Seen::Final(got));
            }
            Op::Collect(n, batch) => {
                let avail = (m.rsp_prod - m.rsp_cons) as usize;
                prop_assert_eq!(front.unconsumed_responses().unwrap() as usize, avail);
                let ids: Vec<u64> = if batch {
                    scratch_rsp.clear();
                    front.take_responses(&mut scratch_rsp).unwrap();
                    scratch_rsp.iter().map(|r| r.id).collect()
                } else {
                    (0..n)
                        .map_while(|_| front.take_response().unwrap())
                        .map(|r| r.id)
                        .collect()
                };
                let want = if batch { avail } else { avail.min(n) };
                prop_assert_eq!(ids.len(), want);
                for id in &ids {
                    prop_assert_eq!(Some(*id), answered.pop_front());
                }
                m.rsp_cons += ids.len() as u64;
                trace.push(Seen::Ids(ids));
            }
            Op::FrontFinal => {
                let mut work = m.rsp_prod > m.rsp_cons;
                if !work {
                    m.rsp_event = m.rsp_cons + 1;
                    work = m.rsp_prod > m.rsp_cons;
                }
                let got = front.final_check_for_responses().unwrap();
                prop_assert_eq!(got, work);
                trace.push(Seen::Final(got));
            }
        }
        // Invariants of ring.h after every step.
        prop_assert_eq!(
            front.free_requests() as u64,
            m.size - (m.req_prod_pvt - m.rsp_cons)
        );
        prop_assert_eq!(front.req_prod_pvt(), m.req_prod_pvt as u32);
        prop_assert_eq!(front.rsp_cons(), m.rsp_cons as u32);
        prop_assert_eq!(back.req_cons(), m.req_cons as u32);
        prop_assert_eq!(back.rsp_prod_pvt(), m.rsp_prod_pvt as u32);
        trace.push(Seen::Free(front.free_requests()));
    }
    Ok(trace)
}

fn start_index() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        (0u32..64).prop_map(|d| u32::MAX - d),
        (0u32..64).prop_map(|d| (1u32 << 31).wrapping_sub(d)),
        any::<u32>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The ring agrees with an unbounded model of ring.h step by step, and what it
    /// shows does not depend on where the indices start (so wrap-around is invisible).
    #[test]
    fn ring_matches_unbounded_model_from_any_start(
        order in 0u32..3,
        start in start_index(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let at_zero = run(order, 0, &ops)?;
        let shifted = run(order, start, &ops)?;
        prop_assert_eq!(at_zero, shifted);
    }

}
