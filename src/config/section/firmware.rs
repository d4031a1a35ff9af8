//! `[firmware]`: UEFI or BIOS, Secure Boot, and an explicit image pair.

use std::path::PathBuf;

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    Uefi,
    Bios,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireFirmware {
    #[serde(rename = "type")]
    kind: S<FirmwareKind>,
    secure_boot: S<bool>,
    code: S<String>,
    vars: S<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Firmware {
    pub kind: FirmwareKind,
    /// Tri-state as in libvirt: `None` accepts firmware with or without it.
    pub secure_boot: Option<bool>,
    /// Explicit images; they skip descriptor matching.
    pub files: Option<FirmwareFiles>,
}

/// `code` and `vars` given together: one without the other is refused here.
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareFiles {
    /// The firmware image.
    pub code: PathBuf,
    /// The VARS template; the VM gets its own copy in its state dir.
    pub vars: PathBuf,
}

// The dry-run JSON shows `code` and `vars` as two keys, as the file has them.
impl Serialize for Firmware {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let mut st = s.serialize_struct("Firmware", 4)?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("secure_boot", &self.secure_boot)?;
        st.serialize_field("code", &self.files.as_ref().map(|f| &f.code))?;
        st.serialize_field("vars", &self.files.as_ref().map(|f| &f.vars))?;
        st.end()
    }
}

pub(crate) fn check(f: S<WireFirmware>, v: &mut Checker<'_>) -> Firmware {
    let (_, f) = f.map(parts).unwrap_or_default();
    let kind = f.kind.map_or(FirmwareKind::Uefi, |k| k.into_inner());
    let secure_boot = f.secure_boot.map(|sb| {
        let (span, sb) = parts(sb);
        if kind == FirmwareKind::Bios && sb {
            v.err("firmware.secure_boot", span, K::SecureBootWithBios);
        }
        sb
    });
    let pair = |given, missing| K::FirmwarePair { given, missing };
    match (&f.code, &f.vars) {
        (Some(c), None) => v.err("firmware.code", c.span(), pair("code", "vars")),
        (None, Some(c)) => v.err("firmware.vars", c.span(), pair("vars", "code")),
        _ => {}
    }
    let code = f.code.map(|c| v.existing_file("firmware.code", c));
    let vars = f.vars.map(|c| v.existing_file("firmware.vars", c));
    let files = match (code, vars) {
        (Some(code), Some(vars)) => Some(FirmwareFiles { code, vars }),
        _ => None,
    };
    Firmware {
        kind,
        secure_boot,
        files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{assert_problems, check};

    #[test]
    fn each_broken_rule_is_reported() {
        let pair = K::FirmwarePair {
            given: "code",
            missing: "vars",
        };
        let missing = K::FileNotFound {
            searched: vec![PathBuf::from("/missing/C.fd")],
        };
        assert_problems(&[
            (
                "[firmware]\ntype = \"bios\"\nsecure_boot = true\n",
                &[K::SecureBootWithBios],
            ),
            ("[firmware]\ncode = \"/fw/CODE.fd\"\n", &[pair]),
            (
                "[firmware]\ncode = \"/missing/C.fd\"\nvars = \"/fw/V.fd\"\n",
                &[missing],
            ),
        ]);
    }

    #[test]
    fn code_and_vars_resolve_next_to_the_config() {
        let c = check("[firmware]\ncode = \"C.fd\"\nvars = \"V.fd\"\n").expect("valid");
        let files = c.firmware.files.expect("both given");
        assert_eq!(files.code, PathBuf::from("/cfg/vms/C.fd"));
        assert_eq!(files.vars, PathBuf::from("/cfg/vms/V.fd"));
    }
}
