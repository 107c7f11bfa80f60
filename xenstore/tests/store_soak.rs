//! Soak: 1000 watches across 20 clients (50 each), writes that fan out to all
//! of them, every expected event delivered, in bounded time.

mod store_common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use store_common::*;
use xenio_xenstore::ClientWatch;
use xenio_xenstore::{Store, Tx, Watch};

const CLIENTS: usize = 20;
const WATCHES: usize = 50;
const ROUNDS: usize = 10;

#[test]
fn a_thousand_watches_across_twenty_clients_get_every_event() {
    let t = Arc::new(TestDaemon::start(&[3]));
    let start = Instant::now();
    // All clients watch the same 50 directories, so each write fans out to 20
    // watches. Half the clients are domain 3, half dom0: the domain may read
    // /soak (dom0 opens it) so its watches fire too.
    let setup = t.dom0();
    setup.mkdir(Tx::NONE, "/soak").unwrap();
    setup
        .set_perms(
            Tx::NONE,
            "/soak",
            &[xenio_xenstore::Perm {
                domid: xenio_xenstore::DomId(0),
                access: xenio_xenstore::PermAccess::Read,
            }],
        )
        .unwrap();
    let ready = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let t = t.clone();
            let ready = ready.clone();
            std::thread::spawn(move || {
                let xs = if c % 2 == 0 { t.dom0() } else { t.domain(3) };
                let mut watches: Vec<ClientWatch> = (0..WATCHES)
                    .map(|k| {
                        xs.watch(&format!("/soak/{k}"), &format!("c{c}-k{k}"))
                            .unwrap()
                    })
                    .collect();
                for (k, w) in watches.iter_mut().enumerate() {
                    let e = next(w);
                    assert_eq!(e.path, format!("/soak/{k}"), "initial event");
                    assert_eq!(e.token, format!("c{c}-k{k}"));
                }
                ready.wait();
                // Every (watch, round) event must arrive; order per watch is
                // the write order.
                for (k, w) in watches.iter_mut().enumerate() {
                    let mut seen = BTreeSet::new();
                    while seen.len() < ROUNDS {
                        let e = match w.next_event(Some(Duration::from_secs(20))) {
                            Ok(Some(e)) => e,
                            other => panic!("client {c} watch {k}: {other:?} after {seen:?}"),
                        };
                        assert!(e.path.starts_with(&format!("/soak/{k}/")), "{e:?}");
                        seen.insert(e.path);
                    }
                }
                (c, xs)
            })
        })
        .collect();
    ready.wait();
    let writer = t.dom0();
    let writes = Instant::now();
    for r in 0..ROUNDS {
        for k in 0..WATCHES {
            writer
                .write(Tx::NONE, &format!("/soak/{k}/round{r}"), b"x")
                .unwrap();
        }
    }
    let write_time = writes.elapsed();
    let mut kept = vec![];
    for c in clients {
        kept.push(c.join().expect("every client got every event"));
    }
    let total = start.elapsed();
    println!(
        "{} watches, {} writes, {} events delivered: writes {write_time:?}, total {total:?}",
        CLIENTS * WATCHES,
        ROUNDS * WATCHES,
        CLIENTS * WATCHES * (ROUNDS + 1)
    );
    assert!(total < Duration::from_secs(30), "took {total:?}");
    assert_eq!(t.daemon.core().connections(), CLIENTS + 2);
    drop(kept);
}
