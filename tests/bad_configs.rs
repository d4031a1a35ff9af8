//! Every file in `tests/bad_configs/` must be rejected for the reason it was
//! written for: `NAME.expect` lists one `KIND KEY LINE` per problem that must
//! be reported, KIND being the `ProblemKind` variant's name (`-` as KEY for a
//! syntax error, which has no key). The rendered report must name the file,
//! and each expected key at its expected line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::path::{Path, PathBuf};

use vmrun::config::{load, render, ConfigError};

struct Expected {
    kind: String,
    key: String,
    line: usize,
}

fn expectations(toml: &Path) -> Vec<Expected> {
    let text = std::fs::read_to_string(toml.with_extension("expect"))
        .unwrap_or_else(|e| panic!("{}: missing .expect file: {e}", toml.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut fields = l.split_whitespace();
            let (Some(kind), Some(key), Some(line), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                panic!("{}: `{l}` is not `KIND KEY LINE`", toml.display());
            };
            Expected {
                kind: kind.to_string(),
                key: if key == "-" {
                    String::new()
                } else {
                    key.to_string()
                },
                line: line.parse().expect("line number"),
            }
        })
        .collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/bad_configs exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Checks one file; returns a description of what is wrong, if anything.
fn check(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let err = match load(path) {
        Ok(_) => return Err("was accepted".into()),
        Err(err @ ConfigError::Invalid(_)) => err,
        Err(other) => return Err(format!("wrong error kind: {other:?}")),
    };
    let rendered = render(&err);
    let file = path.display().to_string();
    if !rendered.contains(&file) {
        return Err(format!("report does not name the file:\n{rendered}"));
    }
    for exp in expectations(path) {
        let found = err.problems().iter().any(|p| {
            p.kind.name() == exp.kind
                && p.key == exp.key
                && line_of(&text, p.span.start) == exp.line
        });
        if !found {
            let got: Vec<String> = err
                .problems()
                .iter()
                .map(|p| {
                    let key = if p.key.is_empty() { "-" } else { &p.key };
                    format!("{} {key} {}", p.kind.name(), line_of(&text, p.span.start))
                })
                .collect();
            return Err(format!(
                "no {} problem for `{}` at line {}; got {got:?}\n{rendered}",
                exp.kind, exp.key, exp.line
            ));
        }
        let location = format!("{file}:{}:", exp.line);
        if !rendered.contains(&location) {
            return Err(format!("report lacks `{location}`:\n{rendered}"));
        }
        if !exp.key.is_empty() && !rendered.contains(&format!("`{}`", exp.key)) {
            return Err(format!("report does not name `{}`:\n{rendered}", exp.key));
        }
    }
    Ok(())
}

#[test]
fn every_bad_config_is_rejected_with_its_kind_file_line_and_key() {
    let files = corpus();
    assert!(files.len() >= 35, "only {} bad configs", files.len());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|p| check(p).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_file_with_many_errors_reports_all_of_them() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs/many_errors.toml");
    let err = load(&path).expect_err("many_errors.toml is invalid");
    let expected = expectations(&path);
    assert!(expected.len() >= 6);
    assert_eq!(err.problems().len(), expected.len(), "{}", render(&err));
    check(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn typo_gets_a_suggestion() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs/typo_romfile.toml");
    let err = load(&path).expect_err("typo is rejected");
    assert!(render(&err).contains("did you mean `romfile`?"));
}

#[test]
fn unreadable_file_is_a_read_error() {
    let err = load(Path::new("/nonexistent/dir/vm.toml")).expect_err("no such file");
    assert!(matches!(err, ConfigError::Read { .. }));
}
