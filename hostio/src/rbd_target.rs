//! [`RbdTarget`]: `rbd:pool[/namespace]/image[@snapshot][:key=value...]`, as
//! QEMU spells it. Built without the `rbd` feature too: whoever only names an
//! image (the bench's fio engine, a config check) needs no librbd.

use crate::{Error, Result};
use std::path::PathBuf;
use std::str::FromStr;

/// Where an RBD image is and how to reach its cluster, parsed from QEMU's
/// spelling: `rbd:pool[/namespace]/image[@snapshot][:key=value[:key=value...]]`.
/// A backslash escapes the next character (`\:`, `\@`, `\/`, `\\`).
///
/// The options: `conf=PATH` reads that ceph.conf (default: librados' search,
/// `/etc/ceph/ceph.conf` ...), `id=NAME` authenticates as `client.NAME` (default
/// `admin`), `keyring=PATH` names the key, and any other `key=value` is set on
/// the cluster handle as a Ceph option (`mon_host=127.0.0.1:6789`,
/// `rados_osd_op_timeout=30`, `rbd_cache=false`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbdTarget {
    /// The pool.
    pub pool: String,
    /// The RADOS namespace inside the pool, if any.
    pub namespace: Option<String>,
    /// The image.
    pub image: String,
    /// A snapshot to open (read-only), if any.
    pub snapshot: Option<String>,
    /// `conf=`: the ceph.conf to read.
    pub conf: Option<PathBuf>,
    /// `id=`: the client name without `client.`.
    pub id: Option<String>,
    /// Every other `key=value`, `keyring` included, in order.
    pub options: Vec<(String, String)>,
}

/// Split `s` at unescaped `sep`, unescaping the pieces.
fn split(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    // Keep the escape for the inner splits ('@', '/').
                    let last = out.last_mut().expect("never empty");
                    if n == sep {
                        last.push(n);
                    } else {
                        last.push('\\');
                        last.push(n);
                    }
                }
            }
            c if c == sep => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

impl FromStr for RbdTarget {
    type Err = Error;

    /// Parse `rbd:pool[/namespace]/image[@snapshot][:key=value...]`.
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] naming what is wrong: no `rbd:` prefix, an empty
    /// pool or image, too many `/`, an option without `=`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| Error::BadValue {
            what: format!(
                "RBD target ({why}; expected rbd:pool[/namespace]/image[@snapshot][:conf=PATH][:id=NAME][:keyring=PATH])"
            ),
            value: s.into(),
        };
        let Some(rest) = s.strip_prefix("rbd:") else {
            return Err(bad("no rbd: prefix".into()));
        };
        let mut parts = split(rest, ':').into_iter();
        let spec = parts.next().unwrap_or_default();
        let mut at = split(&spec, '@').into_iter();
        let path = at.next().unwrap_or_default();
        let snapshot = at.next().map(|s| unescape(&s));
        if at.next().is_some() {
            return Err(bad("more than one @".into()));
        }
        let names: Vec<String> = split(&path, '/').iter().map(|p| unescape(p)).collect();
        let (pool, namespace, image) = match &names[..] {
            [p, i] => (p.clone(), None, i.clone()),
            [p, n, i] => (p.clone(), Some(n.clone()), i.clone()),
            _ => {
                return Err(bad(
                    "the image path needs pool/image or pool/namespace/image".into(),
                ));
            }
        };
        if pool.is_empty() || image.is_empty() || namespace.as_ref().is_some_and(String::is_empty) {
            return Err(bad("an empty pool, namespace or image name".into()));
        }
        if snapshot.as_ref().is_some_and(String::is_empty) {
            return Err(bad("an empty snapshot name".into()));
        }
        let mut t = RbdTarget {
            pool,
            namespace,
            image,
            snapshot,
            conf: None,
            id: None,
            options: Vec::new(),
        };
        for opt in parts {
            let Some((k, v)) = opt.split_once('=') else {
                return Err(bad(format!("option {opt:?} has no =")));
            };
            let (k, v) = (unescape(k), unescape(v));
            if k.is_empty() {
                return Err(bad("an option with an empty name".into()));
            }
            match k.as_str() {
                "conf" => t.conf = Some(PathBuf::from(v)),
                "id" => t.id = Some(v),
                _ => t.options.push((k, v)),
            }
        }
        Ok(t)
    }
}

impl std::fmt::Display for RbdTarget {
    /// `rbd:pool[/namespace]/image[@snapshot]` (the options left out: a keyring
    /// path is not for logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rbd:{}/", self.pool)?;
        if let Some(n) = &self.namespace {
            write!(f, "{n}/")?;
        }
        write!(f, "{}", self.image)?;
        if let Some(s) = &self.snapshot {
            write!(f, "@{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_spellings() {
        let t: RbdTarget = "rbd:rbd/disk:conf=/x/ceph.conf:id=admin:keyring=/x/k"
            .parse()
            .unwrap();
        assert_eq!((t.pool.as_str(), t.image.as_str()), ("rbd", "disk"));
        assert_eq!(t.conf, Some(PathBuf::from("/x/ceph.conf")));
        assert_eq!(t.id.as_deref(), Some("admin"));
        assert_eq!(t.options, vec![("keyring".to_string(), "/x/k".to_string())]);
        assert_eq!(t.to_string(), "rbd:rbd/disk");
        let t: RbdTarget = "rbd:p/ns/img@snap1:mon_host=127.0.0.1\\:6789"
            .parse()
            .unwrap();
        assert_eq!(t.namespace.as_deref(), Some("ns"));
        assert_eq!(t.snapshot.as_deref(), Some("snap1"));
        assert_eq!(
            t.options,
            vec![("mon_host".to_string(), "127.0.0.1:6789".to_string())]
        );
        let t: RbdTarget = "rbd:p/we\\/ird\\@name".parse().unwrap();
        assert_eq!(t.image, "we/ird@name");
        for bad in [
            "rbd:",
            "disk",
            "rbd:pool",
            "rbd:/img",
            "rbd:p/",
            "rbd:a/b/c/d",
            "rbd:p/i@",
            "rbd:p/i:novalue",
            "rbd:p/i@a@b",
            "rbd:p/i:=v",
        ] {
            match bad.parse::<RbdTarget>() {
                Err(Error::BadValue { what, .. }) => assert!(what.contains("rbd:pool"), "{what}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
