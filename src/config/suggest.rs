//! "Did you mean": edit distance between what was written and what is allowed,
//! and reading serde's unknown-key messages back into typed problems.

use super::error::ProblemKind;

/// Levenshtein distance, case-insensitive, over chars.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The allowed word closest to `word`, if it is close enough to be a typo:
/// at most a third of the word's length off (at least 1, at most 3 edits).
pub(super) fn closest<'a>(word: &str, allowed: &'a [String]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    allowed
        .iter()
        .map(|a| (distance(word, a), a))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a.as_str())
}

/// Turns a serde error message into a typed problem. serde words unknown keys
/// and enum values as "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a`", "expected `a` or `b`", "there are no fields").
pub(super) fn classify(message: &str) -> ProblemKind {
    for (prefix, is_key) in [("unknown field `", true), ("unknown variant `", false)] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((name, tail)) = rest.split_once('`') else {
            continue;
        };
        let allowed = backticked(tail);
        let name = name.to_string();
        return if is_key {
            ProblemKind::UnknownKey { name, allowed }
        } else {
            ProblemKind::UnknownValue {
                value: name,
                allowed,
            }
        };
    }
    ProblemKind::Invalid(message.trim().to_string())
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("romfle", "romfile"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("CPU", "cpu"), 0);
    }

    #[test]
    fn closest_suggests_typos_only() {
        let allowed = words(&["address", "romfile", "rombar"]);
        assert_eq!(closest("romfle", &allowed), Some("romfile"));
        assert_eq!(closest("adress", &allowed), Some("address"));
        assert_eq!(closest("banana", &allowed), None);
    }

    #[test]
    fn unknown_field_message_becomes_unknown_key() {
        let kind = classify("unknown field `romfle`, expected one of `address`, `romfile`");
        assert_eq!(
            kind,
            ProblemKind::UnknownKey {
                name: "romfle".into(),
                allowed: words(&["address", "romfile"])
            }
        );
    }

    #[test]
    fn unknown_variant_message_becomes_unknown_value() {
        let kind = classify("unknown variant `virtoi`, expected `virtio` or `scsi`");
        assert!(
            matches!(kind, ProblemKind::UnknownValue { ref value, ref allowed }
            if value == "virtoi" && allowed.len() == 2)
        );
    }

    #[test]
    fn other_messages_stay_invalid() {
        assert!(matches!(
            classify("invalid type: integer `5`, expected a string"),
            ProblemKind::Invalid(_)
        ));
    }
}
