//! A bounded cache of file hashes, keyed by what identifies one version of a
//! file: (device, inode, size, mtime), plus ctime.
//!
//! ctime is in the key because mtime alone can be set back by the file's
//! owner (`touch -d`, `utimensat`) after changing the contents; ctime cannot
//! be set by a user, and every write or `utimensat` moves it.
//!
//! File timestamps come from a coarse clock (one kernel tick, up to 10 ms),
//! so two changes of the same size within one tick leave the key unchanged.
//! As git does for its index, a hash is therefore cached only if the file
//! had not changed for [`SETTLE`] when hashing began: any later change then
//! falls in a later tick and moves ctime.
//!
//! The key does not pin the contents everywhere: a second write through a
//! shared `mmap` to a page that is already dirty changes the file and
//! neither time (no page fault, so no time update), and network and
//! user-space file systems can change a file under us. So a digest is
//! cached only for a file that only root could have written (owned by
//! root, no group or other write bit: a root writer is trusted not to play
//! tricks on procmond) on a file system whose keys can be trusted (not NFS,
//! SMB, 9p, Ceph, FUSE or overlayfs), and every entry has a maximum age
//! (default [`DEFAULT_HASH_CACHE_MAX_AGE`]). A hit therefore proves that a file root
//! alone may write, whose key has not moved, had these contents when it was
//! hashed at most that long ago.
//!
//! Eviction is least-recently-used, by a scan over the entries when the cache
//! is full: a miss costs a whole file hash anyway, which dwarfs the scan.
//!
//! [`SharedHashCache`] lets several collectors (procmond's connections) use
//! one cache, so an agent that reconnects does not rehash everything. The
//! lock is held for a lookup or an insert only, never while a file is read.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a file must have been unchanged before its hash is cached.
pub(crate) const SETTLE: Duration = Duration::from_millis(100);

/// The default longest time a cached digest is served.
pub const DEFAULT_HASH_CACHE_MAX_AGE: Duration = Duration::from_secs(600);

/// Whether a digest of the file `meta` describes may be cached: only root
/// can have written it (owner root, no group or other write bit). The file
/// system is checked by the caller.
pub(crate) fn only_root_writes(meta: &Metadata) -> bool {
    meta.uid() == 0 && meta.mode() & 0o022 == 0
}

/// A SHA-256 digest.
pub(crate) type Digest = [u8; 32];

/// What identifies one version of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    /// The key of the file version that `meta` (from `fstat`) describes.
    pub(crate) fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file's last change (ctime) was at least [`SETTLE`]
    /// before `t`, so that a change after `t` cannot share its timestamp.
    pub(crate) fn settled_at(&self, t: SystemTime) -> bool {
        let Ok(since_epoch) = t.duration_since(UNIX_EPOCH) else {
            return false;
        };
        let t_ns = i128::try_from(since_epoch.as_nanos()).unwrap_or(i128::MAX);
        let ctime_ns = i128::from(self.ctime.0) * 1_000_000_000 + i128::from(self.ctime.1);
        ctime_ns + SETTLE.as_nanos() as i128 <= t_ns
    }
}

/// Counters of a file hash cache (see
/// [`Collector::hash_cache_stats`](crate::collector::Collector::hash_cache_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to hash the file.
    pub misses: u64,
    /// Entries found too old to serve (removed; counted as misses too).
    pub expired: u64,
    /// Files hashed without a lookup, as their digest may not be cached:
    /// someone but root could write them, or their file system's keys
    /// cannot be trusted.
    pub uncacheable: u64,
    /// Entries held now.
    pub entries: usize,
    /// Most entries the cache holds.
    pub capacity: usize,
}

struct Entry {
    digest: Digest,
    last_used: u64,
    inserted: Instant,
}

/// Bounded LRU map from [`FileKey`] to [`Digest`].
pub(crate) struct HashCache {
    capacity: usize,
    max_age: Duration,
    entries: HashMap<FileKey, Entry>,
    clock: u64,
    hits: u64,
    misses: u64,
    expired: u64,
    uncacheable: u64,
}

impl HashCache {
    /// A cache of at most `capacity` entries (0 disables caching), each
    /// served for at most `max_age`.
    pub(crate) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity,
            max_age,
            entries: HashMap::with_capacity(capacity.min(4096)),
            clock: 0,
            hits: 0,
            misses: 0,
            expired: 0,
            uncacheable: 0,
        }
    }

    /// The cached digest of `key` if it was inserted at most the maximum
    /// age before `now`, counted as a hit or a miss (an older entry is
    /// removed).
    pub(crate) fn get(&mut self, key: &FileKey, now: Instant) -> Option<Digest> {
        self.clock += 1;
        let max_age = self.max_age;
        match self.entries.get_mut(key) {
            Some(entry) if now.saturating_duration_since(entry.inserted) <= max_age => {
                entry.last_used = self.clock;
                self.hits += 1;
                Some(entry.digest)
            }
            Some(_) => {
                self.entries.remove(key);
                self.expired += 1;
                self.misses += 1;
                None
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Counts a file hashed without a lookup (see [`CacheStats::uncacheable`]).
    pub(crate) fn note_uncacheable(&mut self) {
        self.uncacheable += 1;
    }

    /// Remembers `digest` for `key` from `now` on, evicting the least
    /// recently used entry when full.
    pub(crate) fn insert(&mut self, key: FileKey, digest: Digest, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.clock += 1;
        let last_used = self.clock;
        self.entries.insert(
            key,
            Entry {
                digest,
                last_used,
                inserted: now,
            },
        );
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            expired: self.expired,
            uncacheable: self.uncacheable,
            entries: self.entries.len(),
            capacity: self.capacity,
        }
    }
}

/// A file hash cache that several [`Collector`](crate::collector::Collector)s
/// share (see
/// [`Collector::with_shared_cache`](crate::collector::Collector::with_shared_cache));
/// clones are handles to the same cache.
///
/// ```
/// use daemoneye_lib::collector::{Collector, CollectorConfig, SharedHashCache};
///
/// let cache = SharedHashCache::new(4096);
/// let first = Collector::with_shared_cache(CollectorConfig::default(), cache.clone());
/// let second = Collector::with_shared_cache(CollectorConfig::default(), cache.clone());
/// assert_eq!(cache.stats().capacity, 4096);
/// # drop((first, second));
/// ```
#[derive(Clone)]
pub struct SharedHashCache(Arc<Mutex<HashCache>>);

impl SharedHashCache {
    /// A cache of at most `capacity` entries (0 disables caching), each
    /// served for at most [`DEFAULT_HASH_CACHE_MAX_AGE`].
    pub fn new(capacity: usize) -> Self {
        Self::with_max_age(capacity, DEFAULT_HASH_CACHE_MAX_AGE)
    }

    /// A cache of at most `capacity` entries, each served for at most
    /// `max_age`.
    pub fn with_max_age(capacity: usize, max_age: Duration) -> Self {
        Self(Arc::new(Mutex::new(HashCache::new(capacity, max_age))))
    }

    /// Counters of every lookup by every collector sharing this cache.
    pub fn stats(&self) -> CacheStats {
        self.lock().stats()
    }

    /// The cached digest of `key`, if not too old, counted as a hit or a
    /// miss.
    pub(crate) fn get(&self, key: &FileKey) -> Option<Digest> {
        self.lock().get(key, Instant::now())
    }

    /// Remembers `digest` for `key`.
    pub(crate) fn insert(&self, key: FileKey, digest: Digest) {
        self.lock().insert(key, digest, Instant::now());
    }

    /// Counts a file hashed without a lookup.
    pub(crate) fn note_uncacheable(&self) {
        self.lock().note_uncacheable();
    }

    /// The cache, locked. A thread that panicked holding the lock left it
    /// whole (no operation panics part-way through an update), so a
    /// poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, HashCache> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for SharedHashCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedHashCache")
            .field(&self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn an_entry_older_than_the_maximum_age_is_not_served() {
        let mut cache = HashCache::new(4, Duration::from_secs(600));
        let t0 = Instant::now();
        cache.insert(key(1), [1; 32], t0);
        let at = |secs| t0.checked_add(Duration::from_secs(secs)).unwrap();
        assert_eq!(cache.get(&key(1), at(600)), Some([1; 32]));
        assert_eq!(cache.get(&key(1), at(601)), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.expired), (1, 1, 1));
        // It was removed: a later lookup is a plain miss.
        assert_eq!(cache.get(&key(1), at(1)), None);
        assert_eq!(cache.stats().entries, 0);
    }

    fn key(ino: u64) -> FileKey {
        FileKey {
            dev: 1,
            ino,
            size: 10,
            mtime: (5, 0),
            ctime: (5, 0),
        }
    }

    #[test]
    fn a_file_changed_just_before_hashing_is_not_settled() {
        let changed = UNIX_EPOCH + Duration::new(1_000, 500);
        let key = FileKey {
            ctime: (1_000, 500),
            ..key(1)
        };
        assert!(!key.settled_at(changed));
        assert!(!key.settled_at(changed + SETTLE - Duration::from_nanos(1)));
        assert!(key.settled_at(changed + SETTLE));
        assert!(!key.settled_at(UNIX_EPOCH - Duration::from_secs(1)));
    }

    #[test]
    fn counts_hits_and_misses() {
        let mut cache = HashCache::new(4, DEFAULT_HASH_CACHE_MAX_AGE);
        assert_eq!(cache.get(&key(1), now()), None);
        cache.insert(key(1), [7; 32], now());
        assert_eq!(cache.get(&key(1), now()), Some([7; 32]));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    }

    #[test]
    fn any_field_change_is_a_different_version() {
        let mut cache = HashCache::new(4, DEFAULT_HASH_CACHE_MAX_AGE);
        cache.insert(key(1), [1; 32], now());
        let mut changed = key(1);
        changed.size = 11;
        assert_eq!(cache.get(&changed, now()), None);
        let mut changed = key(1);
        changed.ctime = (6, 0);
        assert_eq!(cache.get(&changed, now()), None);
        let mut changed = key(1);
        changed.mtime = (5, 1);
        assert_eq!(cache.get(&changed, now()), None);
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = HashCache::new(2, DEFAULT_HASH_CACHE_MAX_AGE);
        cache.insert(key(1), [1; 32], now());
        cache.insert(key(2), [2; 32], now());
        // Touch 1, so 2 is the oldest.
        assert!(cache.get(&key(1), now()).is_some());
        cache.insert(key(3), [3; 32], now());
        assert_eq!(cache.stats().entries, 2);
        assert_eq!(cache.get(&key(2), now()), None);
        assert_eq!(cache.get(&key(1), now()), Some([1; 32]));
        assert_eq!(cache.get(&key(3), now()), Some([3; 32]));
    }

    #[test]
    fn clones_share_entries_and_counters() {
        let cache = SharedHashCache::new(4);
        let other = cache.clone();
        assert_eq!(cache.get(&key(1)), None);
        other.insert(key(1), [9; 32]);
        assert_eq!(cache.get(&key(1)), Some([9; 32]));
        let stats = other.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let mut cache = HashCache::new(0, DEFAULT_HASH_CACHE_MAX_AGE);
        cache.insert(key(1), [1; 32], now());
        assert_eq!(cache.get(&key(1), now()), None);
        assert_eq!(cache.stats().entries, 0);
    }
}
