//! [`XenPlatform`]: this domain on real Xen, as a driver sees it.

use super::evtchn::EvtchnDevice;
use super::gntalloc::GntallocDevice;
use super::gntdev::GntdevDevice;
use crate::error::{Error, Result};
use crate::platform::seam::{Platform, once};
use std::sync::OnceLock;
use xenio_xen_sys::DomId;
use xenio_xenstore::Client;
use xenio_xenstore::{Store, Tx};

/// This domain on real Xen: `/dev/xen/*` and xenstored.
#[derive(Debug)]
pub struct XenPlatform {
    domid: DomId,
    store: Client,
    events: EvtchnDevice,
    grants: OnceLock<GntallocDevice>,
    mapper: OnceLock<GntdevDevice>,
}

impl XenPlatform {
    /// Open the Xen devices and xenstored (socket, else `/dev/xen/xenbus`); our
    /// domain id is the store's `domid` key. `/dev/xen/gntalloc` and
    /// `/dev/xen/gntdev` are opened on first use (a backend never needs the one, a
    /// frontend never the other).
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] naming what is missing when this is not a Xen domain
    /// with `/dev/xen/evtchn` (module `xen-evtchn`, and root to open it); a store
    /// error if neither `/run/xenstored/socket` nor `/dev/xen/xenbus` answers;
    /// [`Error::BadValue`] if the store's `domid` is not a number.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use xenio_xenbus::{Platform, XenPlatform};
    ///
    /// let xen = XenPlatform::open()?; // in dom0 or a driver domain, as root
    /// println!("this is domain {}", xen.domid());
    /// # Ok::<(), xenio_xenbus::Error>(())
    /// ```
    pub fn open() -> Result<Self> {
        super::device::available()?;
        let store = Client::connect_default()?;
        let id = store.read_string(Tx::NONE, "domid")?;
        let domid = id
            .trim()
            .parse::<u16>()
            .map(DomId)
            .map_err(|_| Error::BadValue {
                what: "domid".into(),
                value: id,
            })?;
        Ok(XenPlatform {
            domid,
            store,
            events: EvtchnDevice::open()?,
            grants: OnceLock::new(),
            mapper: OnceLock::new(),
        })
    }
}

impl Platform for XenPlatform {
    type Store = Client;
    type Events = EvtchnDevice;
    type Grants = GntallocDevice;
    type Mapper = GntdevDevice;
    fn domid(&self) -> DomId {
        self.domid
    }
    fn store(&self) -> &Client {
        &self.store
    }
    fn events(&self) -> &EvtchnDevice {
        &self.events
    }
    fn grants(&self) -> Result<&GntallocDevice> {
        once(&self.grants, GntallocDevice::open)
    }
    fn mapper(&self) -> Result<&GntdevDevice> {
        once(&self.mapper, GntdevDevice::open)
    }
}
