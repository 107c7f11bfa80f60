//! A connection's outgoing messages: replies (never dropped, but a connection
//! whose replies pile up is not read from) and watch events (capped and
//! de-duplicated, so a client that never reads cannot grow the daemon).

use crate::wire::Message;
use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What waiting for a connection's next outgoing message gave
/// ([`Connection::next_output`](super::Connection::next_output)).
#[derive(Debug)]
pub enum Popped {
    /// The next message to send.
    Message(Message),
    /// Nothing arrived within the timeout.
    Timeout,
    /// The connection was closed.
    Closed,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(Message, bool)>,
    replies: usize,
    events: usize,
    /// Payloads of queued (unsent) non-special events: an identical event is not
    /// queued twice (xenstored's `send_event` does the same).
    pending: HashSet<Vec<u8>>,
    closed: bool,
    dropped: u64,
}

/// The outgoing queue of one connection.
pub struct OutQueue {
    state: Mutex<State>,
    cond: Condvar,
    max_events: usize,
    max_replies: usize,
}

impl OutQueue {
    /// A queue holding at most `max_events` unsent watch events; the connection
    /// is not served while `max_replies` replies are unsent.
    pub fn new(max_events: usize, max_replies: usize) -> Self {
        OutQueue {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            max_events: max_events.max(1),
            max_replies: max_replies.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent in a
        // way that matters more than losing the connection; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a reply.
    pub fn push_reply(&self, msg: Message) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.queue.push_back((msg, false));
        s.replies += 1;
        self.cond.notify_all();
    }

    /// Queue a watch event. Returns `false` if it was dropped (queue full or
    /// closed); an event identical to one still queued is merged into it.
    pub fn push_event(&self, msg: Message) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        let special = msg.payload.first() == Some(&b'@');
        if !special && s.pending.contains(&msg.payload) {
            return true;
        }
        if s.events >= self.max_events {
            s.dropped += 1;
            if s.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = s.dropped,
                    limit = self.max_events,
                    "watch events dropped: the client does not read them"
                );
            }
            return false;
        }
        if !special {
            s.pending.insert(msg.payload.clone());
        }
        s.queue.push_back((msg, true));
        s.events += 1;
        self.cond.notify_all();
        true
    }

    /// The next message to send, waiting up to `timeout` (`None`: forever).
    pub fn pop(&self, timeout: Option<Duration>) -> Popped {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.lock();
        loop {
            if s.closed {
                return Popped::Closed;
            }
            if let Some((msg, is_event)) = s.queue.pop_front() {
                if is_event {
                    s.events -= 1;
                    s.pending.remove(&msg.payload);
                } else {
                    s.replies -= 1;
                }
                self.cond.notify_all();
                return Popped::Message(msg);
            }
            s = match deadline {
                None => self.cond.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Popped::Timeout;
                    }
                    self.cond
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Wait until fewer than the reply limit are unsent (xenstored stops reading a
    /// domain with too many outstanding replies). `false` if the queue closed.
    pub fn wait_for_room(&self) -> bool {
        let mut s = self.lock();
        while !s.closed && s.replies >= self.max_replies {
            s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        !s.closed
    }

    /// Close: pending messages are discarded, waiters wake up.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.queue.clear();
        s.pending.clear();
        s.events = 0;
        s.replies = 0;
        self.cond.notify_all();
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Watch events dropped so far because the queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenio_xen_sys::xs_wire::XsdSockmsgType;

    fn ev(p: &str) -> Message {
        Message::new(XsdSockmsgType::WatchEvent, 0, 0, format!("{p}\0t\0").into())
    }

    #[test]
    fn events_are_capped_and_merged() {
        let q = OutQueue::new(2, 4);
        assert!(q.push_event(ev("/a")));
        assert!(q.push_event(ev("/a")), "identical pending event merges");
        assert!(q.push_event(ev("/b")));
        assert!(!q.push_event(ev("/c")), "over the cap: dropped");
        assert_eq!(q.dropped_events(), 1);
        q.push_reply(Message::new(XsdSockmsgType::Read, 1, 0, vec![]));
        let mut got = vec![];
        while let Popped::Message(m) = q.pop(Some(Duration::ZERO)) {
            got.push(m.type_);
        }
        assert_eq!(got, vec![15, 15, 2]);
        assert!(q.push_event(ev("/a")), "sent events may be queued again");
        q.close();
        assert!(matches!(q.pop(None), Popped::Closed));
        assert!(!q.wait_for_room());
    }
}
