//! Verifying a running executable: hash the image the process runs, through
//! `/proc/<pid>/exe` (which still reaches it after the file on disk was
//! deleted or replaced), and decide whether the path on disk still holds that
//! image by comparing (device, inode), as osquery's `on_disk` does. The path
//! is looked up below `/proc/<pid>/root`, as the process sees it, so a
//! containerised process (another mount namespace) is judged by its own
//! files.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cache::Digest;
use super::details::in_root_of;
use super::hash::{self, HashError, Hasher};

/// The running image of one process, checked against its path on disk.
pub(crate) struct ImageCheck {
    /// SHA-256 of the running image.
    pub(crate) digest: Result<Digest, HashError>,
    /// The path on disk holds the running image (same device and inode).
    pub(crate) file_exists: bool,
}

/// Hashes the image of `pid` and compares it with `exe`, its path on disk as
/// the kernel reports it (without the " (deleted)" mark), in the process's
/// own root.
pub(crate) fn check_image(pid: u32, exe: Option<&Path>, hasher: &mut Hasher) -> ImageCheck {
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    let file = match hash::open_nonblocking(&link) {
        Ok(file) => file,
        Err(e) => {
            return ImageCheck {
                digest: Err(e),
                file_exists: false,
            };
        }
    };
    let running = file.metadata().map(|m| (m.dev(), m.ino()));
    let file_exists = match (&running, exe) {
        (Ok(running), Some(path)) => std::fs::metadata(in_root_of(pid, path))
            .is_ok_and(|on_disk| (on_disk.dev(), on_disk.ino()) == *running),
        _ => false,
    };
    ImageCheck {
        digest: hasher.hash_file(file, &link),
        file_exists,
    }
}
