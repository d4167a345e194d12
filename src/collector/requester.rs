//! Who asked for a hash check: the peer's uid and groups, against which the
//! file's mode bits are checked before procmond (root) reads it for them.

use std::os::unix::fs::MetadataExt;

/// The credentials a CHECK_PROCESS_HASH is carried out for; see
/// [`Collector::check_hash_for`](super::Collector::check_hash_for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    /// The requester's user id.
    pub uid: u32,
    /// Its primary and supplementary group ids.
    pub gids: Vec<u32>,
}

impl Requester {
    /// Root: may read any file (pseudo file systems are still refused).
    pub fn root() -> Self {
        Self {
            uid: 0,
            gids: vec![0],
        }
    }

    /// A peer known by its credentials (e.g. from `SO_PEERCRED`): `gid` and
    /// the supplementary groups on the `Groups:` line of
    /// `/proc/<pid>/status`. When that file cannot be read, or names another
    /// real or effective uid than `uid` (the pid was reused, or the process
    /// changed identity), only `gid` is kept: fewer groups can only refuse
    /// more.
    pub fn from_pid(pid: u32, uid: u32, gid: u32) -> Self {
        let mut gids = vec![gid];
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(groups) = groups_of(&status, uid)
        {
            gids.extend(groups);
        }
        gids.sort_unstable();
        gids.dedup();
        Self { uid, gids }
    }

    /// Whether these credentials pass the mode bits of `meta` for `want`
    /// (a mask of `r`=4, `w`=2, `x`=1), as the kernel decides without ACLs:
    /// uid 0 always; the owner by the owner bits alone; a member of the
    /// file's group by the group bits alone; anyone else by the other bits.
    pub(crate) fn may(&self, meta: &std::fs::Metadata, want: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }
}

/// The supplementary groups of a `/proc/<pid>/status`, if its real and
/// effective uids are both `uid`.
fn groups_of(status: &str, uid: u32) -> Option<Vec<u32>> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let mut uids = field("Uid:")?;
    let (real, effective) = (
        uids.next()?.parse::<u32>().ok()?,
        uids.next()?.parse::<u32>().ok()?,
    );
    if real != uid || effective != uid {
        return None;
    }
    field("Groups:")?.map(|g| g.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_only_for_the_same_uid() {
        let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 1000 \n";
        assert_eq!(groups_of(status, 1000), Some(vec![4, 24, 1000]));
        assert_eq!(groups_of(status, 1001), None);
        let no_groups = "Uid:\t5\t5\t5\t5\nGroups:\t\n";
        assert_eq!(groups_of(no_groups, 5), Some(vec![]));
        let setuid = "Uid:\t1000\t0\t0\t0\nGroups:\t4\n";
        assert_eq!(groups_of(setuid, 1000), None);
    }

    #[test]
    fn own_process_has_its_groups() {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let me = Requester::from_pid(std::process::id(), uid, gid);
        assert_eq!(me.uid, uid);
        assert!(me.gids.contains(&gid));
        for g in nix::unistd::getgroups().unwrap() {
            assert!(me.gids.contains(&g.as_raw()), "{g} missing from {me:?}");
        }
    }
}
