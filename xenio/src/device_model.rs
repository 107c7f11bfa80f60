//! `xenio device-model`: a stand-in for the QEMU that libxl starts for a PV
//! domain whose disks are `backendtype=qdisk`, so that `xenio backendd
//! --class qdisk` can serve those disks with no QEMU on the host.
//!
//! What libxl (Xen 4.17) asks of that QEMU, from its source
//! (lab/recordings/README.md, "What libxl asks of a PV domain's device
//! model", has the details and the functions):
//!
//! * at `xl create` and `xl restore` (`libxl__spawn_local_dm`): to be
//!   started with its command line (`-xen-domid N`, a control monitor on
//!   `-chardev socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-N,server=on`,
//!   another on `qmp-libxenstat-N`), to write
//!   `/local/domain/0/device-model/N/state = running` (libxl waits up to 60 s
//!   for it: `device_model_confirm`), then to answer QMP on `qmp-libxl-N`:
//!   the greeting, `qmp_capabilities`, `query-chardev` (within 10 s:
//!   `device_model_spawn_outcome`), and `query-vnc` only when the domain
//!   has a VNC display;
//! * at `xl destroy` (also what save, shutdown and a crash end with):
//!   nothing over QMP; libxl removes `device-model/N` and sends SIGHUP to
//!   the pid it wrote in `/local/domain/N/image/device-model-pid`
//!   (`libxl__destroy_device_model`, `libxl__kill_xs_path`), then unlinks
//!   the two sockets (`libxl__qmp_cleanup`);
//! * save, unpause, `xl shutdown`, `xl block-attach`/`block-detach`: nothing
//!   for a PV domain (QMP's `stop`, `cont`, `xen-save-devices-state`,
//!   `xen-set-global-dirty-log` are sent to HVM domains' device models only).
//!
//! This stand-in does exactly that and nothing else: it serves no device
//! (no console, vfb, vkbd, 9pfs, usb or nic backend; the disks are
//! `xenio backendd`'s), and answers every QMP command it does not know with
//! QMP's `CommandNotFound`, as QEMU does.

use crate::error::{Context, Error, Result};
use clap::Args;
use serde_json::{Map, Value, json};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenio_xenbus::platform::stop_on_signals;
use xenio_xenbus::{DomId, Store, Tx, Watch};
use xenio_xenstore::Client;

/// The QEMU version the greeting and `query-version` give: Debian bookworm's
/// (7.2), the one libxl 4.17 is used with there. libxl reads it only to
/// choose between commands a PV domain is never sent.
const QEMU_VERSION: (u32, u32, u32) = (7, 2, 0);
/// Longest request kept while it is incomplete; beyond, an error and the
/// connection is closed (libxl's requests are under 1 KiB).
const MAX_REQUEST: usize = 1 << 20;
/// QMP connections served at once (QEMU serves one per monitor socket;
/// libxl makes one at a time, behind a lock).
const MAX_CLIENTS: usize = 8;
/// A client that reads none of its replies for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `xenio device-model`.
#[derive(Args, Debug)]
pub struct DeviceModelArgs {
    /// The command line libxl gives QEMU. Read: -xen-domid N (required),
    /// -name NAME, -chardev socket,id=ID,path=PATH,server=on with
    /// -mon chardev=ID,mode=control (each such monitor gets a QMP socket at
    /// PATH), -pidfile FILE. Everything else is ignored.
    #[arg(
        value_name = "QEMU-ARGS",
        num_args = 0..,
        allow_hyphen_values = true,
        trailing_var_arg = true
    )]
    qemu_args: Vec<String>,
}

/// What the command line says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DmConfig {
    /// The guest's domain id (`-xen-domid`).
    pub domid: u16,
    /// `-name`.
    pub name: Option<String>,
    /// The QMP monitors: chardev id and socket path.
    pub monitors: Vec<(String, PathBuf)>,
    /// `-pidfile`.
    pub pidfile: Option<PathBuf>,
}

/// Split a QEMU option string (`a,k=v,k2=v2`) at its commas; `,,` is a comma.
fn qemu_opts(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                out.last_mut().expect("one").push(',');
            } else {
                out.push(String::new());
            }
        } else {
            out.last_mut().expect("one").push(c);
        }
    }
    out
}

fn opt<'a>(parts: &'a [String], key: &str) -> Option<&'a str> {
    parts
        .iter()
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl DmConfig {
    /// Read the options this stand-in needs from QEMU's command line.
    pub fn parse(args: &[String]) -> Result<DmConfig> {
        let mut c = DmConfig::default();
        let mut domid = None;
        let mut chardevs: Vec<Vec<String>> = Vec::new();
        let mut mons: Vec<Vec<String>> = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            // QEMU takes --opt as -opt.
            let a = a
                .strip_prefix('-')
                .filter(|r| r.starts_with('-'))
                .unwrap_or(a);
            let mut value = |what: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| Error::Usage(format!("{what}: a value is missing")))
            };
            match a {
                "-xen-domid" => {
                    let v = value(a)?;
                    domid =
                        Some(v.parse::<u16>().map_err(|_| {
                            Error::Usage(format!("-xen-domid {v:?}: not a domain id"))
                        })?);
                }
                "-name" => {
                    let v = value(a)?;
                    // -name guest=NAME,... or NAME,...
                    let parts = qemu_opts(&v);
                    let n = opt(&parts, "guest").unwrap_or(&parts[0]);
                    c.name = Some(n.to_string());
                }
                "-chardev" => chardevs.push(qemu_opts(&value(a)?)),
                "-mon" => mons.push(qemu_opts(&value(a)?)),
                "-pidfile" => c.pidfile = Some(PathBuf::from(value(a)?)),
                _ => {}
            }
        }
        c.domid = domid.ok_or_else(|| {
            Error::Usage("no -xen-domid: this is started by libxl (device_model_override)".into())
        })?;
        for m in &mons {
            let mode = opt(m, "mode").unwrap_or("readline");
            let Some(id) = opt(m, "chardev") else {
                return Err(Error::Usage(format!("-mon {}: no chardev=", m.join(","))));
            };
            if mode != "control" {
                tracing::warn!("-mon chardev={id},mode={mode}: only QMP (mode=control) is served");
                continue;
            }
            let Some(dev) = chardevs.iter().find(|d| opt(d, "id") == Some(id)) else {
                return Err(Error::Usage(format!(
                    "-mon chardev={id}: no -chardev with id={id}"
                )));
            };
            if dev[0] != "socket" {
                return Err(Error::Usage(format!(
                    "-chardev {}: only unix sockets are served",
                    dev.join(",")
                )));
            }
            if opt(dev, "fd").is_some() {
                return Err(Error::Usage(format!(
                    "-chardev {}: a socket passed as a descriptor (libxl does this with \
                     dm_restrict=1) is not supported; leave dm_restrict off",
                    dev.join(",")
                )));
            }
            let Some(path) = opt(dev, "path") else {
                return Err(Error::Usage(format!(
                    "-chardev {}: no path=",
                    dev.join(",")
                )));
            };
            c.monitors.push((id.to_string(), PathBuf::from(path)));
        }
        if c.monitors.is_empty() {
            return Err(Error::Usage(
                "no QMP monitor (-chardev socket,id=ID,path=PATH,server=on -mon chardev=ID,mode=control): \
                 libxl could not talk to this device model"
                    .into(),
            ));
        }
        Ok(c)
    }
}

/// The run state QMP reports (`query-status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Running,
    Paused,
}

/// What every QMP connection shares.
pub struct Shared {
    name: Option<String>,
    monitors: Vec<(String, PathBuf)>,
    state: Mutex<RunState>,
    quit: AtomicBool,
}

impl Shared {
    fn new(c: &DmConfig) -> Shared {
        Shared {
            name: c.name.clone(),
            monitors: c.monitors.clone(),
            state: Mutex::new(RunState::Running),
            quit: AtomicBool::new(false),
        }
    }

    /// Whether a client asked the device model to quit (`quit`).
    pub fn quit_requested(&self) -> bool {
        self.quit.load(Ordering::Relaxed)
    }
}

/// The commands answered; every other one is `CommandNotFound`.
const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-commands",
    "query-version",
    "query-name",
    "query-status",
    "query-chardev",
    "query-vnc",
    "query-blockstats",
    "stop",
    "cont",
    "quit",
];

/// QMP's greeting, as QEMU sends it.
pub fn greeting() -> Value {
    let (major, minor, micro) = QEMU_VERSION;
    json!({"QMP": {
        "version": {"qemu": {"major": major, "minor": minor, "micro": micro},
                    "package": concat!("xenio device-model ", env!("CARGO_PKG_VERSION"))},
        "capabilities": []
    }})
}

fn error(class: &str, desc: impl Into<String>) -> Value {
    json!({"error": {"class": class, "desc": desc.into()}})
}

/// One QMP connection's state: before or after `qmp_capabilities`.
#[derive(Debug, Default)]
pub struct Session {
    negotiated: bool,
}

impl Session {
    /// The reply to one request, as QEMU's monitor gives it (the request's
    /// `id`, when it has one, is given back).
    pub fn handle(&mut self, shared: &Shared, req: &Value) -> Value {
        let id = req.get("id").cloned();
        let mut reply = self.dispatch(shared, req);
        if let (Some(id), Some(m)) = (id, reply.as_object_mut()) {
            m.insert("id".into(), id);
        }
        reply
    }

    fn dispatch(&mut self, shared: &Shared, req: &Value) -> Value {
        let Some(obj) = req.as_object() else {
            return error("GenericError", "QMP input must be a JSON object");
        };
        for k in obj.keys() {
            if !matches!(k.as_str(), "execute" | "arguments" | "id" | "control") {
                return error(
                    "GenericError",
                    format!("QMP input member '{k}' is unexpected"),
                );
            }
        }
        let cmd = match obj.get("execute") {
            None => return error("GenericError", "QMP input lacks member 'execute'"),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return error(
                    "GenericError",
                    "QMP input member 'execute' must be a string",
                );
            }
        };
        let empty = Map::new();
        let args = match obj.get("arguments") {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return error(
                    "GenericError",
                    "QMP input member 'arguments' must be an object",
                );
            }
        };
        if !self.negotiated && cmd != "qmp_capabilities" {
            return error(
                "CommandNotFound",
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            );
        }
        if !COMMANDS.contains(&cmd) {
            return error(
                "CommandNotFound",
                format!("The command {cmd} has not been found"),
            );
        }
        // qmp_capabilities takes `enable` (capabilities to turn on: none are
        // offered); no other command here takes arguments.
        for (k, v) in args {
            let ok = cmd == "qmp_capabilities"
                && k == "enable"
                && v.as_array().is_some_and(|a| a.is_empty());
            if !ok {
                return if cmd == "qmp_capabilities" && k == "enable" {
                    error("GenericError", format!("Capability {v} not available"))
                } else {
                    error("GenericError", format!("Parameter '{k}' is unexpected"))
                };
            }
        }
        let ret = match cmd {
            "qmp_capabilities" => {
                if self.negotiated {
                    return error(
                        "CommandNotFound",
                        "Capabilities negotiation is already complete, command ignored",
                    );
                }
                self.negotiated = true;
                json!({})
            }
            "query-commands" => Value::Array(COMMANDS.iter().map(|c| json!({"name": c})).collect()),
            "query-version" => greeting()["QMP"]["version"].clone(),
            "query-name" => match &shared.name {
                Some(n) => json!({"name": n}),
                None => json!({}),
            },
            "query-status" => {
                let s = *shared.state.lock().unwrap_or_else(|e| e.into_inner());
                let (status, running) = match s {
                    RunState::Running => ("running", true),
                    RunState::Paused => ("paused", false),
                };
                json!({"status": status, "running": running, "singlestep": false})
            }
            // libxl looks for labels serialN with a pty: filename; there are none.
            "query-chardev" => Value::Array(
                shared
                    .monitors
                    .iter()
                    .map(|(id, path)| {
                        json!({"label": id, "filename": format!("unix:{},server=on", path.display()),
                               "frontend-open": true})
                    })
                    .collect(),
            ),
            "query-vnc" => json!({"enabled": false}),
            "query-blockstats" => json!([]),
            "stop" | "cont" => {
                *shared.state.lock().unwrap_or_else(|e| e.into_inner()) = if cmd == "stop" {
                    RunState::Paused
                } else {
                    RunState::Running
                };
                json!({})
            }
            "quit" => {
                shared.quit.store(true, Ordering::Relaxed);
                json!({})
            }
            _ => unreachable!("every command in COMMANDS is answered"),
        };
        json!({ "return": ret })
    }
}

/// Serve QMP on one connection until the client closes it, sends more than
/// [`MAX_REQUEST`] bytes without completing a request, or stops reading.
pub fn serve_connection(mut s: UnixStream, shared: &Shared) -> std::io::Result<()> {
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    send(&mut s, &greeting())?;
    let mut session = Session::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // After bad input: drop bytes up to the end of its line.
    let mut skipping = false;
    loop {
        if skipping {
            match buf.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    buf.drain(..=nl);
                    skipping = false;
                }
                None => buf.clear(),
            }
        }
        // Every complete request in the buffer, in order.
        while !skipping {
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match it.next() {
                None => {
                    buf.clear(); // only white space
                    break;
                }
                Some(Ok(req)) => {
                    let used = it.byte_offset();
                    buf.drain(..used);
                    let reply = session.handle(shared, &req);
                    send(&mut s, &reply)?;
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    // As QEMU: an error without id, then the next request.
                    send(
                        &mut s,
                        &error("GenericError", format!("JSON parse error, {e}")),
                    )?;
                    skipping = true;
                    match buf.iter().position(|&b| b == b'\n') {
                        Some(nl) => {
                            buf.drain(..=nl);
                            skipping = false;
                        }
                        None => buf.clear(),
                    }
                }
            }
        }
        if buf.len() > MAX_REQUEST {
            let _ = send(
                &mut s,
                &error(
                    "GenericError",
                    format!("JSON message too big (over {MAX_REQUEST} bytes)"),
                ),
            );
            return Ok(());
        }
        let n = match s.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn send(s: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string().into_bytes();
    line.extend_from_slice(b"\r\n");
    s.write_all(&line)
}

/// Accept connections on `l` for ever, each served on a thread of its own.
fn accept_loop(l: UnixListener, shared: Arc<Shared>, clients: Arc<AtomicUsize>) {
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("more than {MAX_CLIENTS} QMP clients at once: one refused");
            continue; // dropped: closed
        }
        let (sh, cl) = (shared.clone(), clients.clone());
        let spawned = std::thread::Builder::new()
            .name("qmp".into())
            .spawn(move || {
                if let Err(e) = serve_connection(s, &sh) {
                    tracing::info!("QMP connection: {e}");
                }
                cl.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Run `xenio device-model`.
pub fn run(a: DeviceModelArgs) -> Result<()> {
    let c = DmConfig::parse(&a.qemu_args)?;
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP is what libxl sends (libxl__kill_xs_path); SIGTERM and SIGINT
    // too, as QEMU. A second one kills at once.
    stop_on_signals(
        &stop,
        &[
            signal_hook::consts::SIGHUP,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ],
    )?;
    let store = Client::connect_default()?;
    let domid = DomId(c.domid);
    let shared = Arc::new(Shared::new(&c));
    let clients = Arc::new(AtomicUsize::new(0));
    let mut made: Vec<PathBuf> = Vec::new();
    let r = (|| -> Result<()> {
        for (id, path) in &c.monitors {
            // As QEMU: a stale socket file is replaced.
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
            let l = UnixListener::bind(path)
                .with_context(|| format!("QMP monitor {id}: binding {}", path.display()))?;
            made.push(path.clone());
            let (sh, cl) = (shared.clone(), clients.clone());
            std::thread::Builder::new()
                .name(format!("qmp-{id}"))
                .spawn(move || accept_loop(l, sh, cl))
                .context("starting a QMP thread")?;
            println!("QMP monitor {id} on {}", path.display());
        }
        if let Some(p) = &c.pidfile {
            std::fs::write(p, format!("{}\n", std::process::id()))
                .with_context(|| format!("writing {}", p.display()))?;
        }
        serve(&store, domid, &stop, &shared)
    })();
    // Whatever happened: no socket, pid file or node of ours is left.
    for p in &made {
        let _ = std::fs::remove_file(p);
    }
    if let Some(p) = &c.pidfile {
        let _ = std::fs::remove_file(p);
    }
    match store.rm(Tx::NONE, &dm_dir(domid)) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => tracing::warn!("removing {}: {e}", dm_dir(domid)),
    }
    r
}

/// The device model's directory, relative to this domain's home (QEMU
/// writes it so: `device-model/<domid>`).
fn dm_dir(domid: DomId) -> String {
    format!("device-model/{}", domid.0)
}

/// Say `running`, then wait for a stop signal, `quit`, or the domain gone.
fn serve(store: &Client, domid: DomId, stop: &AtomicBool, shared: &Shared) -> Result<()> {
    let mut release = store.watch("@releaseDomain", "xenio-dm-release")?;
    store.write(Tx::NONE, &format!("{}/state", dm_dir(domid)), b"running")?;
    println!("device model for domain {}: running", domid.0);
    tracing::info!("domain {}: running", domid.0);
    while !stop.load(Ordering::Relaxed) && !shared.quit_requested() {
        if release
            .next_event(Some(Duration::from_millis(200)))?
            .is_some()
        {
            while release.next_event(Some(Duration::ZERO))?.is_some() {}
            if !store.is_domain_introduced(domid)? {
                println!("domain {} is gone: exiting", domid.0);
                return Ok(());
            }
        }
    }
    println!(
        "device model for domain {}: {}",
        domid.0,
        if shared.quit_requested() {
            "quit"
        } else {
            "stopped by a signal"
        }
    );
    Ok(())
}

/// The unit tests of the pure parts; tests/device_model.rs runs the process.
#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    // libxl__build_device_model_args_new for the PV domU of recording 10.
    const LIBXL: &str = "-xen-domid 3 -no-shutdown \
        -chardev socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-3,server=on,wait=off \
        -mon chardev=libxl-cmd,mode=control \
        -chardev socket,id=libxenstat-cmd,path=/var/run/xen/qmp-libxenstat-3,server=on,wait=off \
        -mon chardev=libxenstat-cmd,mode=control -nodefaults -no-user-config -xen-attach \
        -name recq -vnc none -display none -nographic -machine xenpv -m 128";

    #[test]
    fn parses_libxl_command_line() {
        let c = DmConfig::parse(&args(LIBXL)).unwrap();
        assert_eq!(c.domid, 3);
        assert_eq!(c.name.as_deref(), Some("recq"));
        assert_eq!(
            c.monitors,
            vec![
                ("libxl-cmd".into(), "/var/run/xen/qmp-libxl-3".into()),
                (
                    "libxenstat-cmd".into(),
                    "/var/run/xen/qmp-libxenstat-3".into()
                )
            ]
        );
        assert_eq!(c.pidfile, None);
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        for (bad, says) in [
            ("-no-shutdown -mon chardev=a,mode=control", "-xen-domid"),
            ("-xen-domid x", "not a domain id"),
            ("-xen-domid 70000", "not a domain id"),
            ("-xen-domid", "missing"),
            ("-xen-domid 1", "no QMP monitor"),
            ("-xen-domid 1 -mon chardev=a,mode=control", "no -chardev"),
            (
                "-xen-domid 1 -chardev socket,id=a,fd=5,server=on -mon chardev=a,mode=control",
                "dm_restrict",
            ),
            (
                "-xen-domid 1 -chardev pty,id=a -mon chardev=a,mode=control",
                "unix sockets",
            ),
        ] {
            let e = DmConfig::parse(&args(bad)).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        // A readline monitor is left alone; commas doubled are one comma.
        let c = DmConfig::parse(&args(
            "--xen-domid 2 -chardev socket,id=h,path=/h -mon chardev=h \
             -chardev socket,id=q,path=/a,,b,server=on -mon chardev=q,mode=control \
             -name guest=vm,,1,debug-threads=on -pidfile /p",
        ))
        .unwrap();
        assert_eq!(c.monitors, vec![("q".into(), "/a,b".into())]);
        assert_eq!(c.name.as_deref(), Some("vm,1"));
        assert_eq!(c.pidfile, Some("/p".into()));
    }

    fn shared() -> Shared {
        Shared::new(&DmConfig::parse(&args(LIBXL)).unwrap())
    }

    #[test]
    fn negotiation_first_then_commands() {
        let sh = shared();
        let mut s = Session::default();
        let r = s.handle(&sh, &json!({"execute": "query-chardev", "id": 1}));
        assert_eq!(r["error"]["class"], "CommandNotFound");
        assert_eq!(r["id"], 1);
        let r = s.handle(&sh, &json!({"execute": "qmp_capabilities", "id": "a"}));
        assert_eq!(r, json!({"return": {}, "id": "a"}));
        let r = s.handle(&sh, &json!({"execute": "qmp_capabilities"}));
        assert_eq!(r["error"]["class"], "CommandNotFound");
        let r = s.handle(&sh, &json!({"execute": "query-chardev", "id": 0x786c7101}));
        assert_eq!(r["id"], 0x786c7101);
        let labels: Vec<&str> = r["return"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["libxl-cmd", "libxenstat-cmd"]);
        assert_eq!(
            s.handle(&sh, &json!({"execute": "query-vnc"})),
            json!({"return": {"enabled": false}})
        );
        let r = s.handle(&sh, &json!({"execute": "xen-save-devices-state", "id": 9}));
        assert_eq!(r["error"]["class"], "CommandNotFound");
        assert_eq!(r["id"], 9);
        assert_eq!(
            s.handle(&sh, &json!({"execute": "stop"})),
            json!({"return": {}})
        );
        assert_eq!(
            s.handle(&sh, &json!({"execute": "query-status"}))["return"]["status"],
            "paused"
        );
        s.handle(&sh, &json!({"execute": "cont"}));
        assert_eq!(
            s.handle(&sh, &json!({"execute": "query-status"}))["return"]["status"],
            "running"
        );
        assert!(!sh.quit_requested());
        s.handle(&sh, &json!({"execute": "quit"}));
        assert!(sh.quit_requested());
    }

    #[test]
    fn malformed_requests_get_errors() {
        let sh = shared();
        let mut s = Session::default();
        s.handle(&sh, &json!({"execute": "qmp_capabilities"}));
        for (req, says) in [
            (json!([1, 2]), "must be a JSON object"),
            (json!({"id": 3}), "lacks member 'execute'"),
            (json!({"execute": 7}), "must be a string"),
            (
                json!({"execute": "cont", "arguments": 1}),
                "must be an object",
            ),
            (
                json!({"execute": "cont", "arguments": {"x": 1}}),
                "Parameter 'x'",
            ),
            (
                json!({"execute": "cont", "bogus": 1}),
                "'bogus' is unexpected",
            ),
        ] {
            let r = s.handle(&sh, &req);
            assert_eq!(r["error"]["class"], "GenericError", "{req}");
            assert!(
                r["error"]["desc"].as_str().unwrap().contains(says),
                "{req}: {r}"
            );
        }
        let r = s.handle(
            &sh,
            &json!({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}),
        );
        assert!(r["error"].is_object());
    }
}
