//! Cuts what the collector reports to the validation limits of
//! [`limits`](crate::proto::limits), so a record built from what a local user
//! controls (a command line of megabytes, a deep path) still validates and
//! fits a ring frame. Cuts fall on character boundaries; a cut command line
//! keeps its first arguments, the last one kept possibly shortened.

use crate::proto::limits::{MAX_COMMAND_LINE_ARGS, MAX_COMMAND_LINE_BYTES};

/// Most bytes of `/proc/<pid>/cmdline` worth reading: every kept byte plus a
/// NUL after each kept argument, and one more to see there was more.
pub(crate) const CMDLINE_READ_BYTES: usize = MAX_COMMAND_LINE_BYTES + MAX_COMMAND_LINE_ARGS + 1;

/// Shortens `s` to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

/// Keeps at most [`MAX_COMMAND_LINE_ARGS`] arguments and
/// [`MAX_COMMAND_LINE_BYTES`] bytes of them in all.
pub(crate) fn command_line(mut args: Vec<String>) -> Vec<String> {
    args.truncate(MAX_COMMAND_LINE_ARGS);
    let mut left = MAX_COMMAND_LINE_BYTES;
    let mut kept = 0;
    for arg in &mut args {
        if left == 0 {
            break;
        }
        truncate(arg, left);
        left -= arg.len();
        kept += 1;
    }
    args.truncate(kept);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let mut s = "aé".to_string(); // 'é' is two bytes
        truncate(&mut s, 2);
        assert_eq!(s, "a");
        let mut s = "abc".to_string();
        truncate(&mut s, 5);
        assert_eq!(s, "abc");
    }

    #[test]
    fn command_lines_are_bounded_in_count_and_bytes() {
        let many = vec!["x".to_string(); MAX_COMMAND_LINE_ARGS + 10];
        assert_eq!(command_line(many).len(), MAX_COMMAND_LINE_ARGS);

        let big = vec!["é".repeat(40_000); 4]; // 80 000 bytes each
        let cut = command_line(big);
        let total: usize = cut.iter().map(String::len).sum();
        assert!(total <= MAX_COMMAND_LINE_BYTES);
        assert!(total > MAX_COMMAND_LINE_BYTES - 2);
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0].len(), 80_000);

        // Empty arguments before the limit are kept, none after it.
        let args = vec![
            String::new(),
            "a".repeat(MAX_COMMAND_LINE_BYTES),
            String::new(),
        ];
        assert_eq!(command_line(args).len(), 2);
    }
}
