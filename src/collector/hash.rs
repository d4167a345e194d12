//! SHA-256 of a file: streamed in large blocks, capped in size, refusing
//! anything that is not a regular file, and cached by file version.
//!
//! A path is opened by [`open_regular_below`]: resolved once, as the root
//! agent that names it sees it (below its root directory, so a service's
//! private `/tmp` does not hide root's files there), without opening
//! anything, refused unless that is a regular file, and only then that same
//! inode opened for reading, so no device or FIFO is ever opened, whatever
//! is renamed in between. Paths through `/proc`'s magic links
//! (`/proc/self/fd/N` would reach procmond's own descriptors) are refused.
//! Every later decision is made on the `fstat` and `fstatfs` of the opened
//! descriptor: it must be a regular file, not on a pseudo file system
//! (`/proc/kmsg` claims to be a regular file, and reading it drains the
//! kernel log). A descriptor a peer attached is judged the same way. Reads
//! are positioned (`pread`), never through the descriptor's offset, which a
//! peer that handed the descriptor over shares and could move.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;
use sha2::{Digest as _, Sha256};

use super::blocking::{IoThread, Waited};
use super::cache::{CacheStats, Digest, FileKey, SharedHashCache, only_root_writes};
use crate::sys::fs::{OpenRegularError, file_system, non_regular_kind, open_regular_below};

/// Longest part of a path quoted in an error message, in bytes: results
/// carrying the message stay within
/// [`MAX_ERROR_MESSAGE_BYTES`](crate::proto::limits::MAX_ERROR_MESSAGE_BYTES)
/// whatever path a peer sent.
const SHOWN_PATH_BYTES: usize = 512;

/// `path` for an error message, cut to [`SHOWN_PATH_BYTES`] on a character
/// boundary.
fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.len() <= SHOWN_PATH_BYTES {
        return text.into_owned();
    }
    let mut end = SHOWN_PATH_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Why a file could not be hashed, or a hash check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The path names nothing.
    #[error("{}: no such file", shown(path))]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// The path names nothing in procmond's mount namespace, where it was
    /// looked up since the requester's own (through `/proc/<pid>/root`) was
    /// out of reach (procmond lacks `CAP_SYS_PTRACE` over the requester,
    /// say).
    #[error(
        "{}: no such file in procmond's mount namespace (the agent's, through /proc/{pid}/root, is out of reach: {why})",
        shown(path)
    )]
    NotFoundOutsideRequesterRoot {
        /// The path asked for.
        path: PathBuf,
        /// The requester's pid.
        pid: u32,
        /// Why its root was out of reach.
        why: String,
    },
    /// The path exists but may not be read by this process.
    #[error("{}: permission denied", shown(path))]
    PermissionDenied {
        /// The path asked for.
        path: PathBuf,
    },
    /// A directory, FIFO, socket or device: never read.
    #[error("{}: not a regular file (a {kind})", shown(path))]
    NotRegularFile {
        /// The path asked for.
        path: PathBuf,
        /// What it is instead, e.g. "directory" or "FIFO".
        kind: &'static str,
    },
    /// The file is larger than the configured limit.
    #[error(
        "{}: {size} bytes is more than the {max}-byte hashing limit",
        shown(path)
    )]
    TooLarge {
        /// The path asked for.
        path: PathBuf,
        /// Its size in bytes (at least; it may have grown while read).
        size: u64,
        /// The limit ([`CollectorConfig::max_hash_bytes`](super::CollectorConfig::max_hash_bytes)).
        max: u64,
    },
    /// Opening or reading failed otherwise.
    #[error("{}: {source}", shown(path))]
    Io {
        /// The path asked for.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The path is empty or relative: procmond has no meaningful working directory.
    #[error("{}: the path must be absolute", shown(path))]
    NotAbsolute {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file is on a pseudo file system (proc, sysfs, debugfs, ...): a
    /// kernel interface, whose reads can have side effects, not a stored file.
    #[error("{}: on a {fs} pseudo file system, not hashed", shown(path))]
    PseudoFileSystem {
        /// The path asked for.
        path: PathBuf,
        /// The file system's name, e.g. "proc".
        fs: &'static str,
    },
    /// The path goes through one of `/proc`'s magic links (such as
    /// `/proc/self/fd/N`, which would reach procmond's own descriptors), or
    /// through too many symbolic links.
    #[error(
        "{}: goes through a /proc magic link or a symbolic-link loop",
        shown(path)
    )]
    LinkRefused {
        /// The path asked for.
        path: PathBuf,
    },
    /// A peer other than root named a path: procmond opens no path for it
    /// (the peer opens the file and attaches the descriptor, so the kernel
    /// decides what it may read).
    #[error(
        "{}: uid {uid} may not have procmond open a path; open the file and attach its descriptor",
        shown(path)
    )]
    PathNotAllowed {
        /// The path asked for.
        path: PathBuf,
        /// The requester's uid.
        uid: u32,
    },
    /// A file-system call did not return in time (a hung NFS or FUSE file,
    /// say): the task fails; the call is left to finish on its own thread.
    #[error("{}: no answer from the file system within {after:?}", shown(path))]
    TimedOut {
        /// The path asked for.
        path: PathBuf,
        /// The timeout
        /// ([`CollectorConfig::hash_read_timeout`](super::CollectorConfig::hash_read_timeout)).
        after: Duration,
    },
    /// Too many earlier file-system calls are still hung: none is started.
    #[error("{}: too many hung file reads; try again later", shown(path))]
    TooManyHung {
        /// The path asked for.
        path: PathBuf,
    },
    /// Hashing was stopped part-way (the task's client left).
    #[error("{}: hashing stopped", shown(path))]
    Stopped {
        /// The path asked for.
        path: PathBuf,
    },
    /// An algorithm other than SHA-256 was asked for (its name, cut to 64
    /// bytes).
    #[error("hash algorithm {0:?} is not supported (only \"sha256\")")]
    UnsupportedAlgorithm(String),
    /// The expected hash is not a hex SHA-256 digest (it, cut to 64 bytes).
    #[error("expected hash {0:?} is not a SHA-256 digest (64 hex digits)")]
    MalformedExpectedHash(String),
}

impl HashError {
    fn from_io(path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            return Self::LinkRefused { path };
        }
        match source.kind() {
            io::ErrorKind::NotFound => Self::NotFound { path },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { path },
            _ => Self::Io { path, source },
        }
    }

    fn from_open(path: &Path, error: OpenRegularError) -> Self {
        match error {
            OpenRegularError::NotRegular { kind } => Self::NotRegularFile {
                path: path.to_path_buf(),
                kind,
            },
            OpenRegularError::Replaced => Self::Io {
                path: path.to_path_buf(),
                source: io::Error::other(OpenRegularError::Replaced.to_string()),
            },
            OpenRegularError::Io(source) => Self::from_io(path, source),
        }
    }
}

/// The hashing limits, the reusable read buffer and the cache.
pub(crate) struct Hasher {
    max_bytes: u64,
    block: Vec<u8>,
    block_bytes: usize,
    /// Locked only to look up or insert, never while reading a file.
    cache: SharedHashCache,
    /// Checked between blocks and while a call is waited for: set, hashing
    /// stops with [`HashError::Stopped`].
    stop: Option<Arc<AtomicBool>>,
    /// Where opens, `fstat`s and reads run, each waited for at most
    /// `read_timeout`.
    io: IoThread,
    read_timeout: Duration,
}

impl Hasher {
    pub(crate) fn new(
        max_bytes: u64,
        block_bytes: usize,
        read_timeout: Duration,
        cache: SharedHashCache,
    ) -> Self {
        Self {
            max_bytes,
            block: Vec::new(),
            block_bytes: block_bytes.max(4096),
            cache,
            stop: None,
            io: IoThread::default(),
            read_timeout,
        }
    }

    pub(crate) fn set_stop(&mut self, stop: Arc<AtomicBool>) {
        self.stop = Some(stop);
    }

    fn stopped(&self) -> bool {
        // Relaxed: a request to stop; nothing is read on the strength of it.
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    pub(crate) fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Runs a file-system call on the I/O thread, waiting at most the read
    /// timeout (a hung NFS or FUSE file fails the task, not the worker).
    fn blocking<R: Send + 'static>(
        &mut self,
        path: &Path,
        call: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, HashError> {
        let timeout = self.read_timeout;
        match self.io.run(timeout, self.stop.as_deref(), call) {
            Waited::Done(value) => Ok(value),
            Waited::Stopped => Err(HashError::Stopped {
                path: path.to_path_buf(),
            }),
            Waited::TimedOut => Err(HashError::TimedOut {
                path: path.to_path_buf(),
                after: timeout,
            }),
            Waited::TooManyHung => Err(HashError::TooManyHung {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Hashes the regular file at `path` (opened by procmond: only for
    /// root's tasks and procmond's own use), looked up below `root` when
    /// given (see [`Requester`](super::Requester)): see the module
    /// documentation for what is refused.
    pub(crate) fn hash_path(
        &mut self,
        path: &Path,
        root: Option<BorrowedFd<'_>>,
    ) -> Result<Digest, HashError> {
        // Never a device: opening some has side effects (a watchdog starts,
        // a tape rewinds, a terminal becomes controlling).
        let owned = path.to_path_buf();
        let root = root.map(|root| root.try_clone_to_owned()).transpose();
        let root = root.map_err(|e| HashError::from_io(path, e))?;
        let file = self
            .blocking(path, move || {
                open_regular_below(root.as_ref().map(AsFd::as_fd), &owned)
            })?
            .map_err(|e| HashError::from_open(path, e))?;
        self.hash_file(file, path)
    }

    /// Hashes an already opened file (procmond's own, or a peer's attached
    /// descriptor); `path` only names it in errors. It must be a regular
    /// file, not on a pseudo file system.
    pub(crate) fn hash_file(&mut self, file: File, path: &Path) -> Result<Digest, HashError> {
        let started = SystemTime::now();
        let file = Arc::new(file);
        let opened = Arc::clone(&file);
        let (meta, fs) = self
            .blocking(path, move || -> io::Result<_> {
                Ok((opened.metadata()?, file_system(&*opened)?))
            })?
            .map_err(|e| HashError::from_io(path, e))?;
        check_regular(path, &meta)?;
        if let Some(fs) = fs.pseudo() {
            return Err(HashError::PseudoFileSystem {
                path: path.to_path_buf(),
                fs,
            });
        }
        if meta.len() > self.max_bytes {
            return Err(HashError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                max: self.max_bytes,
            });
        }
        // A key pins the contents only if no one but root could have
        // changed them unseen (see the cache's documentation).
        if !only_root_writes(&meta) || fs.untrusted_versions().is_some() {
            self.cache.note_uncacheable();
            return self.stream(&file, path);
        }
        let key = FileKey::of(&meta);
        if let Some(digest) = self.cache.get(&key) {
            return Ok(digest);
        }
        let digest = self.stream(&file, path)?;
        // Cache only if the file did not change while it was read (else the
        // key would name other contents than those hashed), and had settled
        // before (else a change in the same clock tick could keep the key).
        let opened = Arc::clone(&file);
        let after = self
            .blocking(path, move || opened.metadata())?
            .map_err(|e| HashError::from_io(path, e))?;
        if FileKey::of(&after) == key && key.settled_at(started) {
            self.cache.insert(key, digest);
        }
        Ok(digest)
    }

    fn stream(&mut self, file: &Arc<File>, path: &Path) -> Result<Digest, HashError> {
        let mut sha = Sha256::new();
        let mut total: u64 = 0;
        loop {
            if self.stopped() {
                return Err(HashError::Stopped {
                    path: path.to_path_buf(),
                });
            }
            // The block travels to the I/O thread and back; one left behind
            // with a hung read is replaced.
            let mut block = std::mem::take(&mut self.block);
            if block.len() != self.block_bytes {
                block = vec![0; self.block_bytes];
            }
            let opened = Arc::clone(file);
            // Positioned: the offset may be shared with another process.
            let (block, read) = self.blocking(path, move || {
                let read = opened.read_at(&mut block, total);
                (block, read)
            })?;
            self.block = block;
            let n = match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HashError::from_io(path, e)),
            };
            total = total.saturating_add(n as u64);
            // The file may grow after the size check: stop at the limit.
            if total > self.max_bytes {
                return Err(HashError::TooLarge {
                    path: path.to_path_buf(),
                    size: total,
                    max: self.max_bytes,
                });
            }
            sha.update(&self.block[..n]);
        }
        Ok(sha.finalize().into())
    }
}

/// Opens `path` read-only without blocking on a FIFO or claiming a terminal.
pub(crate) fn open_nonblocking(path: &Path) -> Result<File, HashError> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| HashError::from_io(path, e))
}

fn check_regular(path: &Path, meta: &Metadata) -> Result<(), HashError> {
    match non_regular_kind(meta.mode()) {
        None => Ok(()),
        Some(kind) => Err(HashError::NotRegularFile {
            path: path.to_path_buf(),
            kind,
        }),
    }
}

/// Lower-case hex of a digest.
pub(crate) fn to_hex(digest: &Digest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0xf)] as char);
    }
    out
}

/// Whether `hex` is a SHA-256 digest written in hex (either case).
pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_of_known_digest() {
        // SHA-256 of the empty input.
        let digest: Digest = Sha256::digest(b"").into();
        assert_eq!(
            to_hex(&digest),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_hex(&to_hex(&digest)));
        assert!(is_sha256_hex(&to_hex(&digest).to_uppercase()));
        assert!(!is_sha256_hex("abc"));
        assert!(!is_sha256_hex(&"g".repeat(64)));
    }

    #[test]
    fn char_device_is_refused_without_reading() {
        let mut hasher = Hasher::new(
            1 << 20,
            1 << 20,
            Duration::from_secs(5),
            SharedHashCache::new(4),
        );
        match hasher.hash_path(Path::new("/dev/zero"), None) {
            Err(HashError::NotRegularFile { kind, .. }) => assert_eq!(kind, "character device"),
            other => panic!("expected NotRegularFile, got {other:?}"),
        }
    }
}
