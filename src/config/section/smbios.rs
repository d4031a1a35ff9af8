//! `[smbios]`: the guest's SMBIOS identity: its system UUID (which Windows
//! activation keys on) and, optionally, the host's own strings.

use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireSmbios {
    uuid: S<String>,
    host: Option<bool>,
}

/// `[smbios]` as checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Smbios {
    /// `-uuid`, canonical (lowercase, hyphenated); `None`: derived by the plan.
    pub uuid: Option<String>,
    /// Copy the host's type 0/1/2 strings.
    pub host: bool,
}

/// A UUID in its 8-4-4-4-12 hex form, lowercased: the only form QEMU's
/// `-uuid` takes (`qemu_uuid_parse`).
pub(crate) fn canonical_uuid(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = groups.iter().map(|g| g.len()).collect::<Vec<_>>();
    let hex = groups
        .iter()
        .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    (lens == [8, 4, 4, 4, 12] && hex).then(|| s.to_ascii_lowercase())
}

pub(crate) fn check(w: WireSmbios, v: &mut Checker<'_>) -> Smbios {
    let uuid = w.uuid.map(parts).and_then(|(s, text)| {
        let c = canonical_uuid(&text);
        if c.is_none() {
            v.err("smbios.uuid", s, K::BadUuid(text));
        }
        c
    });
    Smbios {
        uuid,
        host: w.host.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{assert_problems, check as check_file};

    #[test]
    fn uuid_is_kept_lowercase_and_host_is_off_by_default() {
        let c = check_file("[smbios]\nuuid = \"3F2504E0-4F89-41D3-9A0C-0305E82C3301\"\n").unwrap();
        assert_eq!(
            c.smbios.uuid.as_deref(),
            Some("3f2504e0-4f89-41d3-9a0c-0305e82c3301")
        );
        assert!(!c.smbios.host);
        assert_eq!(check_file("").unwrap().smbios, Smbios::default());
        assert!(check_file("[smbios]\nhost = true\n").unwrap().smbios.host);
    }

    #[test]
    fn malformed_uuids_are_refused() {
        let bad = |u: &str| {
            (
                format!("[smbios]\nuuid = \"{u}\"\n"),
                [K::BadUuid(u.into())],
            )
        };
        let cases = [
            bad("3f2504e04f8941d39a0c0305e82c3301"),
            bad("3f2504e0-4f89-41d3-9a0c-0305e82c330"),
            bad("3f2504e0-4f89-41d3-9a0c-0305e82c330g"),
            bad("3f2504e0-4f89-41d3-9a0c-0305e82c3301,x=y"),
        ];
        let rows: Vec<(&str, &[K])> = cases.iter().map(|(t, k)| (t.as_str(), &k[..])).collect();
        assert_problems(&rows);
    }
}
