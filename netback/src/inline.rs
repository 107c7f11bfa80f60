//! [`Inline`]: a short list kept inside its owner, for the slots and
//! fragments of one tx packet (at most [`INLINE`] of each: a packet has at most
//! one first slot, four extra infos and [`FATAL_SLOTS`](crate::tx::FATAL_SLOTS)
//! data slots), so that assembling a packet allocates nothing.

use std::ops::{Deref, DerefMut};

/// How many items an [`Inline`] holds.
pub const INLINE: usize = 32;

/// Up to [`INLINE`] items, in order; reads as a slice.
#[derive(Clone, Copy)]
pub struct Inline<T: Copy + Default> {
    items: [T; INLINE],
    len: usize,
}

impl<T: Copy + Default> Default for Inline<T> {
    fn default() -> Self {
        Inline {
            items: [T::default(); INLINE],
            len: 0,
        }
    }
}

impl<T: Copy + Default> Inline<T> {
    /// Add `item` at the end.
    ///
    /// # Panics
    ///
    /// When full: the parser never puts more than [`INLINE`] items in one.
    pub fn push(&mut self, item: T) {
        assert!(self.len < INLINE, "more than {INLINE} items");
        self.items[self.len] = item;
        self.len += 1;
    }

    /// Put `item` first, moving the others up.
    ///
    /// # Panics
    ///
    /// When full, as [`Inline::push`].
    pub fn push_front(&mut self, item: T) {
        assert!(self.len < INLINE, "more than {INLINE} items");
        self.items.copy_within(0..self.len, 1);
        self.items[0] = item;
        self.len += 1;
    }
}

impl<T: Copy + Default> Deref for Inline<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..self.len]
    }
}

impl<T: Copy + Default> DerefMut for Inline<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }
}

impl<T: Copy + Default + std::fmt::Debug> std::fmt::Debug for Inline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy + Default + PartialEq> PartialEq for Inline<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Copy + Default + Eq> Eq for Inline<T> {}

impl<T: Copy + Default + PartialEq> PartialEq<Vec<T>> for Inline<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        **self == other[..]
    }
}

impl<T: Copy + Default> FromIterator<T> for Inline<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v = Inline::default();
        for x in iter {
            v.push(x);
        }
        v
    }
}

impl<'a, T: Copy + Default> IntoIterator for &'a Inline<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
