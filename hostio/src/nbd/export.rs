//! [`NbdExport`]: the URI checked, the handshake, and a queue per connection.

use super::config::{NbdFeatures, NbdOptions, QueueCount, Shared};
use super::handle;
use super::queue::NbdQueue;
use crate::{Error, Result};
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct ExportInner {
    shared: Arc<Shared>,
    /// The handshake's connection, for the first queue.
    first: Mutex<Option<handle::Handle>>,
}

/// An NBD export: its URI, what the server offers, and a factory of queues.
/// Cheap to clone (shares the connection state).
#[derive(Clone)]
pub struct NbdExport(Arc<ExportInner>);

impl std::fmt::Debug for NbdExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdExport")
            .field("uri", &self.0.shared.uri)
            .field("features", &self.0.shared.features)
            .finish()
    }
}

/// Refuse what is not an NBD URI before libnbd sees it.
fn check_uri(uri: &str) -> Result<CString> {
    let bad = |why: &str| Error::BadValue {
        what: format!(
            "NBD URI ({why}; expected nbd://host[:port]/export or nbd+unix:///export?socket=PATH)"
        ),
        value: uri.into(),
    };
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(bad("no scheme"));
    };
    match scheme {
        "nbd" | "nbds" => {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(bad("no host"));
            }
        }
        "nbd+unix" | "nbds+unix" => {
            if !rest.contains("socket=") {
                return Err(bad("no socket= parameter"));
            }
        }
        _ => return Err(bad("unknown scheme")),
    }
    CString::new(uri).map_err(|_| bad("a NUL byte"))
}

impl NbdExport {
    /// Connect to `uri` (one attempt, bounded by
    /// [`NbdOptions::connect_timeout`]) and read the export's features.
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] for a malformed URI or option; [`Error::Io`] naming
    /// the URI when the server cannot be reached, the handshake fails (no such
    /// export, a server that sends garbage or closes), or it times out.
    pub fn connect(uri: &str, opts: &NbdOptions) -> Result<NbdExport> {
        let c_uri = check_uri(uri)?;
        if opts.depth == 0 || opts.depth > 65536 {
            return Err(Error::BadValue {
                what: "NBD queue depth (1..=65536)".into(),
                value: opts.depth.to_string(),
            });
        }
        let h = handle::connect(&c_uri, opts.connect_timeout)
            .map_err(|e| Error::io(format!("{uri}: connecting"), e))?;
        let features = features(&h).map_err(|e| Error::io(format!("{uri}: handshake"), e))?;
        Ok(NbdExport(Arc::new(ExportInner {
            shared: Arc::new(Shared {
                uri: uri.into(),
                c_uri,
                opts: opts.clone(),
                features,
                queues: AtomicUsize::new(0),
            }),
            first: Mutex::new(Some(h)),
        })))
    }

    /// The URI.
    pub fn uri(&self) -> &str {
        &self.0.shared.uri
    }

    /// What the server offers.
    pub fn features(&self) -> NbdFeatures {
        self.0.shared.features
    }

    /// The export's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.0.shared.features.size
    }

    /// Most queues this export can have at once: 1 without multi-conn.
    pub fn max_queues(&self) -> Option<usize> {
        (!self.0.shared.features.multi_conn).then_some(1)
    }

    /// A new queue over its own connection (the first one takes over the
    /// handshake's connection).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a second queue at once when the server does not
    /// allow multi-conn; [`Error::Io`] when a new connection fails.
    pub fn queue(&self) -> Result<NbdQueue> {
        let inner = &self.0;
        let shared = &inner.shared;
        let n = shared.queues.fetch_add(1, Ordering::AcqRel);
        let guard = QueueCount(shared.clone());
        if n > 0 && !shared.features.multi_conn {
            return Err(Error::Unsupported(format!(
                "{}: the server does not allow multi-conn: serve this export with one queue",
                shared.uri
            )));
        }
        let first = inner
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let h = match first {
            Some(h) => h,
            None => handle::connect(&shared.c_uri, shared.opts.connect_timeout)
                .map_err(|e| Error::io(format!("{}: connecting", shared.uri), e))?,
        };
        NbdQueue::new(shared.clone(), h, guard)
    }
}

fn features(h: &handle::Handle) -> std::io::Result<NbdFeatures> {
    let [read_only, flush, fua, trim, zero, multi_conn] = h.flags()?;
    Ok(NbdFeatures {
        size: h.size()?,
        read_only,
        flush,
        fua,
        trim,
        zero,
        multi_conn,
        min_block: h.min_block_size().max(1),
    })
}
