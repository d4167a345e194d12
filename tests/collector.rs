//! The collector against real processes, files and /proc.

mod child_support;
mod collector_support;
mod skip_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use collector_support::{
    LineReader, Running, TempDir, copy_executable, let_settle, sha256sum, unix_now, within_deadline,
};
use daemoneye_lib::collector::{
    CollectError, Collector, CollectorConfig, FilterError, HashError, HashOutcome, SharedHashCache,
    TreeEvent, TreeMonitor,
};
use daemoneye_lib::proto::{ProtoHashCheck, ProtoProcessFilter, ProtoProcessRecord};

fn filter(names: &[&str], pids: &[u32], pattern: Option<&str>) -> ProtoProcessFilter {
    ProtoProcessFilter {
        process_names: names.iter().map(|s| s.to_string()).collect(),
        pids: pids.to_vec(),
        executable_pattern: pattern.map(str::to_string),
    }
}

fn pids_of(records: &[ProtoProcessRecord]) -> Vec<u32> {
    records.iter().map(|r| r.pid).collect()
}

/// Runs a copy of `/bin/sleep` named `name` in `dir`, sleeping 300 s.
fn run_sleep_copy(dir: &TempDir, name: &str) -> (Running, String) {
    let path = dir.join(name);
    copy_executable("/bin/sleep", &path);
    let path = path.to_str().expect("utf-8 temp path").to_string();
    (Running::spawn(Command::new(&path).arg("300")), path)
}

fn only_record(collector: &mut Collector, pid: u32, with_hashes: bool) -> ProtoProcessRecord {
    let mut records = collector
        .enumerate(Some(&filter(&[], &[pid], None)), with_hashes)
        .expect("enumerate");
    assert_eq!(pids_of(&records), [pid]);
    records.remove(0)
}

#[test]
fn enumerate_finds_a_spawned_child_with_its_details() {
    let dir = TempDir::new("enum");
    let name = format!("dsl-{}", std::process::id());
    let (child, path) = run_sleep_copy(&dir, &name);
    let mut collector = Collector::new(CollectorConfig::default());
    let before_ms = unix_now() * 1000;

    let all = collector.enumerate(None, false).expect("enumerate all");
    let mine: Vec<&ProtoProcessRecord> = all.iter().filter(|r| r.pid == child.pid).collect();
    assert_eq!(mine.len(), 1, "child {} listed once", child.pid);
    let record = mine[0];
    assert!(all.windows(2).all(|w| w[0].pid < w[1].pid), "sorted by pid");
    assert!(all.iter().any(|r| r.pid == std::process::id()));

    assert_eq!(record.ppid, Some(std::process::id()));
    assert_eq!(record.name, name);
    assert_eq!(record.executable_path.as_deref(), Some(path.as_str()));
    assert_eq!(record.command_line, [path.as_str(), "300"]);
    let start = record.start_time.expect("start time");
    assert!(
        (start - unix_now()).abs() < 60,
        "start_time {start} is Unix seconds"
    );
    assert!(record.memory_usage.is_some_and(|bytes| bytes > 0));
    assert_eq!(record.user_id, Some(nix::unistd::getuid().to_string()));
    assert!(record.accessible);
    assert!(record.file_exists);
    assert_eq!(record.cpu_usage, None, "first poll has no CPU usage");
    assert_eq!(record.executable_hash, None, "no hashes unless asked");
    assert!(
        (record.collection_time - before_ms).abs() < 60_000,
        "collection_time {} is Unix ms",
        record.collection_time
    );
}

#[test]
fn name_pid_and_glob_filters_select_exactly_their_processes() {
    let dir = TempDir::new("filter");
    let tag = std::process::id();
    let (name_a, name_b) = (format!("dfa-{tag}"), format!("dfb-{tag}"));
    // Longer than the 15 bytes the kernel keeps of a process name.
    let long = format!("daemoneye-filter-long-name-{tag}");
    let (a, _) = run_sleep_copy(&dir, &name_a);
    let (b, _) = run_sleep_copy(&dir, &name_b);
    let (c, _) = run_sleep_copy(&dir, &long);
    let mut collector = Collector::new(CollectorConfig::default());
    // Every process of the host that passes, not only ours.
    let mut select = |names: &[&str], pids: &[u32], pattern: Option<&str>| {
        let f = filter(names, pids, pattern);
        pids_of(&collector.enumerate(Some(&f), false).expect("enumerate"))
    };
    let dir_glob = format!("{}/*", dir.path().display());
    let df_glob = format!("{}/df?-*", dir.path().display());
    let none: [u32; 0] = [];

    assert_eq!(select(&[&name_a], &[], None), [a.pid]);
    assert_eq!(select(&[&name_a, &name_b], &[], None), [a.pid, b.pid]);
    assert_eq!(select(&[&long], &[], None), [c.pid], "found by file name");
    assert_eq!(select(&[&name_a[..4]], &[], None), none, "names are exact");
    assert_eq!(select(&[], &[b.pid], None), [b.pid]);
    assert_eq!(select(&[], &[c.pid, a.pid], None), [a.pid, c.pid]);
    assert_eq!(select(&[], &[], Some(&dir_glob)), [a.pid, b.pid, c.pid]);
    assert_eq!(select(&[], &[], Some(&df_glob)), [a.pid, b.pid]);
    // Kinds combine with AND.
    assert_eq!(select(&[&name_a], &[b.pid], None), none);
    assert_eq!(select(&[&name_a, &long], &[], Some(&df_glob)), [a.pid]);
    assert_eq!(
        select(
            &[],
            &[a.pid, b.pid],
            Some(&format!("{}/dfb-*", dir.path().display()))
        ),
        [b.pid]
    );

    let err = collector
        .enumerate(Some(&filter(&[], &[], Some("/usr/{bin"))), false)
        .expect_err("bad glob");
    assert!(
        matches!(&err, CollectError::Filter(FilterError::BadPattern { pattern, .. }) if pattern == "/usr/{bin"),
        "{err:?}"
    );
    assert!(err.to_string().contains("/usr/{bin"), "{err}");
}

#[test]
fn cpu_usage_is_absent_on_the_first_poll_and_present_on_the_second() {
    let dir = TempDir::new("cpu");
    let (child, _) = run_sleep_copy(&dir, "dcpu");
    let mut collector = Collector::new(CollectorConfig::default());
    assert_eq!(
        only_record(&mut collector, child.pid, false).cpu_usage,
        None
    );
    // Usage is measured over at least 100 ms: only the clock can be waited for.
    std::thread::sleep(Duration::from_millis(100));
    let second = only_record(&mut collector, child.pid, false).cpu_usage;
    assert!(second.is_some_and(|usage| usage >= 0.0), "{second:?}");
    // Another collector has no history of the process.
    let mut fresh = Collector::new(CollectorConfig::default());
    assert_eq!(only_record(&mut fresh, child.pid, false).cpu_usage, None);
}

fn check(collector: &mut Collector, path: &Path, expected: &str) -> HashOutcome {
    collector.check_hash(&ProtoHashCheck {
        expected_hash: expected.to_string(),
        hash_algorithm: "sha256".to_string(),
        executable_path: path.to_str().expect("utf-8 path").to_string(),
    })
}

/// A file of `len` bytes of varied content.
fn write_file(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect();
    fs::write(path, data).expect("write file");
}

#[test]
fn hash_check_agrees_with_sha256sum_and_reports_the_match() {
    let dir = TempDir::new("hash");
    // Several 1 MiB blocks and a partial one.
    let file = dir.join("data.bin");
    write_file(&file, 3 * (1 << 20) + 12_345, 7);
    let mut collector = Collector::new(CollectorConfig::default());
    for path in [file.as_path(), Path::new("/bin/sleep")] {
        let reference = sha256sum(path);
        let outcome = check(&mut collector, path, "");
        assert!(outcome.result.success, "{:?}", outcome.result.error_message);
        assert_eq!(outcome.result.hash_value, reference);
        assert_eq!(outcome.result.algorithm, "sha256");
        assert_eq!(outcome.result.file_path, path.to_str().unwrap());
        assert_eq!(outcome.matched, None, "nothing was expected");

        let upper = check(&mut collector, path, &reference.to_uppercase());
        assert_eq!(upper.matched, Some(true), "case-insensitive comparison");
        let other = "0".repeat(64);
        let mismatch = check(&mut collector, path, &other);
        assert!(mismatch.result.success);
        assert_eq!(mismatch.matched, Some(false));
    }
}

#[test]
fn hash_check_errors_are_clear_and_quick() {
    let dir = TempDir::new("hasherr");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let big = dir.join("big.bin");
    let at_limit = dir.join("limit.bin");
    const LIMIT: u64 = 1 << 20;
    fs::File::create(&big).unwrap().set_len(LIMIT + 1).unwrap();
    write_file(&at_limit, LIMIT as usize, 3);
    let missing = dir.join("missing");
    let dir_path = dir.path().to_path_buf();

    let reference = sha256sum(&at_limit);
    let outcomes = within_deadline(move || {
        let mut collector = Collector::new(CollectorConfig {
            max_hash_bytes: LIMIT,
            ..CollectorConfig::default()
        });
        let paths = [missing, dir_path, fifo, "/dev/zero".into(), big, at_limit];
        paths.map(|path| check(&mut collector, &path, ""))
    });
    let [missing, directory, fifo, zero, big, at_limit] = outcomes;

    let failed = |outcome: &HashOutcome, needle: &str| {
        assert!(!outcome.result.success);
        assert!(outcome.result.hash_value.is_empty());
        assert_eq!(outcome.matched, None);
        let message = outcome
            .result
            .error_message
            .as_deref()
            .expect("error message");
        assert!(
            message.contains(needle),
            "{message:?} should say {needle:?}"
        );
        assert!(
            message.contains(&outcome.result.file_path),
            "{message:?} names the path"
        );
    };
    failed(&missing, "no such file");
    assert!(matches!(missing.error, Some(HashError::NotFound { .. })));
    failed(&directory, "not a regular file (a directory)");
    failed(&fifo, "not a regular file (a FIFO)");
    failed(&zero, "not a regular file (a character device)");
    failed(
        &big,
        "1048577 bytes is more than the 1048576-byte hashing limit",
    );
    assert!(matches!(
        big.error,
        Some(HashError::TooLarge {
            size: 1_048_577,
            max: LIMIT,
            ..
        })
    ));
    assert!(
        at_limit.result.success,
        "a file of exactly the limit is hashed"
    );
    assert_eq!(at_limit.result.hash_value, reference);
}

#[test]
fn hash_check_refuses_bad_requests() {
    let mut collector = Collector::new(CollectorConfig::default());
    let ask = |collector: &mut Collector, expected: &str, algorithm: &str, path: &str| {
        collector.check_hash(&ProtoHashCheck {
            expected_hash: expected.to_string(),
            hash_algorithm: algorithm.to_string(),
            executable_path: path.to_string(),
        })
    };
    let md5 = ask(&mut collector, "", "md5", "/bin/sleep");
    assert!(!md5.result.success);
    assert!(matches!(md5.error, Some(HashError::UnsupportedAlgorithm(ref a)) if a == "md5"));
    assert!(
        md5.result
            .error_message
            .unwrap()
            .contains("\"md5\" is not supported")
    );

    let short = ask(&mut collector, "abc123", "sha256", "/bin/sleep");
    assert!(matches!(
        short.error,
        Some(HashError::MalformedExpectedHash(_))
    ));
    assert_eq!(short.matched, None);

    let relative = ask(&mut collector, "", "sha256", "bin/sleep");
    assert!(matches!(
        relative.error,
        Some(HashError::NotAbsolute { .. })
    ));
    let empty = ask(&mut collector, "", "", "");
    assert!(matches!(empty.error, Some(HashError::NotAbsolute { .. })));

    // An empty algorithm means the default, SHA-256.
    let default = ask(&mut collector, "", "", "/bin/sleep");
    assert!(default.result.success);
    assert_eq!(default.result.algorithm, "sha256");
}

#[test]
fn collectors_sharing_a_cache_hash_a_file_once() {
    let dir = TempDir::new("shared");
    let file = dir.join("f.bin");
    write_file(&file, 100_000, 3);
    let_settle(&file);
    let cache = SharedHashCache::new(16);
    let mut first = Collector::with_shared_cache(CollectorConfig::default(), cache.clone());
    let mut second = Collector::with_shared_cache(CollectorConfig::default(), cache.clone());
    let a = check(&mut first, &file, "");
    let b = check(&mut second, &file, "");
    assert!(a.result.success, "{:?}", a.result.error_message);
    assert_eq!(a.result.hash_value, sha256sum(&file));
    assert_eq!(b.result.hash_value, a.result.hash_value);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1), "the second was a hit");
    assert_eq!(second.hash_cache_stats(), stats, "one cache, one count");
    // A collector with a cache of its own hashes the file again.
    let mut alone = Collector::new(CollectorConfig::default());
    check(&mut alone, &file, "");
    assert_eq!(alone.hash_cache_stats().misses, 1);
    assert_eq!(cache.stats().misses, 1);
}

#[test]
fn hash_cache_hits_an_unchanged_file_and_misses_a_changed_one() {
    let dir = TempDir::new("cache");
    let file = dir.join("f.bin");
    write_file(&file, 100_000, 1);
    let_settle(&file);
    let mut collector = Collector::new(CollectorConfig::default());
    // Hashes `file`, returning the hash and whether the cache answered.
    let hash = |collector: &mut Collector| {
        let before = collector.hash_cache_stats();
        let outcome = check(collector, &file, "");
        assert!(outcome.result.success, "{:?}", outcome.result.error_message);
        let after = collector.hash_cache_stats();
        assert_eq!(after.hits + after.misses, before.hits + before.misses + 1);
        (outcome.result.hash_value, after.hits > before.hits)
    };

    let (first, hit) = hash(&mut collector);
    assert!(!hit, "first hash: a miss");
    assert_eq!(
        hash(&mut collector),
        (first.clone(), true),
        "unchanged: a hit"
    );

    // Same size, new contents: mtime moves.
    write_file(&file, 100_000, 2);
    let (rewritten, hit) = hash(&mut collector);
    assert!(!hit, "rewritten: a miss");
    assert_eq!(rewritten, sha256sum(&file));
    assert_ne!(rewritten, first);

    // Grown: size moves.
    fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    let (grown, hit) = hash(&mut collector);
    assert!(!hit, "grown: a miss");
    assert_eq!(grown, sha256sum(&file));
    // Once settled, the second hash of this version is a hit.
    let_settle(&file);
    hash(&mut collector);
    assert_eq!(hash(&mut collector), (grown.clone(), true));

    // Same size, new contents, mtime set back to what it was: ctime still
    // moves, so the cached hash of the old contents is not served.
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    let len = fs::metadata(&file).unwrap().len() as usize;
    write_file(&file, len, 9);
    let handle = fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.set_modified(mtime).unwrap();
    drop(handle);
    assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    assert_eq!(fs::metadata(&file).unwrap().len() as usize, len);
    let (restored, hit) = hash(&mut collector);
    assert!(!hit, "mtime restored: still a miss");
    assert_eq!(restored, sha256sum(&file));
    assert_ne!(restored, grown);
}

#[test]
fn verify_hashes_the_running_image_and_flags_a_deleted_file() {
    let dir = TempDir::new("verify");
    let (child, path) = run_sleep_copy(&dir, "dverify");
    let on_disk = sha256sum(Path::new(&path));
    let mut collector = Collector::new(CollectorConfig::default());
    let me = filter(&[], &[child.pid], None);

    let records = collector.verify(Some(&me)).expect("verify");
    assert_eq!(pids_of(&records), [child.pid]);
    assert_eq!(
        records[0].executable_hash.as_deref(),
        Some(on_disk.as_str())
    );
    assert_eq!(records[0].hash_algorithm.as_deref(), Some("sha256"));
    assert!(records[0].file_exists);

    fs::remove_file(&path).expect("delete the running copy");
    let records = collector.verify(Some(&me)).expect("verify");
    assert_eq!(
        records[0].executable_hash.as_deref(),
        Some(on_disk.as_str()),
        "the running image is still hashed"
    );
    assert!(!records[0].file_exists, "a deleted image is flagged");
    assert_eq!(records[0].executable_path.as_deref(), Some(path.as_str()));
    // enumerate without hashes sees the kernel's deleted mark.
    let plain = only_record(&mut collector, child.pid, false);
    assert!(!plain.file_exists);
    assert_eq!(plain.executable_hash, None);
}

#[test]
fn verify_flags_a_replaced_file() {
    let dir = TempDir::new("replace");
    let (child, path) = run_sleep_copy(&dir, "dreplace");
    let original = sha256sum(Path::new(&path));
    let mut collector = Collector::new(CollectorConfig::default());
    let me = filter(&[], &[child.pid], None);
    assert!(collector.verify(Some(&me)).unwrap()[0].file_exists);

    // Replace the file the way package managers do: write aside, rename over.
    let aside = dir.join("dreplace.new");
    write_file(&aside, 50_000, 5);
    fs::set_permissions(&aside, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&aside, &path).unwrap();
    assert_ne!(sha256sum(Path::new(&path)), original);

    let records = collector.verify(Some(&me)).expect("verify");
    assert_eq!(
        records[0].executable_hash.as_deref(),
        Some(original.as_str())
    );
    assert!(!records[0].file_exists, "the path holds another inode now");
}

#[test]
fn enumerate_with_hashes_carries_the_image_hash() {
    let dir = TempDir::new("enumhash");
    let (child, path) = run_sleep_copy(&dir, "denumhash");
    let_settle(Path::new(&path));
    let mut collector = Collector::new(CollectorConfig::default());
    let record = only_record(&mut collector, child.pid, true);
    assert_eq!(record.executable_hash, Some(sha256sum(Path::new(&path))));
    assert_eq!(record.hash_algorithm.as_deref(), Some("sha256"));
    assert!(record.file_exists);
    // The second time the image comes from the cache.
    let hits = collector.hash_cache_stats().hits;
    let again = only_record(&mut collector, child.pid, true);
    assert_eq!(again.executable_hash, record.executable_hash);
    assert_eq!(collector.hash_cache_stats().hits, hits + 1);
}

/// `sh` that, on each line of input, runs the next step: start a background
/// `sleep` and print its pid; wait for it and say "reaped"; exit.
fn spawn_forking_shell() -> (Running, LineReader) {
    let mut shell = Running::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg("read _; sleep 300 & echo $!; wait; echo reaped; read _")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let out = shell.child().stdout.take().expect("piped stdout");
    (shell, LineReader::new(out))
}

fn tell(shell: &mut Running) {
    let stdin = shell.child().stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"go\n").expect("write to shell");
    stdin.flush().expect("flush");
}

/// What one look at the tree found.
#[derive(Debug, Default)]
struct Delta {
    started: Vec<ProtoProcessRecord>,
    exited: Vec<ProtoProcessRecord>,
}

/// The tree's next non-empty batch (its collector polls: each look is a
/// scan), or nothing after 300 ms.
fn poll(tree: &mut TreeMonitor) -> Delta {
    let until = Instant::now() + Duration::from_millis(300);
    let mut delta = Delta::default();
    for event in tree.next_batch(Duration::ZERO, until).expect("next batch") {
        match event {
            TreeEvent::Started(r) => delta.started.push(r),
            TreeEvent::Exited(r) => delta.exited.push(r),
            TreeEvent::Exec(_) => {}
        }
    }
    delta
}

#[test]
fn monitor_reports_children_joining_and_leaving_the_tree() {
    let me = std::process::id();
    let (mut shell, mut lines) = spawn_forking_shell();
    let mut collector = Collector::new(CollectorConfig::default());
    let mut tree = collector.monitor(&[me]).expect("monitor");
    assert_eq!(tree.roots(), [me]);
    let snapshot = pids_of(tree.snapshot());
    assert!(snapshot.contains(&me), "the root is in the tree");
    assert!(snapshot.contains(&shell.pid), "a child is in the tree");

    tell(&mut shell);
    let grandchild: u32 = lines.line().trim().parse().expect("pid from the shell");
    let delta = poll(&mut tree);
    let started = delta
        .started
        .iter()
        .find(|r| r.pid == grandchild)
        .unwrap_or_else(|| panic!("grandchild {grandchild} not in started: {delta:?}"));
    assert_eq!(started.ppid, Some(shell.pid));
    assert!(
        !delta
            .exited
            .iter()
            .any(|r| r.pid == grandchild || r.pid == shell.pid)
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(grandchild as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill grandchild");
    assert_eq!(lines.line(), "reaped");
    let delta = poll(&mut tree);
    assert!(
        delta.exited.iter().any(|r| r.pid == grandchild),
        "grandchild {grandchild} not in exited: {delta:?}"
    );

    let shell_pid = shell.pid;
    tell(&mut shell);
    assert!(shell.wait().success());
    let delta = poll(&mut tree);
    assert!(delta.exited.iter().any(|r| r.pid == shell_pid), "{delta:?}");
    assert!(!delta.started.iter().any(|r| r.pid == shell_pid));
}

#[test]
fn monitor_without_roots_watches_every_process() {
    let mut collector = Collector::new(CollectorConfig::default());
    let mut tree = collector.monitor(&[]).expect("monitor");
    assert!(tree.roots().is_empty());
    let snapshot = pids_of(tree.snapshot());
    assert_eq!(snapshot.len(), tree.len());
    assert!(
        snapshot.contains(&std::process::id()),
        "every process is in the tree"
    );

    let dir = TempDir::new("monall");
    let (child, _) = run_sleep_copy(&dir, "dmonall");
    let pid = child.pid;
    let delta = poll(&mut tree);
    assert!(delta.started.iter().any(|r| r.pid == pid), "{delta:?}");

    drop(child); // killed and reaped
    let delta = poll(&mut tree);
    assert!(delta.exited.iter().any(|r| r.pid == pid), "{delta:?}");

    // Nothing of ours changes in between: no spurious events for our child.
    let delta = poll(&mut tree);
    assert!(
        !delta
            .started
            .iter()
            .chain(&delta.exited)
            .any(|r| r.pid == pid)
    );
}

#[test]
fn exec_after_first_sight_is_noticed() {
    // A shell seen before it execs must be reported as the new program
    // afterwards, not as the shell forever. The new program is a copy of sh
    // that says when it runs, so the test knows the exec has happened.
    let dir = TempDir::new("exec");
    let target = dir.join("dexecd");
    copy_executable("/bin/sh", &target);
    let script = "echo up; read _";
    let mut shell = Running::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read _; exec {} -c '{script}'", target.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut lines = LineReader::new(shell.child().stdout.take().expect("piped stdout"));
    let mut collector = Collector::new(CollectorConfig::default());
    let before = only_record(&mut collector, shell.pid, false);
    assert_eq!(before.name, "sh");
    // CPU usage needs a window of 100 ms: only the clock can be waited for.
    std::thread::sleep(Duration::from_millis(100));

    tell(&mut shell);
    assert_eq!(lines.line(), "up");
    let after = only_record(&mut collector, shell.pid, false);
    assert_eq!(after.name, "dexecd");
    assert_eq!(after.executable_path.as_deref(), target.to_str());
    assert_eq!(after.command_line, [target.to_str().unwrap(), "-c", script]);
    assert_eq!(after.start_time, before.start_time, "the same process");
    assert!(after.cpu_usage.is_some(), "CPU history survives the exec");
}

#[test]
fn a_huge_command_line_is_cut_to_the_limits_and_the_record_validates() {
    use daemoneye_lib::proto::DetectionResult;
    use daemoneye_lib::proto::limits::{MAX_COMMAND_LINE_ARGS, MAX_COMMAND_LINE_BYTES};
    use prost::Message;

    // Over both limits, yet within the kernel's ARG_MAX (2 MiB here): 5000
    // small arguments, then 12 of 100 000 bytes of two-byte characters.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo up; read line", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for i in 0..5000 {
        cmd.arg(format!("{}", i % 10));
    }
    for _ in 0..12 {
        cmd.arg("é".repeat(50_000));
    }
    let mut child = Running::spawn(&mut cmd);
    // The shell runs (its exec has set up its arguments) once it says so.
    let mut lines = LineReader::new(child.child().stdout.take().expect("piped stdout"));
    assert_eq!(lines.line(), "up");
    let mut collector = Collector::new(CollectorConfig::default());
    let record = only_record(&mut collector, child.pid, false);

    record.validate().expect("the record validates");
    assert_eq!(record.command_line.len(), MAX_COMMAND_LINE_ARGS);
    assert_eq!(
        record.command_line[..4],
        ["/bin/sh", "-c", "echo up; read line", "sh"]
    );
    let total: usize = record.command_line.iter().map(String::len).sum();
    assert!(total <= MAX_COMMAND_LINE_BYTES, "{total}");

    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo up; read line", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for _ in 0..12 {
        cmd.arg("é".repeat(50_000));
    }
    let mut child = Running::spawn(&mut cmd);
    // The shell runs (its exec has set up its arguments) once it says so.
    let mut lines = LineReader::new(child.child().stdout.take().expect("piped stdout"));
    assert_eq!(lines.line(), "up");
    let record = only_record(&mut collector, child.pid, false);
    record.validate().expect("the record validates");
    let total: usize = record.command_line.iter().map(String::len).sum();
    assert!(
        total <= MAX_COMMAND_LINE_BYTES && total + 4 >= MAX_COMMAND_LINE_BYTES,
        "{total}"
    );
    let last = record.command_line.last().expect("arguments");
    assert!(
        last.chars().all(|c| c == 'é'),
        "cut on a character boundary"
    );
    // Well within one ring frame, and a result carrying it validates.
    assert!(record.encoded_len() < MAX_COMMAND_LINE_BYTES + 16 * 1024);
    DetectionResult::success("t-1", vec![record])
        .validate()
        .expect("the result validates");
}

#[test]
fn a_file_named_like_the_deleted_mark_is_not_taken_for_deleted() {
    let dir = TempDir::new("fakedel");
    let (child, path) = run_sleep_copy(&dir, "x (deleted)");
    let mut collector = Collector::new(CollectorConfig::default());
    let plain = only_record(&mut collector, child.pid, false);
    assert_eq!(plain.executable_path.as_deref(), Some(path.as_str()));
    assert!(plain.file_exists, "the file is there under its own name");
    let me = filter(&[], &[child.pid], None);
    let verified = collector.verify(Some(&me)).expect("verify");
    assert!(verified[0].file_exists);
    assert_eq!(verified[0].executable_path.as_deref(), Some(path.as_str()));

    // Deleting it is still noticed, and the kernel's mark is then taken off.
    fs::remove_file(&path).expect("delete the running copy");
    let mut fresh = Collector::new(CollectorConfig::default());
    let plain = only_record(&mut fresh, child.pid, false);
    assert!(!plain.file_exists);
    assert_eq!(plain.executable_path.as_deref(), Some(path.as_str()));
    assert!(!fresh.verify(Some(&me)).expect("verify")[0].file_exists);
}

#[test]
fn a_process_in_another_mount_namespace_is_judged_by_its_own_files() {
    let can_unshare = nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["--mount", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !can_unshare {
        skip_support::skip("needs root and unshare(1) able to make a mount namespace");
        return;
    }
    // A tmpfs mounted only inside the child's namespace: the host has an
    // empty directory where the child's executable (a copy of sh, which says
    // when it runs) lives.
    let dir = TempDir::new("mntns");
    let mount_point = dir.join("private");
    fs::create_dir(&mount_point).unwrap();
    let exe = mount_point.join("contained");
    let script = format!(
        "mount -t tmpfs none '{m}' || {{ echo nomount; exit 0; }}; cp /bin/sh '{e}' && exec '{e}' -c 'echo ready; read x'",
        m = mount_point.display(),
        e = exe.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = Running::spawn(&mut cmd);
    let out = child.child().stdout.take().expect("piped stdout");
    let line = LineReader::new(out).line();
    if line == "nomount" {
        skip_support::skip("tmpfs cannot be mounted here");
        return;
    }
    assert_eq!(line, "ready");
    assert!(!exe.exists(), "the host does not see the child's mount");

    let mut collector = Collector::new(CollectorConfig::default());
    let me = filter(&[], &[child.pid], None);
    let record = &collector.verify(Some(&me)).expect("verify")[0];
    assert_eq!(record.executable_path.as_deref(), exe.to_str());
    assert!(record.file_exists, "its image is on disk in its namespace");
    assert_eq!(
        record.executable_hash,
        Some(sha256sum(Path::new("/bin/sh")))
    );
}

#[test]
fn polls_a_millisecond_apart_give_no_absurd_cpu_usage() {
    // A busy child: on a 1 ms window its CPU time (counted in 10 ms ticks)
    // would read 0 % or 1000 %.
    let child = Running::spawn(Command::new("/bin/sh").args(["-c", "while :; do :; done"]));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut collector = Collector::new(CollectorConfig::default());
    let started = std::time::Instant::now();
    let deadline = started.checked_add(Duration::from_secs(60)).unwrap();
    let mut reported = Vec::new();
    // Poll every millisecond (pacing, not synchronisation) until usage has
    // been reported 50 times: on a busy machine the polls may come further
    // apart, so a run of fixed length could see none. Only a collector that
    // never reports usage reaches the deadline.
    while reported.len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "usage not reported 50 times within 60 s ({} times)",
            reported.len()
        );
        if let Some(usage) = only_record(&mut collector, child.pid, false).cpu_usage {
            reported.push((started.elapsed(), usage));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (at, usage) in &reported {
        assert!(*at >= Duration::from_millis(100), "usage at {at:?}");
        assert!(
            (0.0..=100.0 * cores + 15.0).contains(usage),
            "{usage} % at {at:?} with {cores} cores"
        );
    }
}
