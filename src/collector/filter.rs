//! A compiled `ProcessFilter`: exact names, pids and an executable-path glob.
//!
//! Each kind of criterion that is given must hold (AND); within a kind any
//! value may match (OR); a kind left empty does not constrain. So names
//! `[firefox, chrome]` with pattern `/usr/bin/*` selects firefox or chrome
//! running from `/usr/bin`.

use std::collections::HashSet;

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::proto::ProtoProcessFilter;

/// A filter that could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// `executable_pattern` is not a valid glob.
    #[error("executable_pattern {pattern:?} is not a valid glob: {source}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What globset found wrong with it.
        #[source]
        source: globset::Error,
    },
}

/// A [`ProtoProcessFilter`] ready to test processes against.
#[derive(Debug, Default)]
pub(crate) struct ProcessFilter {
    names: HashSet<String>,
    pids: HashSet<u32>,
    exe: Option<GlobMatcher>,
}

impl ProcessFilter {
    /// Compiles `filter`; `None` selects every process.
    ///
    /// The glob is matched against the whole executable path, `*` and `?`
    /// do not cross `/` (as in a shell), and `**` spans directories.
    pub(crate) fn compile(filter: Option<&ProtoProcessFilter>) -> Result<Self, FilterError> {
        let Some(filter) = filter else {
            return Ok(Self::default());
        };
        let exe = match filter.executable_pattern.as_deref() {
            None => None,
            Some(pattern) => Some(glob(pattern)?.compile_matcher()),
        };
        Ok(Self {
            names: filter.process_names.iter().cloned().collect(),
            pids: filter.pids.iter().copied().collect(),
            exe,
        })
    }

    /// The pids asked for, sorted, when there is a pid criterion: only
    /// those processes need to be looked at (other criteria AND with it).
    pub(crate) fn only_pids(&self) -> Option<Vec<u32>> {
        if self.pids.is_empty() {
            return None;
        }
        let mut pids: Vec<u32> = self.pids.iter().copied().collect();
        pids.sort_unstable();
        Some(pids)
    }

    /// Whether `pid` passes the pid criterion (cheap: test it first).
    pub(crate) fn admits_pid(&self, pid: u32) -> bool {
        self.pids.is_empty() || self.pids.contains(&pid)
    }

    /// Whether a process passes the name and path criteria.
    ///
    /// A name matches the process name exactly, or the file name of its
    /// executable exactly: the kernel cuts process names to 15 bytes, so a
    /// long executable name is found by its file name. A process whose
    /// executable path is unknown never matches a pattern.
    pub(crate) fn admits(&self, name: &str, exe: Option<&str>) -> bool {
        let name_ok = self.names.is_empty()
            || self.names.contains(name)
            || exe
                .and_then(|path| path.rsplit('/').next())
                .is_some_and(|file| self.names.contains(file));
        let exe_ok = match &self.exe {
            None => true,
            Some(glob) => exe.is_some_and(|path| glob.is_match(path)),
        };
        name_ok && exe_ok
    }
}

fn glob(pattern: &str) -> Result<Glob, FilterError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|source| FilterError::BadPattern {
            pattern: pattern.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(names: &[&str], pids: &[u32], pattern: Option<&str>) -> ProcessFilter {
        ProcessFilter::compile(Some(&ProtoProcessFilter {
            process_names: names.iter().map(|s| s.to_string()).collect(),
            pids: pids.to_vec(),
            executable_pattern: pattern.map(str::to_string),
        }))
        .expect("valid filter")
    }

    #[test]
    fn none_admits_everything() {
        let all = ProcessFilter::compile(None).unwrap();
        assert!(all.admits_pid(1) && all.admits("x", None));
        assert_eq!(all.only_pids(), None);
    }

    #[test]
    fn names_are_exact_and_also_match_the_executable_file_name() {
        let f = filter(&["sleep", "a-very-long-program-name"], &[], None);
        assert!(f.admits("sleep", Some("/usr/bin/sleep")));
        assert!(!f.admits("sleeper", Some("/usr/bin/sleeper")));
        assert!(!f.admits("slee", None));
        // comm is cut at 15 bytes; the file name still matches.
        assert!(f.admits("a-very-long-pro", Some("/opt/a-very-long-program-name")));
        assert!(!f.admits("a-very-long-pro", None));
    }

    #[test]
    fn glob_does_not_cross_directories_with_a_single_star() {
        let f = filter(&[], &[], Some("/usr/bin/*"));
        assert!(f.admits("ls", Some("/usr/bin/ls")));
        assert!(!f.admits("x", Some("/usr/bin/sub/x")));
        assert!(!f.admits("x", Some("/usr/local/bin/x")));
        assert!(!f.admits("kthread", None));
        let deep = filter(&[], &[], Some("/usr/**/x"));
        assert!(deep.admits("x", Some("/usr/bin/sub/x")));
    }

    #[test]
    fn kinds_combine_with_and() {
        let f = filter(&["sleep"], &[10, 11], Some("/usr/bin/*"));
        assert!(f.admits_pid(10) && !f.admits_pid(12));
        assert!(f.admits("sleep", Some("/usr/bin/sleep")));
        assert!(!f.admits("sleep", Some("/tmp/sleep")));
        assert!(!f.admits("cat", Some("/usr/bin/cat")));
        assert_eq!(f.only_pids(), Some(vec![10, 11]));
        assert_eq!(filter(&[], &[11, 10], None).only_pids(), Some(vec![10, 11]));
    }

    #[test]
    fn bad_glob_is_a_typed_error_naming_the_pattern() {
        let err = ProcessFilter::compile(Some(&ProtoProcessFilter {
            process_names: vec![],
            pids: vec![],
            executable_pattern: Some("/usr/[bin".to_string()),
        }))
        .unwrap_err();
        assert!(matches!(&err, FilterError::BadPattern { pattern, .. } if pattern == "/usr/[bin"));
        assert!(err.to_string().contains("/usr/[bin"));
    }
}
