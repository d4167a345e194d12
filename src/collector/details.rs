//! What rarely changes about a process, read from `/proc` once per exec (and
//! on first sight): the image's path, the command line, the name and the
//! effective uid.
//!
//! The effective uid comes from the second field of `Uid:` in `status`, not
//! from the owner of `/proc/<pid>`: the kernel makes a process that is not
//! dumpable (a setuid program, or one that said `PR_SET_DUMPABLE 0`) owned
//! by root there, whoever runs it.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::bounds;
use crate::proto::limits::{MAX_PATH_BYTES, MAX_PROCESS_NAME_BYTES};
use crate::sys::procfs::ProcRoot;

/// The rarely changing details of one process image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Details {
    /// `comm`, at most [`MAX_PROCESS_NAME_BYTES`].
    pub(crate) name: String,
    /// The image's path on disk as the kernel reports it, without the
    /// " (deleted)" mark; `None` when /proc refused it or there is none.
    pub(crate) exe: Option<PathBuf>,
    /// `exe` as record text, cut to [`MAX_PATH_BYTES`].
    pub(crate) exe_text: Option<String>,
    /// The image was deleted from disk.
    pub(crate) deleted: bool,
    /// The command line, cut to the limits.
    pub(crate) cmd: Vec<String>,
    /// The effective uid.
    pub(crate) euid: Option<u32>,
    /// /proc refused the exe link or the command line (another user's
    /// process, without privilege), or the process was gone before they
    /// could be read.
    pub(crate) inaccessible: bool,
}

impl Details {
    /// What is known of a process whose details could not be read: its
    /// name (from its `stat` or an event) and nothing else.
    pub(crate) fn unknown(name: String) -> Self {
        Self {
            name,
            exe: None,
            exe_text: None,
            deleted: false,
            cmd: Vec::new(),
            euid: None,
            inaccessible: true,
        }
    }
}

/// The target of `/proc/<pid>/exe`, without the kernel's " (deleted)" mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ExeLink {
    Path {
        path: PathBuf,
        deleted: bool,
    },
    /// /proc refused it (the process belongs to someone else).
    Denied,
    /// No image: a kernel thread, a zombie, or gone.
    Missing,
}

/// Reads name, exe, command line and effective uid of `pid`; `None` when the
/// process has gone (its `comm` is readable by anyone while it exists).
pub(crate) fn read_details(root: &ProcRoot, pid: u32) -> Option<Details> {
    // The image and command line first: they go with the process's memory
    // as soon as it exits, while its name and status stay until it is
    // reaped, and a short-lived process may be exiting already.
    let link = read_exe_link(pid);
    let cmdline = read_bounded(root, pid, "cmdline", bounds::CMDLINE_READ_BYTES);
    let mut comm = Vec::with_capacity(32);
    root.open_file(pid, "comm")
        .and_then(|fd| std::fs::File::from(fd).read_to_end(&mut comm))
        .ok()?;
    let mut name = String::from_utf8_lossy(comm.strip_suffix(b"\n").unwrap_or(&comm)).into_owned();
    bounds::truncate(&mut name, MAX_PROCESS_NAME_BYTES);
    let (cmd, cmd_denied) = match cmdline {
        Ok(raw) => (bounds::command_line(split_cmdline(&raw)), false),
        Err(e) => (Vec::new(), is_denied(&e)),
    };
    let euid = read_bounded(root, pid, "status", 64 << 10)
        .ok()
        .and_then(|raw| parse_euid(&String::from_utf8_lossy(&raw)));
    let (exe, deleted) = match &link {
        ExeLink::Path { path, deleted } => (Some(path.clone()), *deleted),
        ExeLink::Denied | ExeLink::Missing => (None, false),
    };
    let exe_text = exe.as_deref().map(exe_text);
    Some(Details {
        name,
        exe,
        exe_text,
        deleted,
        cmd,
        euid,
        inaccessible: link == ExeLink::Denied || cmd_denied,
    })
}

/// An image path as record text, cut to [`MAX_PATH_BYTES`].
pub(crate) fn exe_text(path: &Path) -> String {
    let mut text = path.to_string_lossy().into_owned();
    bounds::truncate(&mut text, MAX_PATH_BYTES);
    text
}

/// Reads `/proc/<pid>/exe`: the image path and whether it was deleted.
///
/// The kernel appends " (deleted)" to the path of an unlinked image, but a
/// file may also be named so. Only when the text ends so is the image
/// itself examined: with no link left (`st_nlink == 0`, through the magic
/// link) it was deleted; otherwise the literal path, seen from the process's
/// root, must hold the image for the suffix to be part of the name. When the
/// image cannot be examined (another user's process, without privilege), the
/// suffix is taken as the kernel's mark.
pub(crate) fn read_exe_link(pid: u32) -> ExeLink {
    const DELETED: &[u8] = b" (deleted)";
    let path = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(path) => path,
        Err(e) if is_denied(&e) => return ExeLink::Denied,
        Err(_) => return ExeLink::Missing,
    };
    let Some(kept) = path.as_os_str().as_bytes().strip_suffix(DELETED) else {
        return ExeLink::Path {
            path,
            deleted: false,
        };
    };
    let stripped = PathBuf::from(OsStr::from_bytes(kept));
    let literal_is_the_image = std::fs::metadata(format!("/proc/{pid}/exe")).is_ok_and(|image| {
        image.nlink() > 0 && holds_image(pid, &path, (image.dev(), image.ino()))
    });
    if literal_is_the_image {
        ExeLink::Path {
            path,
            deleted: false,
        }
    } else {
        ExeLink::Path {
            path: stripped,
            deleted: true,
        }
    }
}

/// Whether `path`, as the exe link of `pid` names it, holds the file
/// `image` (device, inode). Two places may: the path below the process's
/// own root (a container in another mount namespace, whose files at that
/// path are not the host's), and the path from procmond's root, since the
/// kernel writes the link relative to the reader's root, so a chrooted
/// process (sshd's pre-auth child, postfix) has a link into procmond's tree.
/// A device-and-inode match in either is the same file.
pub(crate) fn holds_image(pid: u32, path: &Path, image: (u64, u64)) -> bool {
    [in_root_of(pid, path).as_path(), path]
        .into_iter()
        .any(|candidate| std::fs::metadata(candidate).is_ok_and(|m| (m.dev(), m.ino()) == image))
}

/// `path` as the process `pid` sees it: below `/proc/<pid>/root`, so a
/// process in another mount namespace (a container) or chroot has its own
/// files looked up, not the host's at the same path.
fn in_root_of(pid: u32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

/// The first `max` bytes of `/proc/<pid>/<file>`: a command line can be
/// megabytes long, and only what the limits keep is worth reading.
fn read_bounded(root: &ProcRoot, pid: u32, file: &str, max: usize) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    std::fs::File::from(root.open_file(pid, file)?)
        .take(max as u64)
        .read_to_end(&mut raw)?;
    Ok(raw)
}

/// Splits NUL-separated arguments, keeping empty ones (`a "" b` stays three).
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    if raw.is_empty() {
        return Vec::new();
    }
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    raw.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The effective uid: the second of the four ids on the `Uid:` line.
pub(crate) fn parse_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line["Uid:".len()..].split_whitespace().nth(1)?.parse().ok()
}

fn is_denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_keeps_empty_arguments() {
        assert_eq!(split_cmdline(b""), Vec::<String>::new());
        assert_eq!(split_cmdline(b"sleep\x0030\x00"), ["sleep", "30"]);
        assert_eq!(split_cmdline(b"a\x00\x00b\x00"), ["a", "", "b"]);
        // A process may rewrite its command line without NULs.
        assert_eq!(split_cmdline(b"nginx: worker"), ["nginx: worker"]);
    }

    #[test]
    fn uid_is_the_effective_one() {
        // A setuid-root program run by uid 1000: real 1000, effective 0.
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Name:\tx\n"), None);
        assert_eq!(parse_euid("Uid:\t1000\n"), None);
    }

    #[test]
    fn own_details_are_read() {
        let root = ProcRoot::open().unwrap();
        let details = read_details(&root, std::process::id()).unwrap();
        assert_eq!(details.exe, Some(std::env::current_exe().unwrap()));
        assert_eq!(details.euid, Some(nix::unistd::geteuid().as_raw()));
        assert!(!details.inaccessible && !details.deleted);
        assert_eq!(
            details.cmd.first().map(String::as_str),
            std::env::args().next().as_deref()
        );
    }
}
