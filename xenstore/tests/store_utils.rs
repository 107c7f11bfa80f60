//! Conformance with Debian's xenstore-utils (libxenstore, the C client every Xen
//! toolstack uses): xenstore-write/read/ls/list/rm/chmod/exists/watch against
//! xenio's daemon through `XENSTORED_PATH`, on dom0's socket and on a domain's.

mod store_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use store_common::*;
use xenio_xenstore::{DomId, Perm, PermAccess, Store, Tx};

/// Run one of the xenstore-utils against `socket`.
fn xs(tool: &str, socket: &Path, args: &[&str]) -> Output {
    match Command::new(tool)
        .args(args)
        .env("XENSTORED_PATH", socket)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{tool} is not installed: these tests need Debian's xenstore-utils \
             (apt-get install -y xenstore-utils)"
        ),
        Err(e) => panic!("running {tool}: {e}"),
    }
}

/// Run a tool that must succeed; its standard output.
fn ok(tool: &str, socket: &Path, args: &[&str]) -> String {
    let o = xs(tool, socket, args);
    assert!(
        o.status.success(),
        "{tool} {args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 output")
}

/// Run a tool that must fail; its standard error.
fn fails(tool: &str, socket: &Path, args: &[&str]) -> String {
    let o = xs(tool, socket, args);
    assert!(
        !o.status.success(),
        "{tool} {args:?} should have failed, printed {:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn xenstore_utils_work_against_the_dom0_socket() {
    let t = TestDaemon::start(&[]);
    let s = t.socket();
    let client = t.dom0();

    ok("xenstore-write", &s, &["/a/b", "hello", "/a/c", "world"]);
    assert_eq!(ok("xenstore-read", &s, &["/a/b", "/a/c"]), "hello\nworld\n");
    assert_eq!(client.read(Tx::NONE, "/a/b").unwrap(), b"hello");
    client.write(Tx::NONE, "/a/d", b"from xenio").unwrap();
    assert_eq!(ok("xenstore-read", &s, &["/a/d"]), "from xenio\n");

    ok("xenstore-exists", &s, &["/a/b"]);
    fails("xenstore-exists", &s, &["/a/nothing"]);
    let e = fails("xenstore-read", &s, &["/a/nothing"]);
    assert!(e.contains("couldn't read path /a/nothing"), "{e}");

    assert_eq!(ok("xenstore-list", &s, &["/a"]), "b\nc\nd\n");
    assert_eq!(
        ok("xenstore-ls", &s, &["/a"]),
        "b = \"hello\"\nc = \"world\"\nd = \"from xenio\"\n"
    );
    assert_eq!(
        ok("xenstore-ls", &s, &[]),
        "tool = \"\"\n xenstored = \"\"\na = \"\"\n b = \"hello\"\n c = \"world\"\n d = \"from xenio\"\n"
    );

    ok("xenstore-chmod", &s, &["/a/c", "n0", "r5"]);
    assert_eq!(
        client.get_perms(Tx::NONE, "/a/c").unwrap(),
        [
            Perm {
                domid: DomId(0),
                access: PermAccess::None
            },
            Perm {
                domid: DomId(5),
                access: PermAccess::Read
            }
        ]
    );
    let full = ok("xenstore-ls", &s, &["-f", "-p", "/a"]);
    let lines: Vec<&str> = full.lines().collect();
    assert_eq!(lines.len(), 3, "{full}");
    assert!(
        lines[0].starts_with("/a/b = \"hello\"") && lines[0].ends_with("(n0)"),
        "{full}"
    );
    assert!(
        lines[1].starts_with("/a/c = \"world\"") && lines[1].ends_with("(n0,r5)"),
        "{full}"
    );
    // Recursive chmod goes through DIRECTORY and SET_PERMS on every node.
    ok("xenstore-chmod", &s, &["-r", "/a", "n0", "b7"]);
    assert!(
        ok("xenstore-ls", &s, &["-p", "/a"])
            .lines()
            .all(|l| l.ends_with("(n0,b7)"))
    );

    ok("xenstore-rm", &s, &["/a/b"]);
    fails("xenstore-exists", &s, &["/a/b"]);
    assert!(client.read_opt(Tx::NONE, "/a/b").unwrap().is_none());
    // -t also removes parents left empty.
    ok("xenstore-write", &s, &["/deep/er/est", "1"]);
    ok("xenstore-rm", &s, &["-t", "/deep/er/est"]);
    fails("xenstore-exists", &s, &["/deep"]);
    ok("xenstore-rm", &s, &["/a"]);
    assert_eq!(ok("xenstore-list", &s, &["/"]), "tool\n");
}

#[test]
fn xenstore_utils_work_against_a_domain_socket_with_its_permissions() {
    let t = TestDaemon::start(&[5]);
    let s0 = t.socket();
    let s5 = t.domain_socket(5);

    ok("xenstore-write", &s0, &["/s", "x"]);
    ok("xenstore-chmod", &s0, &["/s", "n0"]);
    let e = fails("xenstore-read", &s5, &["/s"]);
    assert!(e.contains("couldn't read path /s"), "{e}");
    fails("xenstore-exists", &s5, &["/s"]);
    fails("xenstore-ls", &s5, &["/"]);

    ok("xenstore-chmod", &s0, &["/s", "n0", "r5"]);
    assert_eq!(ok("xenstore-read", &s5, &["/s"]), "x\n");
    fails("xenstore-write", &s5, &["/s", "y"]);
    fails("xenstore-chmod", &s5, &["/s", "n5"]);

    ok("xenstore-chmod", &s0, &["/s", "n0", "b5"]);
    ok("xenstore-write", &s5, &["/s", "y"]);
    assert_eq!(ok("xenstore-read", &s0, &["/s"]), "y\n");

    // Relative paths are below the domain's home, which it owns.
    ok("xenstore-write", &s5, &["data/k", "v"]);
    assert_eq!(ok("xenstore-read", &s0, &["/local/domain/5/data/k"]), "v\n");
    assert_eq!(ok("xenstore-read", &s5, &["data/k"]), "v\n");
    assert_eq!(
        ok("xenstore-ls", &s5, &["-f", "/local/domain/5"]),
        "/local/domain/5/data = \"\"\n/local/domain/5/data/k = \"v\"\n"
    );
    let perms = ok("xenstore-ls", &s0, &["-p", "/local/domain/5"]);
    assert!(perms.lines().all(|l| l.ends_with("(n5)")), "{perms}");
    ok("xenstore-rm", &s5, &["data"]);
    assert_eq!(ok("xenstore-list", &s5, &["/local/domain/5"]), "");
}

/// A `xenstore-watch` child with its output lines on a channel; killed on drop.
struct WatchProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl WatchProc {
    fn spawn(socket: &Path, args: &[&str]) -> WatchProc {
        let mut child = Command::new("xenstore-watch")
            .args(args)
            .env("XENSTORED_PATH", socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "xenstore-watch: {e}: these tests need Debian's xenstore-utils \
                     (apt-get install -y xenstore-utils)"
                )
            });
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        WatchProc { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("xenstore-watch printed an event")
    }
}

impl Drop for WatchProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn xenstore_watch_prints_the_changes_other_clients_make() {
    let t = TestDaemon::start(&[5]);
    let client = t.dom0();

    let w = WatchProc::spawn(&t.socket(), &["/w"]);
    assert_eq!(w.line(), "/w", "the initial event");
    client.write(Tx::NONE, "/w/a", b"1").unwrap();
    assert_eq!(w.line(), "/w/a");
    client.write(Tx::NONE, "/elsewhere", b"1").unwrap();
    client.mkdir(Tx::NONE, "/w/b/c").unwrap();
    assert_eq!(w.line(), "/w/b/c");
    client.rm(Tx::NONE, "/w").unwrap();
    assert_eq!(w.line(), "/w");
    drop(w);

    // -n: exit after that many events.
    let mut limited = WatchProc::spawn(&t.socket(), &["-n", "2", "/n"]);
    assert_eq!(limited.line(), "/n");
    client.write(Tx::NONE, "/n", b"x").unwrap();
    assert_eq!(limited.line(), "/n");
    let status = limited.child.wait().expect("xenstore-watch exits");
    assert!(status.success());

    // On a domain's socket, relative watches print relative paths.
    let w5 = WatchProc::spawn(&t.domain_socket(5), &["data"]);
    assert_eq!(w5.line(), "data");
    client
        .write(Tx::NONE, "/local/domain/5/data/x", b"1")
        .unwrap();
    assert_eq!(w5.line(), "data/x");

    // Special watches (dom0).
    let intro = WatchProc::spawn(&t.socket(), &["@introduceDomain"]);
    assert_eq!(intro.line(), "@introduceDomain");
    client.introduce(DomId(8), 1, 1).unwrap();
    assert_eq!(intro.line(), "@introduceDomain");
}
