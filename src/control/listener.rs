//! procmond's listening socket: where it lives, who can reach it, and taking
//! over from a server that died without cleaning up.
//!
//! Directory policy. The socket's directory must not be a symbolic link. A
//! missing directory is created 0700 (0710 and owned by the configured group
//! when there is one, so that group can reach the socket but not list or
//! change the directory); when several levels are missing, each level created
//! gets that same mode and group. Each level is created with `mkdir` (which
//! never follows a link at its last component) and then opened with
//! `O_DIRECTORY | O_NOFOLLOW`: mode and group are set through that handle,
//! and a level that appeared meanwhile (`EEXIST`) is checked through it
//! instead. An existing directory is never modified, only checked: it must be
//! owned by this user or root, and not writable by group or others, even
//! with the sticky bit (in `/tmp`, anyone may create the socket's name first
//! or a lock file beside it). An unsafe directory is an error naming the
//! problem, so an administrator's choice is never silently changed.
//!
//! The socket file is 0600, or 0660 owned by the configured group. Between
//! `bind` and `chmod` it briefly has the umask's mode; the directory rule
//! above is what keeps strangers out of that window.
//!
//! Takeover. A lock file beside the socket (`<socket>.lock`, 0600) is held
//! with `flock` for as long as the listener lives: a second server finds it
//! locked and reports [`ControlError::AlreadyListening`], so two servers
//! starting at once cannot both remove the socket file and bind. A crashed
//! server's lock goes with its process; its stale socket file is then
//! removed under the lock. A clean shutdown removes the lock file too,
//! still holding it; so a server that opened the old file just before
//! checks, once it holds the lock, that the path still names the file it
//! locked, and starts over if not: two servers never hold two different
//! lock files of one socket. (A crashed server's lock file stays, and is
//! reused.)

use std::ffi::OsString;
use std::fs::{self, Permissions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::error::ControlError;
use crate::sys::socket::{Accepted, accept_or_woken, set_accept_timeout};
use crate::sys::wake::Waker;

/// procmond's socket path when it runs as root.
pub const ROOT_SOCKET_PATH: &str = "/run/daemoneye/procmond.sock";

/// The socket's path below `$XDG_RUNTIME_DIR` for other users.
pub const USER_SOCKET_SUBPATH: &str = "daemoneye/procmond.sock";

/// Who besides the server's own user may reach the socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// A group allowed to connect: the socket becomes 0660 owned by this
    /// gid, and a directory created by `bind` 0710 owned by it. `None`: socket
    /// 0600, directory 0700. (Peers must still pass the
    /// [`AllowList`](super::AllowList).)
    pub group: Option<u32>,
}

/// The default socket path: [`ROOT_SOCKET_PATH`] for root, else
/// `$XDG_RUNTIME_DIR/daemoneye/procmond.sock`; [`ControlError::NoRuntimeDir`]
/// when that variable is unset or not absolute.
pub fn default_socket_path() -> Result<PathBuf, ControlError> {
    socket_path_for(
        rustix::process::geteuid().is_root(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn socket_path_for(root: bool, runtime_dir: Option<OsString>) -> Result<PathBuf, ControlError> {
    if root {
        return Ok(PathBuf::from(ROOT_SOCKET_PATH));
    }
    match runtime_dir.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => Ok(dir.join(USER_SOCKET_SUBPATH)),
        _ => Err(ControlError::NoRuntimeDir),
    }
}

/// Where an agent looks for procmond's socket, in order: the per-user
/// socket (`$XDG_RUNTIME_DIR/daemoneye/procmond.sock`, when that variable is
/// set and absolute and this is not root), then [`ROOT_SOCKET_PATH`], where
/// a procmond run by root listens.
pub fn agent_socket_paths() -> Vec<PathBuf> {
    agent_paths_for(
        rustix::process::geteuid().is_root(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn agent_paths_for(root: bool, runtime_dir: Option<OsString>) -> Vec<PathBuf> {
    let mut paths = Vec::with_capacity(2);
    if let Ok(own) = socket_path_for(root, runtime_dir) {
        paths.push(own);
    }
    let system = PathBuf::from(ROOT_SOCKET_PATH);
    if !paths.contains(&system) {
        paths.push(system);
    }
    paths
}

/// A listening control socket: one procmond bound itself
/// ([`bind`](Self::bind)), whose file dropping it removes (unless something
/// else has replaced it meanwhile), or one the service manager passed
/// ([`activated`](Self::activated)), which it created and keeps.
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// What procmond created and removes at drop; `None` when the service
    /// manager owns the socket.
    owned: Option<Owned>,
}

/// The files of a socket procmond bound itself.
#[derive(Debug)]
struct Owned {
    /// (device, inode) of the socket file we created, to remove only ours.
    identity: (u64, u64),
    /// The lock file beside the socket, `flock`ed while we listen.
    lock: OwnedFd,
    lock_path: PathBuf,
}

impl ControlListener {
    /// Binds a listening socket at `path`, preparing its directory (see the
    /// module docs) and replacing a stale socket file, one nobody listens on
    /// any more. A live one is [`ControlError::AlreadyListening`]; anything at
    /// `path` that is not a socket is left alone and reported.
    pub fn bind(path: impl AsRef<Path>, options: &SocketOptions) -> Result<Self, ControlError> {
        let path = path.as_ref();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        prepare_dir(dir, options)?;
        let (lock, lock_path) = lock_beside(path)?;
        remove_stale_socket(path)?;

        let listener = UnixListener::bind(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                ControlError::AlreadyListening {
                    path: path.to_owned(),
                }
            } else {
                ControlError::PathIo {
                    action: "bind a socket at",
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let meta = fs::symlink_metadata(path).map_err(|source| ControlError::PathIo {
            action: "inspect the new socket",
            path: path.to_owned(),
            source,
        })?;
        // From here on, dropping `bound` on an error removes the socket file.
        let bound = Self {
            listener,
            path: path.to_owned(),
            owned: Some(Owned {
                identity: (meta.dev(), meta.ino()),
                lock,
                lock_path,
            }),
        };
        let (mode, group) = match options.group {
            None => (0o600, None),
            Some(gid) => (0o660, Some(gid)),
        };
        set_owner_and_mode(path, group, mode)?;
        Ok(bound)
    }

    /// A listening socket the service manager created and passed
    /// (socket activation; see [`crate::sys::systemd::take_listen_socket`],
    /// which checks it is a listening Unix stream socket). Its directory,
    /// mode and group are the socket unit's (`SocketMode=`,
    /// `SocketGroup=`); dropping it closes procmond's descriptor only, so
    /// the socket lives on for the next procmond the manager starts.
    pub fn activated(listener: UnixListener) -> Result<Self, ControlError> {
        let address = listener.local_addr().map_err(|source| ControlError::Io {
            context: "reading the passed socket's address",
            source,
        })?;
        let path = match address.as_pathname() {
            Some(path) => path.to_owned(),
            None => {
                return Err(ControlError::UnsafePath {
                    path: PathBuf::from("(passed socket)"),
                    problem: "has no path (unnamed or abstract); agents find procmond by path"
                        .into(),
                });
            }
        };
        Ok(Self {
            listener,
            path,
            owned: None,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the service manager passed this socket (it then outlives
    /// procmond) rather than procmond binding it.
    pub fn is_activated(&self) -> bool {
        self.owned.is_none()
    }

    /// Waits for the next connection until `waker` is woken (for good: see
    /// [`accept_or_woken`](crate::sys::socket::accept_or_woken)) or
    /// `timeout` passes (`None`: no bound). Leaves the socket as it is,
    /// so it works the same on a socket shared with the service manager.
    pub fn accept_or_woken(
        &self,
        waker: &Waker,
        timeout: Option<Duration>,
    ) -> Result<Accepted, ControlError> {
        accept_or_woken(&self.listener, waker, timeout).map_err(|source| ControlError::Io {
            context: "accepting a connection",
            source,
        })
    }

    /// Waits up to `timeout` for the next connection; `Ok(None)` when none
    /// came. Lets a server loop check for shutdown between waits.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<UnixStream>, ControlError> {
        let deadline = crate::deadline::after(timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            set_accept_timeout(&self.listener, Some(left)).map_err(|source| ControlError::Io {
                context: "setting the accept timeout",
                source,
            })?;
            match self.listener.accept() {
                Ok((stream, _)) => return Ok(Some(stream)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                Err(source) => {
                    return Err(ControlError::Io {
                        context: "accepting a connection",
                        source,
                    });
                }
            }
        }
    }
}

impl AsFd for ControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        // A passed socket is the service manager's to keep or remove.
        let Some(owned) = &self.owned else {
            return;
        };
        let ours =
            fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == owned.identity);
        if ours {
            // Best effort: nothing useful to do if it is already gone.
            let _ = fs::remove_file(&self.path);
        }
        // The lock file, while still locked, if it is still ours (see the
        // module docs); the descriptor closes after, releasing it.
        if same_file(&owned.lock, &owned.lock_path) {
            let _ = fs::remove_file(&owned.lock_path);
        }
    }
}

/// Whether `path` names the file open as `fd` (not replaced or removed).
fn same_file(fd: &OwnedFd, path: &Path) -> bool {
    match (rustix::fs::fstat(fd), fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.st_dev == named.dev() && open.st_ino == named.ino(),
        _ => false,
    }
}

/// Creates `dir` (and missing levels above it) if missing, else checks it
/// is safe to hold the socket; see the module docs.
fn prepare_dir(dir: &Path, options: &SocketOptions) -> Result<(), ControlError> {
    let mode = if options.group.is_some() {
        0o710
    } else {
        0o700
    };
    // The missing levels, innermost first.
    let mut missing = Vec::new();
    for level in dir.ancestors() {
        if level.as_os_str().is_empty() {
            break;
        }
        match fs::symlink_metadata(level) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(level),
            Err(source) => {
                return Err(ControlError::PathIo {
                    action: "inspect directory",
                    path: level.to_owned(),
                    source,
                });
            }
        }
    }
    for level in missing.iter().rev() {
        let created = match rustix::fs::mkdir(*level, Mode::from_raw_mode(mode)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => {
                return Err(ControlError::PathIo {
                    action: "create directory",
                    path: level.to_path_buf(),
                    source: e.into(),
                });
            }
        };
        let handle = open_dir_nofollow(level)?;
        if created {
            // The umask may have narrowed `mode`; set it exactly, through
            // the handle on what we created.
            set_dir_owner_and_mode(level, &handle, options.group, mode)?;
        } else {
            check_dir(level, &handle)?;
        }
    }
    if missing.first() != Some(&dir) {
        let handle = open_dir_nofollow(dir)?;
        check_dir(dir, &handle)?;
    }
    Ok(())
}

/// Opens the directory `dir` itself, refusing a symbolic link there.
fn open_dir_nofollow(dir: &Path) -> Result<OwnedFd, ControlError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| match e {
        // Linux says ENOTDIR, others ELOOP, for a link with these flags.
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => ControlError::UnsafePath {
            path: dir.to_owned(),
            problem: if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                "is a symbolic link; the socket's directory must be a real directory".into()
            } else {
                "is not a directory".into()
            },
        },
        e => ControlError::PathIo {
            action: "open directory",
            path: dir.to_owned(),
            source: e.into(),
        },
    })
}

/// An existing directory must be ours or root's and writable only by its
/// owner (sticky or not).
fn check_dir(dir: &Path, handle: &OwnedFd) -> Result<(), ControlError> {
    let unsafe_path = |problem: String| ControlError::UnsafePath {
        path: dir.to_owned(),
        problem,
    };
    let stat = rustix::fs::fstat(handle).map_err(|e| ControlError::PathIo {
        action: "inspect directory",
        path: dir.to_owned(),
        source: e.into(),
    })?;
    let me = rustix::process::geteuid().as_raw();
    if stat.st_uid != me && stat.st_uid != 0 {
        return Err(unsafe_path(format!(
            "is owned by uid {}, neither this user (uid {me}) nor root, so its owner could replace the socket",
            stat.st_uid
        )));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        let sticky = if mode & 0o1000 != 0 {
            " (the sticky bit does not stop others from taking the socket's name first)"
        } else {
            ""
        };
        return Err(unsafe_path(format!(
            "is writable by group or others (mode {mode:04o}){sticky}, so anyone able to write there could replace the socket"
        )));
    }
    Ok(())
}

fn set_dir_owner_and_mode(
    dir: &Path,
    handle: &OwnedFd,
    group: Option<u32>,
    mode: u32,
) -> Result<(), ControlError> {
    if let Some(gid) = group {
        let gid = rustix::fs::Gid::from_raw(gid);
        rustix::fs::fchown(handle, None, Some(gid)).map_err(|e| ControlError::PathIo {
            action: "give the configured group",
            path: dir.to_owned(),
            source: e.into(),
        })?;
    }
    rustix::fs::fchmod(handle, Mode::from_raw_mode(mode)).map_err(|e| ControlError::PathIo {
        action: "set the mode of",
        path: dir.to_owned(),
        source: e.into(),
    })
}

/// Opens (creating it 0600 if needed) and `flock`s `<socket>.lock`, and
/// checks that the path still names the file locked (a server shutting
/// down removes it under its lock); [`ControlError::AlreadyListening`] when
/// another server holds it.
fn lock_beside(socket: &Path) -> Result<(OwnedFd, PathBuf), ControlError> {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Each retry follows a server's clean exit in between; a handful is
    // plenty, and bounds a path replaced over and over.
    for _ in 0..8 {
        let lock =
            rustix::fs::open(&lock_path, flags, Mode::from_raw_mode(0o600)).map_err(|e| {
                ControlError::PathIo {
                    action: "open the lock file",
                    path: lock_path.clone(),
                    source: e.into(),
                }
            })?;
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) if same_file(&lock, &lock_path) => return Ok((lock, lock_path)),
            // Removed (or replaced) by the server that held it: again.
            Ok(()) => continue,
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(ControlError::AlreadyListening {
                    path: socket.to_owned(),
                });
            }
            Err(e) => {
                return Err(ControlError::PathIo {
                    action: "lock",
                    path: lock_path,
                    source: e.into(),
                });
            }
        }
    }
    Err(ControlError::PathIo {
        action: "lock (it kept being replaced)",
        path: lock_path,
        source: io::Error::from(io::ErrorKind::WouldBlock),
    })
}

fn set_owner_and_mode(path: &Path, group: Option<u32>, mode: u32) -> Result<(), ControlError> {
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| ControlError::PathIo {
            action: "give the configured group",
            path: path.to_owned(),
            source,
        })?;
    }
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|source| ControlError::PathIo {
        action: "set the mode of",
        path: path.to_owned(),
        source,
    })
}

/// Removes a socket file nobody listens on; refuses a live one or a
/// non-socket.
fn remove_stale_socket(path: &Path) -> Result<(), ControlError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::PathIo {
                action: "inspect",
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::UnsafePath {
            path: path.to_owned(),
            problem: "exists and is not a socket; refusing to replace it".into(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ControlError::AlreadyListening {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ControlError::PathIo {
                action: "remove the stale socket",
                path: path.to_owned(),
                source,
            }),
        },
        Err(source) => Err(ControlError::PathIo {
            action: "probe the existing socket",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_run() {
        assert_eq!(
            agent_paths_for(false, Some("/run/user/1000".into())),
            [
                PathBuf::from("/run/user/1000/daemoneye/procmond.sock"),
                PathBuf::from(ROOT_SOCKET_PATH)
            ]
        );
        assert_eq!(
            agent_paths_for(false, None),
            [PathBuf::from(ROOT_SOCKET_PATH)]
        );
        assert_eq!(
            agent_paths_for(true, Some("/run/user/0".into())),
            [PathBuf::from(ROOT_SOCKET_PATH)]
        );
        let path = socket_path_for(true, Some("/run/user/1000".into())).unwrap();
        assert_eq!(path, Path::new("/run/daemoneye/procmond.sock"));
    }

    #[test]
    fn users_use_their_runtime_dir() {
        let path = socket_path_for(false, Some("/run/user/1000".into())).unwrap();
        assert_eq!(path, Path::new("/run/user/1000/daemoneye/procmond.sock"));
    }

    #[test]
    fn users_without_a_runtime_dir_get_a_clear_error() {
        assert!(matches!(
            socket_path_for(false, None),
            Err(ControlError::NoRuntimeDir)
        ));
        assert!(matches!(
            socket_path_for(false, Some("relative".into())),
            Err(ControlError::NoRuntimeDir)
        ));
    }
}
