//! CHECK_PROCESS_HASH on behalf of a peer: procmond (root) must not read for
//! a requester what the requester could not read, nor kernel interfaces
//! dressed as regular files, nor its own descriptors through /proc.

mod child_support;
mod collector_support;
mod skip_support;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use collector_support::{Running, TempDir, sha256sum};
use daemoneye_lib::collector::{Collector, CollectorConfig, HashError, Requester};
use daemoneye_lib::proto::{DetectionResult, ProtoHashCheck};

fn ask(path: &str) -> ProtoHashCheck {
    ProtoHashCheck {
        expected_hash: String::new(),
        hash_algorithm: "sha256".to_string(),
        executable_path: path.to_string(),
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A requester that is neither the owner of files this test creates nor in
/// their group.
fn stranger() -> Requester {
    let me = nix::unistd::getuid().as_raw();
    let uid = if me == 65534 { 65533 } else { 65534 };
    Requester {
        uid,
        gids: vec![uid],
    }
}

/// The failure result procmond would send for `outcome` must itself be valid.
fn assert_failure_result_is_valid(outcome: &daemoneye_lib::collector::HashOutcome) {
    let mut result = DetectionResult::failure(
        "t-1",
        outcome.result.error_message.clone().expect("a message"),
    );
    result.hash_result = Some(outcome.result.clone());
    result
        .validate()
        .expect("procmond's own failure result validates");
}

#[test]
fn a_requester_is_held_to_the_mode_bits() {
    let dir = TempDir::new("access");
    let secret = dir.join("secret");
    fs::write(&secret, b"not for strangers").unwrap();
    chmod(&secret, 0o600);
    if nix::unistd::geteuid().is_root() {
        // Root passes any mode check: give the file an ordinary owner.
        std::os::unix::fs::chown(&secret, Some(4242), Some(4343)).unwrap();
    }
    let path = secret.to_str().unwrap();
    let mut collector = Collector::new(CollectorConfig::default());

    let refused = collector.check_hash_for(&ask(path), &stranger());
    assert!(
        matches!(refused.error, Some(HashError::NotPermittedFor { uid, .. }) if uid == stranger().uid),
        "{:?}",
        refused.error
    );
    assert!(!refused.result.success && refused.result.hash_value.is_empty());
    assert_failure_result_is_valid(&refused);

    // The file's owner may, as may root.
    let owner = Requester {
        uid: fs::metadata(&secret).unwrap().uid(),
        gids: vec![],
    };
    let reference = sha256sum(&secret);
    for who in [owner, Requester::root()] {
        let outcome = collector.check_hash_for(&ask(path), &who);
        assert_eq!(outcome.result.hash_value, reference, "{who:?}");
    }

    // Group bits count for a member of the file's group, other bits for
    // anyone else, and the owner is held to the owner bits alone.
    chmod(&secret, 0o640);
    let gid = fs::metadata(&secret).unwrap().gid();
    let member = Requester {
        gids: vec![gid],
        ..stranger()
    };
    assert!(collector.check_hash_for(&ask(path), &member).result.success);
    assert!(
        !collector
            .check_hash_for(&ask(path), &stranger())
            .result
            .success
    );
    chmod(&secret, 0o044);
    let owner = Requester {
        uid: fs::metadata(&secret).unwrap().uid(),
        gids: vec![],
    };
    assert!(matches!(
        collector.check_hash_for(&ask(path), &owner).error,
        Some(HashError::NotPermittedFor { .. })
    ));
    assert!(
        collector
            .check_hash_for(&ask(path), &stranger())
            .result
            .success
    );
}

#[test]
fn a_requester_must_be_able_to_reach_the_file() {
    let dir = TempDir::new("reach");
    let private = dir.join("private");
    fs::create_dir(&private).unwrap();
    let file = private.join("open.txt");
    fs::write(&file, b"world-readable, in a closed directory").unwrap();
    chmod(&file, 0o644);
    chmod(&private, 0o700);
    let mut collector = Collector::new(CollectorConfig::default());
    let direct = collector.check_hash_for(&ask(file.to_str().unwrap()), &stranger());
    assert!(
        matches!(direct.error, Some(HashError::NotPermittedFor { .. })),
        "{:?}",
        direct.error
    );
    // Whether a file exists in a closed directory is not told either.
    let missing =
        collector.check_hash_for(&ask(private.join("nothing").to_str().unwrap()), &stranger());
    assert!(matches!(
        missing.error,
        Some(HashError::NotPermittedFor { .. })
    ));

    // A symbolic link in an open directory does not open the way.
    let link = dir.join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let via_link = collector.check_hash_for(&ask(link.to_str().unwrap()), &stranger());
    assert!(
        matches!(via_link.error, Some(HashError::NotPermittedFor { .. })),
        "{:?}",
        via_link.error
    );
    chmod(&private, 0o711);
    assert!(
        collector
            .check_hash_for(&ask(link.to_str().unwrap()), &stranger())
            .result
            .success
    );
}

#[test]
fn pseudo_file_systems_are_refused_even_for_root() {
    let mut collector = Collector::new(CollectorConfig::default());
    let mut paths = vec!["/proc/self/status", "/proc/self/stat"];
    // Reading /proc/kmsg would drain the kernel log; it reports itself as a
    // regular file, so only the file system gives it away.
    if skip_support::is_root_or_skip("hashing /proc/kmsg") {
        paths.push("/proc/kmsg");
    }
    if Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        paths.push("/sys/kernel/mm/transparent_hugepage/enabled");
    }
    for path in paths {
        let outcome = collector.check_hash(&ask(path));
        let expected = if path.starts_with("/sys") {
            "sysfs"
        } else {
            "proc"
        };
        assert!(
            matches!(outcome.error, Some(HashError::PseudoFileSystem { fs, .. }) if fs == expected),
            "{path}: {:?}",
            outcome.error
        );
        let outcome = collector.check_hash_for(&ask(path), &Requester::root());
        assert!(!outcome.result.success, "{path}");
        assert_failure_result_is_valid(&outcome);
    }
}

#[test]
fn own_descriptors_are_not_reachable_through_proc() {
    // Stands in for another client's ring: a memfd procmond holds open.
    let memfd = rustix::fs::memfd_create("de-test-ring", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::io::write(&memfd, b"ring contents").unwrap();
    let via_proc = format!("/proc/self/fd/{}", memfd.as_raw_fd());
    let mut collector = Collector::new(CollectorConfig::default());
    let outcome = collector.check_hash(&ask(&via_proc));
    assert!(
        matches!(outcome.error, Some(HashError::LinkRefused { .. })),
        "{:?}",
        outcome.error
    );
    // The same for a plain file held open.
    let dir = TempDir::new("fdlink");
    let file = fs::File::create(dir.join("held")).unwrap();
    let via_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    let outcome = collector.check_hash(&ask(&via_proc));
    assert!(!outcome.result.success, "{:?}", outcome.result);
}

#[test]
fn requester_from_pid_reads_a_childs_groups() {
    let child = Running::spawn(std::process::Command::new("/bin/sleep").arg("30"));
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let requester = Requester::from_pid(child.pid, uid, gid);
    let mut expected: Vec<u32> = nix::unistd::getgroups()
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw())
        .chain([gid])
        .collect();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(requester.gids, expected);
    // Credentials that do not match the process keep only the primary group.
    let other = Requester::from_pid(child.pid, uid + 1, 4242);
    assert_eq!(other.gids, vec![4242]);
}

#[test]
fn procmonds_own_failure_results_validate_whatever_the_peer_sent() {
    let mut collector = Collector::new(CollectorConfig::default());
    let long_path = format!("/{}", "é".repeat(2047)); // 4095 bytes, no such file
    let cases = [
        ask(&long_path),
        ProtoHashCheck {
            hash_algorithm: "m".repeat(5000),
            ..ask("/bin/sh")
        },
        ProtoHashCheck {
            expected_hash: "z".repeat(5000),
            ..ask("/bin/sh")
        },
        ProtoHashCheck {
            hash_algorithm: "sha512".into(),
            ..ask(&long_path)
        },
    ];
    for check in cases {
        for who in [Requester::root(), stranger()] {
            let outcome = collector.check_hash_for(&check, &who);
            assert!(!outcome.result.success);
            assert_failure_result_is_valid(&outcome);
        }
    }
}

#[test]
fn an_empty_expected_hash_is_valid_and_reports_the_hash() {
    let check = ask("/bin/sh");
    daemoneye_lib::proto::DetectionTask::new_hash_check("t", check.clone())
        .validate()
        .expect("valid");
    let mut collector = Collector::new(CollectorConfig::default());
    let outcome = collector.check_hash(&check);
    assert!(outcome.result.success);
    assert_eq!(outcome.matched, None);
    assert_eq!(outcome.result.hash_value, sha256sum(Path::new("/bin/sh")));
}
