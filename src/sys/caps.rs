//! This process's effective capabilities, by name, as the kernel reports
//! them in `/proc/self/status`; and giving one up for good.

use std::io;

use rustix::thread::CapabilitySet;

/// Capability names by bit number (linux/capability.h).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The effective capabilities' names (`CAP_<bit>` for a bit this table
/// does not name); empty when `/proc/self/status` cannot be read.
pub fn effective_names() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    names(mask)
}

/// Gives up `CAP_NET_ADMIN` on the calling thread, for good: out of its
/// ambient, inheritable, permitted and effective sets (the bounding set
/// needs `CAP_SETPCAP` to change, and bounds nothing once permitted lacks
/// it, as procmond execs nothing). Threads started afterwards inherit the
/// sets; threads already running keep their own, so this is for a process
/// that has one thread yet. `Ok` also when it was not held.
pub fn give_up_net_admin() -> io::Result<()> {
    // Lowering an ambient capability needs no privilege.
    rustix::thread::configure_capability_in_ambient_set(CapabilitySet::NET_ADMIN, false)?;
    let mut sets = rustix::thread::capabilities(None)?;
    for set in [
        &mut sets.effective,
        &mut sets.permitted,
        &mut sets.inheritable,
    ] {
        set.remove(CapabilitySet::NET_ADMIN);
    }
    rustix::thread::set_capabilities(None, sets)?;
    Ok(())
}

fn names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| match NAMES.get(bit) {
            Some(name) => (*name).to_owned(),
            None => format!("CAP_{bit}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_named() {
        assert_eq!(names(0), Vec::<String>::new());
        assert_eq!(
            names(1 << 19 | 1 << 2),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]
        );
        assert_eq!(names(1 << 50), ["CAP_50"]);
    }

    /// The masks of one thread's `Cap*:` lines, by set name.
    fn thread_sets(tid: i32) -> Vec<(String, u64)> {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        status
            .lines()
            .filter_map(|line| {
                let (name, hex) = line.strip_prefix("Cap")?.split_once(':')?;
                Some((name.to_owned(), u64::from_str_radix(hex.trim(), 16).ok()?))
            })
            .collect()
    }

    #[test]
    fn net_admin_is_given_up_by_the_thread_that_asks_and_its_children_only() {
        const NET_ADMIN: u64 = 1 << 12;
        let me = rustix::thread::gettid().as_raw_nonzero().get();
        let held_here = thread_sets(me);
        let (dropped, child) = std::thread::spawn(|| {
            give_up_net_admin().unwrap();
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            let child = std::thread::spawn(|| {
                let tid = rustix::thread::gettid().as_raw_nonzero().get();
                thread_sets(tid)
            })
            .join()
            .unwrap();
            (thread_sets(tid), child)
        })
        .join()
        .unwrap();
        for (name, mask) in dropped.iter().chain(&child) {
            if name != "Bnd" {
                assert_eq!(mask & NET_ADMIN, 0, "Cap{name} still holds CAP_NET_ADMIN");
            }
        }
        // Nothing else went, and this thread kept what it had.
        let others = |sets: &[(String, u64)]| -> Vec<(String, u64)> {
            sets.iter()
                .map(|(name, mask)| (name.clone(), mask & !NET_ADMIN))
                .collect()
        };
        assert_eq!(others(&dropped), others(&held_here));
        assert_eq!(thread_sets(me), held_here);
        let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
        let had = held_here
            .iter()
            .any(|(n, m)| n == "Eff" && m & NET_ADMIN != 0);
        assert!(
            had || !in_ci,
            "CI runs as root, with CAP_NET_ADMIN to give up"
        );
    }
}
