//! Verifying a running executable: hash the image the process runs, through
//! `/proc/<pid>/exe` (which still reaches it after the file on disk was
//! deleted or replaced), and decide whether the path on disk still holds that
//! image by comparing (device, inode), as osquery's `on_disk` does. The path
//! is looked up below `/proc/<pid>/root`, as the process sees it, so a
//! containerised process (another mount namespace) is judged by its own
//! files, and from procmond's root, where the kernel's link text points for
//! a chrooted process.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cache::Digest;
use super::details::{ExeLink, holds_image, read_exe_link};
use super::hash::{self, HashError, Hasher};

/// The running image of one process, checked against its path on disk.
pub(crate) struct ImageCheck {
    /// SHA-256 of the running image.
    pub(crate) digest: Result<Digest, HashError>,
    /// The path on disk holds the running image (same device and inode).
    pub(crate) file_exists: bool,
    /// The image's path as the kernel reports it now, when it differs from
    /// the one the caller knew: the process exec'd after the table last
    /// read it (its exec event may still be on its way).
    pub(crate) newer_exe: Option<PathBuf>,
}

/// Hashes the image of `pid` and compares it with its path on disk as the
/// kernel reports it (without the " (deleted)" mark), in the process's own
/// root or in procmond's. `known` is the path the caller last saw; the link is read again
/// here, so a process that exec'd a moment ago is judged by its new image,
/// not by its parent's path.
pub(crate) fn check_image(pid: u32, known: Option<&Path>, hasher: &mut Hasher) -> ImageCheck {
    let now = match read_exe_link(pid) {
        ExeLink::Path { path, .. } => Some(path),
        ExeLink::Denied | ExeLink::Missing => None,
    };
    let newer_exe = now.clone().filter(|now| Some(now.as_path()) != known);
    let exe = now.as_deref().or(known);
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    let file = match hash::open_nonblocking(&link) {
        Ok(file) => file,
        Err(e) => {
            return ImageCheck {
                digest: Err(e),
                file_exists: false,
                newer_exe,
            };
        }
    };
    let running = file.metadata().map(|m| (m.dev(), m.ino()));
    let file_exists = match (&running, exe) {
        (Ok(running), Some(path)) => holds_image(pid, path, *running),
        _ => false,
    };
    ImageCheck {
        digest: hasher.hash_file(file, &link),
        file_exists,
        newer_exe,
    }
}
