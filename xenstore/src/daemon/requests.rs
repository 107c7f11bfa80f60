//! [`StoreCore`]: the store itself, without sockets. Connections hand it whole
//! request messages; replies and watch events come out of each connection's
//! queue. The socket daemon ([`super::Daemon`]) and an in-process platform are
//! two users of it.

use super::path::{canonicalize, domain_path, is_child, parent};
use super::queue::{OutQueue, Popped};
use super::quotas::Quotas;
use super::tree::{Event, Node, O, R, Tree, Txn, View, W, Who, rights};
use crate::error::{Error, Result};
use crate::store::{Perm, PermAccess};
use crate::wire::{Message, XsError, join_strings, split_strings, type_name};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use xenio_xen_sys::DomId;
use xenio_xen_sys::xs_wire::{XENSTORE_PAYLOAD_MAX, XsdSockmsgType as T};

/// What the store tells its host about domains, so that the host can give a
/// newly introduced domain a way in (the daemon creates its socket) and take it
/// away on release. Called with the store locked: do not call back into it.
pub trait DomainHooks: Send + Sync {
    /// `domid` is being introduced; an error refuses the introduction (`EIO`).
    fn introduce(&self, domid: DomId) -> std::io::Result<()>;
    /// `domid` was released: its connections are already closed.
    fn release(&self, domid: DomId);
}

struct WatchReg {
    /// Absolute path or `@special`.
    path: String,
    token: Vec<u8>,
    /// Bytes of `path` not sent back in events (relative watches).
    prefix_len: usize,
}

struct ConnState {
    domid: DomId,
    watches: Vec<WatchReg>,
    txs: BTreeMap<u32, Txn>,
    next_tx: u32,
    queue: Arc<OutQueue>,
}

#[derive(Clone, Debug, Default)]
struct Domain {
    mfn: String,
    port: String,
    target: Option<DomId>,
}

struct State {
    tree: Tree,
    conns: BTreeMap<u64, ConnState>,
    domains: BTreeMap<DomId, Domain>,
    next_conn: u64,
    hooks: Option<Arc<dyn DomainHooks>>,
}

/// The store: the node tree, connections with their watches and transactions,
/// introduced domains, quotas. Thread-safe; one lock around everything (every
/// operation is short and never waits for a client).
pub struct StoreCore {
    state: Mutex<State>,
    quotas: Quotas,
}

/// One client connection to a [`StoreCore`], acting as a domain. Dropping it
/// disconnects (its watches and transactions go away).
pub struct Connection {
    core: Arc<StoreCore>,
    id: u64,
    domid: DomId,
    queue: Arc<OutQueue>,
}

/// What a request produced, before it is queued.
struct Outcome {
    reply: std::result::Result<Vec<u8>, XsError>,
    events: Vec<Event>,
    /// The initial event of a new watch, queued after the reply.
    initial: Option<Message>,
}

impl Outcome {
    fn reply(r: std::result::Result<Vec<u8>, XsError>) -> Self {
        Outcome {
            reply: r,
            events: vec![],
            initial: None,
        }
    }
}

fn ok() -> std::result::Result<Vec<u8>, XsError> {
    Ok(b"OK\0".to_vec())
}

/// The payload is exactly one string: non-empty with its only NUL at the end
/// (xenstored's `onearg`).
fn onearg(payload: &[u8]) -> Option<&[u8]> {
    match payload.iter().position(|&b| b == 0) {
        Some(i) if i + 1 == payload.len() => Some(&payload[..i]),
        _ => None,
    }
}

fn parse_domid(s: &[u8]) -> std::result::Result<DomId, XsError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .map(DomId)
        .ok_or(XsError::EINVAL)
}

fn parse_perm(s: &[u8]) -> std::result::Result<Perm, XsError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse::<Perm>().ok())
        .ok_or(XsError::EINVAL)
}

/// Turns a path a client sent into an absolute one (see [`canonicalize`]).
type Canonicalize<'a> = &'a dyn Fn(&[u8], bool) -> std::result::Result<String, XsError>;

fn perms_bytes(perms: &[Perm]) -> Vec<u8> {
    join_strings(&perms.iter().map(|p| p.to_string()).collect::<Vec<_>>())
}

fn watch_event(path: &[u8], token: &[u8]) -> Option<Message> {
    if path.len() + token.len() + 2 > XENSTORE_PAYLOAD_MAX {
        return None;
    }
    Some(Message::new(
        T::WatchEvent,
        0,
        0,
        join_strings(&[path, token]),
    ))
}

impl State {
    fn who(&self, domid: DomId) -> Who {
        Who {
            domid,
            privileged: domid == DomId(0),
            target: self.domains.get(&domid).and_then(|d| d.target),
        }
    }

    /// Send `ev` to every watch it matches on a connection that may see it.
    fn dispatch(&self, ev: &Event) {
        for c in self.conns.values() {
            let who = self.who(c.domid);
            if !ev.perm_sets.iter().any(|p| rights(p, &who) & R != 0) {
                continue;
            }
            for w in &c.watches {
                let hit = if ev.exact {
                    ev.path == w.path
                } else {
                    is_child(&ev.path, &w.path)
                };
                if !hit {
                    continue;
                }
                let shown = ev.path.as_bytes().get(w.prefix_len..).unwrap_or_default();
                if let Some(m) = watch_event(shown, &w.token) {
                    c.queue.push_event(m);
                }
            }
        }
    }

    fn fire_special(&self, name: &str) {
        let sets = [name, "/"]
            .iter()
            .filter_map(|p| self.tree.nodes.get(*p).map(|n| n.perms.clone()))
            .collect();
        self.dispatch(&Event {
            path: name.to_string(),
            exact: true,
            perm_sets: sets,
        });
    }

    /// Run `f` on the live tree as `who` and fire its events if it succeeds.
    fn global<X>(
        &mut self,
        who: Who,
        quotas: &Quotas,
        f: impl FnOnce(&mut View<'_>) -> std::result::Result<X, XsError>,
    ) -> std::result::Result<X, XsError> {
        let mut view = View {
            tree: &mut self.tree,
            tx: None,
            who,
            quotas,
            events: vec![],
        };
        let r = f(&mut view)?;
        let events = std::mem::take(&mut view.events);
        for e in &events {
            self.dispatch(e);
        }
        Ok(r)
    }

    fn introduce(
        &mut self,
        quotas: &Quotas,
        domid: DomId,
        mfn: &str,
        port: &str,
    ) -> std::result::Result<bool, XsError> {
        if domid == DomId(0) || !domid.is_real() {
            return Err(XsError::EINVAL);
        }
        if let Some(d) = self.domains.get_mut(&domid) {
            d.mfn = mfn.to_string();
            d.port = port.to_string();
            return Ok(false);
        }
        if let Some(h) = &self.hooks {
            if let Err(e) = h.introduce(domid) {
                tracing::error!(%domid, "introducing domain: {e}");
                return Err(XsError::EIO);
            }
        }
        self.domains.insert(
            domid,
            Domain {
                mfn: mfn.to_string(),
                port: port.to_string(),
                target: None,
            },
        );
        // What a toolstack does: the domain's home, owned by the domain.
        let home = domain_path(domid.0.into());
        let dom0 = self.who(DomId(0));
        let r = self.global(dom0, quotas, |v| {
            if v.get(&home)?.is_none() {
                let perms = vec![Perm {
                    domid,
                    access: PermAccess::None,
                }];
                v.create(&home, vec![], Some(perms))?;
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!(%domid, "creating {home}: {e}");
        }
        self.fire_special("@introduceDomain");
        tracing::info!(%domid, "domain introduced");
        Ok(true)
    }

    fn release(&mut self, quotas: &Quotas, domid: DomId) -> std::result::Result<(), XsError> {
        if domid == DomId(0) || !domid.is_real() {
            return Err(XsError::EINVAL);
        }
        if !self.domains.contains_key(&domid) {
            return Err(XsError::ENOENT);
        }
        // Its connections go first, so they hear nothing of what follows.
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.domid == domid)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(c) = self.conns.remove(&id) {
                c.queue.close();
            }
        }
        if let Some(h) = &self.hooks {
            h.release(domid);
        }
        self.domains.remove(&domid);
        for d in self.domains.values_mut() {
            if d.target == Some(domid) {
                d.target = None;
            }
        }
        // Nodes the domain owned go, as xenstored deletes a dead domain's nodes.
        let dom0 = self.who(DomId(0));
        let r = self.global(dom0, quotas, |v| {
            let mut stack = vec!["/".to_string()];
            while let Some(p) = stack.pop() {
                let Some(n) = v.get(&p)? else { continue };
                if p != "/" && n.owner() == domid {
                    v.remove_tree(&p)?;
                    continue;
                }
                for k in n.children.iter().rev() {
                    stack.push(super::path::child(&p, k));
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!(%domid, "removing the nodes of a released domain: {e}");
        }
        // No permission outlives its domain (a new domain with the same id must
        // not inherit them; xenstored's domain_adjust_node_perms).
        // The nodes change (transactions that saw them conflict), silently.
        let mut reowned = 0;
        let Tree {
            nodes, generation, ..
        } = &mut self.tree;
        for n in nodes.values_mut() {
            if !n.perms.iter().any(|p| p.domid == domid) {
                continue;
            }
            if let Some((first, rest)) = n.perms.split_first() {
                let mut first = *first;
                if first.domid == domid {
                    first.domid = DomId(0);
                    reowned += 1;
                }
                let rest = rest.iter().filter(|p| p.domid != domid).copied();
                n.perms = std::iter::once(first).chain(rest).collect();
                *generation += 1;
                n.generation = *generation;
            }
        }
        for _ in 0..reowned {
            self.tree.account(Some(domid), Some(DomId(0)));
        }
        self.tree.owned.remove(&domid);
        self.fire_special("@releaseDomain");
        tracing::info!(%domid, "domain released");
        Ok(())
    }

    /// Process one request of connection `id`.
    fn request(&mut self, quotas: &Quotas, id: u64, msg: &Message) -> Outcome {
        let Some(conn) = self.conns.get(&id) else {
            return Outcome::reply(Err(XsError::EINVAL));
        };
        let domid = conn.domid;
        let who = self.who(domid);
        let Some(kind) = msg.kind() else {
            return Outcome::reply(Err(XsError::ENOSYS));
        };
        let privileged_only = matches!(
            kind,
            T::Control
                | T::Introduce
                | T::Release
                | T::IsDomainIntroduced
                | T::Resume
                | T::SetTarget
        );
        match kind {
            T::WatchEvent | T::Error => return Outcome::reply(Err(XsError::ENOSYS)),
            _ if privileged_only && !who.privileged => {
                return Outcome::reply(Err(XsError::EACCES));
            }
            _ => {}
        }
        // The transaction the request names (WATCH and UNWATCH ignore it).
        let uses_tx = !matches!(kind, T::Watch | T::Unwatch);
        if uses_tx && msg.tx_id != 0 && !conn.txs.contains_key(&msg.tx_id) {
            return Outcome::reply(Err(XsError::ENOENT));
        }
        let tx = if uses_tx && msg.tx_id != 0 {
            Some(msg.tx_id)
        } else {
            None
        };
        let rel_max = (!who.privileged).then_some(quotas.path_max);
        let path = |raw: &[u8], special: bool| canonicalize(raw, domid, special, rel_max);
        let p = &msg.payload;

        match kind {
            T::Read
            | T::Directory
            | T::GetPerms
            | T::Mkdir
            | T::Rm
            | T::Write
            | T::SetPerms
            | T::DirectoryPart => {
                let r = self.node_op(quotas, id, who, tx, kind, p, &path);
                match r {
                    Ok((payload, events)) => Outcome {
                        reply: Ok(payload),
                        events,
                        initial: None,
                    },
                    Err(e) => Outcome::reply(Err(e)),
                }
            }
            T::Watch | T::Unwatch => {
                let s = split_strings(p);
                if s.len() != 2 {
                    return Outcome::reply(Err(XsError::EINVAL));
                }
                let (raw, token) = (s[0], s[1]);
                let abs = match path(raw, true) {
                    Ok(a) => a,
                    Err(e) => return Outcome::reply(Err(e)),
                };
                let Some(conn) = self.conns.get_mut(&id) else {
                    return Outcome::reply(Err(XsError::EINVAL));
                };
                let existing = conn
                    .watches
                    .iter()
                    .position(|w| w.path == abs && w.token == token);
                if kind == T::Unwatch {
                    return Outcome::reply(match existing {
                        Some(i) => {
                            conn.watches.remove(i);
                            ok()
                        }
                        None => Err(XsError::ENOENT),
                    });
                }
                if existing.is_some() {
                    return Outcome::reply(Err(XsError::EEXIST));
                }
                if !who.privileged && conn.watches.len() >= quotas.watches {
                    return Outcome::reply(Err(XsError::E2BIG));
                }
                let relative = !matches!(raw.first(), Some(b'/') | Some(b'@'));
                let prefix_len = if relative {
                    domain_path(domid.0.into()).len() + 1
                } else {
                    0
                };
                conn.watches.push(WatchReg {
                    path: abs,
                    token: token.to_vec(),
                    prefix_len,
                });
                Outcome {
                    reply: ok(),
                    events: vec![],
                    initial: watch_event(raw, token),
                }
            }
            T::ResetWatches => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.watches.clear();
                    c.txs.clear();
                }
                Outcome::reply(ok())
            }
            T::TransactionStart => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return Outcome::reply(Err(XsError::EINVAL));
                };
                if tx.is_some() {
                    // No nested transactions.
                    return Outcome::reply(Err(XsError::EBUSY));
                }
                if !who.privileged && c.txs.len() >= quotas.transactions {
                    return Outcome::reply(Err(XsError::ENOSPC));
                }
                let mut t = c.next_tx;
                while t == 0 || c.txs.contains_key(&t) {
                    t = t.wrapping_add(1);
                }
                c.next_tx = t.wrapping_add(1);
                c.txs.insert(t, Txn::default());
                Outcome::reply(Ok(join_strings(&[t.to_string()])))
            }
            T::TransactionEnd => {
                let commit = match onearg(p) {
                    Some(b"T") => true,
                    Some(b"F") => false,
                    _ => return Outcome::reply(Err(XsError::EINVAL)),
                };
                let Some(t) = tx else {
                    return Outcome::reply(Err(XsError::ENOENT));
                };
                let Some(txn) = self.conns.get_mut(&id).and_then(|c| c.txs.remove(&t)) else {
                    return Outcome::reply(Err(XsError::ENOENT));
                };
                if !commit {
                    return Outcome::reply(ok());
                }
                match self.commit(quotas, who, txn) {
                    Ok(events) => Outcome {
                        reply: ok(),
                        events,
                        initial: None,
                    },
                    Err(e) => Outcome::reply(Err(e)),
                }
            }
            T::GetDomainPath => Outcome::reply(
                onearg(p)
                    .ok_or(XsError::EINVAL)
                    .and_then(parse_domid)
                    .map(|d| join_strings(&[domain_path(d.0.into())])),
            ),
            T::Introduce => {
                let s = split_strings(p);
                if s.len() < 3 {
                    return Outcome::reply(Err(XsError::EINVAL));
                }
                let d = match parse_domid(s[0]) {
                    Ok(d) => d,
                    Err(e) => return Outcome::reply(Err(e)),
                };
                let mfn = String::from_utf8_lossy(s[1]).into_owned();
                let port = String::from_utf8_lossy(s[2]).into_owned();
                Outcome::reply(self.introduce(quotas, d, &mfn, &port).and_then(|_| ok()))
            }
            T::Release | T::Resume => {
                let d = match onearg(p).ok_or(XsError::EINVAL).and_then(parse_domid) {
                    Ok(d) => d,
                    Err(e) => return Outcome::reply(Err(e)),
                };
                if kind == T::Release {
                    return Outcome::reply(self.release(quotas, d).and_then(|_| ok()));
                }
                Outcome::reply(if d == DomId(0) {
                    Err(XsError::EINVAL)
                } else if self.domains.contains_key(&d) {
                    ok()
                } else {
                    Err(XsError::ENOENT)
                })
            }
            T::IsDomainIntroduced => {
                let d = match onearg(p).ok_or(XsError::EINVAL).and_then(parse_domid) {
                    Ok(d) => d,
                    Err(e) => return Outcome::reply(Err(e)),
                };
                let yes = d == DomId(0) || d == DomId::SELF || self.domains.contains_key(&d);
                Outcome::reply(Ok(if yes {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                }))
            }
            T::SetTarget => {
                let s = split_strings(p);
                if s.len() < 2 {
                    return Outcome::reply(Err(XsError::EINVAL));
                }
                let (d, t) = match (parse_domid(s[0]), parse_domid(s[1])) {
                    (Ok(d), Ok(t)) => (d, t),
                    _ => return Outcome::reply(Err(XsError::EINVAL)),
                };
                if t != DomId(0) && !self.domains.contains_key(&t) {
                    return Outcome::reply(Err(XsError::ENOENT));
                }
                Outcome::reply(match self.domains.get_mut(&d) {
                    Some(dom) => {
                        dom.target = Some(t);
                        ok()
                    }
                    None => Err(XsError::ENOENT),
                })
            }
            T::Control => Outcome::reply(self.control(quotas, p)),
            T::WatchEvent | T::Error => Outcome::reply(Err(XsError::ENOSYS)),
        }
    }

    /// The operations on nodes, in or out of a transaction.
    #[allow(clippy::too_many_arguments)]
    fn node_op(
        &mut self,
        quotas: &Quotas,
        id: u64,
        who: Who,
        tx: Option<u32>,
        kind: T,
        p: &[u8],
        path: Canonicalize<'_>,
    ) -> std::result::Result<(Vec<u8>, Vec<Event>), XsError> {
        // Parse first: nothing is touched for a malformed request.
        enum Op {
            Read(String),
            Directory(String),
            DirectoryPart(String, usize),
            GetPerms(String),
            Mkdir(String),
            Rm(String),
            Write(String, Vec<u8>),
            SetPerms(String, Vec<Perm>),
        }
        let one = |special: bool| -> std::result::Result<String, XsError> {
            path(onearg(p).ok_or(XsError::EINVAL)?, special)
        };
        let op = match kind {
            T::Read => Op::Read(one(false)?),
            T::Directory => Op::Directory(one(false)?),
            T::GetPerms => Op::GetPerms(one(true)?),
            T::Mkdir => Op::Mkdir(one(false)?),
            T::Rm => Op::Rm(one(false)?),
            T::DirectoryPart => {
                let s = split_strings(p);
                if s.len() != 2 {
                    return Err(XsError::EINVAL);
                }
                // atoi: leading digits, else 0.
                let digits: String = s[1]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .map(|&c| c as char)
                    .collect();
                Op::DirectoryPart(path(s[0], false)?, digits.parse().unwrap_or(0))
            }
            T::Write => {
                let Some(nul) = p.iter().position(|&b| b == 0) else {
                    return Err(XsError::EINVAL);
                };
                Op::Write(path(&p[..nul], false)?, p[nul + 1..].to_vec())
            }
            T::SetPerms => {
                let s = split_strings(p);
                if s.len() < 2 {
                    return Err(XsError::EINVAL);
                }
                if !who.privileged && s.len() - 1 > quotas.node_permissions {
                    return Err(XsError::ENOSPC);
                }
                let perms = s[1..]
                    .iter()
                    .map(|x| parse_perm(x))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Op::SetPerms(path(s[0], true)?, perms)
            }
            _ => return Err(XsError::EINVAL),
        };

        let State { tree, conns, .. } = self;
        let txn = match tx {
            Some(t) => Some(
                conns
                    .get_mut(&id)
                    .and_then(|c| c.txs.get_mut(&t))
                    .ok_or(XsError::ENOENT)?,
            ),
            None => None,
        };
        let mut v = View {
            tree,
            tx: txn,
            who,
            quotas,
            events: vec![],
        };
        let payload = match op {
            Op::Read(p) => v.get_checked(&p, R)?.value,
            Op::Directory(p) => v.get_checked(&p, R)?.children_bytes(),
            Op::DirectoryPart(p, off) => {
                let n = v.get_checked(&p, R)?;
                directory_part(&n, off)
            }
            Op::GetPerms(p) => perms_bytes(&v.get_checked(&p, R)?.perms),
            Op::Mkdir(p) => match v.get_checked(&p, W) {
                Ok(_) => b"OK\0".to_vec(),
                Err(XsError::ENOENT) => {
                    v.create(&p, vec![], None)?;
                    b"OK\0".to_vec()
                }
                Err(e) => return Err(e),
            },
            Op::Rm(p) => match v.get_checked(&p, W) {
                Ok(_) if p == "/" => return Err(XsError::EINVAL),
                Ok(_) => {
                    v.remove_tree(&p)?;
                    b"OK\0".to_vec()
                }
                // Fine if the parent exists (xenstored's do_rm).
                Err(XsError::ENOENT) => match v.get(parent(&p))? {
                    Some(_) => b"OK\0".to_vec(),
                    None => return Err(XsError::ENOENT),
                },
                Err(e) => return Err(e),
            },
            Op::Write(p, value) => {
                v.write(&p, value)?;
                b"OK\0".to_vec()
            }
            Op::SetPerms(p, perms) => {
                let mut n = v.get_checked(&p, W | O)?;
                if !who.privileged && perms.first().map(|x| x.domid) != Some(n.owner()) {
                    return Err(XsError::EPERM);
                }
                let old = std::mem::replace(&mut n.perms, perms);
                if !who.privileged && n.size() > quotas.node_size {
                    return Err(XsError::ENOSPC);
                }
                let new = n.perms.clone();
                v.put(&p, n)?;
                let pp = v.get(parent(&p))?.map(|n| n.perms).unwrap_or_default();
                v.fire(&p, false, vec![new, pp, old]);
                b"OK\0".to_vec()
            }
        };
        Ok((payload, std::mem::take(&mut v.events)))
    }

    /// Commit: every node the transaction touched must be as it was when first
    /// touched (xenstored compares generation counts), else `EAGAIN`.
    fn commit(
        &mut self,
        quotas: &Quotas,
        who: Who,
        txn: Txn,
    ) -> std::result::Result<Vec<Event>, XsError> {
        for (path, a) in &txn.accessed {
            let live = self.tree.nodes.get(path).map(|n| n.generation);
            if live != a.orig_generation {
                return Err(XsError::EAGAIN);
            }
        }
        if !who.privileged {
            let d = txn.delta.get(&who.domid).copied().unwrap_or(0);
            if d > 0 && self.tree.owned_by(who.domid) as i64 + d > quotas.nodes as i64 {
                return Err(XsError::ENOSPC);
            }
        }
        let mut txn = txn;
        for path in &txn.order {
            let Some(a) = txn.accessed.get_mut(path) else {
                continue;
            };
            if !a.modified {
                continue;
            }
            let old = self.tree.nodes.get(path).map(Node::owner);
            match a.node.take() {
                Some(mut n) => {
                    self.tree.generation += 1;
                    n.generation = self.tree.generation;
                    self.tree.account(old, Some(n.owner()));
                    self.tree.nodes.insert(path.clone(), n);
                }
                None => {
                    if self.tree.nodes.remove(path).is_some() {
                        self.tree.account(old, None);
                    }
                }
            }
        }
        let mut events = vec![];
        for path in &txn.order {
            let Some(a) = txn.accessed.get(path) else {
                continue;
            };
            let Some(exact) = a.fire else { continue };
            let mut sets = vec![];
            if let Some(p) = &a.orig_perms {
                sets.push(p.clone());
            }
            if let Some(n) = self.tree.nodes.get(path) {
                sets.push(n.perms.clone());
                if let Some(pn) = self.tree.nodes.get(parent(path)) {
                    sets.push(pn.perms.clone());
                }
            }
            events.push(Event {
                path: path.clone(),
                exact,
                perm_sets: sets,
            });
        }
        Ok(events)
    }

    fn control(&mut self, quotas: &Quotas, p: &[u8]) -> std::result::Result<Vec<u8>, XsError> {
        let s = split_strings(p);
        let Some(cmd) = s.first() else {
            return Err(XsError::EINVAL);
        };
        match *cmd {
            b"help" => Ok(join_strings(&["check\nhelp\nlog\nprint\nquota\n"])),
            b"check" | b"log" => ok(),
            b"print" => {
                let text = s
                    .get(1)
                    .map(|t| String::from_utf8_lossy(t))
                    .unwrap_or_default();
                tracing::info!("control print: {text}");
                ok()
            }
            b"quota" => {
                let mut text = quotas.describe();
                for (d, n) in &self.tree.owned {
                    text.push_str(&format!("domain {d}: {n} nodes\n"));
                }
                Ok(join_strings(&[text]))
            }
            _ => Err(XsError::EINVAL),
        }
    }
}

/// DIRECTORY_PART's reply: the node's generation, then the children names from
/// byte `off` of the full list, as many whole names as fit; an empty string
/// ends the list.
fn directory_part(n: &Node, off: usize) -> Vec<u8> {
    let all = n.children_bytes();
    let mut out = join_strings(&[n.generation.to_string()]);
    if off >= all.len() {
        out.push(0);
        return out;
    }
    let max = XENSTORE_PAYLOAD_MAX - out.len() - 1;
    let mut len = 0;
    for name in split_strings(&all[off..]) {
        if len + name.len() >= max {
            break;
        }
        len += name.len() + 1;
    }
    out.extend_from_slice(&all[off..off + len]);
    if off + len == all.len() {
        out.push(0);
    }
    out
}

impl StoreCore {
    /// An empty store (xenstored's initial tree) with these quotas.
    pub fn new(quotas: Quotas) -> Arc<Self> {
        Arc::new(StoreCore {
            state: Mutex::new(State {
                tree: Tree::new(),
                conns: BTreeMap::new(),
                domains: BTreeMap::new(),
                next_conn: 1,
                hooks: None,
            }),
            quotas,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation validates before it mutates, so a panic mid-way (a
        // bug) leaves a consistent tree; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Install the host's domain hooks.
    pub fn set_hooks(&self, hooks: Arc<dyn DomainHooks>) {
        self.lock().hooks = Some(hooks);
    }

    /// Connect as `domid`: dom0 always, another domain once introduced.
    pub fn connect(self: &Arc<Self>, domid: DomId) -> Result<Connection> {
        let mut s = self.lock();
        if domid != DomId(0) && !s.domains.contains_key(&domid) {
            return Err(Error::Store {
                op: "CONNECT",
                path: domain_path(domid.0.into()),
                errno: XsError::ENOENT,
            });
        }
        let id = s.next_conn;
        s.next_conn += 1;
        let queue = Arc::new(OutQueue::new(
            self.quotas.queued_events,
            self.quotas.outstanding,
        ));
        s.conns.insert(
            id,
            ConnState {
                domid,
                watches: vec![],
                txs: BTreeMap::new(),
                next_tx: 1,
                queue: queue.clone(),
            },
        );
        Ok(Connection {
            core: self.clone(),
            id,
            domid,
            queue,
        })
    }

    /// Introduce a domain (what XS_INTRODUCE does): it may connect, its home
    /// `/local/domain/<domid>` exists and is its own, `@introduceDomain` fires.
    /// `Ok(false)` if it was already introduced.
    pub fn introduce(&self, domid: DomId, mfn: &str, port: &str) -> Result<bool> {
        self.lock()
            .introduce(&self.quotas, domid, mfn, port)
            .map_err(|e| store_err("INTRODUCE", domid, e))
    }

    /// Release a domain (XS_RELEASE): its connections close, its nodes go,
    /// `@releaseDomain` fires.
    pub fn release(&self, domid: DomId) -> Result<()> {
        self.lock()
            .release(&self.quotas, domid)
            .map_err(|e| store_err("RELEASE", domid, e))
    }

    /// Whether `domid` is introduced (dom0 always is).
    pub fn is_introduced(&self, domid: DomId) -> bool {
        domid == DomId(0) || self.lock().domains.contains_key(&domid)
    }

    /// The introduced domains.
    pub fn domains(&self) -> Vec<DomId> {
        self.lock().domains.keys().copied().collect()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Close every connection (daemon shutdown).
    pub fn close_all(&self) {
        let mut s = self.lock();
        for (_, c) in std::mem::take(&mut s.conns) {
            c.queue.close();
        }
    }

    /// Nodes owned by `domid` (what the `nodes` quota counts).
    pub fn nodes_owned(&self, domid: DomId) -> usize {
        self.lock().tree.owned_by(domid)
    }

    /// Total nodes in the store (including the special `@` nodes).
    pub fn node_count(&self) -> usize {
        self.lock().tree.nodes.len()
    }
}

fn store_err(op: &'static str, domid: DomId, e: XsError) -> Error {
    Error::Store {
        op,
        path: domain_path(domid.0.into()),
        errno: e,
    }
}

impl Connection {
    /// The domain this connection acts as.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Process one request. Its reply, and watch events for this and other
    /// connections, go to the connections' queues. Waits first while this
    /// connection has `outstanding` unread replies, so take them with
    /// [`Connection::next_output`] (from another thread, or after each request).
    /// Returns `false` if the connection is closed.
    pub fn handle(&self, msg: &Message) -> bool {
        if !self.queue.wait_for_room() {
            return false;
        }
        let mut s = self.core.lock();
        if !s.conns.contains_key(&self.id) {
            self.queue.close();
            return false;
        }
        let out = s.request(&self.core.quotas, self.id, msg);
        for e in &out.events {
            s.dispatch(e);
        }
        let reply = match out.reply {
            Ok(payload) if payload.len() > XENSTORE_PAYLOAD_MAX => error_reply(msg, XsError::E2BIG),
            Ok(payload) => Message {
                type_: msg.type_,
                req_id: msg.req_id,
                tx_id: msg.tx_id,
                payload,
            },
            Err(e) => {
                tracing::debug!(
                    domid = %self.domid,
                    op = type_name(msg.type_),
                    "request failed: {e}"
                );
                error_reply(msg, e)
            }
        };
        // RELEASE of this connection's own domain closed the queue: fine.
        self.queue.push_reply(reply);
        if let Some(ev) = out.initial {
            self.queue.push_event(ev);
        }
        !self.queue.is_closed()
    }

    /// The next message to send to the client: a reply or a watch event.
    pub fn next_output(&self, timeout: Option<Duration>) -> Popped {
        self.queue.pop(timeout)
    }

    /// Disconnect: watches and transactions go away, the queue closes.
    pub fn close(&self) {
        self.queue.close();
        let mut s = self.core.lock();
        s.conns.remove(&self.id);
    }

    /// Whether the connection was closed (by [`Connection::close`], a release of
    /// its domain or a daemon shutdown).
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Watch events dropped because the client did not read them.
    pub fn dropped_events(&self) -> u64 {
        self.queue.dropped_events()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

fn error_reply(msg: &Message, e: XsError) -> Message {
    Message {
        type_: T::Error as u32,
        req_id: msg.req_id,
        tx_id: msg.tx_id,
        payload: join_strings(&[e.name()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send a request and return its reply (events in between are skipped).
    fn ask(c: &Connection, ty: T, tx: u32, payload: &[u8]) -> std::result::Result<Vec<u8>, String> {
        assert!(c.handle(&Message::new(ty, 9, tx, payload.to_vec())));
        loop {
            match c.next_output(Some(Duration::ZERO)) {
                Popped::Message(m) if m.type_ == T::WatchEvent as u32 => continue,
                Popped::Message(m) if m.type_ == T::Error as u32 => {
                    return Err(String::from_utf8_lossy(&m.payload)
                        .trim_end_matches('\0')
                        .into());
                }
                Popped::Message(m) => {
                    assert_eq!((m.type_, m.req_id, m.tx_id), (ty as u32, 9, tx));
                    return Ok(m.payload);
                }
                other => panic!("no reply: {other:?}"),
            }
        }
    }

    #[test]
    fn the_store_works_without_sockets() {
        let core = StoreCore::new(Quotas::default());
        assert!(core.connect(DomId(4)).is_err(), "not introduced");
        let a = core.connect(DomId(0)).unwrap();
        let b = core.connect(DomId(0)).unwrap();
        assert_eq!(ask(&a, T::Write, 0, b"/x\0one"), Ok(b"OK\0".to_vec()));
        assert_eq!(ask(&b, T::Read, 0, b"/x\0"), Ok(b"one".to_vec()));

        // A transaction conflicts when what it read changed.
        let id = ask(&a, T::TransactionStart, 0, b"\0").unwrap();
        let tx: u32 = std::str::from_utf8(&id)
            .unwrap()
            .trim_end_matches('\0')
            .parse()
            .unwrap();
        assert_eq!(ask(&a, T::Read, tx, b"/x\0"), Ok(b"one".to_vec()));
        ask(&b, T::Write, 0, b"/x\0two").unwrap();
        ask(&a, T::Write, tx, b"/y\0").unwrap();
        assert_eq!(ask(&a, T::TransactionEnd, tx, b"T\0"), Err("EAGAIN".into()));
        assert_eq!(ask(&a, T::Read, 0, b"/y\0"), Err("ENOENT".into()));
        assert_eq!(
            ask(&a, T::TransactionStart, tx, b"\0"),
            Err("ENOENT".into())
        );

        assert_eq!(ask(&a, T::Error, 0, b"\0"), Err("ENOSYS".into()));

        // Introduce and release through the API; the domain's connection closes.
        assert!(core.introduce(DomId(4), "0", "0").unwrap());
        assert!(!core.introduce(DomId(4), "0", "0").unwrap());
        let d = core.connect(DomId(4)).unwrap();
        assert_eq!(ask(&d, T::Write, 0, b"k\0v"), Ok(b"OK\0".to_vec()));
        assert_eq!(core.nodes_owned(DomId(4)), 2);
        core.release(DomId(4)).unwrap();
        assert!(d.is_closed());
        assert!(!d.handle(&Message::new(T::Read, 1, 0, b"k\0".to_vec())));
        assert_eq!(core.nodes_owned(DomId(4)), 0);
        assert_eq!(
            ask(&a, T::Read, 0, b"/local/domain/4/k\0"),
            Err("ENOENT".into())
        );
    }

    #[test]
    fn directory_part_pages_whole_names() {
        let n = Node {
            value: vec![],
            perms: vec![],
            children: (0..500).map(|i| format!("name{i:05}")).collect(),
            generation: 42,
        };
        let mut names = vec![];
        let mut off = 0;
        loop {
            let r = directory_part(&n, off);
            assert!(r.len() <= XENSTORE_PAYLOAD_MAX);
            let parts = split_strings(&r);
            assert_eq!(parts[0], b"42");
            let mut end = false;
            for p in &parts[1..] {
                if p.is_empty() {
                    end = true;
                    break;
                }
                off += p.len() + 1;
                names.push(String::from_utf8(p.to_vec()).unwrap());
            }
            if end {
                break;
            }
        }
        assert_eq!(names, n.children);
        assert_eq!(directory_part(&n, 1 << 20), b"42\0\0");
    }
}
