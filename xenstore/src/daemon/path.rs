//! Store paths: validation, relative paths, parents (xenstored's `canonicalize`,
//! `get_parent`, `is_child`).

use crate::wire::XsError;
use xenio_xen_sys::DomId;
use xenio_xen_sys::xs_wire::XENSTORE_ABS_PATH_MAX;

/// The home of a domain, which relative paths are relative to.
pub fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

/// Characters a path may hold (`xenstore.txt`: alphanumerics and `-/_@`).
fn valid_chars(p: &[u8]) -> bool {
    p.iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@'))
}

/// Turn a path as a client sent it into an absolute path (or a special `@name`
/// when `allow_special`), enforcing xenstored's rules: valid characters, no
/// trailing or doubled `/`, absolute length at most `XENSTORE_ABS_PATH_MAX`, and
/// for unprivileged connections at most `rel_max` bytes below
/// `/local/domain/<id>/`. Anything else is `EINVAL`.
pub fn canonicalize(
    raw: &[u8],
    domid: DomId,
    allow_special: bool,
    rel_max: Option<usize>,
) -> Result<String, XsError> {
    if !valid_chars(raw) {
        return Err(XsError::EINVAL);
    }
    // valid_chars admitted ASCII only.
    let raw = std::str::from_utf8(raw).map_err(|_| XsError::EINVAL)?;
    let name = match raw.as_bytes().first() {
        Some(b'@') if !allow_special => return Err(XsError::EINVAL),
        Some(b'/') | Some(b'@') => raw.to_string(),
        _ => format!("{}/{raw}", domain_path(domid.0.into())),
    };
    if (name.ends_with('/') && name != "/") || name.contains("//") {
        return Err(XsError::EINVAL);
    }
    if name.len() > XENSTORE_ABS_PATH_MAX {
        return Err(XsError::EINVAL);
    }
    if let Some(max) = rel_max {
        if name.len() - local_prefix_len(&name) > max {
            return Err(XsError::EINVAL);
        }
    }
    Ok(name)
}

/// Length of a leading `/local/domain/<id>/` (up to 5 digits), else 0: the part of
/// a path the path-length quota does not count.
fn local_prefix_len(name: &str) -> usize {
    let Some(rest) = name.strip_prefix("/local/domain/") else {
        return 0;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    "/local/domain/".len() + digits + 1
}

/// Whether `child` is `parent` or below it (`/` is the parent of everything).
pub fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return true;
    }
    match child.strip_prefix(parent) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The parent of a node (`/` for top-level nodes and for special `@` nodes).
pub fn parent(path: &str) -> &str {
    match path.get(1..).and_then(|p| p.rfind('/')) {
        Some(i) => &path[..i + 1],
        None => "/",
    }
}

/// The last component of a path (not `/`).
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The path of child `name` of `dir`.
pub fn child(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D5: DomId = DomId(5);

    #[test]
    fn canonicalize_follows_xenstored() {
        assert_eq!(canonicalize(b"/a/b", D5, false, None).unwrap(), "/a/b");
        assert_eq!(canonicalize(b"/", D5, false, None).unwrap(), "/");
        assert_eq!(
            canonicalize(b"device/vbd", D5, false, None).unwrap(),
            "/local/domain/5/device/vbd"
        );
        assert_eq!(
            canonicalize(b"@releaseDomain", D5, true, None).unwrap(),
            "@releaseDomain"
        );
        for bad in [
            &b"@releaseDomain"[..],
            b"/a/",
            b"/a//b",
            b"",
            b"/a b",
            b"/a\xff",
            b"/a.b",
            b"/a\0",
        ] {
            assert_eq!(
                canonicalize(bad, D5, false, None),
                Err(XsError::EINVAL),
                "{bad:?}"
            );
        }
        let long = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX));
        assert_eq!(
            canonicalize(long.as_bytes(), DomId(0), false, None),
            Err(XsError::EINVAL)
        );
        let exact = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX - 1));
        assert!(canonicalize(exact.as_bytes(), DomId(0), false, None).is_ok());
        // The relative quota does not count /local/domain/<id>/.
        let rel = "a".repeat(10);
        assert!(canonicalize(rel.as_bytes(), D5, false, Some(10)).is_ok());
        let rel = "a".repeat(11);
        assert_eq!(
            canonicalize(rel.as_bytes(), D5, false, Some(10)),
            Err(XsError::EINVAL)
        );
    }

    #[test]
    fn parents_and_children() {
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
        assert_eq!(parent("@releaseDomain"), "/");
        assert_eq!(basename("/a/b/c"), "c");
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
        assert!(is_child("/a/b", "/a"));
        assert!(is_child("/a", "/a"));
        assert!(is_child("/a", "/"));
        assert!(!is_child("/ab", "/a"));
        assert!(!is_child("/a", "/a/b"));
    }
}
