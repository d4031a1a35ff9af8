//! `[smbios] host = true`: the host's SMBIOS strings, as the kernel shows
//! them in `/sys/class/dmi/id`, for QEMU's `-smbios type=0|1|2`. Software
//! in the guest that checks for a real machine (some anti-cheat, OEM
//! activation) sees the host's BIOS, system and board instead of QEMU's.

use serde::Serialize;

use super::finding::Finding;
use crate::host::HostRoot;

/// One `-smbios type=N` table: its fields as QEMU names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmbiosTable {
    pub kind: u8,
    pub fields: Vec<(&'static str, String)>,
}

/// `/sys/class/dmi/id` file -> QEMU field, per table (QEMU's
/// `qemu-options.hx`, `-smbios type=0|1|2`; the kernel's dmi-id.c).
/// `product_uuid` is left out: `-uuid` sets type 1's UUID.
const TABLES: [(u8, &[(&str, &str)]); 3] = [
    (
        0,
        &[
            ("bios_vendor", "vendor"),
            ("bios_version", "version"),
            ("bios_date", "date"),
            ("bios_release", "release"),
        ],
    ),
    (
        1,
        &[
            ("sys_vendor", "manufacturer"),
            ("product_name", "product"),
            ("product_version", "version"),
            ("product_serial", "serial"),
            ("product_sku", "sku"),
            ("product_family", "family"),
        ],
    ),
    (
        2,
        &[
            ("board_vendor", "manufacturer"),
            ("board_name", "product"),
            ("board_version", "version"),
            ("board_serial", "serial"),
            ("board_asset_tag", "asset"),
        ],
    ),
];

pub(crate) const DMI_DIR: &str = "/sys/class/dmi/id";

/// The host's tables; a field whose file is missing, empty or unreadable
/// (the serials are root's alone, mode 0400) is left to QEMU's default.
pub(crate) fn host_tables(root: &HostRoot, findings: &mut Vec<Finding>) -> Vec<SmbiosTable> {
    let dir = root.path(DMI_DIR);
    if !dir.is_dir() {
        findings.push(Finding::warning(
            "smbios",
            format!("{DMI_DIR} is missing: the guest gets QEMU's own SMBIOS strings"),
        ));
        return Vec::new();
    }
    TABLES
        .iter()
        .filter_map(|(kind, files)| {
            let fields: Vec<(&'static str, String)> = files
                .iter()
                .filter_map(|(file, field)| {
                    let text = std::fs::read_to_string(dir.join(file)).ok()?;
                    let value = text.trim();
                    usable(field, value).then(|| (*field, value.to_string()))
                })
                .collect();
            (!fields.is_empty()).then_some(SmbiosTable {
                kind: *kind,
                fields,
            })
        })
        .collect()
}

/// Whether QEMU takes `value` for `field`: no control characters (they
/// would end up in the guest's tables and vmrun's log), and type 0's
/// `release` in QEMU's `MAJOR.MINOR` form (smbios.c parses it "%hhu.%hhu"
/// and refuses the start otherwise).
fn usable(field: &str, value: &str) -> bool {
    if value.is_empty() || value.chars().any(char::is_control) {
        return false;
    }
    if field == "release" {
        let Some((a, b)) = value.split_once('.') else {
            return false;
        };
        return a.parse::<u8>().is_ok() && b.parse::<u8>().is_ok();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_table_and_skips_missing_empty_and_malformed_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in [
            ("bios_vendor", "American Megatrends Inc.\n"),
            ("bios_release", "5.x\n"),
            ("sys_vendor", "Micro-Star, Inc.\n"),
            ("product_name", "\n"),
            ("board_name", "B550, TOMAHAWK\n"),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
        }
        let mut f = vec![];
        let t = host_tables(&HostRoot::new(tmp.path()), &mut f);
        assert!(f.is_empty());
        let fields = |k| t.iter().find(|x| x.kind == k).unwrap().fields.clone();
        assert_eq!(
            fields(0),
            [("vendor", "American Megatrends Inc.".to_string())]
        );
        assert_eq!(
            fields(1),
            [("manufacturer", "Micro-Star, Inc.".to_string())]
        );
        assert_eq!(fields(2), [("product", "B550, TOMAHAWK".to_string())]);
    }

    #[test]
    fn no_dmi_dir_is_a_warning_and_no_tables() {
        let tmp = tempfile::tempdir().unwrap();
        let mut f = vec![];
        assert!(host_tables(&HostRoot::new(tmp.path()), &mut f).is_empty());
        assert_eq!(f.len(), 1);
    }
}
