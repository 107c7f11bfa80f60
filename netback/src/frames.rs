//! Where the backend's frames go and come from: the [`Network`] trait (one
//! [`Frames`] per queue), a Linux TAP device ([`TapNetwork`]), and an in-memory
//! network for tests and fuzzing ([`MemNetwork`]).

use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use xenio_hostio::tap::Tap;

/// One queue's frame sink and source.
pub trait Frames: Send + Sync {
    /// Hand a frame (from the frontend) to the network. `Ok(false)`: the
    /// network dropped it (full, down).
    fn send(&self, frame: &[u8]) -> Result<bool>;
    /// Take one frame for the frontend into `buf`, without blocking; `Ok(None)`
    /// if none is waiting.
    fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>>;
    /// A descriptor that polls readable while [`Frames::recv`] has a frame, if
    /// there is one (otherwise the queue worker looks every millisecond while idle).
    fn fd(&self) -> Option<BorrowedFd<'_>>;
}

/// A network the backend attaches a device's queues to.
pub trait Network: Send + Sync {
    /// One queue's frames.
    type Queue: Frames;
    /// The frames of queue `index` of `count` (called at every connection).
    fn queue(&self, index: u32, count: u32) -> Result<Self::Queue>;
    /// What to call it in messages.
    fn describe(&self) -> String;
}

impl Frames for Arc<Tap> {
    fn send(&self, frame: &[u8]) -> Result<bool> {
        Ok(self.write(frame)?)
    }
    fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        Ok(self.read(buf)?)
    }
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.as_fd())
    }
}

/// A Linux TAP device (`IFF_TAP | IFF_NO_PI`). Queue 0 is opened at once and
/// kept for the backend's lifetime (so a device the backend created lives as
/// long as it); further queues need a device created with `multi_queue` and are
/// opened per connection.
#[derive(Debug)]
pub struct TapNetwork {
    first: Arc<Tap>,
    multi_queue: bool,
}

impl TapNetwork {
    /// Attach to (or create) the TAP device `name`. `multi_queue` must match an
    /// existing device's and is needed for more than one queue.
    pub fn open(name: &str, multi_queue: bool) -> Result<Self> {
        Ok(TapNetwork {
            first: Arc::new(Tap::open(name, multi_queue)?),
            multi_queue,
        })
    }

    /// Whether more than one queue can be attached.
    pub fn multi_queue(&self) -> bool {
        self.multi_queue
    }
}

impl Network for TapNetwork {
    type Queue = Arc<Tap>;
    fn queue(&self, index: u32, _count: u32) -> Result<Arc<Tap>> {
        if index == 0 {
            return Ok(self.first.clone());
        }
        if !self.multi_queue {
            return Err(Error::Frontend(format!(
                "queue {index}: TAP {} is single-queue",
                self.first.name()
            )));
        }
        Ok(Arc::new(Tap::open(self.first.name(), true)?))
    }
    fn describe(&self) -> String {
        format!("TAP {}", self.first.name())
    }
}

/// Frames in memory: what the frontend sent (`sent`), and frames to deliver to
/// it (`incoming`). For tests and fuzzing.
#[derive(Debug, Default)]
pub struct MemFrames {
    /// Frames the backend handed to the network.
    pub sent: Mutex<Vec<Vec<u8>>>,
    /// Frames waiting to go to the frontend.
    pub incoming: Mutex<VecDeque<Vec<u8>>>,
}

impl Frames for Arc<MemFrames> {
    fn send(&self, frame: &[u8]) -> Result<bool> {
        self.sent
            .lock()
            .map_err(|_| Error::Network("poisoned".into()))?
            .push(frame.to_vec());
        Ok(true)
    }
    fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        let mut q = self
            .incoming
            .lock()
            .map_err(|_| Error::Network("poisoned".into()))?;
        Ok(q.pop_front().map(|f| {
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            n
        }))
    }
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// An in-memory network: every queue shares one [`MemFrames`].
#[derive(Debug, Default, Clone)]
pub struct MemNetwork {
    /// The frames.
    pub frames: Arc<MemFrames>,
}

impl Network for MemNetwork {
    type Queue = Arc<MemFrames>;
    fn queue(&self, _index: u32, _count: u32) -> Result<Arc<MemFrames>> {
        Ok(self.frames.clone())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}
