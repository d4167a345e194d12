//! Who asked for a hash check. procmond decides nothing from a peer's
//! credentials but whether it may name a path at all: only root may. Any
//! other peer opens the file itself, so the kernel (mode bits, ACLs, LSMs,
//! its own mount namespace) decides what it may hash, and attaches the
//! descriptor to the task.

/// The peer a CHECK_PROCESS_HASH is carried out for; see
/// [`Collector::check_hash_for`](super::Collector::check_hash_for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requester {
    /// The peer's user id (from `SO_PEERCRED`).
    pub uid: u32,
}

impl Requester {
    /// Root: may have procmond open a path (pseudo file systems, magic links
    /// and non-regular files are still refused).
    pub fn root() -> Self {
        Self { uid: 0 }
    }

    /// Whether procmond may open a path this peer names.
    pub(crate) fn may_name_paths(self) -> bool {
        self.uid == 0
    }
}
