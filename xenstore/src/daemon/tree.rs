//! The node database, permissions, and views of it (the live tree, or a
//! transaction's overlay on it) that the operations work through.

use super::path::{basename, child, parent};
use super::quotas::Quotas;
use crate::store::{Perm, PermAccess};
use crate::wire::XsError;
use std::collections::HashMap;
use xenio_xen_sys::DomId;

/// Read access.
pub const R: u8 = 1;
/// Write access.
pub const W: u8 = 2;
/// Owner rights (changing permissions).
pub const O: u8 = 4;

/// One node: value, permissions (the first entry is the owner and the default
/// for unlisted domains), children in creation order, generation count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub value: Vec<u8>,
    pub perms: Vec<Perm>,
    pub children: Vec<String>,
    pub generation: u64,
}

impl Node {
    pub fn owner(&self) -> DomId {
        self.perms.first().map_or(DomId(0), |p| p.domid)
    }

    /// Size as xenstored accounts it against the `node-size` quota: its
    /// `node_hdr` (16 bytes), 8 bytes per permission, the value, and the children
    /// names with their NULs.
    pub fn size(&self) -> usize {
        16 + 8 * self.perms.len()
            + self.value.len()
            + self.children.iter().map(|c| c.len() + 1).sum::<usize>()
    }

    /// The children as the DIRECTORY reply carries them.
    pub fn children_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.children {
            out.extend_from_slice(c.as_bytes());
            out.push(0);
        }
        out
    }
}

/// Who is asking: the connection's domain, whether it is privileged (dom0), and
/// the domain it was made the target of with SET_TARGET.
#[derive(Clone, Copy, Debug)]
pub struct Who {
    pub domid: DomId,
    pub privileged: bool,
    pub target: Option<DomId>,
}

fn access_bits(a: PermAccess) -> u8 {
    match a {
        PermAccess::None => 0,
        PermAccess::Read => R,
        PermAccess::Write => W,
        PermAccess::Both => R | W,
    }
}

/// What `who` may do with a node carrying `perms` (xenstored's `perm_for_conn`):
/// privileged domains and the owner get everything; a listed domain gets its
/// entry; everyone else gets the first entry's access.
pub fn rights(perms: &[Perm], who: &Who) -> u8 {
    let Some(first) = perms.first() else {
        return if who.privileged { R | W | O } else { 0 };
    };
    if who.privileged || first.domid == who.domid || who.target == Some(first.domid) {
        return R | W | O;
    }
    for p in &perms[1..] {
        if p.domid == who.domid || who.target == Some(p.domid) {
            return access_bits(p.access);
        }
    }
    access_bits(first.access)
}

/// The live database.
pub struct Tree {
    pub nodes: HashMap<String, Node>,
    /// The global generation count: bumped on every modification.
    pub generation: u64,
    /// Nodes owned per domain (the `nodes` quota).
    pub owned: HashMap<DomId, usize>,
}

impl Tree {
    /// xenstored's initial tree: `/`, `/tool`, `/tool/xenstored` and the special
    /// nodes, all owned by dom0 with no access for others.
    pub fn new() -> Self {
        let mut t = Tree {
            nodes: HashMap::new(),
            generation: 0,
            owned: HashMap::new(),
        };
        let n0 = vec![Perm {
            domid: DomId(0),
            access: PermAccess::None,
        }];
        for (p, kids) in [
            ("/", vec!["tool"]),
            ("/tool", vec!["xenstored"]),
            ("/tool/xenstored", vec![]),
            ("@releaseDomain", vec![]),
            ("@introduceDomain", vec![]),
        ] {
            t.generation += 1;
            t.nodes.insert(
                p.to_string(),
                Node {
                    value: vec![],
                    perms: n0.clone(),
                    children: kids.into_iter().map(String::from).collect(),
                    generation: t.generation,
                },
            );
        }
        t.owned.insert(DomId(0), t.nodes.len());
        t
    }

    pub fn account(&mut self, old: Option<DomId>, new: Option<DomId>) {
        if let Some(o) = old {
            if let Some(n) = self.owned.get_mut(&o) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.owned.remove(&o);
                }
            }
        }
        if let Some(n) = new {
            *self.owned.entry(n).or_default() += 1;
        }
    }

    pub fn owned_by(&self, d: DomId) -> usize {
        self.owned.get(&d).copied().unwrap_or(0)
    }
}

/// A node a transaction touched: its state in the transaction, and what it was
/// when first touched (for conflict detection at commit).
#[derive(Clone, Debug)]
pub struct Access {
    pub node: Option<Node>,
    pub orig_generation: Option<u64>,
    pub orig_perms: Option<Vec<Perm>>,
    pub modified: bool,
    /// A watch event to fire at commit: `Some(exact)`.
    pub fire: Option<bool>,
}

/// An open transaction: the nodes it touched, in order.
#[derive(Default, Debug)]
pub struct Txn {
    pub accessed: HashMap<String, Access>,
    pub order: Vec<String>,
    /// Change of the node count per owner, not yet applied.
    pub delta: HashMap<DomId, i64>,
}

/// A change watchers may hear about: the path, whether only watches on exactly
/// this path match (descendants of a removed node), and the permission sets of
/// which any readable one lets a watcher see it (the node, its parent, the
/// node's old permissions; xenstored's `watch_permitted`).
#[derive(Clone, Debug)]
pub struct Event {
    pub path: String,
    pub exact: bool,
    pub perm_sets: Vec<Vec<Perm>>,
}

/// The database as one request sees it: the live tree, or a transaction's
/// overlay. Operations go through here so that transactions record what they
/// touched and get their own view.
pub struct View<'a> {
    pub tree: &'a mut Tree,
    pub tx: Option<&'a mut Txn>,
    pub who: Who,
    pub quotas: &'a Quotas,
    /// Events of a non-transactional request, fired once it succeeded.
    pub events: Vec<Event>,
}

impl View<'_> {
    fn unprivileged(&self) -> bool {
        !self.who.privileged
    }

    /// Read a node (recording the access in a transaction).
    pub fn get(&mut self, path: &str) -> Result<Option<Node>, XsError> {
        let Some(tx) = self.tx.as_deref_mut() else {
            return Ok(self.tree.nodes.get(path).cloned());
        };
        if let Some(a) = tx.accessed.get(path) {
            return Ok(a.node.clone());
        }
        if !self.who.privileged && tx.order.len() >= self.quotas.transaction_nodes {
            return Err(XsError::ENOSPC);
        }
        let live = self.tree.nodes.get(path).cloned();
        tx.accessed.insert(
            path.to_string(),
            Access {
                orig_generation: live.as_ref().map(|n| n.generation),
                orig_perms: live.as_ref().map(|n| n.perms.clone()),
                node: live.clone(),
                modified: false,
                fire: None,
            },
        );
        tx.order.push(path.to_string());
        Ok(live)
    }

    /// Store a node (it must have been read through this view first).
    pub fn put(&mut self, path: &str, mut node: Node) -> Result<(), XsError> {
        let old = self.get(path)?.map(|n| n.owner());
        self.tree.generation += 1;
        node.generation = self.tree.generation;
        let new = Some(node.owner());
        self.store(path, old, new, Some(node))
    }

    /// Delete one node (not its children; see [`View::remove_tree`]).
    pub fn delete(&mut self, path: &str) -> Result<(), XsError> {
        let old = self.get(path)?.map(|n| n.owner());
        self.store(path, old, None, None)
    }

    fn store(
        &mut self,
        path: &str,
        old: Option<DomId>,
        new: Option<DomId>,
        node: Option<Node>,
    ) -> Result<(), XsError> {
        match self.tx.as_deref_mut() {
            Some(tx) => {
                if let Some(o) = old {
                    *tx.delta.entry(o).or_default() -= 1;
                }
                if let Some(n) = new {
                    *tx.delta.entry(n).or_default() += 1;
                }
                let a = tx.accessed.get_mut(path).ok_or(XsError::EIO)?;
                a.node = node;
                a.modified = true;
            }
            None => {
                self.tree.account(old, new);
                match node {
                    Some(n) => {
                        self.tree.nodes.insert(path.to_string(), n);
                    }
                    None => {
                        self.tree.nodes.remove(path);
                    }
                }
            }
        }
        Ok(())
    }

    /// Note a change for watchers: now, or at commit in a transaction.
    pub fn fire(&mut self, path: &str, exact: bool, perm_sets: Vec<Vec<Perm>>) {
        match self.tx.as_deref_mut() {
            Some(tx) => {
                if let Some(a) = tx.accessed.get_mut(path) {
                    // A non-exact event replaces an exact one, not the reverse.
                    a.fire = Some(match a.fire {
                        None => exact,
                        Some(prev) => prev && exact,
                    });
                }
            }
            None => self.events.push(Event {
                path: path.to_string(),
                exact,
                perm_sets,
            }),
        }
    }

    /// Nodes `domid` owns, including changes of the open transaction.
    fn owned_by(&self, d: DomId) -> i64 {
        let base = self.tree.owned_by(d) as i64;
        base + self
            .tx
            .as_deref()
            .and_then(|t| t.delta.get(&d).copied())
            .unwrap_or(0)
    }

    fn check_size(&self, node: &Node) -> Result<(), XsError> {
        if self.unprivileged() && node.size() > self.quotas.node_size {
            return Err(XsError::ENOSPC);
        }
        Ok(())
    }

    /// Read a node the caller needs `need` rights on. A missing node is `ENOENT`
    /// only if the closest existing ancestor grants some of `need`, else
    /// `EACCES`, so that a domain learns nothing about places it cannot see
    /// (xenstored's `errno_from_parents`).
    pub fn get_checked(&mut self, path: &str, need: u8) -> Result<Node, XsError> {
        if let Some(n) = self.get(path)? {
            return if rights(&n.perms, &self.who) & need == need {
                Ok(n)
            } else {
                Err(XsError::EACCES)
            };
        }
        let mut p = path;
        loop {
            if p == "/" {
                // No root: cannot happen, and says nothing.
                return Err(XsError::EACCES);
            }
            p = parent(p);
            if let Some(n) = self.get(p)? {
                return if rights(&n.perms, &self.who) & need != 0 {
                    Err(XsError::ENOENT)
                } else {
                    Err(XsError::EACCES)
                };
            }
        }
    }

    /// Create `path` (and missing parents, which inherit their parent's
    /// permissions; an unprivileged creator owns what it creates) with `value`.
    /// `perms` overrides the permissions of the final node.
    pub fn create(
        &mut self,
        path: &str,
        value: Vec<u8>,
        perms: Option<Vec<Perm>>,
    ) -> Result<(), XsError> {
        let mut missing = vec![path.to_string()];
        let mut p = parent(path);
        let (anc_path, mut anc) = loop {
            if let Some(n) = self.get(p)? {
                break (p.to_string(), n);
            }
            if p == "/" {
                return Err(XsError::EIO);
            }
            missing.push(p.to_string());
            p = parent(p);
        };
        missing.reverse();
        if self.unprivileged()
            && self.owned_by(self.who.domid) + missing.len() as i64 > self.quotas.nodes as i64
        {
            return Err(XsError::ENOSPC);
        }
        anc.children.push(basename(&missing[0]).to_string());
        self.check_size(&anc)?;
        let mut inherited = anc.perms.clone();
        let mut created = Vec::with_capacity(missing.len());
        let mut parent_perms = anc.perms.clone();
        for (i, m) in missing.iter().enumerate() {
            let last = i + 1 == missing.len();
            let mut node_perms = inherited.clone();
            if self.unprivileged() {
                if let Some(first) = node_perms.first_mut() {
                    first.domid = self.who.domid;
                }
            }
            if last {
                if let Some(p) = &perms {
                    node_perms = p.clone();
                }
            }
            let node = Node {
                value: if last { value.clone() } else { vec![] },
                perms: node_perms.clone(),
                children: match missing.get(i + 1) {
                    Some(next) => vec![basename(next).to_string()],
                    None => vec![],
                },
                generation: 0,
            };
            self.check_size(&node)?;
            if !last {
                parent_perms = node_perms.clone();
            }
            inherited = node_perms;
            created.push((m.clone(), node));
        }
        self.put(&anc_path, anc)?;
        let final_perms = created
            .last()
            .map(|(_, n)| n.perms.clone())
            .unwrap_or_default();
        for (m, node) in created {
            self.put(&m, node)?;
        }
        self.fire(path, false, vec![final_perms, parent_perms]);
        Ok(())
    }

    /// Write a node's value, creating it if needed.
    pub fn write(&mut self, path: &str, value: Vec<u8>) -> Result<(), XsError> {
        match self.get_checked(path, W) {
            Err(XsError::ENOENT) => self.create(path, value, None),
            Err(e) => Err(e),
            Ok(mut n) => {
                n.value = value;
                self.check_size(&n)?;
                let perms = n.perms.clone();
                self.put(path, n)?;
                let parent_perms = self.parent_perms(path)?;
                self.fire(path, false, vec![perms, parent_perms]);
                Ok(())
            }
        }
    }

    fn parent_perms(&mut self, path: &str) -> Result<Vec<Perm>, XsError> {
        Ok(self.get(parent(path))?.map(|n| n.perms).unwrap_or_default())
    }

    /// Remove `path` and everything below it. Watches on each removed
    /// descendant fire (exact match only, xenstored's `delnode_sub`), then the
    /// node itself fires for watches at or above it.
    pub fn remove_tree(&mut self, path: &str) -> Result<(), XsError> {
        let parent_path = parent(path).to_string();
        let mut parent_node = self.get(&parent_path)?.ok_or(XsError::EIO)?;
        let root = self.get(path)?.ok_or(XsError::ENOENT)?;
        // Post-order walk with an explicit stack (paths can be 1500 levels deep).
        let mut order: Vec<(String, Vec<Perm>, Vec<Perm>)> = Vec::new();
        let mut stack = vec![(path.to_string(), root, parent_node.perms.clone(), false)];
        while let Some((p, n, pp, expanded)) = stack.pop() {
            if expanded {
                order.push((p, n.perms, pp));
                continue;
            }
            let kids = n.children.clone();
            let perms = n.perms.clone();
            stack.push((p.clone(), n, pp, true));
            for k in kids.iter().rev() {
                let cp = child(&p, k);
                if let Some(cn) = self.get(&cp)? {
                    stack.push((cp, cn, perms.clone(), false));
                }
            }
        }
        for (p, perms, pp) in order {
            self.delete(&p)?;
            self.fire(&p, p != path, vec![perms, pp]);
        }
        let name = basename(path);
        parent_node.children.retain(|c| c != name);
        self.put(&parent_path, parent_node)
    }
}
