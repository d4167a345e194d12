//! Skipping a test whose precondition (root, a kernel feature, a free
//! system path) this machine lacks, except under CI.
//!
//! CI runs as root on a kernel that has everything these tests need, so a
//! skip there means a root-only test silently proved nothing: with
//! `CI=true` in the environment (as `.ci/run` sets it), [`skip`] fails the
//! test instead.
#![allow(dead_code)] // each test file uses a different subset

/// Whether this run is CI's (`CI=true`), where no test may skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Says that the calling test is skipped for `reason` (it should return
/// next); under CI, fails it with `reason` instead.
pub fn skip(reason: &str) {
    assert!(!under_ci(), "CI=true, so this test may not skip: {reason}");
    println!("skipped: {reason}");
}

/// Whether this process runs as root; if not, [`skip`]s with `why` (what
/// needs root).
pub fn is_root_or_skip(why: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    skip(&format!("{why} needs root"));
    false
}

/// The name of the group with gid `gid` (65534 is `nogroup` on Debian,
/// `nobody` on Fedora), or a [`skip`] if there is none.
pub fn group_name_or_skip(gid: u32) -> Option<String> {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(group)) => Some(group.name),
        _ => {
            skip(&format!("no group has gid {gid}"));
            None
        }
    }
}
