//! File-system facts about open files, and opening a path as a regular file
//! only, without following `/proc`'s magic links.
//!
//! procmond runs as root and opens paths that a peer names: these calls let
//! the collector refuse files on pseudo file systems (`/proc/kmsg` reports
//! itself as a regular file, yet reading it drains the kernel log), paths
//! through magic links such as `/proc/self/fd/N` (which would reach
//! procmond's own descriptors, e.g. another client's ring), and anything
//! but a regular file before it is opened (opening a watchdog device starts
//! its timer, a tape rewinds).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

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

/// File systems whose (device, inode, size, mtime, ctime) does not pin a
/// file's contents, by `statfs` magic: another host or a user-space
/// server can change a file without the times this kernel reports moving
/// (NFS, SMB, 9p, Ceph, FUSE), and overlayfs reports the times of whichever
/// layer's file it shows, whose copy-up or direct change it does not see.
const UNTRUSTED_VERSIONS: &[(u32, &str)] = &[
    (0x0000_6969, "nfs"),
    (0xff53_4d42, "cifs"),
    (0xfe53_4d42, "smb2"),
    (0x0102_1997, "9p"),
    (0x00c3_6400, "ceph"),
    (0x6573_5546, "fuse"),
    (0x794c_7630, "overlayfs"),
];

/// What `fstatfs` says of the file system holding a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSystem {
    /// The `statfs` magic number (`f_type`, low 32 bits).
    pub magic: u32,
}

/// The file system holding `fd` (`fstatfs`).
pub fn file_system(fd: impl AsFd) -> io::Result<FileSystem> {
    let stat = rustix::fs::fstatfs(fd)?;
    // Magic numbers are 32-bit; `f_type` is a signed word of the platform's
    // width, so keep the low 32 bits.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let magic = stat.f_type as u32;
    Ok(FileSystem { magic })
}

impl FileSystem {
    /// Its name if it is a pseudo file system (e.g. `"proc"`), `None` for
    /// an ordinary one. `devtmpfs` reports itself as `tmpfs`; the device
    /// nodes it holds are refused as non-regular files by callers.
    pub fn pseudo(self) -> Option<&'static str> {
        find(PSEUDO_FILE_SYSTEMS, self.magic)
    }

    /// Its name if a file's version key (device, inode, size, times) cannot
    /// be trusted to change with its contents here (e.g. `"nfs"`).
    pub fn untrusted_versions(self) -> Option<&'static str> {
        find(UNTRUSTED_VERSIONS, self.magic)
    }
}

fn find(table: &[(u32, &'static str)], magic: u32) -> Option<&'static str> {
    table
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// How often a lookup below a root is tried when the kernel says a rename
/// or mount raced it (`EAGAIN`).
const RESOLVE_TRIES: usize = 3;

/// Why [`open_regular`] opened nothing.
#[derive(Debug, thiserror::Error)]
pub enum OpenRegularError {
    /// The path resolves to a directory, FIFO, socket or device, which was
    /// not opened.
    #[error("not a regular file (a {kind})")]
    NotRegular {
        /// What it is, e.g. "FIFO" or "character device".
        kind: &'static str,
    },
    /// Reopening the resolved file for reading gave another file (cannot
    /// happen unless `/proc` is not what it should be).
    #[error("the file opened is not the one resolved")]
    Replaced,
    /// Resolving or opening failed (`ELOOP` for a magic link).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a file of mode `mode` is when it is not a regular file, e.g.
/// `"FIFO"`; `None` for a regular file.
pub fn non_regular_kind(mode: u32) -> Option<&'static str> {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("directory"),
        FileType::Fifo => Some("FIFO"),
        FileType::Socket => Some("socket"),
        FileType::CharacterDevice => Some("character device"),
        FileType::BlockDevice => Some("block device"),
        FileType::Symlink => Some("symbolic link"),
        FileType::Unknown => Some("special file"),
    }
}

/// Opens the regular file at `path` read-only (non-blocking, no controlling
/// terminal, close-on-exec), resolving the path once and opening nothing
/// else.
///
/// The path is resolved with `openat2(O_PATH, RESOLVE_NO_MAGICLINKS)`,
/// which opens no file (no driver's `open` runs, a FIFO gets no reader);
/// that descriptor is `fstat`ed and must be a regular file; only then is
/// that same inode opened for reading through `/proc/self/fd/N`, and the
/// result must be the inode that was checked (device and inode). A rename
/// between the steps cannot substitute another file. Ordinary symbolic
/// links are followed. Without `openat2` (before Linux 5.6) the path is
/// resolved by `open(O_PATH)`, and must name the same file once its links
/// are resolved as text, which a magic link's target (`/memfd:ring
/// (deleted)`, `pipe:[123]`) does not (`ELOOP` otherwise).
pub fn open_regular(path: &Path) -> Result<File, OpenRegularError> {
    open_regular_below(None, path)
}

/// [`open_regular`] of `path` resolved below the directory `root`
/// (`RESOLVE_IN_ROOT`: absolute paths and symbolic links stay below it, as
/// they would for a process whose root it is) or, without one, as
/// `open_regular` does. Without `openat2` (before Linux 5.6) `path` is
/// resolved in this process's namespace either way.
pub fn open_regular_below(
    root: Option<BorrowedFd<'_>>,
    path: &Path,
) -> Result<File, OpenRegularError> {
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let resolved = match root {
        // `EAGAIN`: a rename or mount raced a `..` step below the root;
        // the kernel asks for another try.
        Some(root) => (0..RESOLVE_TRIES)
            .map(|_| {
                rustix::fs::openat2(
                    root,
                    path,
                    flags,
                    Mode::empty(),
                    ResolveFlags::NO_MAGICLINKS | ResolveFlags::IN_ROOT,
                )
            })
            .find(|tried| !matches!(tried, Err(rustix::io::Errno::AGAIN)))
            .unwrap_or(Err(rustix::io::Errno::AGAIN)),
        None => rustix::fs::openat2(
            rustix::fs::CWD,
            path,
            flags,
            Mode::empty(),
            ResolveFlags::NO_MAGICLINKS,
        ),
    };
    let resolved = match resolved {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOSYS) => {
            let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(io::Error::from)?;
            let checked = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
            let same = std::fs::canonicalize(path)
                .and_then(|real| rustix::fs::stat(real).map_err(io::Error::from))
                .is_ok_and(|by_name| {
                    (by_name.st_dev, by_name.st_ino) == (checked.st_dev, checked.st_ino)
                });
            if !same {
                return Err(io::Error::from(rustix::io::Errno::LOOP).into());
            }
            fd
        }
        Err(e) => return Err(io::Error::from(e).into()),
    };
    let checked = rustix::fs::fstat(&resolved).map_err(io::Error::from)?;
    if let Some(kind) = non_regular_kind(checked.st_mode) {
        return Err(OpenRegularError::NotRegular { kind });
    }
    let reopen = format!("/proc/self/fd/{}", resolved.as_raw_fd());
    let read = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = rustix::fs::open(reopen.as_str(), read, Mode::empty()).map_err(io::Error::from)?;
    let opened = rustix::fs::fstat(&file).map_err(io::Error::from)?;
    if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino)
        || non_regular_kind(opened.st_mode).is_some()
    {
        return Err(OpenRegularError::Replaced);
    }
    Ok(File::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_pseudo_and_a_temp_file_is_not() {
        let proc = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(file_system(&proc).unwrap().pseudo(), Some("proc"));
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(file_system(&exe).unwrap().pseudo(), None);
        let fuse = FileSystem { magic: 0x6573_5546 };
        assert_eq!(fuse.untrusted_versions(), Some("fuse"));
        assert_eq!(fuse.pseudo(), None);
    }

    #[test]
    fn magic_links_are_refused() {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let via_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
        match open_regular(Path::new(&via_proc)) {
            Err(OpenRegularError::Io(e)) => assert_eq!(
                e.raw_os_error(),
                Some(rustix::io::Errno::LOOP.raw_os_error())
            ),
            other => panic!("{via_proc} through a magic link: {other:?}"),
        }
        // An ordinary path still opens.
        let exe = std::env::current_exe().unwrap();
        assert!(open_regular(&exe).is_ok());
    }

    /// A temporary directory, removed on drop (also when the test fails).
    struct Removed(std::path::PathBuf);

    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn make_fifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn below_a_root_absolute_paths_links_and_dot_dots_stay_inside_it() {
        let dir = Removed(std::env::temp_dir().join(format!("de-fs-root-{}", std::process::id())));
        let root = &dir.0;
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), b"inside").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("absolute")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/hostname", root.join("etc/up")).unwrap();
        make_fifo(&root.join("fifo"));
        let base = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let read = |path: &str| -> String {
            let file = open_regular_below(Some(base.as_fd()), Path::new(path)).unwrap();
            std::io::read_to_string(file).unwrap()
        };
        for path in [
            "/etc/hostname",
            "/absolute",
            "/etc/up",
            "/../../etc/hostname",
            "etc/hostname",
        ] {
            assert_eq!(read(path), "inside", "{path} left the root");
        }
        assert!(matches!(
            open_regular_below(Some(base.as_fd()), Path::new("/fifo")),
            Err(OpenRegularError::NotRegular { kind: "FIFO" })
        ));
        // Nothing of the real root is reached: no /proc below this one.
        assert!(matches!(
            open_regular_below(Some(base.as_fd()), Path::new("/proc/self/stat")),
            Err(OpenRegularError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn devices_and_fifos_are_refused_without_being_opened() {
        match open_regular(Path::new("/dev/null")) {
            Err(OpenRegularError::NotRegular { kind }) => assert_eq!(kind, "character device"),
            other => panic!("/dev/null: {other:?}"),
        }
        let dir = Removed(std::env::temp_dir().join(format!("de-fs-fifo-{}", std::process::id())));
        std::fs::create_dir(&dir.0).unwrap();
        let fifo = dir.0.join("fifo");
        make_fifo(&fifo);
        let refused = open_regular(&fifo);
        // A writer opening without blocking fails (ENXIO) while the FIFO
        // has no reader: resolving it opened nothing.
        let writer = rustix::fs::open(&fifo, OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty());
        assert!(
            matches!(refused, Err(OpenRegularError::NotRegular { kind: "FIFO" })),
            "{refused:?}"
        );
        assert_eq!(writer.err(), Some(rustix::io::Errno::NXIO));
    }
}
