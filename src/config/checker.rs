//! What every section's check shares: the problems found so far, where
//! relative paths start, and how to ask whether a file exists.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::{Problem, ProblemKind};

/// A value as written, with where it was written when present.
pub(crate) type S<T> = Option<Spanned<T>>;

/// A spanned value taken apart: its place in the file and the value.
pub(crate) fn parts<T>(s: Spanned<T>) -> (Range<usize>, T) {
    (s.span(), s.into_inner())
}

/// Collects the problems of one file while its sections are checked.
pub(crate) struct Checker<'a> {
    /// The config file's directory: relative paths start here.
    dir: PathBuf,
    exists: &'a dyn Fn(&Path) -> bool,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(dir: PathBuf, exists: &'a dyn Fn(&Path) -> bool) -> Self {
        Self {
            dir,
            exists,
            problems: Vec::new(),
        }
    }

    pub(crate) fn err(&mut self, key: impl Into<String>, span: Range<usize>, kind: ProblemKind) {
        self.problems.push(Problem {
            key: key.into(),
            kind,
            span,
        });
    }

    /// Relative paths are relative to the config file's directory.
    pub(crate) fn resolve(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn exists(&self, p: &Path) -> bool {
        (self.exists)(p)
    }

    /// `p` resolved; a problem for `key` when no file is there.
    pub(crate) fn existing_file(&mut self, key: &str, p: Spanned<String>) -> PathBuf {
        let (span, p) = parts(p);
        let path = self.resolve(&p);
        if !self.exists(&path) {
            let searched = vec![path.clone()];
            self.err(key, span, ProblemKind::FileNotFound { searched });
        }
        path
    }

    /// A string that must hold something: `default` when absent, a problem
    /// for `key` when blank.
    pub(crate) fn non_empty_or(&mut self, key: &str, v: S<String>, default: &str) -> String {
        match v.map(parts) {
            Some((s, text)) if text.trim().is_empty() => {
                self.err(key, s, ProblemKind::Empty);
                text
            }
            Some((_, text)) => text,
            None => default.into(),
        }
    }

    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    pub(crate) fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
}
