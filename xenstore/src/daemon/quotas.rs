//! [`Quotas`]: what one client may use of the daemon.

use xenio_xen_sys::xs_wire::XENSTORE_REL_PATH_MAX;

/// Limits that keep one client from exhausting the daemon (XSA-349 and
/// friends). The defaults are C xenstored's. Quotas apply to unprivileged
/// domains; dom0 is trusted, as in xenstored. `queued_events` and
/// `outstanding` bound memory for every connection, dom0's too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own (`nodes`, 1000). Creating more: `ENOSPC`.
    pub nodes: usize,
    /// Watches per connection (`watches`, 128). More: `E2BIG`.
    pub watches: usize,
    /// Open transactions per connection (`transactions`, 10). More: `ENOSPC`.
    pub transactions: usize,
    /// Nodes one transaction may touch (`transaction-nodes`, 1024). More: `ENOSPC`.
    pub transaction_nodes: usize,
    /// Size of one node: 16 + 8 per permission + value + children names
    /// (`node-size`, 2048). More: `ENOSPC`.
    pub node_size: usize,
    /// Permission entries per node (`node-permissions`, 5). More: `ENOSPC`.
    pub node_permissions: usize,
    /// Path length below `/local/domain/<id>/` (`path-max`, 2048). Longer:
    /// `EINVAL`. Absolute paths are limited to 3072 bytes for everyone.
    pub path_max: usize,
    /// Unsent replies before the daemon stops reading a connection
    /// (`outstanding`, 20).
    pub outstanding: usize,
    /// Unsent watch events per connection; further events are dropped (with a
    /// warning) until the client reads. Identical pending events are merged.
    pub queued_events: usize,
    /// Connections one unprivileged domain may hold open at once (xenio's own
    /// quota: on Xen a domain has one connection, its ring; on the local platform
    /// each client of a domain's socket is one). More are closed at once, so one
    /// domain cannot take every connection the daemon serves.
    pub connections: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            nodes: 1000,
            watches: 128,
            transactions: 10,
            transaction_nodes: 1024,
            node_size: 2048,
            node_permissions: 5,
            path_max: XENSTORE_REL_PATH_MAX,
            outstanding: 20,
            queued_events: 1024,
            connections: 64,
        }
    }
}

impl Quotas {
    /// One line per quota, as CONTROL `quota` shows them.
    pub fn describe(&self) -> String {
        format!(
            "nodes: {}\nwatches: {}\ntransactions: {}\ntransaction-nodes: {}\n\
             node-size: {}\nnode-permissions: {}\npath-max: {}\noutstanding: {}\n\
             queued-events: {}\nconnections: {}\n",
            self.nodes,
            self.watches,
            self.transactions,
            self.transaction_nodes,
            self.node_size,
            self.node_permissions,
            self.path_max,
            self.outstanding,
            self.queued_events,
            self.connections
        )
    }
}
