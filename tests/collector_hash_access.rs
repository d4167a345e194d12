//! CHECK_PROCESS_HASH on behalf of a peer: procmond (root) opens no path for
//! a peer but root (the peer attaches the file it opened), and reads no
//! kernel interface dressed as a regular file, nor its own descriptors
//! through /proc.

mod child_support;
mod collector_support;
mod skip_support;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use collector_support::{TempDir, sha256sum};
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

/// A requester other than root.
fn stranger() -> Requester {
    Requester::other(65534)
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
fn a_path_from_anyone_but_root_is_refused_without_being_opened() {
    let dir = TempDir::new("access");
    let open = dir.join("open");
    fs::write(&open, b"world-readable").unwrap();
    chmod(&open, 0o644);
    let mut collector = Collector::new(CollectorConfig::default());
    // A readable file and a missing one get the same answer: procmond
    // looked at neither.
    for path in [open.clone(), dir.join("missing")] {
        let refused = collector.check_hash_for(&ask(path.to_str().unwrap()), stranger());
        assert!(
            matches!(refused.error, Some(HashError::PathNotAllowed { uid, .. }) if uid == stranger().uid),
            "{:?}",
            refused.error
        );
        assert!(!refused.result.success && refused.result.hash_value.is_empty());
        assert!(
            refused
                .result
                .error_message
                .as_deref()
                .is_some_and(|m| m.contains("attach its descriptor")),
            "{:?}",
            refused.result.error_message
        );
        assert_failure_result_is_valid(&refused);
    }
    // Root may name it.
    let outcome = collector.check_hash_for(&ask(open.to_str().unwrap()), Requester::root());
    assert_eq!(outcome.result.hash_value, sha256sum(&open));
}

#[test]
fn an_attached_descriptor_is_hashed_whole_and_must_be_a_regular_file() {
    use std::io::{Seek, SeekFrom};
    let dir = TempDir::new("attached");
    let data = dir.join("data");
    fs::write(&data, vec![7u8; 3 << 20]).unwrap();
    let mut collector = Collector::new(CollectorConfig {
        hash_block_bytes: 1 << 20,
        ..CollectorConfig::default()
    });
    // The peer's offset (shared with procmond's copy) is at the end: reads
    // are positioned, so the whole file is still hashed.
    let mut file = fs::File::open(&data).unwrap();
    file.seek(SeekFrom::End(0)).unwrap();
    let outcome = collector.check_hash_of(&ask("/named/by/the/peer"), file);
    assert_eq!(
        outcome.result.hash_value,
        sha256sum(&data),
        "{:?}",
        outcome.error
    );
    assert_eq!(outcome.result.file_path, "/named/by/the/peer");

    let fifo = dir.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let reader = rustix::fs::open(
        &fifo,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let outcome = collector.check_hash_of(&ask("/fifo"), fs::File::from(reader));
    assert!(
        matches!(
            outcome.error,
            Some(HashError::NotRegularFile { kind: "FIFO", .. })
        ),
        "{:?}",
        outcome.error
    );
    let proc_file = fs::File::open("/proc/self/status").unwrap();
    let outcome = collector.check_hash_of(&ask("/proc/self/status"), proc_file);
    assert!(
        matches!(
            outcome.error,
            Some(HashError::PseudoFileSystem { fs: "proc", .. })
        ),
        "{:?}",
        outcome.error
    );
    assert_failure_result_is_valid(&outcome);
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
        let outcome = collector.check_hash_for(&ask(path), Requester::root());
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
            let outcome = collector.check_hash_for(&check, who);
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
