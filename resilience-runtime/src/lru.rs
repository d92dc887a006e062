//! The bookkeeping of a bounded per-key map: entries in a slab, found through a hash table of
//! slab indexes, each on one of `LISTS` doubly linked recency lists (least recently used first).
//!
//! Every operation is O(1) (the table's growth aside, amortised): finding an entry, moving it to
//! the back of a list, inserting one, and taking the front of a list to evict it. Nothing walks
//! the entries but [`Lru::values`], which only reports do.
//!
//! The slab's first `LISTS` slots are the lists' sentinels: a list is circular through its
//! sentinel, so an entry leaves its list without knowing which list it is on. Freed slots are
//! chained through `next` and reused before the slab grows, so the slab never holds more slots
//! than the most entries it has held at once, plus the sentinels.
//!
//! The owner keeps its keys in its values and passes the hash of a key with each call; the table
//! asks for a value's hash again (`rehash`) only when it grows.
//!
//! [`Shards`] splits a large map into a few such maps by key hash, each under its own mutex, so
//! that threads looking up different keys seldom wait for one another.

use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

/// The most shards a map is split into.
const MAX_SHARDS: usize = 16;
/// The fewest keys a shard is made for: a map of fewer than twice this is not split, so that its
/// order of eviction is exact over all its keys.
const SHARD_KEYS: usize = 2_048;

/// A map's keys split by hash into shards of `M`, each under its own mutex.
pub(crate) struct Shards<M> {
    shards: Box<[Mutex<M>]>,
}

impl<M> Shards<M> {
    /// Shards for a map of at most `max_keys` keys: one below 4,096 keys, then one per 2,048
    /// keys, rounded down to a power of two, at most 16. Fixed for the map's life.
    pub(crate) fn new(max_keys: usize, mut make: impl FnMut() -> M) -> Shards<M> {
        let wanted = (max_keys / SHARD_KEYS).clamp(1, MAX_SHARDS);
        let n = 1 << wanted.ilog2();
        Shards {
            shards: (0..n).map(|_| Mutex::new(make())).collect(),
        }
    }

    /// How many shards.
    pub(crate) fn count(&self) -> usize {
        self.shards.len()
    }

    /// The shard of a key whose hash is `hash`. Bits the shard's table uses for neither its
    /// bucket (low bits) nor its control byte (top seven) pick it.
    #[inline]
    pub(crate) fn of(&self, hash: u64) -> usize {
        (hash >> 40) as usize & (self.shards.len() - 1)
    }

    /// Locks shard `i` (a poisoned lock is taken over: nothing in a shard panics halfway
    /// through a change).
    #[inline]
    pub(crate) fn lock(&self, i: usize) -> MutexGuard<'_, M> {
        // A power of two of at least one shard: the mask keeps any `i` in range.
        self.shards[i & (self.shards.len() - 1)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every shard, one at a time.
    pub(crate) fn each(&self, mut f: impl FnMut(&mut M)) {
        for i in 0..self.shards.len() {
            f(&mut self.lock(i));
        }
    }
}

/// No slot: the end of the free chain.
const NIL: u32 = u32::MAX;

/// One slab slot: an entry (`value` is `Some`), a sentinel or a free slot (`None`).
#[derive(Debug)]
struct Slot<T> {
    prev: u32,
    next: u32,
    value: Option<T>,
}

/// Entries of type `T` on `LISTS` recency lists, found by hash.
pub(crate) struct Lru<T, const LISTS: usize> {
    table: HashTable<u32>,
    slots: Vec<Slot<T>>,
    /// The first free slot, chained through `next`, or [`NIL`].
    free: u32,
    len: usize,
}

impl<T, const LISTS: usize> Lru<T, LISTS> {
    /// An empty map.
    pub(crate) fn new() -> Self {
        let slots = (0..LISTS as u32)
            .map(|l| Slot {
                prev: l,
                next: l,
                value: None,
            })
            .collect();
        Lru {
            table: HashTable::new(),
            slots,
            free: NIL,
            len: 0,
        }
    }

    /// Entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    // Slot indexes come from the table, the lists and the free chain, which hold only indexes
    // of slots that exist: the slab never shrinks.
    fn slot(&self, i: u32) -> &Slot<T> {
        &self.slots[i as usize]
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot<T> {
        &mut self.slots[i as usize]
    }

    /// The entry whose hash is `hash` and for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| {
                slots
                    .get(i as usize)
                    .and_then(|s| s.value.as_ref())
                    .is_some_and(&mut eq)
            })
            .copied()
    }

    /// The value of entry `i`.
    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        self.slots.get(i as usize)?.value.as_ref()
    }

    /// The value of entry `i`, to change it in place (never its key).
    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.slots.get_mut(i as usize)?.value.as_mut()
    }

    /// The least recently moved entry of `list`.
    pub(crate) fn front(&self, list: usize) -> Option<u32> {
        let head = self.slots.get(list)?.next;
        (head as usize != list).then_some(head)
    }

    /// Moves entry `i` to the back of `list` (from whichever list it is on).
    #[inline]
    pub(crate) fn move_to_back(&mut self, i: u32, list: usize) {
        let sentinel = list as u32;
        // Already last on that list: the common case of a key used again and again.
        if self.slot(sentinel).prev == i {
            return;
        }
        self.unlink(i);
        self.push_back(i, sentinel);
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = self.slot(i);
            (s.prev, s.next)
        };
        self.slot_mut(prev).next = next;
        self.slot_mut(next).prev = prev;
    }

    fn push_back(&mut self, i: u32, sentinel: u32) {
        let tail = self.slot(sentinel).prev;
        self.slot_mut(tail).next = i;
        self.slot_mut(sentinel).prev = i;
        let s = self.slot_mut(i);
        s.prev = tail;
        s.next = sentinel;
    }

    /// Adds `value`, whose key hashes to `hash` and is not in the map, at the back of `list`.
    /// `rehash` gives a value's hash, for the table to grow.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        value: T,
        list: usize,
        rehash: impl Fn(&T) -> u64,
    ) -> u32 {
        let i = if self.free == NIL {
            // Grown by an eighth (amortised O(1) still): a slab that doubled would leave up to
            // half its slots unused, 24 bytes each for a per-key breaker.
            if self.slots.len() == self.slots.capacity() {
                self.slots.reserve_exact((self.slots.len() / 8).max(16));
            }
            self.slots.push(Slot {
                prev: NIL,
                next: NIL,
                value: None,
            });
            (self.slots.len() - 1) as u32
        } else {
            let i = self.free;
            self.free = self.slot(i).next;
            i
        };
        self.slot_mut(i).value = Some(value);
        self.push_back(i, list as u32);
        let Lru { table, slots, .. } = self;
        table.insert_unique(hash, i, |&j| {
            slots
                .get(j as usize)
                .and_then(|s| s.value.as_ref())
                .map_or(0, &rehash)
        });
        self.len += 1;
        i
    }

    /// Takes entry `i`, whose key hashes to `hash`, out of the map.
    pub(crate) fn remove(&mut self, i: u32, hash: u64) -> Option<T> {
        let value = self.slots.get_mut(i as usize)?.value.take()?;
        if let Ok(e) = self.table.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        self.unlink(i);
        let free = self.free;
        let s = self.slot_mut(i);
        s.prev = NIL;
        s.next = free;
        self.free = i;
        self.len -= 1;
        Some(value)
    }

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.value.as_ref())
    }

    /// The values of `list`, least recently moved first.
    #[cfg(test)]
    pub(crate) fn list(&self, list: usize) -> Vec<&T> {
        let mut out = Vec::new();
        let mut i = self.front(list);
        while let Some(at) = i {
            out.extend(self.get(at));
            let next = self.slot(at).next;
            i = (next as usize != list).then_some(next);
        }
        out
    }
}

impl<T, const LISTS: usize> std::fmt::Debug for Lru<T, LISTS> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lru").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &u32) -> u64 {
        u64::from(*k).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn add<const N: usize>(m: &mut Lru<u32, N>, k: u32, list: usize) -> u32 {
        m.insert(h(&k), k, list, h)
    }

    #[test]
    fn lists_keep_their_order_and_moves_go_to_the_back() {
        let mut m: Lru<u32, 2> = Lru::new();
        let a = add(&mut m, 1, 0);
        add(&mut m, 2, 0);
        add(&mut m, 3, 1);
        add(&mut m, 4, 0);
        assert_eq!(m.list(0), [&1, &2, &4]);
        assert_eq!(m.list(1), [&3]);
        m.move_to_back(a, 0);
        assert_eq!(m.list(0), [&2, &4, &1]);
        m.move_to_back(a, 1);
        assert_eq!(m.list(0), [&2, &4]);
        assert_eq!(m.list(1), [&3, &1]);
        assert_eq!(m.find(h(&1), |v| *v == 1), Some(a));
        assert_eq!(m.find(h(&5), |v| *v == 5), None);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn a_map_is_split_only_when_large_and_by_bits_its_tables_do_not_use() {
        let count = |max_keys| Shards::new(max_keys, || ()).count();
        assert_eq!(
            [1, 4_095, 4_096, 10_000, 16_383, 32_768, 100_000_000].map(count),
            [1, 1, 2, 4, 4, 16, 16]
        );
        let s = Shards::new(100_000, || ());
        assert!((0..1_000u64).all(|h| s.of(h << 40) == (h % 16) as usize));
    }

    #[test]
    fn removed_slots_are_reused_and_the_slab_does_not_grow() {
        let mut m: Lru<u32, 1> = Lru::new();
        for k in 0..100 {
            add(&mut m, k, 0);
        }
        let slots = m.slots.len();
        for k in 100..10_000 {
            let front = m.front(0).unwrap();
            let old = *m.get(front).unwrap();
            assert_eq!(old, k - 100, "the oldest goes first");
            assert_eq!(m.remove(front, h(&old)), Some(old));
            assert_eq!(m.find(h(&old), |v| *v == old), None);
            add(&mut m, k, 0);
            assert_eq!(m.len(), 100);
        }
        assert_eq!(m.slots.len(), slots);
        assert_eq!(m.values().count(), 100);
        assert_eq!(m.remove(0, 0), None, "a sentinel is no entry");
    }
}
