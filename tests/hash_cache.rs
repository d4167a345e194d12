//! The hash cache serves no digest of old contents: a file anyone but root
//! could write is hashed afresh every time, since its key (device, inode,
//! size, mtime, ctime) can stay the same while its contents change. A second
//! write through a shared `mmap` to a page that is already dirty takes no
//! page fault, so the kernel updates neither time.

mod child_support;
mod collector_support;
mod skip_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};

use collector_support::{LineReader, Running, TempDir, let_settle, sha256sum};
use daemoneye_lib::collector::{Collector, CollectorConfig};
use daemoneye_lib::proto::ProtoHashCheck;

/// A `python3` child with `path` mapped shared and writable: each line
/// `OFFSET BYTE` written to it stores that byte there through the mapping,
/// answered by `ok`.
struct MmapWriter {
    stdin: ChildStdin,
    lines: LineReader,
    /// Killed and reaped when dropped.
    _child: Running,
}

impl MmapWriter {
    fn new(path: &Path) -> MmapWriter {
        const WRITER: &str = "import mmap, sys\n\
            f = open(sys.argv[1], 'r+b')\n\
            m = mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\n\
            print('mapped', flush=True)\n\
            for line in sys.stdin:\n\
            \x20   offset, byte = line.split()\n\
            \x20   m[int(offset)] = int(byte)\n\
            \x20   print('ok', flush=True)\n";
        let mut child = Running::spawn(
            Command::new("python3")
                .args(["-c", WRITER])
                .arg(path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let stdin = child.child().stdin.take().unwrap();
        let mut lines = LineReader::new(child.child().stdout.take().unwrap());
        assert_eq!(lines.line(), "mapped");
        MmapWriter {
            stdin,
            lines,
            _child: child,
        }
    }

    fn store(&mut self, offset: usize, byte: u8) {
        writeln!(self.stdin, "{offset} {byte}").unwrap();
        assert_eq!(self.lines.line(), "ok");
    }
}

/// What the cache keys a file version by.
fn key(path: &Path) -> (u64, u64, u64, i64, i64, i64, i64) {
    let m = fs::metadata(path).unwrap();
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

fn ask(path: &Path) -> ProtoHashCheck {
    ProtoHashCheck {
        expected_hash: String::new(),
        hash_algorithm: "sha256".into(),
        executable_path: path.to_str().unwrap().into(),
    }
}

#[test]
fn a_file_others_may_write_is_hashed_afresh_though_its_key_stayed() {
    let dir = TempDir::new("hash-cache");
    // Owned by another user; owned by root but writable by others.
    for (owner, mode) in [(65534, 0o644), (0, 0o666)] {
        let file = dir.join(&format!("data-{owner}-{mode:o}"));
        fs::write(&file, vec![b'a'; 4096]).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        // Not root: the file is the test's own, not root's, either way.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&file, Some(owner), Some(owner)).unwrap();
        }
        let mut writer = MmapWriter::new(&file);
        // The first store faults the page in writable: the times move.
        writer.store(0, b'b');
        let_settle(&file);
        let mut collector = Collector::new(CollectorConfig::default());
        let first = collector.check_hash(&ask(&file)).result.hash_value;
        assert_eq!(first, sha256sum(&file));

        let before = key(&file);
        // The page is dirty already: no fault, no time update.
        writer.store(1, b'c');
        assert_eq!(
            key(&file),
            before,
            "the kernel moved the key (a writeback in between?): nothing to prove"
        );
        let second = collector.check_hash(&ask(&file)).result.hash_value;
        assert_ne!(
            second, first,
            "owner {owner}, mode {mode:o}: old digest served"
        );
        assert_eq!(second, sha256sum(&file));
        let stats = collector.hash_cache_stats();
        assert_eq!((stats.hits, stats.entries), (0, 0), "{stats:?}");
        assert_eq!(stats.uncacheable, 2, "{stats:?}");
        drop(writer);
    }
}

#[test]
fn a_file_only_root_may_write_is_cached() {
    // Files this test creates are root's only when it runs as root.
    if !skip_support::is_root_or_skip("creating a root-owned file") {
        return;
    }
    let dir = TempDir::new("hash-cache-root");
    let file = dir.join("data");
    fs::write(&file, b"written by root, read by all").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let_settle(&file);
    let mut collector = Collector::new(CollectorConfig::default());
    let expected = sha256sum(&file);
    for _ in 0..2 {
        assert_eq!(
            collector.check_hash(&ask(&file)).result.hash_value,
            expected
        );
    }
    let stats = collector.hash_cache_stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.entries, stats.uncacheable),
        (1, 1, 1, 0),
        "{stats:?}"
    );
}
