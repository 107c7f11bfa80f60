//! Ops in flight and ops done. An op split into several requests is done when
//! its last request is answered; its result is the first error any of them
//! reported.

use crate::error::Error;
use crate::op::{Done, Token};
use crate::pool::Buf;
use std::collections::{HashMap, VecDeque};
use xenio_xen_sys::blkif::{BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_OKAY};

/// An op with requests still unanswered.
struct Pending {
    token: Token,
    remaining: u32,
    status: i16,
    what: &'static str,
    buf: Option<Buf>,
}

/// Every op submitted and not yet handed back to the caller.
#[derive(Default)]
pub(crate) struct Completions {
    /// By token number.
    pending: HashMap<u64, Pending>,
    done: VecDeque<Done>,
}

impl Completions {
    /// Op `token`, `what` (for errors), went out as `requests` requests.
    pub(crate) fn add(
        &mut self,
        token: Token,
        requests: usize,
        what: &'static str,
        buf: Option<Buf>,
    ) {
        self.pending.insert(
            token.0,
            Pending {
                token,
                remaining: requests as u32,
                status: BLKIF_RSP_OKAY,
                what,
                buf,
            },
        );
    }

    /// One request of op `key` was answered with `status`.
    pub(crate) fn answered(&mut self, key: u64, status: i16) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        if status != BLKIF_RSP_OKAY && p.status == BLKIF_RSP_OKAY {
            p.status = status;
        }
        p.remaining -= 1;
        if p.remaining == 0 {
            let p = self.pending.remove(&key).expect("present");
            let result = match p.status {
                BLKIF_RSP_OKAY => Ok(()),
                BLKIF_RSP_EOPNOTSUPP => Err(Error::NotSupported(p.what.into())),
                _ => Err(Error::Io(p.what.into())),
            };
            self.done.push_back(Done {
                token: p.token,
                result,
                buf: p.buf,
            });
        }
    }

    /// Ops submitted and not done.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Move every done op to `out`; returns how many.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<Done>) -> usize {
        let n = self.done.len();
        out.extend(self.done.drain(..));
        n
    }

    /// Whether some op is done and not yet handed out.
    pub(crate) fn any_done(&self) -> bool {
        !self.done.is_empty()
    }

    /// Hand a done op back, to come out again.
    pub(crate) fn requeue(&mut self, done: Done) {
        self.done.push_back(done);
    }
}
