//! `memory = "16G"`, or a `[memory]` table when hugepages are wanted: TOML
//! cannot hold both a `memory` string and a `[memory]` table, so the table
//! form carries the size as `size`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::section::string_or::{Rich, StringOr};
use crate::config::types::ByteSize;

/// `memory`: a size, or a table with `size` and `hugepages`.
pub(crate) type WireMemory = StringOr<ByteSize, WireMemoryTable>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireMemoryTable {
    size: S<ByteSize>,
    hugepages: S<WireHugepages>,
}

impl Rich for WireMemoryTable {
    const EXPECTING: &'static str =
        "a size such as \"16G\", or a table with `size` and `hugepages`";
    const TABLE: bool = true;
}

/// `hugepages`: a page size, or `off` (which the model has no page size for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum WireHugepages {
    #[serde(rename = "off")]
    Off,
    #[serde(rename = "2M")]
    Size2M,
    #[serde(rename = "1G")]
    Size1G,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HugePageSize {
    #[serde(rename = "2M")]
    Size2M,
    #[serde(rename = "1G")]
    Size1G,
}

impl HugePageSize {
    pub fn size(self) -> ByteSize {
        match self {
            Self::Size2M => ByteSize::from_bytes(2 * ByteSize::MIB),
            Self::Size1G => ByteSize::from_bytes(ByteSize::GIB),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Size2M => "2M",
            Self::Size1G => "1G",
        }
    }
}

/// The guest's RAM and the huge page size backing it, if any; `None` for
/// the size when a problem was reported.
pub(crate) fn check(
    m: S<WireMemory>,
    v: &mut Checker<'_>,
) -> (Option<ByteSize>, Option<HugePageSize>) {
    let Some(m) = m else {
        v.err("memory", 0..0, K::Missing("memory"));
        return (None, None);
    };
    let (span, m) = parts(m);
    let (size, size_key, size_span, hugepages) = match m {
        StringOr::Str(size) => (Some(size), "memory", span, None),
        StringOr::Rich(t) => {
            let size = t.size.map(parts);
            if size.is_none() {
                v.err("memory.size", span.clone(), K::Missing("memory.size"));
            }
            let size_span = size.as_ref().map_or(span, |s| s.0.clone());
            (size.map(|s| s.1), "memory.size", size_span, t.hugepages)
        }
    };
    let page = hugepages.and_then(|h| match h.into_inner() {
        WireHugepages::Off => None,
        WireHugepages::Size2M => Some(HugePageSize::Size2M),
        WireHugepages::Size1G => Some(HugePageSize::Size1G),
    });
    let whole_mib = size.is_none_or(|size| whole_mib(size, size_key, size_span.clone(), v));
    if let (Some(size), Some(page), true) = (size, page, whole_mib) {
        if size.bytes() % page.size().bytes() != 0 {
            let memory = size.to_string();
            let page = page.name();
            v.err("memory", size_span, K::HugepagesMisaligned { memory, page });
        }
    }
    (size, page)
}

/// QEMU takes guest RAM as `-m` and the backend's `size=` in whole MiB
/// (`ByteSize::mib` rounds down), so a size between two MiB would silently
/// lose its remainder, and one below 1 MiB would become `-m 0M`. False when
/// `size` is refused.
fn whole_mib(size: ByteSize, key: &str, span: Range<usize>, v: &mut Checker<'_>) -> bool {
    let text = size.to_string();
    if size.bytes() < ByteSize::MIB {
        v.err(key, span, K::MemoryTooSmall(text));
        return false;
    }
    if size.bytes() % ByteSize::MIB != 0 {
        let below = ByteSize::from_bytes(size.mib() * ByteSize::MIB).to_string();
        let above = ByteSize::from_bytes((size.mib() + 1) * ByteSize::MIB).to_string();
        v.err(
            key,
            span,
            K::NotWholeMib {
                size: text,
                below,
                above,
            },
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::vm::testing::check_with;

    #[test]
    fn each_broken_rule_is_reported() {
        let not_whole = K::NotWholeMib {
            size: "1025K".into(),
            below: "1M".into(),
            above: "2M".into(),
        };
        for (text, want) in [
            ("", K::Missing("memory")),
            ("[memory]\nhugepages = \"2M\"\n", K::Missing("memory.size")),
            ("memory = \"512K\"", K::MemoryTooSmall("512K".into())),
            ("memory = \"1025K\"", not_whole),
        ] {
            assert_eq!(check_with(text, &|_| true).unwrap_err(), [want], "{text}");
        }
    }

    #[test]
    fn memory_table_form_carries_size_and_hugepages() {
        let c = check_with("[memory]\nsize = \"4G\"\nhugepages = \"1G\"\n", &|_| true);
        let c = c.expect("valid");
        assert_eq!(c.memory.bytes(), 4 << 30);
        assert_eq!(c.hugepages, Some(HugePageSize::Size1G));
    }

    #[test]
    fn hugepages_off_is_no_page_size() {
        let c = check_with(
            "[memory]\nsize = \"4G\"\nhugepages = \"off\"\n",
            &|_: &Path| true,
        );
        assert_eq!(c.expect("valid").hugepages, None);
    }

    #[test]
    fn memory_table_size_must_be_whole_mib_too() {
        let text = "[memory]\nsize = \"4194305K\"\nhugepages = \"2M\"\n";
        let e = check_with(text, &|_| true).unwrap_err();
        assert!(matches!(&e[..], [K::NotWholeMib { below, above, .. }]
            if below == "4G" && above == "4097M"));
    }

    #[test]
    fn misaligned_hugepages_are_rejected() {
        let e = check_with("memory = { size = \"1536M\", hugepages = \"1G\" }", &|_| {
            true
        });
        assert!(matches!(
            e.unwrap_err()[..],
            [K::HugepagesMisaligned { page: "1G", .. }]
        ));
    }
}
