//! Which peer uids may use the control socket.

use std::collections::BTreeSet;

use super::error::ControlError;
use crate::sys::socket::PeerCred;

/// The uids allowed to connect: the server's own effective uid and root by
/// default, plus any added (procmond's `--allow-uid`).
///
/// Checked against the kernel's record of the peer (`SO_PEERCRED`), which the
/// peer cannot forge. Socket and directory permissions are a first fence; this
/// is the second, and the one that says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    uids: BTreeSet<u32>,
}

impl AllowList {
    /// This process's effective uid and root.
    pub fn new() -> Self {
        Self {
            uids: BTreeSet::from([0, rustix::process::geteuid().as_raw()]),
        }
    }

    /// Also allows `uid`.
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.uids.insert(uid);
        self
    }

    /// Whether `uid` may connect.
    pub fn is_allowed(&self, uid: u32) -> bool {
        self.uids.contains(&uid)
    }

    /// The allowed uids, in ascending order.
    pub fn uids(&self) -> impl Iterator<Item = u32> + '_ {
        self.uids.iter().copied()
    }

    /// `Ok` when `peer`'s uid is allowed, else [`ControlError::NotAllowed`]
    /// naming it.
    pub fn check(&self, peer: PeerCred) -> Result<(), ControlError> {
        if self.is_allowed(peer.uid) {
            Ok(())
        } else {
            Err(ControlError::NotAllowed {
                uid: peer.uid,
                pid: peer.pid,
            })
        }
    }
}

impl Default for AllowList {
    fn default() -> Self {
        Self::new()
    }
}

impl Extend<u32> for AllowList {
    fn extend<I: IntoIterator<Item = u32>>(&mut self, uids: I) {
        self.uids.extend(uids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32) -> PeerCred {
        PeerCred {
            pid: 42,
            uid,
            gid: uid,
        }
    }

    #[test]
    fn own_uid_and_root_by_default() {
        let list = AllowList::new();
        let me = rustix::process::geteuid().as_raw();
        assert!(list.check(peer(0)).is_ok());
        assert!(list.check(peer(me)).is_ok());
        assert!(list.uids().eq(BTreeSet::from([0, me]).into_iter()));
    }

    #[test]
    fn others_are_refused_by_uid_until_added() {
        let stranger = 4_000_000;
        let list = AllowList::new();
        match list.check(peer(stranger)) {
            Err(ControlError::NotAllowed { uid, pid }) => assert_eq!((uid, pid), (stranger, 42)),
            other => panic!("expected NotAllowed, got {other:?}"),
        }
        let list = list.allow_uid(stranger);
        assert!(list.check(peer(stranger)).is_ok());
        assert!(!list.is_allowed(stranger + 1));
    }

    #[test]
    fn extend_adds_uids() {
        let mut list = AllowList::default();
        list.extend([7, 8]);
        assert!(list.is_allowed(7) && list.is_allowed(8));
    }
}
