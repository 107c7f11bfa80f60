//! The local platform between real processes: grants with Xen's refusals, a
//! read-only mapping that faults on write, a backend or frontend that dies, and
//! event channels that coalesce and lose nothing under a million notifications.
//!
//! `harness = false`: `main` runs the tests; the same binary is the peer process
//! when started as `--peer <role> ...`, talking line by line over stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use xenio_xenbus::local::{LocalDomain, LocalEventChannels, LocalGrantMapper, LocalGrantTable};
use xenio_xenbus::*;

type TestFn = fn() -> std::result::Result<(), String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--peer") {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        return match peer(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peer {:?}: {e}", &args[2..]);
                ExitCode::FAILURE
            }
        };
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let tests: &[(&str, TestFn)] = &[
        (
            "grants_between_processes_follow_xen_rules",
            grants_between_processes,
        ),
        ("readonly_mapping_faults_on_write", readonly_mapping_faults),
        ("backend_that_dies_leaks_nothing", backend_dies),
        (
            "frontend_that_dies_does_not_crash_the_backend",
            frontend_dies,
        ),
        (
            "event_channels_bind_coalesce_and_keep_early_events",
            evtchn_semantics,
        ),
        (
            "event_channels_lose_no_wakeup_in_a_million_pairs",
            evtchn_stress,
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
        println!("{failed} failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

type R<T = ()> = std::result::Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A test's run directory, removed when the test ends however it ends (a
/// failed check returns early; the directory must not outlive it in /dev/shm).
struct RunDir(PathBuf);

impl std::ops::Deref for RunDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl From<&RunDir> for PathBuf {
    fn from(d: &RunDir) -> PathBuf {
        d.0.clone()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_dir(tag: &str) -> RunDir {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("xenio-local-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    RunDir(d)
}

/// A peer process driven line by line.
struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(args: &[&str]) -> R<Peer> {
        let mut child = Command::new(std::env::current_exe().map_err(s)?)
            .arg("--peer")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(s)?;
        let input = child.stdin.take().ok_or("no stdin")?;
        let output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Peer {
            child,
            input,
            output,
        })
    }

    fn line(&mut self) -> R<String> {
        let mut l = String::new();
        self.output.read_line(&mut l).map_err(s)?;
        if l.is_empty() {
            return Err(format!("peer exited: {:?}", self.child.try_wait()));
        }
        Ok(l.trim_end().to_string())
    }

    fn ask(&mut self, cmd: &str) -> R<String> {
        writeln!(self.input, "{cmd}").map_err(s)?;
        self.input.flush().map_err(s)?;
        self.line()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn refs(list: &str) -> R<Vec<GrantRef>> {
    list.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().map(GrantRef).map_err(s))
        .collect()
}

fn pattern(tag: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ tag
}

// ---------------------------------------------------------------- peer roles

fn peer(args: &[String]) -> R {
    let role = args.first().ok_or("no role")?;
    let run = PathBuf::from(args.get(1).ok_or("no run dir")?);
    let domid = DomId(args.get(2).ok_or("no domid")?.parse().map_err(s)?);
    let dom = LocalDomain::new(&run, domid).map_err(s)?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut say = |l: String| -> R {
        writeln!(out, "{l}").map_err(s)?;
        out.flush().map_err(s)
    };
    match role.as_str() {
        // Grants 4 read-write pages and 2 read-only pages to domain 2 and one page
        // to domain 3, then answers `check`, `revoke-rw`, `revoke-ro`.
        "granter" => {
            let table = LocalGrantTable::new(&dom).map_err(s)?;
            let mut rw = table.grant(DomId(2), 4, Access::ReadWrite).map_err(s)?;
            let mut ro = table.grant(DomId(2), 2, Access::ReadOnly).map_err(s)?;
            let other = table.grant(DomId(3), 1, Access::ReadWrite).map_err(s)?;
            for (g, tag) in [(&rw, 1u8), (&ro, 2), (&other, 3)] {
                let data: Vec<u8> = (0..g.region().len()).map(|i| pattern(tag, i)).collect();
                g.region().write(0, &data).map_err(s)?;
            }
            let list = |g: &LocalGranted| {
                g.refs()
                    .iter()
                    .map(|r| r.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            say(format!(
                "rw={} ro={} other={}",
                list(&rw),
                list(&ro),
                list(&other)
            ))?;
            for cmd in stdin.lock().lines() {
                let cmd = cmd.map_err(s)?;
                let reply = match cmd.as_str() {
                    "check" => {
                        let mut buf = vec![0u8; rw.region().len()];
                        rw.region().read(0, &mut buf).map_err(s)?;
                        let ok = buf.iter().enumerate().all(|(i, b)| *b == pattern(9, i));
                        format!("check {}", if ok { "written" } else { "unchanged" })
                    }
                    "revoke-rw" => match rw.revoke() {
                        Ok(()) => "revoked".into(),
                        Err(e) => format!("refused: {e}"),
                    },
                    "revoke-ro" => match ro.revoke() {
                        Ok(()) => "revoked".into(),
                        Err(e) => format!("refused: {e}"),
                    },
                    "exit" => return Ok(()),
                    other => format!("unknown {other}"),
                };
                say(reply)?;
            }
            Ok(())
        }
        // Maps the given refs of domain 1 read-write, says `mapped`, waits to be killed.
        "mapper" => {
            let granter = DomId(args.get(3).ok_or("no granter")?.parse().map_err(s)?);
            let refs = refs(args.get(4).ok_or("no refs")?)?;
            let m = LocalGrantMapper::new(&dom);
            let region = m.map(granter, &refs).map_err(s)?;
            say(format!("mapped {}", region.len()))?;
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        }
        // Maps read-only and writes through the raw pointer: must die of SIGSEGV.
        "ro-writer" => {
            let granter = DomId(args.get(3).ok_or("no granter")?.parse().map_err(s)?);
            let refs = refs(args.get(4).ok_or("no refs")?)?;
            let region = LocalGrantMapper::new(&dom)
                .map_readonly(granter, &refs)
                .map_err(s)?;
            say("mapped".into())?;
            // SAFETY: deliberately not safe: this write must fault, because the page
            // is mapped without write permission. The test expects SIGSEGV.
            unsafe { std::ptr::write_volatile(region.as_ptr() as *mut u8, 0xff) };
            say("wrote".into())?;
            Ok(())
        }
        // Event channel peer: `alloc <remote>` prints the port; then serves commands.
        "evtchn" => evtchn_peer(&dom, &mut say),
        other => Err(format!("unknown role {other}")),
    }
}

use xenio_xenbus::local::LocalGranted;

fn evtchn_peer(dom: &LocalDomain, say: &mut dyn FnMut(String) -> R) -> R {
    let ev = LocalEventChannels::new(dom);
    let mut ch = None;
    for cmd in std::io::stdin().lock().lines() {
        let cmd = cmd.map_err(s)?;
        let w: Vec<&str> = cmd.split_whitespace().collect();
        let reply = match w.as_slice() {
            ["alloc", remote] => {
                let c = ev
                    .alloc_unbound(DomId(remote.parse().map_err(s)?))
                    .map_err(s)?;
                let p = c.port();
                ch = Some(c);
                format!("port {p}")
            }
            ["bind", dom, port] => {
                let c = ev
                    .bind_interdomain(
                        DomId(dom.parse().map_err(s)?),
                        Port(port.parse().map_err(s)?),
                    )
                    .map_err(s)?;
                let p = c.port();
                ch = Some(c);
                format!("port {p}")
            }
            ["notify", n] => {
                let c = ch.as_ref().ok_or("no channel")?;
                for _ in 0..n.parse::<u32>().map_err(s)? {
                    c.notify().map_err(s)?;
                }
                "notified".into()
            }
            ["wait", ms] => {
                let c = ch.as_ref().ok_or("no channel")?;
                let got = c
                    .wait(Some(Duration::from_millis(ms.parse().map_err(s)?)))
                    .map_err(s)?;
                let again = c.take_pending().map_err(s)?;
                format!("wait {got} again {again}")
            }
            // Ping-pong: wait for an event, answer with one, n times.
            ["echo", n] => {
                let c = ch.as_ref().ok_or("no channel")?;
                for i in 0..n.parse::<u64>().map_err(s)? {
                    if !c.wait(Some(Duration::from_secs(10))).map_err(s)? {
                        return Err(format!("echo: no event after {i} round trips"));
                    }
                    c.notify().map_err(s)?;
                }
                "echoed".into()
            }
            ["exit"] => return Ok(()),
            _ => format!("unknown {cmd}"),
        };
        say(reply)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- grant tests

fn parse_grants(line: &str) -> R<(Vec<GrantRef>, Vec<GrantRef>, Vec<GrantRef>)> {
    let mut it = line.split(' ');
    let mut get = |k: &str| -> R<Vec<GrantRef>> {
        let kv = it.next().ok_or("short line")?;
        refs(
            kv.strip_prefix(k)
                .ok_or(format!("expected {k} in {line}"))?,
        )
    };
    Ok((get("rw=")?, get("ro=")?, get("other=")?))
}

fn expect_refused(r: Result<impl std::fmt::Debug>, why: &str) -> R {
    match r {
        Err(e @ Error::Grant { .. }) if e.to_string().contains(why) => Ok(()),
        Err(e) => Err(format!("expected a refusal containing {why:?}, got: {e}")),
        Ok(v) => Err(format!(
            "expected a refusal containing {why:?}, got a mapping {v:?}"
        )),
    }
}

fn grants_between_processes() -> R {
    let run = run_dir("grants");
    let mut granter = Peer::spawn(&["granter", run.to_str().unwrap(), "1"])?;
    let (rw, ro, other) = parse_grants(&granter.line()?)?;
    let me = LocalDomain::new(&run, DomId(2)).map_err(s)?;
    let m = LocalGrantMapper::new(&me);

    // Read-write mapping of 4 pages: contents as granted; writes reach the granter.
    let region = m.map(DomId(1), &rw).map_err(s)?;
    let mut buf = vec![0u8; region.len()];
    region.read(0, &mut buf).map_err(s)?;
    if buf.len() != 4 * 4096 || !buf.iter().enumerate().all(|(i, b)| *b == pattern(1, i)) {
        return Err("mapped pages do not hold what was granted".into());
    }
    let data: Vec<u8> = (0..region.len()).map(|i| pattern(9, i)).collect();
    region.write(0, &data).map_err(s)?;
    if granter.ask("check")? != "check written" {
        return Err("the granter did not see our writes".into());
    }

    // Grant copy in batches over neighbouring pool pages (joined into one
    // preadv/pwritev per run): whole pages and half pages, in both
    // directions, with a refused copy in the middle of a batch that fails
    // alone and splits the run.
    let mut pages = vec![vec![0u8; 4096]; 4];
    let mut ops: Vec<GrantCopy<'_>> = rw
        .iter()
        .zip(pages.iter_mut())
        .map(|(r, p)| GrantCopy {
            domid: DomId(1),
            gref: *r,
            offset: 0,
            local: CopyBuf::FromGrant(p),
        })
        .collect();
    for r in m.copy(&mut ops).map_err(s)? {
        r.map_err(s)?;
    }
    drop(ops);
    if !pages
        .concat()
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern(9, i))
    {
        return Err("a batch of grant copies read the wrong bytes".into());
    }
    let fresh: Vec<u8> = (0..4 * 4096).map(|i| pattern(11, i)).collect();
    let mut ops = Vec::new();
    for (k, r) in rw.iter().enumerate() {
        for half in 0..2 {
            let at = k * 4096 + half * 2048;
            ops.push(GrantCopy {
                domid: DomId(1),
                gref: *r,
                offset: (half * 2048) as u16,
                local: CopyBuf::ToGrant(&fresh[at..at + 2048]),
            });
        }
        if k == 1 {
            ops.push(GrantCopy {
                domid: DomId(1),
                gref: other[0],
                offset: 0,
                local: CopyBuf::ToGrant(&fresh[..16]),
            });
        }
    }
    let res = m.copy(&mut ops).map_err(s)?;
    for (i, r) in res.iter().enumerate() {
        match (i, r) {
            (4, Err(e)) if e.to_string().contains("granted to domain 3") => {}
            (4, r) => return Err(format!("the copy to another domain's grant: {r:?}")),
            (_, Err(e)) => return Err(format!("copy {i} of the batch failed: {e}")),
            _ => {}
        }
    }
    let mut back = vec![0u8; region.len()];
    region.read(0, &mut back).map_err(s)?;
    if back != fresh {
        return Err("a batch of grant copies did not write what it was given".into());
    }
    region.write(0, &data).map_err(s)?;

    // Refusals.
    expect_refused(
        m.map(DomId(1), &ro),
        "read-only grant cannot be mapped writable",
    )?;
    expect_refused(
        m.map(DomId(1), &other),
        "granted to domain 3, not to domain 2",
    )?;
    expect_refused(m.map(DomId(1), &[GrantRef(5000)]), "not granted")?;
    expect_refused(m.map(DomId(1), &[GrantRef(1 << 20)]), "out of range")?;
    expect_refused(m.map(DomId(1), &[rw[0], GrantRef(6000)]), "not granted")?;

    // Read-only mapping of a read-only grant works and reads the data.
    let ro_region = m.map_readonly(DomId(1), &ro).map_err(s)?;
    let mut b = vec![0u8; ro_region.len()];
    ro_region.read(0, &mut b).map_err(s)?;
    if !b.iter().enumerate().all(|(i, x)| *x == pattern(2, i)) {
        return Err("read-only mapping does not hold the granted data".into());
    }

    // Revoking a mapped grant is refused; after unmapping it works, and the ref
    // can no longer be mapped.
    let r = granter.ask("revoke-rw")?;
    if !r.starts_with("refused") || !r.contains("still mapped") {
        return Err(format!("revoke of a mapped grant: {r}"));
    }
    drop(region);
    if granter.ask("revoke-rw")? != "revoked" {
        return Err("revoke after unmap failed".into());
    }
    expect_refused(m.map(DomId(1), &rw), "not granted")?;

    // Grant copy: in and out, and its own refusals.
    let mut page = vec![0u8; 100];
    let mut ops = [GrantCopy {
        domid: DomId(1),
        gref: ro[1],
        offset: 50,
        local: CopyBuf::FromGrant(&mut page),
    }];
    let res = m.copy(&mut ops).map_err(s)?;
    res.into_iter().next().ok_or("no result")?.map_err(s)?;
    if !page
        .iter()
        .enumerate()
        .all(|(i, x)| *x == pattern(2, 4096 + 50 + i))
    {
        return Err("grant copy read the wrong bytes".into());
    }
    let data = [7u8; 16];
    let mut ops = [
        GrantCopy {
            domid: DomId(1),
            gref: ro[0],
            offset: 0,
            local: CopyBuf::ToGrant(&data),
        },
        GrantCopy {
            domid: DomId(1),
            gref: ro[0],
            offset: 4090,
            local: CopyBuf::ToGrant(&data),
        },
        GrantCopy {
            domid: DomId(1),
            gref: other[0],
            offset: 0,
            local: CopyBuf::ToGrant(&data),
        },
    ];
    let res = m.copy(&mut ops).map_err(s)?;
    expect_refused(
        res[0].as_ref().map(|_| ()).map_err(|e| Error::Grant {
            domid: DomId(1),
            gref: ro[0],
            reason: e.to_string(),
        }),
        "read-only",
    )?;
    expect_refused(
        res[1].as_ref().map(|_| ()).map_err(|e| Error::Grant {
            domid: DomId(1),
            gref: ro[0],
            reason: e.to_string(),
        }),
        "crosses the page",
    )?;
    expect_refused(
        res[2].as_ref().map(|_| ()).map_err(|e| Error::Grant {
            domid: DomId(1),
            gref: other[0],
            reason: e.to_string(),
        }),
        "granted to domain 3",
    )?;
    drop(ro_region);
    if granter.ask("revoke-ro")? != "revoked" {
        return Err("revoke of the read-only grant failed".into());
    }
    granter.ask("exit").ok();
    Ok(())
}

fn readonly_mapping_faults() -> R {
    let run = run_dir("rofault");
    let mut granter = Peer::spawn(&["granter", run.to_str().unwrap(), "1"])?;
    let (_, ro, _) = parse_grants(&granter.line()?)?;
    let list = ro
        .iter()
        .map(|r| r.0.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut w = Peer::spawn(&["ro-writer", run.to_str().unwrap(), "2", "1", &list])?;
    if w.line()? != "mapped" {
        return Err("the writer did not map".into());
    }
    let status = w.child.wait().map_err(s)?;
    use std::os::unix::process::ExitStatusExt;
    if status.signal() != Some(libc::SIGSEGV) {
        return Err(format!(
            "a write to a read-only grant did not fault: {status}"
        ));
    }
    // The granter's data is intact.
    let m = LocalGrantMapper::new(&LocalDomain::new(&run, DomId(2)).map_err(s)?);
    let r = m.map_readonly(DomId(1), &ro).map_err(s)?;
    let mut b = [0u8; 1];
    r.read(0, &mut b).map_err(s)?;
    if b[0] != pattern(2, 0) {
        return Err("the read-only page was modified".into());
    }
    drop(r);
    granter.ask("exit").ok();
    Ok(())
}

fn backend_dies() -> R {
    let run = run_dir("bedies");
    let dom = LocalDomain::new(&run, DomId(1)).map_err(s)?;
    let table = LocalGrantTable::new(&dom).map_err(s)?;
    let mut g = table.grant(DomId(2), 3, Access::ReadWrite).map_err(s)?;
    let list = g
        .refs()
        .iter()
        .map(|r| r.0.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut mapper = Peer::spawn(&["mapper", run.to_str().unwrap(), "2", "1", &list])?;
    if !mapper.line()?.starts_with("mapped") {
        return Err("mapper did not map".into());
    }
    let e = table.entry(g.refs()[0]).ok_or("no entry")?;
    if e.flags & xenio_xen_sys::grant_table::GTF_WRITING == 0 {
        return Err(format!("a live mapping is not flagged GTF_writing: {e:?}"));
    }
    match g.revoke() {
        Err(e) if e.to_string().contains("still mapped") => {}
        other => return Err(format!("revoke while mapped by a live process: {other:?}")),
    }
    mapper.kill(); // SIGKILL: no unmapping, no unpinning.
    g.revoke()
        .map_err(|e| format!("revoke after the mapper died: {e}"))?;
    // The slots and pages are reusable: a new grant gets them back.
    let g2 = table.grant(DomId(2), 3, Access::ReadWrite).map_err(s)?;
    let mut old: Vec<_> = g.refs().to_vec();
    let mut new: Vec<_> = g2.refs().to_vec();
    old.sort();
    new.sort();
    if old != new {
        return Err(format!("revoked refs were not reused: {old:?} vs {new:?}"));
    }
    Ok(())
}

fn frontend_dies() -> R {
    let run = run_dir("fedies");
    let mut granter = Peer::spawn(&["granter", run.to_str().unwrap(), "1"])?;
    let (rw, _, _) = parse_grants(&granter.line()?)?;
    let m = LocalGrantMapper::new(&LocalDomain::new(&run, DomId(2)).map_err(s)?);
    let region = m.map(DomId(1), &rw).map_err(s)?;
    granter.kill();
    // The mapping stays valid: read and write it.
    let mut buf = vec![0u8; region.len()];
    region.read(0, &mut buf).map_err(s)?;
    if !buf.iter().enumerate().all(|(i, b)| *b == pattern(1, i)) {
        return Err("the mapping changed when the frontend died".into());
    }
    region.write(0, &[1, 2, 3]).map_err(s)?;
    drop(region);
    // A new incarnation of domain 1 starts fresh tables; the mapper notices.
    let mut granter2 = Peer::spawn(&["granter", run.to_str().unwrap(), "1"])?;
    let (rw2, _, _) = parse_grants(&granter2.line()?)?;
    let region = m.map(DomId(1), &rw2).map_err(s)?;
    let mut b = [0u8; 8];
    region.read(0, &mut b).map_err(s)?;
    if b.iter().enumerate().any(|(i, x)| *x != pattern(1, i)) {
        return Err("the new frontend's grant maps the wrong pages".into());
    }
    drop(region);
    granter2.ask("exit").ok();
    Ok(())
}

// ---------------------------------------------------------------- event channel tests

fn bound_pair(tag: &str) -> R<(RunDir, Peer, impl EventChannel)> {
    let run = run_dir(tag);
    let mut front = Peer::spawn(&["evtchn", run.to_str().unwrap(), "1"])?;
    let port: u32 = front
        .ask("alloc 2")?
        .strip_prefix("port ")
        .ok_or("no port")?
        .parse()
        .map_err(s)?;
    let ev = LocalEventChannels::new(&LocalDomain::new(&run, DomId(2)).map_err(s)?);
    let ch = ev.bind_interdomain(DomId(1), Port(port)).map_err(s)?;
    Ok((run, front, ch))
}

fn evtchn_semantics() -> R {
    let run = run_dir("evrefuse");
    let mut front = Peer::spawn(&["evtchn", run.to_str().unwrap(), "1"])?;
    let port: u32 = front
        .ask("alloc 3")?
        .strip_prefix("port ")
        .ok_or("no port")?
        .parse()
        .map_err(s)?;
    let ev2 = LocalEventChannels::new(&LocalDomain::new(&run, DomId(2)).map_err(s)?);
    match ev2.bind_interdomain(DomId(1), Port(port)) {
        Err(e) if e.to_string().contains("reserved for domain 3") => {}
        other => return Err(format!("binding a port meant for domain 3: {other:?}")),
    }
    match ev2.bind_interdomain(DomId(1), Port(999)) {
        Err(Error::EventChannel { .. }) => {}
        other => return Err(format!("binding a missing port: {other:?}")),
    }
    let ev3 = LocalEventChannels::new(&LocalDomain::new(&run, DomId(3)).map_err(s)?);
    let ch3 = ev3.bind_interdomain(DomId(1), Port(port)).map_err(s)?;
    match ev2.bind_interdomain(DomId(1), Port(port)) {
        Err(e) if e.to_string().contains("already bound") => {}
        other => return Err(format!("binding a bound port twice: {other:?}")),
    }
    // Events sent before the owner waits are kept; many coalesce into one.
    ch3.notify().map_err(s)?;
    ch3.notify().map_err(s)?;
    std::thread::sleep(Duration::from_millis(50));
    if front.ask("wait 1000")? != "wait true again false" {
        return Err("two early notifications were not one pending event".into());
    }
    if front.ask("wait 50")? != "wait false again false" {
        return Err("an event appeared from nowhere".into());
    }
    // The other direction, and a thousand notifications coalescing.
    if front.ask("notify 1000")? != "notified" {
        return Err("frontend notify failed".into());
    }
    if !ch3.wait(Some(Duration::from_secs(5))).map_err(s)? || ch3.take_pending().map_err(s)? {
        return Err("1000 notifications were not exactly one pending event".into());
    }
    if ch3.wait(Some(Duration::from_millis(50))).map_err(s)? {
        return Err("a consumed event fired again".into());
    }
    // The descriptor is pollable.
    front.ask("notify 1")?;
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&ch3),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).map_err(s)?;
    if n != 1 || !ch3.take_pending().map_err(s)? {
        return Err("the channel's descriptor did not poll readable".into());
    }
    // The peer dies without closing (SIGKILL): sends to it are dropped, as in Xen,
    // both through the open writer (EPIPE) and when the FIFO must be reopened (ENXIO).
    front.kill();
    for _ in 0..3 {
        ch3.notify()
            .map_err(|e| format!("notify to a dead peer: {e}"))?;
    }
    // We allocate, a peer binds and dies before our first notify: opening its
    // FIFO finds no reader (ENXIO), and the send is dropped too.
    let ev1 = LocalEventChannels::new(&LocalDomain::new(&run, DomId(1)).map_err(s)?);
    let mine = ev1.alloc_unbound(DomId(3)).map_err(s)?;
    let mut binder = Peer::spawn(&["evtchn", run.to_str().unwrap(), "3"])?;
    binder.ask(&format!("bind 1 {}", mine.port().0))?;
    binder.kill();
    mine.notify()
        .map_err(|e| format!("first notify to a dead peer: {e}"))?;
    drop((ch3, mine));
    Ok(())
}

fn evtchn_stress() -> R {
    let (_run, mut front, ch) = bound_pair("evstress")?;
    // A million notify/wait pairs: 500,000 round trips, each one notification
    // and one wait in each direction. A lost wake-up stalls the ping-pong, which
    // the 10 s waits on both sides turn into a failure.
    let round_trips: u64 = std::env::var("XENIO_EVTCHN_ROUND_TRIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    writeln!(front.input, "echo {round_trips}").map_err(s)?;
    front.input.flush().map_err(s)?;
    let t = Instant::now();
    for i in 0..round_trips {
        ch.notify().map_err(s)?;
        if !ch.wait(Some(Duration::from_secs(10))).map_err(s)? {
            return Err(format!("lost wake-up after {i} round trips"));
        }
    }
    if front.line()? != "echoed" {
        return Err("the peer did not finish".into());
    }
    eprintln!(
        "  {} notify/wait pairs in {:.1?} ({:.1} us per round trip)",
        round_trips * 2,
        t.elapsed(),
        t.elapsed().as_secs_f64() * 1e6 / round_trips as f64
    );
    front.ask("exit").ok();
    drop(ch);
    Ok(())
}
