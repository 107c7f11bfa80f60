//! smoltcp's [`phy::Device`] over a [`NetFront`]: a TCP/IP stack over a Xen
//! vif ([`crate::stack::Stack`] wraps it with an interface and sockets).

use crate::counters::add;
use crate::front::NetFront;
use smoltcp::phy;
use xenio_xenbus::platform::Platform;

/// A received frame, for smoltcp.
pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room for one frame on the tx ring, for smoltcp.
pub struct TxToken<'a, P: Platform>(&'a mut NetFront<P>);

impl<P: Platform> phy::TxToken for TxToken<'_, P> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = std::mem::take(self.0.scratch());
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        match self.0.send(&buf) {
            Ok(true) => {}
            Ok(false) => add(&self.0.counters().tx_errors, 1),
            Err(e) => {
                tracing::debug!("smoltcp frame not sent: {e}");
                add(&self.0.counters().tx_errors, 1);
            }
        }
        *self.0.scratch() = buf;
        r
    }
}

impl<P: Platform> phy::Device for NetFront<P> {
    type RxToken<'a>
        = RxToken
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, P>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let mut frame = Vec::new();
        match self.recv(&mut frame) {
            Ok(true) => Some((RxToken(frame), TxToken(self))),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!("netfront receive: {e}");
                None
            }
        }
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let max = self.info().mtu + 14;
        match self.can_send(max) {
            Ok(true) => Some(TxToken(self)),
            _ => None,
        }
    }

    fn capabilities(&self) -> phy::DeviceCapabilities {
        let mut caps = phy::DeviceCapabilities::default();
        caps.medium = phy::Medium::Ethernet;
        caps.max_transmission_unit = self.info().mtu + 14;
        caps.max_burst_size = None;
        caps
    }
}
