//! xenio's store client against xenio's store daemon: watches, transactions,
//! permissions, quotas, domains, and what happens when the daemon goes away.

mod store_common;

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use store_common::*;
use xenio_xenstore::Client;
use xenio_xenstore::daemon::Quotas;
use xenio_xenstore::{DomId, Error, Perm, PermAccess, Store, Tx, Watch};

fn perm(d: u16, access: PermAccess) -> Perm {
    Perm {
        domid: DomId(d),
        access,
    }
}

#[test]
fn basic_operations_round_trip() {
    let t = TestDaemon::start(&[]);
    let xs = t.dom0();
    xs.write(Tx::NONE, "/a/b/c", b"v\0binary\xff").unwrap();
    assert_eq!(xs.read(Tx::NONE, "/a/b/c").unwrap(), b"v\0binary\xff");
    assert_eq!(xs.read(Tx::NONE, "/a/b").unwrap(), b"", "parents are empty");
    xs.write(Tx::NONE, "/a/b/d", b"").unwrap();
    xs.mkdir(Tx::NONE, "/a/e").unwrap();
    xs.mkdir(Tx::NONE, "/a/e").unwrap();
    assert_eq!(xs.directory(Tx::NONE, "/a/b").unwrap(), ["c", "d"]);
    assert_eq!(xs.directory(Tx::NONE, "/a").unwrap(), ["b", "e"]);
    assert_eq!(
        xs.directory(Tx::NONE, "/").unwrap(),
        ["tool", "a"],
        "xenstored's initial tree, then ours"
    );
    assert_eq!(
        xs.get_perms(Tx::NONE, "/a/b/c").unwrap(),
        [perm(0, PermAccess::None)]
    );
    // RM: recursive; a missing node is fine if its parent exists.
    xs.rm(Tx::NONE, "/a/b").unwrap();
    assert!(xs.read(Tx::NONE, "/a/b/c").unwrap_err().is_not_found());
    xs.rm(Tx::NONE, "/a/b").unwrap();
    assert_eq!(errno(xs.rm(Tx::NONE, "/a/b/c")), "ENOENT");
    assert_eq!(errno(xs.rm(Tx::NONE, "/")), "EINVAL");
    assert_eq!(errno(xs.read(Tx::NONE, "/a//b")), "EINVAL");
    assert_eq!(errno(xs.read(Tx::NONE, "/a/")), "EINVAL");
    assert_eq!(errno(xs.read(Tx::NONE, "/a b")), "EINVAL");
    assert_eq!(errno(xs.read(Tx::NONE, "@releaseDomain")), "EINVAL");
    // dom0's relative paths are below /local/domain/0.
    xs.write(Tx::NONE, "name", b"Domain-0").unwrap();
    assert_eq!(
        xs.read_string(Tx::NONE, "/local/domain/0/name").unwrap(),
        "Domain-0"
    );
    assert_eq!(
        xs.get_domain_path(DomId(7)).unwrap(),
        "/local/domain/7".to_string()
    );
    assert!(xs.read_opt(Tx::NONE, "/nope").unwrap().is_none());
}

#[test]
fn long_directories_are_paged_with_directory_part() {
    let t = TestDaemon::start(&[]);
    let xs = t.dom0();
    let names: Vec<String> = (0..300)
        .map(|i| format!("child-{i:04}-{}", "x".repeat(20)))
        .collect();
    xs.transaction(4, |tx| {
        for n in &names {
            xs.write(tx, &format!("/big/{n}"), b"")?;
        }
        Ok(())
    })
    .unwrap();
    // 300 * 32 bytes do not fit in one 4096-byte reply: DIRECTORY says E2BIG
    // and the client pages through DIRECTORY_PART.
    assert_eq!(xs.directory(Tx::NONE, "/big").unwrap(), names);
}

#[test]
fn watches_fire_for_writes_below_and_for_rm_with_the_initial_event_first() {
    let t = TestDaemon::start(&[]);
    let xs = t.dom0();
    let other = t.dom0();
    let mut w = xs.watch("/w", "tok").unwrap();
    let first = next(&mut w);
    assert_eq!((first.path.as_str(), first.token.as_str()), ("/w", "tok"));

    other.write(Tx::NONE, "/w", b"1").unwrap();
    other.write(Tx::NONE, "/w/a/b", b"2").unwrap();
    other.mkdir(Tx::NONE, "/w/c").unwrap();
    other.write(Tx::NONE, "/wx", b"not below /w").unwrap();
    other
        .set_perms(Tx::NONE, "/w/c", &[perm(0, PermAccess::Read)])
        .unwrap();
    assert_eq!(paths(&mut w, 4), ["/w", "/w/a/b", "/w/c", "/w/c"]);
    quiet(&mut w);

    // rm: each removed descendant fires for watches on exactly that node, then
    // the removed node for watches at or above it (xenstored's delnode_sub).
    let mut on_b = xs.watch("/w/a/b", "b").unwrap();
    let mut on_missing = xs.watch("/w/a/zz", "zz").unwrap();
    assert_eq!(next(&mut on_b).path, "/w/a/b");
    assert_eq!(next(&mut on_missing).path, "/w/a/zz");
    other.rm(Tx::NONE, "/w/a").unwrap();
    assert_eq!(paths(&mut w, 1), ["/w/a"]);
    assert_eq!(paths(&mut on_b, 1), ["/w/a/b"]);
    quiet(&mut w);
    quiet(&mut on_missing);
    // Removing a missing node changes nothing: no event.
    other.rm(Tx::NONE, "/w/a").unwrap();
    quiet(&mut w);

    // A dropped watch is unregistered (UNWATCH) and hears nothing more; the
    // same path and token may be watched again.
    drop(w);
    let mut w2 = xs.watch("/w", "tok").unwrap();
    assert_eq!(next(&mut w2).path, "/w");
    other.write(Tx::NONE, "/w/again", b"").unwrap();
    assert_eq!(paths(&mut w2, 1), ["/w/again"]);
}

#[test]
fn watch_on_root_sees_everything_and_relative_watches_see_relative_paths() {
    let t = TestDaemon::start(&[5]);
    let dom0 = t.dom0();
    let mut all = dom0.watch("/", "all").unwrap();
    assert_eq!(next(&mut all).path, "/");
    let d5 = t.domain(5);
    let mut rel = d5.watch("data", "rel").unwrap();
    assert_eq!(next(&mut rel).path, "data");
    d5.write(Tx::NONE, "data/x", b"1").unwrap();
    assert_eq!(next(&mut rel).path, "data/x");
    assert_eq!(next(&mut all).path, "/local/domain/5/data/x");
    dom0.write(Tx::NONE, "/local/domain/5/data/y", b"2")
        .unwrap();
    assert_eq!(next(&mut rel).path, "data/y");
}

#[test]
fn watches_fire_only_for_connections_that_can_read() {
    let t = TestDaemon::start(&[5]);
    let dom0 = t.dom0();
    dom0.mkdir(Tx::NONE, "/secret").unwrap(); // n0: domain 5 may not read
    let d5 = t.domain(5);
    let mut w = d5.watch("/secret", "s").unwrap();
    assert_eq!(
        next(&mut w).path,
        "/secret",
        "the initial event is always sent"
    );
    dom0.write(Tx::NONE, "/secret/k", b"1").unwrap();
    quiet(&mut w);
    // Readable node (or readable parent, as in xenstored): events flow.
    dom0.set_perms(
        Tx::NONE,
        "/secret",
        &[perm(0, PermAccess::None), perm(5, PermAccess::Read)],
    )
    .unwrap();
    assert_eq!(next(&mut w).path, "/secret");
    dom0.write(Tx::NONE, "/secret/k2", b"1").unwrap();
    assert_eq!(next(&mut w).path, "/secret/k2");
}

#[test]
fn special_watches_see_introduce_and_release() {
    let t = TestDaemon::start(&[]);
    let xs = t.dom0();
    let mut intro = xs.watch("@introduceDomain", "i").unwrap();
    let mut rel = xs.watch("@releaseDomain", "r").unwrap();
    assert_eq!(next(&mut intro).path, "@introduceDomain");
    assert_eq!(next(&mut rel).path, "@releaseDomain");
    let mut homes = xs.watch("/local/domain", "homes").unwrap();
    assert_eq!(next(&mut homes).path, "/local/domain");

    assert!(!xs.is_domain_introduced(DomId(7)).unwrap());
    xs.introduce(DomId(7), 1234, 5).unwrap();
    assert_eq!(next(&mut intro).path, "@introduceDomain");
    assert_eq!(next(&mut homes).path, "/local/domain/7");
    assert!(xs.is_domain_introduced(DomId(7)).unwrap());
    assert!(xs.is_domain_introduced(DomId(0)).unwrap());
    assert!(t.domain_socket(7).exists());
    // The home belongs to the domain, as a toolstack would set it up.
    assert_eq!(
        xs.get_perms(Tx::NONE, "/local/domain/7").unwrap(),
        [perm(7, PermAccess::None)]
    );
    // Introducing again is accepted and changes nothing visible.
    xs.introduce(DomId(7), 1234, 5).unwrap();
    quiet(&mut intro);

    let d7 = t.domain(7);
    d7.write(Tx::NONE, "data/x", b"1").unwrap();
    assert_eq!(next(&mut homes).path, "/local/domain/7/data/x");
    xs.write(Tx::NONE, "/shared", b"").unwrap();
    xs.set_perms(
        Tx::NONE,
        "/shared",
        &[perm(0, PermAccess::None), perm(7, PermAccess::Read)],
    )
    .unwrap();
    // Domains may not manage domains.
    assert_eq!(errno(d7.introduce(DomId(8), 1, 1)), "EACCES");
    assert_eq!(errno(d7.release(DomId(7))), "EACCES");
    assert_eq!(errno(d7.is_domain_introduced(DomId(7))), "EACCES");

    xs.release(DomId(7)).unwrap();
    assert_eq!(next(&mut rel).path, "@releaseDomain");
    // The domain's nodes go with it (an event for the removed subtree), its
    // socket and connection too, and no permission for it survives.
    assert_eq!(next(&mut homes).path, "/local/domain/7");
    assert!(xs.read_opt(Tx::NONE, "/local/domain/7").unwrap().is_none());
    assert!(!t.domain_socket(7).exists());
    assert!(d7.read(Tx::NONE, "data/x").is_err());
    assert_eq!(
        xs.get_perms(Tx::NONE, "/shared").unwrap(),
        [perm(0, PermAccess::None)]
    );
    assert_eq!(errno(xs.release(DomId(7))), "ENOENT");
    assert_eq!(errno(xs.release(DomId(0))), "EINVAL");
    assert_eq!(errno(xs.introduce(DomId(0), 1, 1)), "EINVAL");
}

#[test]
fn transactions_conflict_with_eagain_and_store_transaction_retries() {
    let t = TestDaemon::start(&[]);
    let xs = t.dom0();
    let other = t.dom0();
    xs.write(Tx::NONE, "/c", b"0").unwrap();

    // Read /c in a transaction; another client changes it; the commit fails
    // and nothing of the transaction is applied.
    let tx = xs.transaction_start().unwrap();
    assert_eq!(xs.read(tx, "/c").unwrap(), b"0");
    other.write(Tx::NONE, "/c", b"1").unwrap();
    xs.write(tx, "/d", b"written in the transaction").unwrap();
    let e = xs.transaction_end(tx, true).unwrap_err();
    assert!(e.is_again(), "{e}");
    assert!(xs.read_opt(Tx::NONE, "/d").unwrap().is_none());
    // The transaction is gone after END.
    assert_eq!(errno(xs.read(tx, "/c")), "ENOENT");

    // A node written (not read) that someone else creates meanwhile conflicts too.
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/e/new", b"mine").unwrap();
    other.write(Tx::NONE, "/e/new", b"theirs").unwrap();
    assert!(xs.transaction_end(tx, true).unwrap_err().is_again());

    // Unrelated changes do not conflict.
    let tx = xs.transaction_start().unwrap();
    xs.read(tx, "/c").unwrap();
    other.write(Tx::NONE, "/unrelated", b"x").unwrap();
    xs.write(tx, "/c", b"2").unwrap();
    xs.transaction_end(tx, true).unwrap();
    assert_eq!(xs.read(Tx::NONE, "/c").unwrap(), b"2");

    // Store::transaction runs the closure again after EAGAIN.
    let attempts = AtomicU32::new(0);
    let v = xs
        .transaction(5, |tx| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            let c = xs.read_string(tx, "/c")?;
            if n == 0 {
                other.write(Tx::NONE, "/c", b"3")?;
            }
            xs.write(tx, "/c", format!("{c}+").as_bytes())?;
            Ok(c)
        })
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(v, "3");
    assert_eq!(xs.read_string(Tx::NONE, "/c").unwrap(), "3+");

    // It gives up after the attempts it was given.
    let e = xs
        .transaction(2, |tx| {
            xs.read(tx, "/c")?;
            other.write(Tx::NONE, "/c", b"again")?;
            Ok(())
        })
        .unwrap_err();
    assert!(e.is_again());
}

#[test]
fn transactions_have_their_own_view_and_fire_watches_at_commit() {
    let t = TestDaemon::start(&[]);
    let xs = t.dom0();
    let other = t.dom0();
    let mut w = other.watch("/v", "v").unwrap();
    assert_eq!(next(&mut w).path, "/v");
    xs.write(Tx::NONE, "/v/keep", b"k").unwrap();
    assert_eq!(next(&mut w).path, "/v/keep");

    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/v/a", b"1").unwrap();
    xs.rm(tx, "/v/keep").unwrap();
    assert_eq!(xs.read(tx, "/v/a").unwrap(), b"1");
    assert_eq!(xs.directory(tx, "/v").unwrap(), ["a"]);
    assert!(xs.read_opt(Tx::NONE, "/v/a").unwrap().is_none());
    assert_eq!(xs.directory(Tx::NONE, "/v").unwrap(), ["keep"]);
    quiet(&mut w);
    xs.transaction_end(tx, true).unwrap();
    let mut got = paths(&mut w, 2);
    got.sort();
    assert_eq!(got, ["/v/a", "/v/keep"]);
    assert_eq!(xs.directory(Tx::NONE, "/v").unwrap(), ["a"]);

    // Abort discards, silently.
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/v/b", b"2").unwrap();
    xs.transaction_end(tx, false).unwrap();
    assert!(xs.read_opt(Tx::NONE, "/v/b").unwrap().is_none());
    quiet(&mut w);

    // Unknown transaction ids, and no nesting.
    assert_eq!(errno(xs.read(Tx(999), "/v")), "ENOENT");
    assert_eq!(errno(xs.transaction_end(Tx(999), true)), "ENOENT");
    // Transactions belong to their connection.
    let tx = xs.transaction_start().unwrap();
    assert_eq!(errno(other.read(tx, "/v")), "ENOENT");
    xs.transaction_end(tx, false).unwrap();
}

#[test]
fn permissions_for_another_domain_follow_the_acl() {
    let t = TestDaemon::start(&[5, 6]);
    let dom0 = t.dom0();
    let d5 = t.domain(5);
    let d6 = t.domain(6);
    dom0.write(Tx::NONE, "/p/node", b"secret").unwrap();
    dom0.set_perms(Tx::NONE, "/p/node", &[perm(0, PermAccess::None)])
        .unwrap();

    // n0: domain 5 can neither read nor write nor see it.
    assert!(d5.read(Tx::NONE, "/p/node").unwrap_err().is_denied());
    assert!(d5.write(Tx::NONE, "/p/node", b"x").unwrap_err().is_denied());
    assert!(d5.directory(Tx::NONE, "/p").unwrap_err().is_denied());
    assert!(d5.get_perms(Tx::NONE, "/p/node").unwrap_err().is_denied());
    // A missing node under a node it cannot see: EACCES, not ENOENT.
    assert!(d5.read(Tx::NONE, "/p/nothing").unwrap_err().is_denied());
    assert!(d5.write(Tx::NONE, "/p/new", b"x").unwrap_err().is_denied());

    // r5: read, not write.
    dom0.set_perms(
        Tx::NONE,
        "/p/node",
        &[perm(0, PermAccess::None), perm(5, PermAccess::Read)],
    )
    .unwrap();
    assert_eq!(d5.read(Tx::NONE, "/p/node").unwrap(), b"secret");
    assert!(d5.write(Tx::NONE, "/p/node", b"x").unwrap_err().is_denied());
    assert!(d5.rm(Tx::NONE, "/p/node").unwrap_err().is_denied());
    assert!(
        d6.read(Tx::NONE, "/p/node").unwrap_err().is_denied(),
        "6 is not listed"
    );

    // b5: both; still not the owner, so no SET_PERMS.
    dom0.set_perms(
        Tx::NONE,
        "/p/node",
        &[perm(0, PermAccess::None), perm(5, PermAccess::Both)],
    )
    .unwrap();
    d5.write(Tx::NONE, "/p/node", b"from 5").unwrap();
    assert_eq!(dom0.read(Tx::NONE, "/p/node").unwrap(), b"from 5");
    assert!(
        d5.set_perms(Tx::NONE, "/p/node", &[perm(5, PermAccess::Read)])
            .unwrap_err()
            .is_denied()
    );

    // The first entry is the default for unlisted domains.
    dom0.set_perms(Tx::NONE, "/p/node", &[perm(0, PermAccess::Read)])
        .unwrap();
    assert_eq!(d6.read(Tx::NONE, "/p/node").unwrap(), b"from 5");
    assert!(d6.write(Tx::NONE, "/p/node", b"x").unwrap_err().is_denied());

    // What a domain creates is its own (the parent's permissions, itself as
    // owner): it may change the ACL but not give the node away.
    d5.write(Tx::NONE, "mine/x", b"1").unwrap();
    assert_eq!(
        dom0.get_perms(Tx::NONE, "/local/domain/5/mine/x").unwrap(),
        [perm(5, PermAccess::None)]
    );
    d5.set_perms(
        Tx::NONE,
        "mine/x",
        &[perm(5, PermAccess::None), perm(6, PermAccess::Read)],
    )
    .unwrap();
    assert_eq!(d6.read(Tx::NONE, "/local/domain/5/mine/x").unwrap(), b"1");
    assert_eq!(
        errno(d5.set_perms(Tx::NONE, "mine/x", &[perm(6, PermAccess::Both)])),
        "EPERM"
    );
    // Another domain's home is closed.
    assert!(
        d6.write(Tx::NONE, "/local/domain/5/y", b"1")
            .unwrap_err()
            .is_denied()
    );

    // dom0 may do everything, whatever the ACL says.
    dom0.set_perms(
        Tx::NONE,
        "/local/domain/5/mine/x",
        &[perm(5, PermAccess::None)],
    )
    .unwrap();
    assert_eq!(dom0.read(Tx::NONE, "/local/domain/5/mine/x").unwrap(), b"1");
    dom0.write(Tx::NONE, "/local/domain/5/mine/x", b"2")
        .unwrap();
    dom0.rm(Tx::NONE, "/local/domain/5/mine").unwrap();

    // Special nodes: dom0 only, unless it opens them.
    let mut w = d5.watch("@releaseDomain", "r").unwrap();
    assert_eq!(next(&mut w).path, "@releaseDomain");
    dom0.introduce(DomId(9), 1, 1).unwrap();
    dom0.release(DomId(9)).unwrap();
    quiet(&mut w);
    dom0.set_perms(Tx::NONE, "@releaseDomain", &[perm(0, PermAccess::Read)])
        .unwrap();
    dom0.introduce(DomId(9), 1, 1).unwrap();
    dom0.release(DomId(9)).unwrap();
    assert_eq!(next(&mut w).path, "@releaseDomain");
}

#[test]
fn quotas_give_errors() {
    let q = Quotas {
        nodes: 10,
        watches: 3,
        transactions: 2,
        transaction_nodes: 20,
        node_size: 200,
        node_permissions: 2,
        path_max: 64,
        ..Quotas::default()
    };
    let t = TestDaemon::with_quotas(&[5], q);
    let d5 = t.domain(5);
    let dom0 = t.dom0();

    // Nodes: the home counts as one of 10.
    for i in 0..9 {
        d5.write(Tx::NONE, &format!("n{i}"), b"").unwrap();
    }
    assert_eq!(errno(d5.write(Tx::NONE, "n9", b"")), "ENOSPC");
    d5.rm(Tx::NONE, "n0").unwrap();
    d5.write(Tx::NONE, "n9", b"").unwrap();
    // ... also when the creation happens in a transaction.
    d5.rm(Tx::NONE, "n9").unwrap();
    let tx = d5.transaction_start().unwrap();
    d5.write(tx, "t1", b"").unwrap();
    assert_eq!(errno(d5.write(tx, "t2", b"")), "ENOSPC");
    d5.transaction_end(tx, false).unwrap();
    // dom0 is not limited.
    for i in 0..20 {
        dom0.write(Tx::NONE, &format!("/many/{i}"), b"").unwrap();
    }

    // Watches per connection: E2BIG beyond; a duplicate is EEXIST.
    let w: Vec<_> = (0..3)
        .map(|i| d5.watch(&format!("w{i}"), "t").unwrap())
        .collect();
    assert_eq!(errno(d5.watch("w4", "t")), "E2BIG");
    drop(w);
    let _w = d5.watch("w5", "t").unwrap();

    // Transactions per connection.
    let a = d5.transaction_start().unwrap();
    let b = d5.transaction_start().unwrap();
    assert_eq!(errno(d5.transaction_start()), "ENOSPC");
    d5.transaction_end(a, false).unwrap();
    d5.transaction_end(b, false).unwrap();

    // Node size (value + permissions + children names).
    assert_eq!(errno(d5.write(Tx::NONE, "n1", &[b'x'; 200])), "ENOSPC");
    d5.write(Tx::NONE, "n1", &[b'x'; 100]).unwrap();
    // Permission entries per node.
    assert_eq!(
        errno(d5.set_perms(
            Tx::NONE,
            "n1",
            &[
                perm(5, PermAccess::None),
                perm(1, PermAccess::Read),
                perm(2, PermAccess::Read)
            ]
        )),
        "ENOSPC"
    );
    // Path length below /local/domain/5/.
    assert_eq!(errno(d5.read(Tx::NONE, &"a".repeat(65))), "EINVAL");
    assert_eq!(errno(d5.read(Tx::NONE, &"a".repeat(64))), "ENOENT");
    // Absolute paths are limited to 3072 bytes for everyone.
    let long = format!("/{}", "a".repeat(3072));
    assert_eq!(errno(dom0.read(Tx::NONE, &long)), "EINVAL");

    // Nodes touched by one transaction.
    let tx = d5.transaction_start().unwrap();
    let mut failed = None;
    for i in 0..25 {
        if let Err(e) = d5.read(tx, &format!("missing{i}")) {
            if !e.is_not_found() {
                failed = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = failed.expect("the transaction-nodes quota is hit");
    assert_eq!(errno::<()>(Err(e)), "ENOSPC");
    assert!(i >= 15, "after about 20 nodes, not {i}");
    d5.transaction_end(tx, false).unwrap();

    // A request above the payload limit is refused by the client itself.
    assert!(matches!(
        dom0.write(Tx::NONE, "/big", &[0u8; 5000]),
        Err(Error::Limit(_))
    ));
}

#[test]
fn a_dead_daemon_is_an_error_not_a_hang() {
    // A "daemon" that accepts and never answers: requests time out.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute");
    let listener = UnixListener::bind(&path).unwrap();
    let keep = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let c = Client::connect(&path).unwrap();
    c.set_timeout(Duration::from_millis(200));
    let t0 = Instant::now();
    assert!(matches!(c.read(Tx::NONE, "/x"), Err(Error::Timeout(..))));
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(keep.join());

    // A daemon that goes away: pending and later requests fail at once,
    // watches report the end.
    let t = TestDaemon::start(&[]);
    let xs = Arc::new(t.dom0());
    let mut w = xs.watch("/x", "x").unwrap();
    assert_eq!(next(&mut w).path, "/x");
    let TestDaemon { daemon, dir } = t;
    daemon.shutdown();
    let t0 = Instant::now();
    assert!(w.next_event(Some(WAIT)).is_err());
    assert!(matches!(
        xs.read(Tx::NONE, "/x"),
        Err(Error::Protocol(_)) | Err(Error::Io { .. })
    ));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(xs.is_closed());
    drop(dir);
}

#[test]
fn one_client_serves_many_threads() {
    let t = TestDaemon::start(&[]);
    let xs = Arc::new(t.dom0());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let xs = xs.clone();
            std::thread::spawn(move || {
                for j in 0..50 {
                    let p = format!("/mt/{i}/{j}");
                    xs.write(Tx::NONE, &p, p.as_bytes()).unwrap();
                    assert_eq!(xs.read(Tx::NONE, &p).unwrap(), p.as_bytes());
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(xs.directory(Tx::NONE, "/mt").unwrap().len(), 8);
}

#[test]
fn daemon_refuses_a_second_instance_and_cleans_stale_sockets() {
    use xenio_xenstore::daemon::{Daemon, DaemonConfig};
    let t = TestDaemon::start(&[3]);
    let e = Daemon::start(DaemonConfig::new(t.dir.path()))
        .err()
        .expect("a second daemon on the same run directory is refused");
    assert!(e.to_string().contains("another"), "{e}");
    let dir = t.dir.path().to_path_buf();
    let TestDaemon { daemon, dir: tmp } = t;
    drop(daemon);
    assert!(
        !dir.join("xenstored/socket").exists(),
        "sockets removed on stop"
    );
    assert!(!dir.join("xenstored/domain/3").exists());
    // A stale socket (a daemon that died) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(dir.join("xenstored/socket")).unwrap();
    drop(stale);
    let d = Daemon::start(DaemonConfig::new(&dir)).unwrap();
    let c = Client::connect(d.socket_path()).unwrap();
    c.write(Tx::NONE, "/fresh", b"1").unwrap();
    drop(c);
    drop(d);
    drop(tmp);
}
