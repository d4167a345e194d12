//! Who asked for a hash check. procmond decides nothing from a peer's
//! credentials but whether it may name a path at all: only root may. Any
//! other peer opens the file itself, so the kernel (mode bits, ACLs, LSMs,
//! its own mount namespace) decides what it may hash, and attaches the
//! descriptor to the task.
//!
//! Root's paths are looked up as root's agent sees them: below its root
//! directory, opened through `/proc/<pid>/root` when it connects, once a
//! descriptor of `/proc/<pid>` shows that process runs as root, and the
//! agent's own pidfd (`SO_PEERPIDFD`) shows it still alive after: then the
//! pid was still the agent's (without `SO_PEERPIDFD`, before Linux 6.5,
//! the pidfd is opened from the pid, and an agent gone with its pid reused
//! by then could only be stood in for by another root process). So
//! procmond's own mount namespace (a service's private `/tmp`) does not
//! change which file a path names, and an agent in a container or chroot
//! has its own files hashed.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::details;
use crate::sys::pidfd::PidFd;
use crate::sys::procfs;

/// The peer a CHECK_PROCESS_HASH is carried out for; see
/// [`Collector::check_hash_for`](super::Collector::check_hash_for).
#[derive(Clone, Debug)]
pub struct Requester {
    /// The peer's user id (from `SO_PEERCRED`).
    pub uid: u32,
    lookup: Lookup,
}

/// Where the paths a requester names are looked up.
#[derive(Clone, Debug)]
enum Lookup {
    /// In this process's mount namespace (a caller in this process).
    Own,
    /// Below the peer's root directory.
    PeerRoot(Arc<OwnedFd>),
    /// In this process's namespace, since the root of the peer (this pid)
    /// was out of reach (why: without `CAP_SYS_PTRACE` over it, permission
    /// denied).
    OwnFallback(u32, Arc<str>),
}

impl Requester {
    /// Root, in this process: may have procmond open a path (pseudo file
    /// systems, magic links and non-regular files are still refused),
    /// looked up in this process's mount namespace.
    pub fn root() -> Self {
        Self {
            uid: 0,
            lookup: Lookup::Own,
        }
    }

    /// Another uid: names no path (it attaches the file it wants hashed).
    pub fn other(uid: u32) -> Self {
        Self {
            uid,
            lookup: Lookup::Own,
        }
    }

    /// The peer `pid` of uid `uid`, as a connection knows it: for root, its
    /// root directory is taken now, so its paths are looked up as it sees
    /// them. `process`, a pidfd of the peer itself (`SO_PEERPIDFD`), shows
    /// the root taken is its own: alive after the root was opened, the peer
    /// still held its pid then.
    pub(crate) fn peer(uid: u32, pid: u32, process: Option<&PidFd>) -> Self {
        let lookup = if uid != 0 {
            Lookup::Own
        } else {
            let still_root = |status: &str| details::parse_euid(status) == Some(uid);
            let root = procfs::open_root_of(pid, still_root).and_then(|root| {
                match process.map(PidFd::has_exited).transpose()? {
                    Some(true) => Err(std::io::Error::other(
                        "the agent exited before its root could be taken",
                    )),
                    Some(false) | None => Ok(root),
                }
            });
            match root {
                Ok(root) => Lookup::PeerRoot(Arc::new(root)),
                Err(error) => {
                    tracing::warn!(pid, %error, "cannot reach the agent's root; its paths are looked up in procmond's mount namespace");
                    let why = if error.kind() == std::io::ErrorKind::PermissionDenied {
                        "procmond may not ptrace-read it (no CAP_SYS_PTRACE)".to_owned()
                    } else {
                        error.to_string()
                    };
                    Lookup::OwnFallback(pid, why.into())
                }
            }
        };
        Self { uid, lookup }
    }

    /// Whether procmond may open a path this peer names.
    pub(crate) fn may_name_paths(&self) -> bool {
        self.uid == 0
    }

    /// The directory its paths are resolved below (`None`: this process's
    /// root, in its own namespace).
    pub(crate) fn root_dir(&self) -> Option<BorrowedFd<'_>> {
        match &self.lookup {
            Lookup::PeerRoot(root) => Some(std::os::fd::AsFd::as_fd(&**root)),
            Lookup::Own | Lookup::OwnFallback(..) => None,
        }
    }

    /// The peer whose root was out of reach, and why, if so.
    pub(crate) fn unreached_root(&self) -> Option<(u32, &str)> {
        match &self.lookup {
            Lookup::OwnFallback(pid, why) => Some((*pid, why)),
            Lookup::Own | Lookup::PeerRoot(_) => None,
        }
    }
}
