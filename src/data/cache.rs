//! A least-recently-used cache bounded by bytes, shared by loader workers,
//! for decoded images (decoding a PNG or JPEG costs far more than a copy).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Hit and size counters of a [`ByteLru`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found their entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries dropped to stay under the byte limit.
    pub evictions: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now (the sum of the entries' lengths).
    pub bytes: usize,
}

struct Inner<K> {
    map: HashMap<K, (Arc<[u8]>, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    stats: CacheStats,
}

/// A thread-safe LRU map from keys to byte blocks holding at most
/// `capacity` bytes; an entry larger than the capacity is never stored.
pub struct ByteLru<K> {
    capacity: usize,
    inner: Mutex<Inner<K>>,
}

impl<K: Hash + Eq + Clone> ByteLru<K> {
    /// An empty cache of at most `capacity` bytes (0 disables it).
    pub fn new(capacity: usize) -> ByteLru<K> {
        ByteLru {
            capacity,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                stats: CacheStats::default(),
            }),
        }
    }

    /// The byte limit.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        // A worker that panicked mid-update leaves the maps consistent
        // (every update is a few infallible map operations), so go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key`, marking it most recently used.
    pub fn get(&self, key: &K) -> Option<Arc<[u8]>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let Some((value, used)) = inner.map.get_mut(key) else {
            inner.stats.misses += 1;
            return None;
        };
        let (value, old) = (value.clone(), std::mem::replace(used, tick));
        inner.order.remove(&old);
        inner.order.insert(tick, key.clone());
        inner.stats.hits += 1;
        Some(value)
    }

    /// Stores `value` under `key`, evicting least recently used entries
    /// until it fits.
    pub fn insert(&self, key: K, value: Arc<[u8]>) {
        if value.len() > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some((old, used)) = inner.map.remove(&key) {
            inner.order.remove(&used);
            inner.stats.bytes -= old.len();
        }
        while inner.stats.bytes + value.len() > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = inner.map.remove(&oldest) {
                inner.stats.bytes -= old.len();
                inner.stats.evictions += 1;
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.stats.bytes += value.len();
        inner.order.insert(tick, key.clone());
        inner.map.insert(key, (value, tick));
        inner.stats.entries = inner.map.len();
    }

    /// Whether `key` is held (without touching its recency).
    pub fn contains(&self, key: &K) -> bool {
        self.lock().map.contains_key(key)
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.map.len(),
            ..inner.stats
        }
    }
}
