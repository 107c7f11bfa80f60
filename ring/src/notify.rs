//! The notify decision the push calls return.

/// Whether the peer must be notified after a push (`_notify` of
/// `RING_PUSH_*_AND_CHECK_NOTIFY`). The ring never notifies by itself.
#[must_use = "the ring never notifies: kick the event channel when this says so"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// The peer asked to be told about this batch: kick the event channel.
    Required,
    /// The peer is still working through the ring and will see the batch.
    NotRequired,
}

impl Notify {
    /// `true` for [`Notify::Required`].
    pub fn is_required(self) -> bool {
        self == Notify::Required
    }
}

impl From<bool> for Notify {
    fn from(required: bool) -> Self {
        if required {
            Notify::Required
        } else {
            Notify::NotRequired
        }
    }
}
