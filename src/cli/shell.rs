//! POSIX shell quoting, so a printed command line can be pasted as is.

use std::borrow::Cow;
use std::ffi::OsStr;

/// `word` as one shell word on one line: bare when it has only safe
/// characters, else in single quotes (a `'` inside becomes `'\''`), or, when
/// it holds a control character, in bash's `$'...'` with that character
/// escaped, so a newline cannot split the printed command.
pub(super) fn quote(word: &OsStr) -> Cow<'_, str> {
    let text = word.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text
    } else if text.chars().any(char::is_control) {
        let mut out = String::from("$'");
        for c in text.chars() {
            match c {
                '\\' | '\'' => {
                    out.push('\\');
                    out.push(c);
                }
                // bash reads `\xHH` as one byte: UTF-8 is written byte by byte.
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('\'');
        Cow::Owned(out)
    } else {
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
}

/// `words` as one shell command line, each word quoted by `quote`.
pub(super) fn line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| quote(OsStr::new(w)).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_words_stay_bare() {
        assert_eq!(
            quote(OsStr::new("guest=demo,debug-threads=on")),
            "guest=demo,debug-threads=on"
        );
    }

    #[test]
    fn spaces_and_quotes_are_quoted() {
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(quote(OsStr::new("")), "''");
        assert_eq!(quote(OsStr::new("$HOME")), "'$HOME'");
    }

    #[test]
    fn control_characters_are_escaped_on_one_line() {
        assert_eq!(
            quote(OsStr::new("a\n; rm -rf /'\\")),
            r"$'a\x0a; rm -rf /\'\\'"
        );
        assert_eq!(quote(OsStr::new("\u{85}")), r"$'\xc2\x85'");
    }
}
