//! Reading and validating a VM's TOML file. Pure: no host access beyond
//! reading the file and checking that the files it names exist.
//!
//! text -> `toml::de::DeTable` (every syntax error) -> the wire structs of
//! `vm` and `section/*` (every type error, via `collect`) -> each section's
//! `check` (every semantic error) -> the model.

mod checker;
pub(crate) mod collect;
pub(crate) mod error;
pub(crate) mod model;
pub(crate) mod search;
pub(crate) mod section;
mod suggest;
pub(crate) mod trust;
pub(crate) mod types;
pub(crate) mod vm;

use std::ops::Range;
use std::path::Path;

use miette::NamedSource;
use toml::de::DeTable;

pub use error::{render, ConfigError, InvalidConfig, Problem, ProblemKind};
pub use model::*;
pub use search::{list_all, locate, SearchEnv};
pub use types::{ByteSize, Duration, PciAddress, PciIds, VmName};

/// Reads and validates the config at `path`; the VM is named by the file stem.
pub fn load(path: &Path) -> Result<VmConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    load_str(&stem, path, &text)
}

/// Validates `text` as the config of VM `name` read from `path` (which
/// anchors relative paths and names the file in messages).
pub fn load_str(name: &str, path: &Path, text: &str) -> Result<VmConfig, ConfigError> {
    let vm_name: VmName = name.parse().map_err(|source| ConfigError::BadName {
        path: path.to_path_buf(),
        stem: name.to_string(),
        source,
    })?;
    let source = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (doc, syntax) = DeTable::parse_recoverable(text);
    let mut problems: Vec<Problem> = syntax
        .iter()
        .map(|e| Problem {
            key: String::new(),
            kind: ProblemKind::Syntax(e.message().trim().to_string()),
            span: e.span().unwrap_or(0..0),
        })
        .collect();
    let control = control_chars(doc.get_ref());
    let (wire, wire_errors) = collect::deserialize_all::<vm::WireVm>(doc);
    let broken_sections: Vec<String> = wire_errors
        .iter()
        .map(|e| scope(&e.path.to_string()).to_string())
        .collect();
    // After a syntax error the parser's recovery can misplace keys (the
    // keys of a broken `[cpu` header land at the top level); type errors
    // are trusted only before the first syntax error.
    let trusted_until = problems
        .iter()
        .map(|p| p.span.start)
        .min()
        .unwrap_or(usize::MAX);
    let wire_errors = wire_errors
        .into_iter()
        .filter(|e| e.span.start < trusted_until);
    problems.extend(wire_errors.map(|e| Problem {
        key: e.path.to_string(),
        kind: suggest::classify(&e.message),
        span: e.span,
    }));
    // What a section says about a string it could not read is noise.
    let control_spans: Vec<Range<usize>> = control.iter().map(|p| p.span.clone()).collect();
    problems.extend(control.into_iter().filter(|p| p.span.start < trusted_until));
    // Semantic checks on a document that did not parse would mostly report
    // the syntax errors again, as missing keys.
    if let (true, Some(wire)) = (syntax.is_empty(), wire) {
        let cx = vm::Context {
            name: vm_name,
            source,
            exists: &|p: &Path| p.exists(),
        };
        match vm::validate(wire, &cx) {
            Ok(config) if problems.is_empty() => return Ok(config),
            Ok(_) => {}
            // A section with a type error was validated without the bad
            // key; what that says about the section is noise.
            Err(semantic) => problems.extend(
                semantic
                    .into_iter()
                    .filter(|p| !broken_sections.iter().any(|s| s == scope(&p.key)))
                    .filter(|p| !control_spans.contains(&p.span)),
            ),
        }
    }
    if problems.is_empty() {
        // Unreachable in practice: a failed document always yields a problem.
        problems.push(Problem {
            key: String::new(),
            kind: ProblemKind::Invalid("the file could not be read as a VM config".into()),
            span: 0..0,
        });
    }
    for p in &mut problems {
        p.span = first_line(text, p.span.clone());
    }
    problems.sort_by_key(|p| p.span.start);
    Err(ConfigError::Invalid(Box::new(InvalidConfig::new(
        path.to_path_buf(),
        NamedSource::new(path.display().to_string(), text.to_string()),
        problems,
    ))))
}

/// A problem for each string holding a control character. A NUL cannot
/// reach QEMU's argv (the spawn fails, after the host was changed), and
/// newlines or escapes in names and paths end up in journals, unit files and
/// terminals. Only `description`, free text shown as a comment, may hold
/// tabs and newlines.
fn control_chars(doc: &DeTable<'_>) -> Vec<Problem> {
    let mut strings = Vec::new();
    collect::strings(doc, &collect::KeyPath::default(), &mut strings);
    strings
        .into_iter()
        .filter_map(|(path, span, s)| {
            let key = path.to_string();
            let allowed: &[char] = if key == "description" {
                &['\t', '\n']
            } else {
                &[]
            };
            let c = s.chars().find(|c| c.is_control() && !allowed.contains(c))?;
            Some(Problem {
                key,
                kind: ProblemKind::ControlChar(c),
                span,
            })
        })
        .collect()
}

/// The table a key is in, down to the array element: `hostdev[1]`, `cpu`.
fn scope(key: &str) -> &str {
    match key.find(['.', ']']) {
        Some(i) if key.as_bytes()[i] == b']' => &key[..=i],
        Some(i) => &key[..i],
        None => key,
    }
}

/// A span inside `text`, cut to its first line, so a label on a whole
/// `[[hostdev]]` table underlines its header rather than the block.
fn first_line(text: &str, span: Range<usize>) -> Range<usize> {
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[start..end].find('\n').map_or(end, |nl| start + nl);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_cuts_at_newline_and_clamps() {
        let text = "[[hostdev]]\naddress = 1\n";
        assert_eq!(first_line(text, 0..20), 0..11);
        assert_eq!(first_line(text, 30..40), text.len()..text.len());
        assert_eq!(first_line("é\n", 1..3), 0..2);
    }

    #[test]
    fn scope_stops_at_the_array_element() {
        assert_eq!(scope("hostdev[1].romfile"), "hostdev[1]");
        assert_eq!(scope("cpu.pin"), "cpu");
        assert_eq!(scope("memory"), "memory");
    }

    #[test]
    fn thousands_of_unknown_keys_keep_the_first_hundred_and_count_the_rest() {
        let mut text = String::from("memory = \"1G\"\n");
        for i in 0..20_000 {
            text.push_str(&format!("unknown_{i} = 1\n"));
        }
        let err = load_str("many", Path::new("/nonexistent/many.toml"), &text).err();
        let Some(ConfigError::Invalid(inv)) = err else {
            panic!("expected an invalid config, got {err:?}");
        };
        assert_eq!(inv.problems.len(), error::MAX_PROBLEMS);
        assert_eq!(inv.omitted, 20_000 - error::MAX_PROBLEMS);
        assert_eq!(inv.problems[0].key, "unknown_0");
        let report = render(&ConfigError::Invalid(inv));
        assert!(report.contains("20000 problems"), "{report}");
        assert!(report.contains("19900 more problems not shown"), "{report}");
    }

    #[test]
    fn control_characters_are_refused_in_every_string_but_description_text() {
        let text = "memory = \"1G\"\ndescription = \"two\\nlines\\tand a tab\"\n\
                    [cpu]\nfeatures = [\"+a\", \"+b\\u0000\"]\n\
                    [[disk]]\npath = \"/x\\u001b[2J.img\"\n";
        let err = load_str("c", Path::new("/nonexistent/c.toml"), text).err();
        let found: Vec<(String, ProblemKind)> = err
            .iter()
            .flat_map(|e| e.problems())
            .map(|p| (p.key.clone(), p.kind.clone()))
            .collect();
        assert_eq!(
            found,
            [
                ("cpu.features".into(), ProblemKind::ControlChar('\0')),
                ("disk[0].path".into(), ProblemKind::ControlChar('\u{1b}')),
            ]
        );
        let err = load_str(
            "c",
            Path::new("/x/c.toml"),
            "memory = \"1G\"\ndescription = \"a\\rb\"\n",
        )
        .err();
        let kinds: Vec<ProblemKind> = err
            .iter()
            .flat_map(|e| e.problems())
            .map(|p| p.kind.clone())
            .collect();
        assert_eq!(kinds, [ProblemKind::ControlChar('\r')]);
    }

    #[test]
    fn bad_stem_is_an_error() {
        let err = load_str("bad name", Path::new("/x/bad name.toml"), "memory = \"1G\"");
        assert!(matches!(err, Err(ConfigError::BadName { .. })));
    }

    #[test]
    fn minimal_config_loads() {
        let cfg = load_str(
            "mini",
            Path::new("/nonexistent/mini.toml"),
            "memory = \"1G\"\n",
        );
        let cfg = cfg.map_err(|e| render(&e));
        assert_eq!(cfg.map(|c| c.memory.mib()), Ok(1024));
    }

    #[test]
    fn type_error_in_a_section_hides_that_sections_semantic_noise() {
        let text = "memory = \"1G\"\n[cpu]\ncores = \"four\"\npin = [1]\n";
        let err = load_str("v", Path::new("/nonexistent/v.toml"), text).err();
        let keys: Vec<String> = err
            .iter()
            .flat_map(|e| e.problems())
            .map(|p| p.key.clone())
            .collect();
        assert_eq!(keys, ["cpu.cores"]);
    }
}
