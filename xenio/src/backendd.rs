//! `xenio backendd`: serve every disk (and, with `--class vif`, every vif) a
//! toolstack puts under `/local/domain/<self>/backend/<class>/`, in one
//! process.
//!
//! The store is watched (`backend` and `@releaseDomain`) and read again every
//! second whatever the watches say. The vifs: [`crate::backendd_vif`]. Each device directory that
//! appears with a `state` node gets a thread of its own that reads the nodes
//! the toolstack wrote (`params`, `mode`, `device-type`, `removable`,
//! `discard-enable`), opens the storage ([`open_storage`], the one place
//! formats are told apart) and serves it with [`xenio_blkback::serve`] (its
//! own queues and queue threads). A device whose nodes make no sense, or
//! whose storage cannot be opened, gets the reason in its error node and
//! `Closing`; the others go on. A device's directory removed (`xl
//! block-detach`) or its frontend domain gone (`@releaseDomain`) ends that
//! device; the directory reappearing later is a new device.

use crate::backendd_vif::{VIF_CLASS, VifArgs, serve_vif};
use crate::error::{Context, Error, Result};
use crate::serving::ServeArgs;
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::Duration;
use xenio_blkback::storage::{OpenOptions, StorageTarget};
use xenio_blkback::{BackendConfig, Counters, Outcome, Storage};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::keys::{self, blkif};
use xenio_xenbus::handshake::{Endpoint, error_node};
use xenio_xenbus::platform::{
    LocalPlatform, Platform, PlatformChoice, PlatformKind, STOP_SIGNALS, XenPlatform, resolve,
    stop_on_signals,
};
use xenio_xenbus::{DomId, Store, Tx, Watch};
use xenio_xenstore::Client;

/// Options of `xenio backendd`.
#[derive(Args, Debug)]
pub struct BackenddArgs {
    /// The backend classes to serve, comma-separated or repeated: the devices
    /// under /local/domain/<self>/backend/<CLASS>/<frontend>/<devid>. `vbd`
    /// is what libxl writes for disks with backendtype=phy (then Linux's
    /// xen-blkback must not be loaded in this domain: it claims every
    /// backend/vbd device); `qdisk` is what it writes for backendtype=qdisk
    /// (for a PV domU libxl then starts a QEMU of its own: `xenio
    /// device-model` stands in for it, see its --help);
    /// `vif` is the network class (then Linux's xen-netback must not be
    /// loaded: it claims every backend/vif device): each vif gets a TAP
    /// device named by its `vifname` node, else vif<domid>.<devid>, which
    /// the hotplug script tools/hotplug/vif-xenio plugs into the `bridge`
    /// node's bridge (the --vif-* options); any other name is a disk class
    /// of xenio's own.
    #[arg(
        long,
        value_name = "CLASS[,CLASS...]",
        default_value = "vbd",
        value_delimiter = ','
    )]
    class: Vec<String>,

    #[command(flatten)]
    vif: VifArgs,

    /// Platform: local (processes on this host), xen, or auto (xen if /dev/xen is there).
    #[arg(long, value_name = "KIND", default_value = "auto")]
    platform: PlatformChoice,

    /// Local platform run directory (see `xenio store --help`).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,

    /// This domain's id on the local platform (on Xen it is read from the store).
    #[arg(long, value_name = "DOMID", default_value_t = 0)]
    backend: u16,

    /// How each disk is served (the knobs of `xenio blkback`).
    #[command(flatten)]
    serve: ServeArgs,

    /// Seconds a closing device waits for its frontend to close before it
    /// says Closed anyway (on exit, and when its frontend's domain is gone;
    /// a vif also on detach, and at most 5 s: libxl waits 10 s for Closed).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    close_timeout: u64,

    /// Keep a record of each queue's requests in flight in DIR (a tmpfs:
    /// one small file per queue, named after the device), so that a daemon
    /// started after this one died resumes every connection in place and
    /// serves again what was taken and not answered.
    #[arg(long, value_name = "DIR")]
    inflight_dir: Option<PathBuf>,

    /// On SIGTERM/SIGINT, leave the devices Connected (and, with
    /// --inflight-dir, their records) for the next daemon to resume (an
    /// upgrade), instead of closing them (the default: the frontends let go
    /// of their disks).
    #[arg(long)]
    keep_on_exit: bool,
}

/// Run `xenio backendd`.
pub fn run(a: BackenddArgs) -> Result<()> {
    for class in &a.class {
        if class.is_empty() || class.contains(['/', '@']) || class.contains("..") {
            return Err(Error::Usage(format!(
                "--class {class:?}: not a store path component"
            )));
        }
    }
    a.vif.check()?;
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(&stop, &STOP_SIGNALS)?;
    match resolve(a.platform)? {
        PlatformKind::Local => {
            let dir = a
                .run_dir
                .clone()
                .unwrap_or_else(xenio_xenbus::local::default_run_dir);
            let p = LocalPlatform::connect(dir, DomId(a.backend))?;
            Daemon::new(&a).run(&p, &stop)
        }
        PlatformKind::Xen => {
            let p = XenPlatform::open()?;
            // Every device maps its frontend's grants through /dev/xen/gntdev:
            // opened now, a missing one is said at start, not on the first
            // device, and the daemon's descriptors stay flat from here on
            // (the lab's domu-xl counts them).
            p.mapper()?;
            Daemon::new(&a).run(&p, &stop)
        }
    }
}

/// What every device is served with.
struct Daemon<'a> {
    args: &'a BackenddArgs,
}

/// One device being served.
struct Device<'scope> {
    frontend: DomId,
    stop: Arc<AtomicBool>,
    thread: Option<ScopedJoinHandle<'scope, ()>>,
}

impl<'a> Daemon<'a> {
    fn new(args: &'a BackenddArgs) -> Self {
        Daemon { args }
    }

    fn run<P: Platform<Store = Client>>(&self, p: &P, stop: &AtomicBool) -> Result<()> {
        let store = p.store();
        let backend = format!("/local/domain/{}/backend", p.domid());
        let mut classes: Vec<&str> = Vec::new();
        for c in &self.args.class {
            if !classes.contains(&c.as_str()) {
                classes.push(c);
            }
        }
        // One watch for every class: it fires for anything below.
        let mut class_watch = store.watch(&backend, "class")?;
        let mut release_watch = store.watch("@releaseDomain", "release")?;
        for c in &classes {
            println!("serving the devices under {backend}/{c}");
            tracing::info!("serving the devices under {backend}/{c}");
        }
        std::thread::scope(|s| -> Result<()> {
            let mut devices: HashMap<String, Device<'_>> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                self.rescan(s, p, &backend, &classes, &mut devices)?;
                if release_watch.next_event(Some(Duration::ZERO))?.is_some() {
                    while release_watch.next_event(Some(Duration::ZERO))?.is_some() {}
                    for (dir, d) in &devices {
                        if d.thread.is_some() && !store.is_domain_introduced(d.frontend)? {
                            tracing::info!("{dir}: domain {} is gone: closing", d.frontend);
                            d.stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                // A burst of changes is one rescan; at least one a second.
                if class_watch
                    .next_event(Some(Duration::from_secs(1)))?
                    .is_some()
                {
                    while class_watch
                        .next_event(Some(Duration::from_millis(20)))?
                        .is_some()
                    {}
                }
            }
            tracing::info!("stopping: {} devices", devices.len());
            for d in devices.values() {
                d.stop.store(true, Ordering::Relaxed);
            }
            for (_, mut d) in devices.drain() {
                if let Some(t) = d.thread.take() {
                    let _ = t.join();
                }
            }
            Ok(())
        })
    }

    /// Start a thread for each new device, end the ones whose directory is
    /// gone, forget those whose thread ended and whose directory went.
    fn rescan<'scope, 'env, P: Platform<Store = Client>>(
        &'env self,
        s: &'scope std::thread::Scope<'scope, 'env>,
        p: &'env P,
        backend: &str,
        classes: &[&str],
        devices: &mut HashMap<String, Device<'scope>>,
    ) -> Result<()> {
        let store = p.store();
        let mut present = Vec::new();
        for class in classes {
            let base = format!("{backend}/{class}");
            for fe in list(store, &base)? {
                let Ok(frontend) = fe.parse::<u16>() else {
                    continue;
                };
                for devid in list(store, &format!("{base}/{fe}"))? {
                    let dir = format!("{base}/{fe}/{devid}");
                    // libxl writes a device in one transaction: with `state`, whole.
                    if store
                        .read_opt(Tx::NONE, &format!("{dir}/{}", keys::STATE))?
                        .is_some()
                    {
                        present.push((dir, DomId(frontend), *class == VIF_CLASS));
                    }
                }
            }
        }
        // A device whose thread ended, written again by the toolstack
        // (removed and re-created between two looks: `state` is back at
        // Initialising), is a new device.
        devices.retain(|dir, d| {
            let again = d.thread.is_none()
                && store
                    .read_opt(Tx::NONE, &format!("{dir}/{}", keys::STATE))
                    .ok()
                    .flatten()
                    .is_some_and(|v| v.trim() == "1");
            if again {
                remove_error_node(store, dir);
            }
            !again
        });
        for (dir, frontend, vif) in &present {
            if devices.contains_key(dir) {
                continue;
            }
            tracing::info!("{dir}: new device");
            let stop = Arc::new(AtomicBool::new(false));
            let (d, st, vif) = (dir.clone(), stop.clone(), *vif);
            let thread = std::thread::Builder::new()
                .name(format!(
                    "{}-{}",
                    if vif { "vif" } else { "dev" },
                    dir.rsplit('/').take(2).collect::<Vec<_>>().join("-")
                ))
                .spawn_scoped(s, move || match vif {
                    true => self.vif_device(p, &d, &st),
                    false => self.device(p, &d, &st),
                })
                .context("starting a device thread")?;
            devices.insert(
                dir.clone(),
                Device {
                    frontend: *frontend,
                    stop,
                    thread: Some(thread),
                },
            );
        }
        let gone: Vec<String> = devices
            .keys()
            .filter(|k| !present.iter().any(|(d, _, _)| d == *k))
            .cloned()
            .collect();
        for dir in gone {
            let d = devices.get_mut(&dir).expect("listed");
            d.stop.store(true, Ordering::Relaxed);
            if d.thread.as_ref().is_some_and(|t| !t.is_finished()) {
                continue; // ends on its own: it sees the directory gone
            }
            if let Some(t) = d.thread.take() {
                let _ = t.join();
            }
            remove_error_node(store, &dir);
            devices.remove(&dir);
            tracing::info!("{dir}: removed");
        }
        // Threads that ended with their directory still there stay listed
        // (not served again) until the toolstack removes the directory.
        for d in devices.values_mut() {
            if d.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let _ = d.thread.take().map(|t| t.join());
            }
        }
        Ok(())
    }

    /// Serve one device until it ends; every failure stays on this device.
    fn device<P: Platform<Store = Client>>(&self, p: &P, dir: &str, stop: &AtomicBool) {
        let counters = Counters::default();
        let r = self.serve_device(p, dir, stop, &counters);
        match r {
            Ok(outcome) => tracing::info!("{dir}: {outcome:?}: {counters}"),
            Err(e) => {
                tracing::warn!("{dir}: {e}");
                refuse(p.store(), dir, &e.to_string());
            }
        }
    }

    /// Serve one vif until it ends; every failure stays on this device.
    fn vif_device<P: Platform<Store = Client>>(&self, p: &P, dir: &str, stop: &AtomicBool) {
        let counters = xenio_netback::Counters::default();
        let timeout = Duration::from_secs(self.args.close_timeout);
        match serve_vif(p, dir, &self.args.vif, timeout, &counters, stop) {
            Ok(outcome) => tracing::info!("{dir}: {outcome:?}: {}", counters.summary()),
            Err(e) => {
                tracing::warn!("{dir}: {e}");
                refuse(p.store(), dir, &e.to_string());
            }
        }
    }

    fn serve_device<P: Platform<Store = Client>>(
        &self,
        p: &P,
        dir: &str,
        stop: &AtomicBool,
        counters: &Counters,
    ) -> Result<Outcome> {
        let nodes = DeviceNodes::read(p.store(), dir)?;
        let a = self.args;
        let config = BackendConfig {
            discard: nodes.discard,
            cdrom: nodes.cdrom,
            removable: nodes.removable,
            inflight_dir: a.inflight_dir.clone(),
            close_on_shutdown: !a.keep_on_exit,
            close_timeout: Duration::from_secs(a.close_timeout),
            ..a.serve.backend_config()
        };
        open_storage(
            &nodes.params,
            &a.serve.open_options(nodes.readonly),
            ServeOn {
                platform: p,
                dir,
                config: &config,
                counters,
                stop,
            },
        )?
    }
}

/// The children of `path` (none if it does not exist).
fn list<S: Store>(store: &S, path: &str) -> Result<Vec<String>> {
    match store.directory(Tx::NONE, path) {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// What the toolstack asked for, from the device's backend directory.
#[derive(Debug, PartialEq, Eq)]
pub struct DeviceNodes {
    /// `params`, as written (plain path or `format:path`).
    pub params: String,
    /// `mode = r` (or a CD-ROM).
    pub readonly: bool,
    /// `discard-enable` (default on).
    pub discard: bool,
    /// `device-type = cdrom`.
    pub cdrom: bool,
    /// `removable = 1`.
    pub removable: bool,
}

impl DeviceNodes {
    fn read<S: Store>(store: &S, dir: &str) -> Result<DeviceNodes> {
        let get = |k: &str| -> Result<Option<String>> {
            Ok(store.read_opt(Tx::NONE, &format!("{dir}/{k}"))?)
        };
        DeviceNodes::parse(|k| get(k).ok().flatten())
    }

    /// Parse the nodes `get` returns (`None`: absent).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<DeviceNodes> {
        let bad =
            |k: &str, v: &str, want: &str| Error::Usage(format!("{k} = {v:?}: expected {want}"));
        let flag = |k: &str, default: bool| -> Result<bool> {
            match get(k).as_deref().map(str::trim) {
                None => Ok(default),
                Some("1") => Ok(true),
                Some("0") => Ok(false),
                Some(v) => Err(bad(k, v, "0 or 1")),
            }
        };
        let params = get(blkif::PARAMS)
            .ok_or_else(|| Error::Usage(format!("no {}: nothing to serve", blkif::PARAMS)))?;
        let cdrom = match get(blkif::DEVICE_TYPE).as_deref().map(str::trim) {
            None | Some("disk") => false,
            Some("cdrom") => true,
            Some(v) => return Err(bad(blkif::DEVICE_TYPE, v, "disk or cdrom")),
        };
        let readonly = match get(blkif::MODE).as_deref().map(str::trim) {
            Some("w") => cdrom,
            Some("r") => true,
            Some(v) => return Err(bad(blkif::MODE, v, "r or w")),
            None => return Err(Error::Usage(format!("no {}: r or w?", blkif::MODE))),
        };
        Ok(DeviceNodes {
            params,
            readonly,
            discard: flag("discard-enable", true)?,
            cdrom,
            removable: flag(blkif::REMOVABLE, false)?,
        })
    }
}

/// What is done with a device's storage once it is open: generic over the
/// storage type, so that every format [`open_storage`] knows is served by the
/// same code.
pub trait WithStorage {
    /// What it comes to.
    type Out;
    /// Use `storage`.
    fn with<S: Storage>(self, storage: &S) -> Self::Out;
}

/// Open the storage `params` names, as libxl writes it: a plain absolute path
/// (`backendtype=phy`: an image file or a block device) or `format:target`
/// (`backendtype=qdisk`: `aio:` and `raw:` are raw files, `qcow2:` an image,
/// and the target may be an `nbd://` URI or `rbd:pool/image`), and hand it to
/// `with`. Formats are told apart in one place, blkback's
/// [`StorageTarget::from_params`], the same dispatch `xenio blkback --disk`
/// uses.
///
/// # Errors
///
/// [`Error::Usage`] for a form or format that is not served (named, with what
/// to do instead), [`Error::Failed`] when the storage cannot be opened.
pub fn open_storage<W: WithStorage>(
    params: &str,
    options: &OpenOptions,
    with: W,
) -> Result<W::Out> {
    let params = params.trim();
    if params.is_empty() {
        return Err(Error::Usage(
            "params is empty (a CD-ROM drive without media is not supported)".into(),
        ));
    }
    let target = StorageTarget::from_params(params)
        .map_err(|e| Error::Usage(format!("params {params:?}: {e}")))?;
    if let StorageTarget::Raw(path) | StorageTarget::Qcow2(path) = &target {
        if !path.is_absolute() {
            return Err(Error::Usage(format!(
                "params {params:?}: the path is not absolute (expected an absolute path or \
                 format:path)"
            )));
        }
    }
    let storage = target
        .open(options)
        .with_context(|| format!("opening the {} storage", target.format()))?;
    Ok(with.with(&storage))
}

/// Serve the storage on the device's directory.
struct ServeOn<'a, P> {
    platform: &'a P,
    dir: &'a str,
    config: &'a BackendConfig,
    counters: &'a Counters,
    stop: &'a AtomicBool,
}

impl<P: Platform> WithStorage for ServeOn<'_, P> {
    type Out = Result<Outcome>;
    fn with<S: Storage>(self, storage: &S) -> Result<Outcome> {
        Ok(xenio_blkback::serve(
            self.platform,
            self.dir,
            storage,
            self.config,
            self.counters,
            self.stop,
        )?)
    }
}

/// Give up on a device: the reason in its error node (where Linux's
/// `xenbus_dev_fatal` and QEMU put it) and `Closing`, unless the toolstack
/// removed it meanwhile (then nothing is written).
fn refuse<S: Store>(store: &S, dir: &str, reason: &str) {
    if let Ok(ep) = Endpoint::backend(store, dir) {
        if let Err(e) = ep.fatal(libc_errno(reason), reason) {
            if !e.is_gone() {
                tracing::warn!("{dir}: reporting the error: {e}");
            }
        }
        return;
    }
    // No usable `frontend` node: write the same by hand.
    let r = store.transaction(16, |tx| {
        store.read(tx, &format!("{dir}/{}", keys::STATE))?;
        if let Some(node) = error_node(dir) {
            store.write(tx, &node, format!("22 {reason}").as_bytes())?;
        }
        store.write(
            tx,
            &format!("{dir}/{}", keys::STATE),
            XenbusState::Closing.to_string().as_bytes(),
        )
    });
    if let Err(e) = r {
        if !e.is_not_found() {
            tracing::warn!("{dir}: reporting the error: {e}");
        }
    }
}

/// EINVAL for nodes that make no sense, EIO for storage that fails.
fn libc_errno(reason: &str) -> i32 {
    if reason.starts_with("opening ") {
        5
    } else {
        22
    }
}

/// Remove the error node of a device that is gone, and the error
/// directories left empty up to `/local/domain/<id>/error`.
fn remove_error_node<S: Store>(store: &S, dir: &str) {
    let Some(node) = error_node(dir) else {
        return;
    };
    let mut path = node.trim_end_matches("/error").to_string();
    let _ = store.rm(Tx::NONE, &path);
    while let Some((parent, _)) = path.rsplit_once('/') {
        if !parent.contains("/error") {
            break;
        }
        match store.directory(Tx::NONE, parent) {
            Ok(children) if children.is_empty() => {
                let _ = store.rm(Tx::NONE, parent);
            }
            _ => break,
        }
        path = parent.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenio_hostio::disk::Direct;

    fn nodes(kv: &[(&str, &str)]) -> Result<DeviceNodes> {
        let m: HashMap<String, String> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DeviceNodes::parse(|k| m.get(k).cloned())
    }

    #[test]
    fn the_nodes_libxl_writes_are_honoured() {
        let n = nodes(&[
            ("params", "/tmp/x.img"),
            ("mode", "w"),
            ("device-type", "disk"),
            ("removable", "0"),
            ("discard-enable", "1"),
        ])
        .unwrap();
        assert_eq!(
            n,
            DeviceNodes {
                params: "/tmp/x.img".into(),
                readonly: false,
                discard: true,
                cdrom: false,
                removable: false
            }
        );
        let n = nodes(&[
            ("params", "aio:/tmp/x.iso"),
            ("mode", "w"),
            ("device-type", "cdrom"),
            ("removable", "1"),
            ("discard-enable", "0"),
        ])
        .unwrap();
        assert!(n.readonly && n.cdrom && n.removable && !n.discard);
        for bad in [
            vec![("mode", "w")],
            vec![("params", "/x"), ("mode", "rw")],
            vec![("params", "/x")],
            vec![("params", "/x"), ("mode", "r"), ("device-type", "floppy")],
            vec![("params", "/x"), ("mode", "r"), ("discard-enable", "yes")],
        ] {
            assert!(nodes(&bad).is_err(), "{bad:?} accepted");
        }
    }

    struct Size;
    impl WithStorage for Size {
        type Out = u64;
        fn with<S: Storage>(self, s: &S) -> u64 {
            s.info().sectors
        }
    }

    #[test]
    fn params_forms_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let io = OpenOptions {
            direct: Direct::Off,
            force_sync: true,
            ..OpenOptions::default()
        };
        let p = img.display().to_string();
        for form in [p.clone(), format!("aio:{p}"), format!("raw:{p}")] {
            assert_eq!(open_storage(&form, &io, Size).unwrap(), 2048, "{form}");
        }
        for (form, says) in [
            (format!("vhd:{p}"), "format=vhd"),
            (format!("vmdk:{p}"), "convert it with"),
            ("".to_string(), "empty"),
            ("a.img".to_string(), "absolute path"),
            ("raw:a.img".to_string(), "not absolute"),
        ] {
            let e = open_storage(&form, &io, Size).unwrap_err().to_string();
            assert!(e.contains(says), "{form}: {e}");
        }
        let e = open_storage("/nonexistent/x.img", &io, Size).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("opening the raw storage") && e.contains("/nonexistent/x.img"),
            "{e}"
        );
        let e = open_storage("qcow2:/nonexistent/x.qcow2", &io, Size).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.qcow2"), "{e}");
    }
}
