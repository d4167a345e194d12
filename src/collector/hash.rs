//! SHA-256 of a file: streamed in large blocks, capped in size, refusing
//! anything that is not a regular file, and cached by file version.
//!
//! Files are opened with `O_NONBLOCK | O_NOCTTY`, after a `stat` that refuses
//! non-regular paths without opening them, so neither a FIFO without a writer
//! nor a device such as `/dev/zero` can hang or endlessly feed the hasher; the
//! `fstat` of the open file is checked again, against a swap after the `stat`.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::OFlag;
use sha2::{Digest as _, Sha256};

use super::cache::{CacheStats, Digest, FileKey, HashCache};

/// Why a file could not be hashed, or a hash check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The path names nothing.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// The path exists but may not be read by this process.
    #[error("{}: permission denied", path.display())]
    PermissionDenied {
        /// The path asked for.
        path: PathBuf,
    },
    /// A directory, FIFO, socket or device: never read.
    #[error("{}: not a regular file (a {kind})", path.display())]
    NotRegularFile {
        /// The path asked for.
        path: PathBuf,
        /// What it is instead, e.g. "directory" or "FIFO".
        kind: &'static str,
    },
    /// The file is larger than the configured limit.
    #[error("{}: {size} bytes is more than the {max}-byte hashing limit", path.display())]
    TooLarge {
        /// The path asked for.
        path: PathBuf,
        /// Its size in bytes (at least; it may have grown while read).
        size: u64,
        /// The limit ([`CollectorConfig::max_hash_bytes`](super::CollectorConfig::max_hash_bytes)).
        max: u64,
    },
    /// Opening or reading failed otherwise.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path asked for.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The path is empty or relative: procmond has no meaningful working directory.
    #[error("{}: the path must be absolute", path.display())]
    NotAbsolute {
        /// The path asked for.
        path: PathBuf,
    },
    /// An algorithm other than SHA-256 was asked for.
    #[error("hash algorithm {0:?} is not supported (only \"sha256\")")]
    UnsupportedAlgorithm(String),
    /// The expected hash is not a hex SHA-256 digest.
    #[error("expected hash {0:?} is not a SHA-256 digest (64 hex digits)")]
    MalformedExpectedHash(String),
}

impl HashError {
    fn from_io(path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => Self::NotFound { path },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { path },
            _ => Self::Io { path, source },
        }
    }
}

/// The hashing limits, the reusable read buffer and the cache.
pub(crate) struct Hasher {
    max_bytes: u64,
    block: Vec<u8>,
    block_bytes: usize,
    cache: HashCache,
}

impl Hasher {
    pub(crate) fn new(max_bytes: u64, block_bytes: usize, cache_entries: usize) -> Self {
        Self {
            max_bytes,
            block: Vec::new(),
            block_bytes: block_bytes.max(4096),
            cache: HashCache::new(cache_entries),
        }
    }

    pub(crate) fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Hashes the regular file at `path`.
    pub(crate) fn hash_path(&mut self, path: &Path) -> Result<Digest, HashError> {
        // Refuse a non-regular path before opening it: opening some devices
        // has side effects (a tape rewinds, a terminal becomes controlling).
        let meta = std::fs::metadata(path).map_err(|e| HashError::from_io(path, e))?;
        check_regular(path, &meta)?;
        let file = open_nonblocking(path)?;
        self.hash_file(file, path)
    }

    /// Hashes an already opened file; `path` only names it in errors.
    pub(crate) fn hash_file(&mut self, mut file: File, path: &Path) -> Result<Digest, HashError> {
        let started = SystemTime::now();
        let meta = file.metadata().map_err(|e| HashError::from_io(path, e))?;
        check_regular(path, &meta)?;
        if meta.len() > self.max_bytes {
            return Err(HashError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                max: self.max_bytes,
            });
        }
        let key = FileKey::of(&meta);
        if let Some(digest) = self.cache.get(&key) {
            return Ok(digest);
        }
        let digest = self.stream(&mut file, path)?;
        // Cache only if the file did not change while it was read (else the
        // key would name other contents than those hashed), and had settled
        // before (else a change in the same clock tick could keep the key).
        let after = file.metadata().map_err(|e| HashError::from_io(path, e))?;
        if FileKey::of(&after) == key && key.settled_at(started) {
            self.cache.insert(key, digest);
        }
        Ok(digest)
    }

    fn stream(&mut self, file: &mut File, path: &Path) -> Result<Digest, HashError> {
        if self.block.len() != self.block_bytes {
            self.block = vec![0; self.block_bytes];
        }
        let mut sha = Sha256::new();
        let mut total: u64 = 0;
        loop {
            let n = match file.read(&mut self.block) {
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
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(|e| HashError::from_io(path, e))
}

fn check_regular(path: &Path, meta: &Metadata) -> Result<(), HashError> {
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    };
    Err(HashError::NotRegularFile {
        path: path.to_path_buf(),
        kind: what,
    })
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
        let mut hasher = Hasher::new(1 << 20, 1 << 20, 4);
        match hasher.hash_path(Path::new("/dev/zero")) {
            Err(HashError::NotRegularFile { kind, .. }) => assert_eq!(kind, "character device"),
            other => panic!("expected NotRegularFile, got {other:?}"),
        }
    }
}
