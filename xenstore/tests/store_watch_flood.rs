//! XSA-349 on the client side: a watch whose owner does not read while a
//! writer changes the watched node tens of thousands of times. xenio's client
//! holds at most `WATCH_QUEUE` events per watch; past that it replaces the
//! backlog with one event for the watched path itself and counts what it threw
//! away, so memory stays bounded, the owner learns that it missed events, and
//! an owner that re-reads on every event (as xenio's drivers do) ends on the
//! last value written.

mod store_common;

use std::time::{Duration, Instant};
use store_common::*;
use xenio_xenstore::{Store, Tx, WATCH_QUEUE, Watch};

const WRITES: usize = 3 * WATCH_QUEUE + 1000;

#[test]
fn a_flooded_watch_stays_bounded_and_tells_its_owner() {
    let t = TestDaemon::start(&[]);
    let owner = t.dom0();
    let writer = t.dom0();
    writer.write(Tx::NONE, "/flood/state", b"1").unwrap();
    let mut w = owner.watch("/flood", "backend").unwrap();
    assert_eq!(w.dropped(), 0);

    // The flood, while the owner reads nothing. The queue never holds more
    // than WATCH_QUEUE events (sampled as it goes).
    let mut most = 0;
    for i in 0..WRITES {
        writer
            .write(Tx::NONE, "/flood/state", (i % 7).to_string().as_bytes())
            .unwrap();
        if i % 512 == 0 {
            most = most.max(w.pending());
        }
    }
    writer.write(Tx::NONE, "/flood/state", b"final").unwrap();
    // Let the last events be routed (the writes are acknowledged before their
    // events are read off the socket): until nothing changes for 200 ms. The
    // daemon merges an event identical to one it has not sent yet, so not
    // every write reaches the client as an event of its own.
    let mut seen = (0, 0);
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = (w.pending(), w.dropped());
        if now == seen {
            break;
        }
        seen = now;
        most = most.max(now.0);
        assert!(t0.elapsed() < WAIT, "events still arriving after {WAIT:?}");
    }
    eprintln!(
        "{WRITES} writes: at most {most} events waited, {} dropped, {} wait now",
        w.dropped(),
        w.pending()
    );
    assert!(most <= WATCH_QUEUE, "{most} events waited");
    assert!(
        w.dropped() >= (WRITES - WATCH_QUEUE) as u64 / 2,
        "only {} events dropped after {WRITES} writes with a queue of {WATCH_QUEUE}",
        w.dropped()
    );

    // The owner reads: what is left, beginning with the event for the watched
    // path that stands for everything thrown away; it re-reads the node on
    // every event, as xenio's drivers do.
    let mut events = Vec::new();
    let mut last = String::new();
    while let Some(ev) = w.next_event(Some(Duration::from_millis(200))).unwrap() {
        last = owner.read_string(Tx::NONE, "/flood/state").unwrap();
        events.push(ev.path);
    }
    assert_eq!(
        events.first().map(String::as_str),
        Some("/flood"),
        "the backlog starts with the watched path itself"
    );
    assert!(events.len() <= WATCH_QUEUE);
    assert_eq!(last, "final", "the owner ends on the last value");

    // The watch works as before once it is read.
    writer.write(Tx::NONE, "/flood/state", b"after").unwrap();
    assert_eq!(next(&mut w).path, "/flood/state");
    quiet(&mut w);
}
