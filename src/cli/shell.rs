//! POSIX shell quoting, so a printed command line can be pasted as is.

use std::borrow::Cow;
use std::ffi::OsStr;

/// `word` as one shell word: bare when it has only safe characters, else in
/// single quotes (a `'` inside becomes `'\''`).
pub(super) fn quote(word: &OsStr) -> Cow<'_, str> {
    let text = word.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text
    } else {
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
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
}
