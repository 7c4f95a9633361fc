//! A slab with generation-checked typed keys.

use slab::Slab;

/// A key type an [`Arena`] hands out.
pub(crate) trait ArenaKey: Copy {
    fn new(index: usize, generation: u32) -> Self;
    fn index(self) -> usize;
}

macro_rules! impl_key {
    ($($t:ty),*) => {$(
        impl ArenaKey for $t {
            fn new(index: usize, generation: u32) -> Self {
                <$t>::new(index, generation)
            }
            fn index(self) -> usize {
                <$t>::index(self)
            }
        }
    )*};
}
impl_key!(
    crate::RoomId,
    crate::TransportId,
    crate::TrackId,
    crate::SubscriptionId
);

/// Entities addressed by `K`. Each slot remembers the key it was issued under, so a key of a
/// removed entity never reaches a later occupant of the same slot.
#[derive(Debug)]
pub(crate) struct Arena<K, V> {
    slots: Slab<(K, V)>,
}

impl<K: ArenaKey + PartialEq, V> Arena<K, V> {
    pub(crate) fn new() -> Self {
        Self { slots: Slab::new() }
    }

    /// Inserts the value built by `make` (which learns its own key).
    pub(crate) fn insert_with(&mut self, generation: u32, make: impl FnOnce(K) -> V) -> K {
        let entry = self.slots.vacant_entry();
        let key = K::new(entry.key(), generation);
        entry.insert((key, make(key)));
        key
    }

    pub(crate) fn get(&self, key: K) -> Option<&V> {
        self.slots
            .get(key.index())
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: K) -> Option<&mut V> {
        self.slots
            .get_mut(key.index())
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub(crate) fn remove(&mut self, key: K) -> Option<V> {
        self.get(key)?;
        Some(self.slots.remove(key.index()).1)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.slots.iter().map(|(_, (k, v))| (*k, v))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut V)> {
        self.slots.iter_mut().map(|(_, (k, v))| (*k, &mut *v))
    }
}
