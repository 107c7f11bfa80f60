//! xenstore-rs (an independent Rust client, the one the Xen community ships)
//! against xenio's daemon.
//!
//! xenstore-rs finds the store through `XENSTORED_PATH` only, and setting the
//! environment of a running test is `unsafe` in edition 2024, so each client
//! session runs in a child: this same binary, started with `--child <script>`
//! and `XENSTORED_PATH` set by `Command::env`. `harness = false`: `main` runs
//! the tests.

mod store_common;

use std::process::{Command, ExitCode};
use std::time::Instant;
use store_common::*;
use xenio_xenstore::{Store, Tx};
use xenstore_rs::Xs;
use xenstore_rs::unix::XsUnix;

/// Child mode: run `op arg...` lines of the script with xenstore-rs, printing
/// one result line each (`ok <value>` or `err <io::ErrorKind>`).
fn child(script: &str) -> ExitCode {
    let xs = match XsUnix::new() {
        Ok(x) => x,
        Err(e) => {
            println!("connect-failed {e}");
            return ExitCode::FAILURE;
        }
    };
    for line in script.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let r = match w.as_slice() {
            ["read", p] => xs.read(p).map(|v| v.to_string()),
            ["write", p, v] => xs.write(p, v).map(|()| String::new()),
            ["rm", p] => xs.rm(p).map(|()| String::new()),
            ["dir", p] => xs.directory(p).map(|d| d.join(",")),
            other => panic!("bad script line {other:?}"),
        };
        match r {
            Ok(v) => println!("ok {v}"),
            Err(e) => println!("err {:?}", e.kind()),
        }
    }
    ExitCode::SUCCESS
}

/// Run a script in a child connected to `socket`; its result lines.
fn run(socket: &std::path::Path, script: &[&str]) -> Vec<String> {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .arg("--child")
        .arg(script.join("\n"))
        .env("XENSTORED_PATH", socket)
        .output()
        .expect("child runs");
    assert!(
        out.status.success(),
        "child failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn xenstore_rs_reads_writes_lists_and_removes() -> Result<(), String> {
    let t = TestDaemon::start(&[]);
    let ours = t.dom0();
    ours.write(Tx::NONE, "/from-xenio/k", b"v1")
        .map_err(|e| e.to_string())?;
    let got = run(
        &t.socket(),
        &[
            "write /rs/a hello",
            "write /rs/b world",
            "read /rs/a",
            "dir /rs",
            "read /from-xenio/k",
            "rm /rs/a",
            "read /rs/a",
            "dir /",
            "rm /nothing/at/all",
            "read /bad//path",
        ],
    );
    let want = [
        "ok ",
        "ok ",
        "ok hello",
        "ok a,b",
        "ok v1",
        "ok ",
        "err NotFound",
        "ok tool,from-xenio,rs",
        "err NotFound",
        "err InvalidInput",
    ];
    if got != want {
        return Err(format!("xenstore-rs saw {got:?}, expected {want:?}"));
    }
    // And our client sees what xenstore-rs wrote.
    let b = ours
        .read_string(Tx::NONE, "/rs/b")
        .map_err(|e| e.to_string())?;
    if b != "world"
        || ours
            .read_opt(Tx::NONE, "/rs/a")
            .map_err(|e| e.to_string())?
            .is_some()
    {
        return Err(format!("xenio's client sees /rs/b = {b:?} and /rs/a"));
    }
    Ok(())
}

fn xenstore_rs_as_a_domain_gets_permission_errors() -> Result<(), String> {
    let t = TestDaemon::start(&[5]);
    let ours = t.dom0();
    ours.write(Tx::NONE, "/closed", b"c")
        .map_err(|e| e.to_string())?;
    let got = run(
        &t.domain_socket(5),
        &[
            "read /closed",
            "write /closed x",
            "write data/x 1",
            "read data/x",
            "dir /local/domain/5",
            "dir /local/domain",
        ],
    );
    let want = [
        "err PermissionDenied",
        "err PermissionDenied",
        "ok ",
        "ok 1",
        "ok data",
        "err PermissionDenied",
    ];
    if got != want {
        return Err(format!("xenstore-rs saw {got:?}, expected {want:?}"));
    }
    let x = ours
        .read_string(Tx::NONE, "/local/domain/5/data/x")
        .map_err(|e| e.to_string())?;
    if x != "1" {
        return Err(format!("/local/domain/5/data/x = {x:?}"));
    }
    Ok(())
}

type TestFn = fn() -> Result<(), String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(args.get(2).map(String::as_str).unwrap_or_default());
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let tests: &[(&str, TestFn)] = &[
        (
            "xenstore_rs_reads_writes_lists_and_removes",
            xenstore_rs_reads_writes_lists_and_removes,
        ),
        (
            "xenstore_rs_as_a_domain_gets_permission_errors",
            xenstore_rs_as_a_domain_gets_permission_errors,
        ),
    ];
    let mut failed = 0;
    for (name, f) in tests {
        if filter.as_deref().is_some_and(|p| !name.contains(p)) {
            continue;
        }
        let t = Instant::now();
        match f() {
            Ok(()) => println!("test {name} ... ok ({:.1?})", t.elapsed()),
            Err(e) => {
                println!("test {name} ... FAILED: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
