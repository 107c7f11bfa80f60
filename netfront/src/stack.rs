//! A smoltcp TCP/IP stack over a [`NetFront`]: the interface, its sockets, and
//! a poll step that sleeps on the event channels in between.
//!
//! ```no_run
//! # fn demo<P: xenio_xenbus::platform::Platform>(front: xenio_netfront::NetFront<P>) -> xenio_netfront::Result<()> {
//! use smoltcp::socket::tcp;
//! use smoltcp::wire::Ipv4Address;
//! let mut stack = xenio_netfront::stack::Stack::new(front, Ipv4Address::new(192, 0, 2, 2), 24);
//! let sock = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]));
//! let h = stack.sockets.add(sock);
//! let (iface, sockets) = (&mut stack.iface, &mut stack.sockets);
//! sockets.get_mut::<tcp::Socket>(h).connect(iface.context(), (Ipv4Address::new(192, 0, 2, 1), 80), 49152).unwrap();
//! loop {
//!     stack.poll(std::time::Duration::from_millis(10))?;
//!     if stack.sockets.get::<tcp::Socket>(h).may_send() { break; }
//! }
//! # Ok(()) }
//! ```

use crate::error::Result;
use crate::front::NetFront;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};
use std::sync::atomic::Ordering;
use std::time::Duration;
use xenio_xenbus::platform::Platform;

/// smoltcp over a netfront.
pub struct Stack<P: Platform> {
    /// The device.
    pub dev: NetFront<P>,
    /// The smoltcp interface.
    pub iface: Interface,
    /// The sockets.
    pub sockets: SocketSet<'static>,
}

impl<P: Platform> Stack<P> {
    /// An interface with the netfront's MAC address and `ip/prefix`.
    pub fn new(mut dev: NetFront<P>, ip: Ipv4Address, prefix: u8) -> Self {
        let mac = dev.info().mac;
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed =
            u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x5a, 0xa5]);
        let mut iface = Interface::new(config, &mut dev, smoltcp::time::Instant::now());
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(ip.into(), prefix));
        });
        Stack {
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
        }
    }

    /// Let smoltcp process what arrived and send what it has; if nothing
    /// happened, sleep on the event channels until smoltcp's next timer or
    /// `max_wait`, whichever comes first.
    ///
    /// # Errors
    ///
    /// The errors of [`NetFront::wait`] (frames smoltcp could not send are
    /// counted in [`Counters::tx_errors`](crate::Counters::tx_errors), not
    /// errors).
    pub fn poll(&mut self, max_wait: Duration) -> Result<()> {
        // smoltcp sends at most one segment per socket per poll: poll again
        // while frames go out (bounded), then decide about sleeping.
        let mut busy = false;
        let now = smoltcp::time::Instant::now();
        for _ in 0..64 {
            let before = self.dev.counters().tx_packets.load(Ordering::Relaxed);
            let r = self.iface.poll(now, &mut self.dev, &mut self.sockets);
            busy |= r == smoltcp::iface::PollResult::SocketStateChanged;
            if self.dev.counters().tx_packets.load(Ordering::Relaxed) == before {
                break;
            }
            busy = true;
        }
        if busy {
            return Ok(());
        }
        let delay = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(max_wait)
            .min(max_wait);
        if delay.is_zero() {
            return Ok(());
        }
        self.dev.wait(delay)
    }
}
