//! procmond's work: enumerate, filter, hash, verify and monitor processes.
//!
//! This module knows nothing of rings or sockets: it turns the seed's task
//! inputs ([`ProtoProcessFilter`], [`ProtoHashCheck`]) into its outputs
//! ([`ProtoProcessRecord`], [`ProtoHashResult`]), which the daemon streams.
//!
//! Processes come from a [`ProcessTable`]: procmond keeps one, fed by the
//! kernel's process events ([`ProcessTable::start`]), and every
//! connection's [`Collector`] answers from it; a collector made with
//! [`Collector::new`] has a table of its own that each poll reads again
//! from `/proc`. CPU usage is measured over a window of at least 100 ms
//! (clock ticks are 10 ms, so shorter windows read 0 % or 1000 %): a
//! process has none until it has been known that long, and polls within
//! 100 ms of a reading share it.
//!
//! ```
//! use daemoneye_lib::collector::{Collector, CollectorConfig};
//! use daemoneye_lib::proto::ProtoProcessFilter;
//!
//! let mut collector = Collector::new(CollectorConfig::default());
//! let me = ProtoProcessFilter {
//!     process_names: vec![],
//!     pids: vec![std::process::id()],
//!     executable_pattern: None,
//! };
//! let records = collector.enumerate(Some(&me), false)?;
//! assert_eq!(records[0].pid, std::process::id());
//! assert_eq!(records[0].cpu_usage, None); // not known for 100 ms yet
//! # Ok::<(), daemoneye_lib::collector::CollectError>(())
//! ```

mod blocking;
mod bounds;
mod cache;
mod cpu;
mod details;
mod event_source;
mod events;
mod feed;
mod filter;
mod hash;
mod monitor;
mod requester;
mod table;
mod usage;
mod verify;

use std::fs::File;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use crate::sys::cn_proc::SubscribeError;
pub use cache::{CacheStats, DEFAULT_HASH_CACHE_MAX_AGE, SharedHashCache};
pub use event_source::{EventHandler, EventSource, EventSourceConfig, StopError};
pub use events::{
    Decoder, Event, EventStats, LossReason, Malformed, ProcEvent, ProcessEvent, Tally, comm_name,
};
pub use filter::FilterError;
pub use hash::HashError;
pub use monitor::{MIN_POLL_INTERVAL, TreeEvent, TreeMonitor};
pub use requester::Requester;
pub use table::{Overflowed, ProcKey, ProcessTable, SourceKind, TableConfig, TableStats, Waker};

use crate::proto::encoded::EncodedRecord;
use crate::proto::{
    ProtoHashCheck, ProtoHashResult, ProtoProcessFilter, ProtoProcessRecord, excerpt,
};
use filter::ProcessFilter;

/// The name of the only hash algorithm, as records and results carry it.
pub const HASH_ALGORITHM: &str = "sha256";

/// Limits and cache sizes of a [`Collector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorConfig {
    /// Largest file that is hashed; a larger one is an error
    /// ([`HashError::TooLarge`]). Default 512 MiB.
    pub max_hash_bytes: u64,
    /// Block size of hashing reads. Default 1 MiB.
    pub hash_block_bytes: usize,
    /// Most file hashes kept, keyed by file version (device, inode, size,
    /// mtime and ctime). Default 4096; 0 disables the cache. A file changed
    /// less than 100 ms before it is hashed is not cached: a second change in
    /// the same clock tick could leave its timestamps as they were. Only
    /// files that root alone can write, on file systems whose keys can be
    /// trusted, are cached at all.
    pub hash_cache_entries: usize,
    /// The longest a cached hash is served. Default 10 minutes.
    pub hash_cache_max_age: Duration,
    /// The longest one open, `fstat` or read of a file being hashed may
    /// take (a hung NFS or FUSE file) before the task fails with
    /// [`HashError::TimedOut`]. Default 30 s.
    pub hash_read_timeout: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            max_hash_bytes: 512 << 20,
            hash_block_bytes: 1 << 20,
            hash_cache_entries: 4096,
            hash_cache_max_age: DEFAULT_HASH_CACHE_MAX_AGE,
            hash_read_timeout: Duration::from_secs(30),
        }
    }
}

/// A task that could not be carried out at all.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The task's filter is invalid.
    #[error("invalid process filter: {0}")]
    Filter(#[from] FilterError),
    /// The process table could not be read.
    #[error("cannot list processes: {path} is not readable or not mounted")]
    ProcUnavailable {
        /// The directory that failed.
        path: &'static str,
    },
    /// A monitor fell too far behind the process changes it is sent.
    #[error("{0}")]
    Overflowed(#[from] Overflowed),
}

/// The outcome of a CHECK_PROCESS_HASH task.
#[derive(Debug)]
pub struct HashOutcome {
    /// The seed's result: `success` says whether the hash was computed;
    /// `error_message` says what failed.
    pub result: ProtoHashResult,
    /// Whether the hash equals the expected one (compared without regard to
    /// case); `None` when nothing was expected or nothing was computed.
    pub matched: Option<bool>,
    /// What failed, typed, when `result.success` is false.
    pub error: Option<HashError>,
}

/// procmond's collector; see the [module documentation](self).
pub struct Collector {
    table: ProcessTable,
    hasher: hash::Hasher,
}

impl Collector {
    /// A collector with the given limits, a process table of its own that
    /// each poll reads again from `/proc`, and a file hash cache of its own.
    /// Cheap: nothing is read yet.
    pub fn new(config: CollectorConfig) -> Self {
        let cache =
            SharedHashCache::with_max_age(config.hash_cache_entries, config.hash_cache_max_age);
        Self::with_shared_cache(config, cache)
    }

    /// A collector answering from `table` (shared with other collectors:
    /// procmond's connections share one, fed by kernel events), with its
    /// file hashes in `cache`.
    pub fn with_table(
        config: CollectorConfig,
        table: ProcessTable,
        cache: SharedHashCache,
    ) -> Self {
        Self {
            table,
            hasher: hash::Hasher::new(
                config.max_hash_bytes,
                config.hash_block_bytes,
                config.hash_read_timeout,
                cache,
            ),
        }
    }

    /// The process table this collector answers from.
    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    /// A collector with the given limits whose file hashes go to and come
    /// from `cache`, shared with other collectors (procmond's connections
    /// share one, so an agent that reconnects is not answered by rehashing
    /// every file). `config.hash_cache_entries` and `hash_cache_max_age` are
    /// not used: the cache has its own.
    pub fn with_shared_cache(config: CollectorConfig, cache: SharedHashCache) -> Self {
        Self::with_table(config, ProcessTable::polling(), cache)
    }

    /// Makes hashing stop part-way once `stop` is set (checked between
    /// blocks): a hash in progress fails with [`HashError::Stopped`], so a
    /// task whose client left does not read on through a large file.
    pub fn stop_hashing_when(&mut self, stop: Arc<AtomicBool>) {
        self.hasher.set_stop(stop);
    }

    /// ENUMERATE_PROCESSES: every visible process that passes `filter`
    /// (`None`: all), sorted by pid. With `with_hashes`, each record also
    /// carries the SHA-256 of its running image, and `file_exists` is
    /// decided as by [`verify`](Self::verify).
    ///
    /// Without hashes, `file_exists` is true when the kernel reports a path
    /// for the image that it has not marked deleted. `accessible` is false
    /// when /proc refused the executable link or the command line (another
    /// user's process, without privilege).
    pub fn enumerate(
        &mut self,
        filter: Option<&ProtoProcessFilter>,
        with_hashes: bool,
    ) -> Result<Vec<ProtoProcessRecord>, CollectError> {
        let mut records = Vec::new();
        self.for_each(filter, with_hashes, |record| {
            records.push(record);
            ControlFlow::Continue(())
        })?;
        Ok(records)
    }

    /// [`enumerate`](Self::enumerate), handing each record to `sink` as it is
    /// built instead of collecting them; `sink` may stop the walk early.
    /// Returns how many records were handed over.
    pub fn for_each(
        &mut self,
        filter: Option<&ProtoProcessFilter>,
        with_hashes: bool,
        mut sink: impl FnMut(ProtoProcessRecord) -> ControlFlow<()>,
    ) -> Result<usize, CollectError> {
        let filter = ProcessFilter::compile(filter)?;
        let only_pids = filter.only_pids();
        self.table.refresh()?;
        let mut handed = 0;
        let hasher = &mut self.hasher;
        self.table.visit(only_pids.as_deref(), |seen| {
            let mut record = seen.record;
            if !filter.admits_pid(record.pid)
                || !filter.admits(&record.name, record.executable_path.as_deref())
            {
                return ControlFlow::Continue(());
            }
            if with_hashes {
                add_image_hash(hasher, &mut record, seen.exe.as_deref());
            }
            handed += 1;
            sink(record)
        })?;
        Ok(handed)
    }

    /// ENUMERATE_PROCESSES without hashes, as [`for_each`](Self::for_each),
    /// with each record's stable fields encoded once by the table and kept
    /// until they change, so a poll encodes only usage and collection time.
    /// `sink` gets each record with its pid.
    pub fn for_each_encoded(
        &mut self,
        filter: Option<&ProtoProcessFilter>,
        mut sink: impl FnMut(u32, EncodedRecord) -> ControlFlow<()>,
    ) -> Result<usize, CollectError> {
        let filter = ProcessFilter::compile(filter)?;
        let only_pids = filter.only_pids();
        self.table.refresh()?;
        let mut handed = 0;
        self.table.visit_encoded(only_pids.as_deref(), |seen| {
            if !filter.admits_pid(seen.pid)
                || !filter.admits(&seen.details.name, seen.details.exe_text.as_deref())
            {
                return ControlFlow::Continue(());
            }
            handed += 1;
            sink(seen.pid, seen.record)
        })?;
        Ok(handed)
    }

    /// VERIFY_EXECUTABLE: for each process that passes `filter`, the SHA-256
    /// of the image it runs (read through `/proc/<pid>/exe`, so a deleted or
    /// replaced file is still hashed as it runs) in `executable_hash`, and
    /// `file_exists` true only when the path on disk still holds that image
    /// (same device and inode). A process whose image cannot be read (a
    /// kernel thread, another user's process without privilege, a file over
    /// the size limit) has no hash.
    pub fn verify(
        &mut self,
        filter: Option<&ProtoProcessFilter>,
    ) -> Result<Vec<ProtoProcessRecord>, CollectError> {
        self.enumerate(filter, true)
    }

    /// CHECK_PROCESS_HASH for procmond itself (as root): the SHA-256 of the
    /// file at `check.executable_path`, compared with `check.expected_hash`
    /// when one is given. The algorithm must be "sha256" (any case) or empty.
    ///
    /// Only regular files on ordinary file systems are read, and only a
    /// regular file is ever opened (no device, whatever is renamed
    /// meanwhile): a file on a pseudo file system such as `/proc` or `/sys`
    /// is [`HashError::PseudoFileSystem`], a path through a `/proc` magic
    /// link [`HashError::LinkRefused`]. For a peer's task use
    /// [`check_hash_for`](Self::check_hash_for) or
    /// [`check_hash_of`](Self::check_hash_of).
    pub fn check_hash(&mut self, check: &ProtoHashCheck) -> HashOutcome {
        self.check_hash_for(check, Requester::root())
    }

    /// CHECK_PROCESS_HASH naming a path, on behalf of `requester` (the peer
    /// that sent the task): as [`check_hash`](Self::check_hash) for root;
    /// for anyone else [`HashError::PathNotAllowed`], as procmond opens no
    /// path for a peer but root (the peer opens the file itself and attaches
    /// it: [`check_hash_of`](Self::check_hash_of)). Procmond runs as root;
    /// otherwise any allowed peer could have it hash `/etc/shadow`.
    ///
    /// ```
    /// use daemoneye_lib::collector::{Collector, CollectorConfig, HashError, Requester};
    /// use daemoneye_lib::proto::ProtoHashCheck;
    ///
    /// let mut collector = Collector::new(CollectorConfig::default());
    /// let check = ProtoHashCheck {
    ///     expected_hash: String::new(),
    ///     hash_algorithm: "sha256".to_string(),
    ///     executable_path: "/proc/self/status".to_string(),
    /// };
    /// let outcome = collector.check_hash_for(&check, Requester::root());
    /// assert!(matches!(outcome.error, Some(HashError::PseudoFileSystem { fs: "proc", .. })));
    /// let outcome = collector.check_hash_for(&check, Requester::other(1000));
    /// assert!(matches!(outcome.error, Some(HashError::PathNotAllowed { uid: 1000, .. })));
    /// ```
    pub fn check_hash_for(&mut self, check: &ProtoHashCheck, requester: Requester) -> HashOutcome {
        self.outcome(check, Source::Path(requester))
    }

    /// CHECK_PROCESS_HASH of a file the peer opened itself and attached to
    /// the task: the kernel decided, when the peer opened it, that it may
    /// read it. `check.executable_path` only names it. It must be a regular
    /// file, not on a pseudo file system.
    pub fn check_hash_of(&mut self, check: &ProtoHashCheck, file: File) -> HashOutcome {
        self.outcome(check, Source::File(file))
    }

    fn outcome(&mut self, check: &ProtoHashCheck, source: Source) -> HashOutcome {
        let mut result = ProtoHashResult {
            hash_value: String::new(),
            algorithm: HASH_ALGORITHM.to_string(),
            file_path: check.executable_path.clone(),
            success: false,
            error_message: None,
        };
        match self.hash_checked(check, source) {
            Ok((hex, matched)) => {
                result.hash_value = hex;
                result.success = true;
                HashOutcome {
                    result,
                    matched,
                    error: None,
                }
            }
            Err(error) => {
                if let HashError::UnsupportedAlgorithm(_) = &error {
                    // Not "sha256", which was not computed, nor the peer's
                    // name, which would make the result invalid.
                    result.algorithm.clear();
                }
                result.error_message = Some(error.to_string());
                HashOutcome {
                    result,
                    matched: None,
                    error: Some(error),
                }
            }
        }
    }

    /// Counters of the file hash cache (of every collector sharing it).
    pub fn hash_cache_stats(&self) -> CacheStats {
        self.hasher.cache_stats()
    }

    /// MONITOR_PROCESS_TREE: starts watching the tree under `roots` (every
    /// process when empty). [`TreeMonitor::snapshot`] is the tree now;
    /// [`TreeMonitor::next_batch`] reports what happens in it.
    pub fn monitor(&mut self, roots: &[u32]) -> Result<TreeMonitor, CollectError> {
        TreeMonitor::start(&self.table, roots)
    }

    fn hash_checked(
        &mut self,
        check: &ProtoHashCheck,
        source: Source,
    ) -> Result<(String, Option<bool>), HashError> {
        let algorithm = check.hash_algorithm.trim();
        if !(algorithm.is_empty()
            || algorithm.eq_ignore_ascii_case("sha256")
            || algorithm.eq_ignore_ascii_case("sha-256"))
        {
            return Err(HashError::UnsupportedAlgorithm(excerpt(
                &check.hash_algorithm,
            )));
        }
        let expected = check.expected_hash.trim();
        if !expected.is_empty() && !hash::is_sha256_hex(expected) {
            return Err(HashError::MalformedExpectedHash(excerpt(
                &check.expected_hash,
            )));
        }
        let path = Path::new(&check.executable_path);
        let digest = match source {
            Source::File(file) => self.hasher.hash_file(file, path)?,
            Source::Path(requester) if !requester.may_name_paths() => {
                return Err(HashError::PathNotAllowed {
                    path: path.to_path_buf(),
                    uid: requester.uid,
                });
            }
            Source::Path(_) if !path.is_absolute() => {
                return Err(HashError::NotAbsolute {
                    path: path.to_path_buf(),
                });
            }
            Source::Path(requester) => {
                self.hasher
                    .hash_path(path, requester.root_dir())
                    .map_err(|error| match (error, requester.unreached_root()) {
                        (HashError::NotFound { path }, Some((pid, why))) => {
                            HashError::NotFoundOutsideRequesterRoot {
                                path,
                                pid,
                                why: why.to_owned(),
                            }
                        }
                        (error, _) => error,
                    })?
            }
        };
        let hex = hash::to_hex(&digest);
        let matched = (!expected.is_empty()).then(|| expected.eq_ignore_ascii_case(&hex));
        Ok((hex, matched))
    }
}

/// What a hash check hashes: a path procmond opens for its requester, or a
/// descriptor the peer attached.
enum Source {
    Path(Requester),
    File(File),
}

fn add_image_hash(hasher: &mut hash::Hasher, record: &mut ProtoProcessRecord, exe: Option<&Path>) {
    let image = verify::check_image(record.pid, exe, hasher);
    record.file_exists = image.file_exists;
    if let Some(newer) = image.newer_exe {
        record.executable_path = Some(details::exe_text(&newer));
    }
    match image.digest {
        Ok(digest) => {
            record.executable_hash = Some(hash::to_hex(&digest));
            record.hash_algorithm = Some(HASH_ALGORITHM.to_string());
        }
        Err(error) => {
            tracing::debug!(pid = record.pid, %error, "running image not hashed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_and_monitor_can_move_to_a_worker_thread() {
        fn send<T: Send>() {}
        send::<Collector>();
        send::<TreeMonitor>();
        send::<HashOutcome>();
    }

    #[test]
    fn hashing_stops_once_the_stop_flag_is_set() {
        // This test's own executable: a real file of several blocks.
        let path = std::env::current_exe().unwrap();
        let check = ProtoHashCheck {
            executable_path: path.to_string_lossy().into_owned(),
            expected_hash: String::new(),
            hash_algorithm: HASH_ALGORITHM.to_string(),
        };
        let mut collector = Collector::new(config_with_small_blocks());
        let stop = Arc::new(AtomicBool::new(false));
        collector.stop_hashing_when(Arc::clone(&stop));
        assert!(collector.check_hash(&check).result.success);

        // A fresh collector (no cached digest) with the flag set.
        let mut collector = Collector::new(config_with_small_blocks());
        collector.stop_hashing_when(Arc::clone(&stop));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let outcome = collector.check_hash(&check);
        assert!(!outcome.result.success);
        assert!(
            matches!(outcome.error, Some(HashError::Stopped { .. })),
            "{:?}",
            outcome.error
        );
    }

    fn config_with_small_blocks() -> CollectorConfig {
        CollectorConfig {
            hash_block_bytes: 4096,
            ..CollectorConfig::default()
        }
    }
}
