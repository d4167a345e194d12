//! File-system facts about open files, and opening a path without following
//! `/proc`'s magic links.
//!
//! procmond runs as root and opens paths that a peer names: these calls let
//! the collector refuse files on pseudo file systems (`/proc/kmsg` reports
//! itself as a regular file, yet reading it drains the kernel log) and paths
//! through magic links such as `/proc/self/fd/N` (which would reach
//! procmond's own descriptors, e.g. another client's ring).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Pseudo file systems by `statfs` magic (`linux/magic.h`): kernel
/// interfaces, not stored files.
const PSEUDO_FILE_SYSTEMS: &[(u32, &str)] = &[
    (0x0000_9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x0000_1cd1, "devpts"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xcafe_4a11, "bpf"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6e73_6673, "nsfs"),
    (0x5069_5045, "pipefs"),
    (0x5345_434b, "sockfs"),
    (0x6165_676c, "pstore"),
    (0xde5e_81e4, "efivarfs"),
    (0x6750_0f52, "configfs"),
    (0x0000_9fa2, "usbdevfs"),
    (0x1234_5678, "anon_inodefs"),
    (0x0964_1f67, "bdev"),
];

/// The name of the pseudo file system holding `fd` (e.g. `"proc"`), or
/// `None` for an ordinary one. `devtmpfs` reports itself as `tmpfs`; the
/// device nodes it holds are refused as non-regular files by callers.
pub fn pseudo_file_system(fd: impl AsFd) -> io::Result<Option<&'static str>> {
    let stat = rustix::fs::fstatfs(fd)?;
    // Magic numbers are 32-bit; `f_type` is a signed word of the platform's
    // width, so keep the low 32 bits.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let magic = stat.f_type as u32;
    Ok(PSEUDO_FILE_SYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name))
}

/// Opens `path` read-only, non-blocking, without claiming a terminal and
/// close-on-exec, refusing to traverse magic links (`/proc/<pid>/fd/N`,
/// `/proc/<pid>/exe`, `/proc/<pid>/root`, ...): `openat2` with
/// `RESOLVE_NO_MAGICLINKS`, which fails with `ELOOP` on one. Ordinary
/// symbolic links are followed.
///
/// `Ok(None)` when the kernel lacks `openat2` (before Linux 5.6); the caller
/// then needs another guard.
pub fn open_read_no_magiclinks(path: &Path) -> io::Result<Option<OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOSYS) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_pseudo_and_a_temp_file_is_not() {
        let proc = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(pseudo_file_system(&proc).unwrap(), Some("proc"));
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(pseudo_file_system(&exe).unwrap(), None);
    }

    #[test]
    fn magic_links_are_refused() {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        use std::os::fd::AsRawFd;
        let via_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
        match open_read_no_magiclinks(Path::new(&via_proc)) {
            // No openat2 on this kernel: skipped, except under CI, whose
            // kernel has it (a skip there would prove nothing).
            Ok(None) => assert!(
                std::env::var("CI").map_or(true, |ci| ci != "true"),
                "CI=true, so this test may not skip: no openat2 on this kernel"
            ),
            Ok(Some(_)) => panic!("{via_proc} was opened through a magic link"),
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(rustix::io::Errno::LOOP.raw_os_error())
            ),
        }
        // An ordinary path still opens.
        let exe = std::env::current_exe().unwrap();
        assert!(open_read_no_magiclinks(&exe).is_ok());
    }
}
