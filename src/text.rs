//! Text for people: strings that a process or a peer chose (process names,
//! command lines, paths, a client's name, a peer's error text) made safe to
//! show on a terminal or in a log, so they cannot move the cursor, rewrite
//! a row, retitle the terminal or reorder what is shown.
//!
//! Like `ps`, which prints `?` for what it cannot show, but keeping what the
//! character was: every control character (C0, DEL and the C1 range
//! U+0080–U+009F, which a terminal may honour in UTF-8 too) becomes an
//! escape, `\n`, `\r` and `\t` by name, any other as `\xNN`; the Unicode
//! characters that reorder or hide text (bidirectional overrides and
//! isolates, zero-width characters, line and paragraph separators, the
//! byte order mark) become `\u{NNNN}`. Everything else, backslashes
//! included, is shown as it is: this is for reading, not for parsing back
//! (JSON output is for machines).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with its control and hiding characters escaped (see the
/// [module documentation](self)); borrowed when there is none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && u32::from(c) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A peer's free text for a log line: escaped, and cut to `max_bytes` of
/// the original (on a character boundary) with `...` after a cut, so a
/// peer can neither forge log lines nor flood them.
pub fn for_log(s: &str, max_bytes: usize) -> String {
    let mut end = s.len().min(max_bytes);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = escape_controls(&s[..end]).into_owned();
    if end < s.len() {
        out.push_str("...");
    }
    out
}

/// An error and its causes as one line for people, each cause once: the
/// crate's errors carry their source in their own message, while an
/// `anyhow` context does not, so a cause already said is skipped. Escaped.
///
/// ```
/// use daemoneye_lib::text::error_line;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot read config: {0}")]
/// struct Outer(#[source] std::io::Error);
///
/// let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
/// assert_eq!(error_line(&Outer(inner)), "cannot read config: no such file");
/// ```
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let part = error.to_string();
        if !line.contains(&part) {
            line.push_str(": ");
            line.push_str(&part);
        }
        cause = error.source();
    }
    escape_controls(&line).into_owned()
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_as_escapes_and_the_rest_as_it_is() {
        assert!(matches!(
            escape_controls("sshd: root@pts/0"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\x1b[2Jb\nc\td\r"),
            "a\\x1b[2Jb\\nc\\td\\r"
        );
        assert_eq!(escape_controls("\x7f\u{9b}31m"), "\\x7f\\x9b31m");
        assert_eq!(
            escape_controls("evil\u{202e}txt.exe"),
            "evil\\u{202e}txt.exe"
        );
        assert_eq!(escape_controls("é ü 中 \\x1b"), "é ü 中 \\x1b");
    }

    #[test]
    fn log_text_is_escaped_and_cut_on_a_character_boundary() {
        assert_eq!(for_log("agent\n", 64), "agent\\n");
        assert_eq!(for_log("ab\u{e9}cd", 3), "ab...");
        assert_eq!(for_log(&"x".repeat(100), 4), "xxxx...");
    }
}
