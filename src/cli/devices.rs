//! `vmrun devices`: the host's PCI devices by IOMMU group, to pick what a
//! VM's `[[hostdev]]` lines should name.

use std::fmt::Write as _;

use crate::exit::Exit;
use crate::host::inventory::{self, Entry, Inventory, Role};
use crate::host::HostRoot;

/// Prints the listing; always exit 0 (an IOMMU that is off is news, not a
/// failure of this command).
pub(super) fn devices(json: bool, all: bool) -> Exit {
    let root = HostRoot::from_env();
    let dirs = match super::process_dirs() {
        Ok(dirs) => dirs,
        Err(exit) => return exit,
    };
    let inv = inventory::inventory(&root, &dirs.run_base(), all);
    super::print_listing(&inv, json, render)
}

/// How a host turns the IOMMU on.
pub(super) const IOMMU_OFF: &str = "The IOMMU is off: this host has no IOMMU groups, so no device can be passed through.\n\
    Turn it on: enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup, then boot with\n\
    intel_iommu=on (Intel) or amd_iommu=on (AMD, usually on by default) on the kernel command line.\n";

const HEADERS: [&str; 9] = [
    "GROUP",
    "ADDRESS",
    "",
    "CLASS",
    "IDS",
    "SUBSYSTEM",
    "DRIVER",
    "RESET",
    "VM",
];

/// The human listing: one table, groups separated by a blank line; the
/// last column (the name) is left unpadded.
pub(super) fn render(inv: &Inventory) -> String {
    let mut out = String::new();
    if !inv.iommu {
        out.push_str(IOMMU_OFF);
        out.push('\n');
    }
    let mut rows: Vec<Option<[String; 10]>> = Vec::new();
    for (i, group) in inv.groups.iter().enumerate() {
        if i > 0 {
            rows.push(None);
        }
        for (j, e) in group.devices.iter().enumerate() {
            let g = match (j, group.group) {
                (0, Some(g)) => g.to_string(),
                (0, None) => "-".into(),
                _ => String::new(),
            };
            rows.push(Some(row(g, e)));
        }
    }
    let mut widths = HEADERS.map(str::len);
    for r in rows.iter().flatten() {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String], out: &mut String| {
        let mut text = String::new();
        for (k, cell) in cells.iter().enumerate() {
            if k < widths.len() {
                let _ = write!(text, "{cell:<w$}  ", w = widths[k]);
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    let header: Vec<String> = HEADERS
        .iter()
        .map(|h| h.to_string())
        .chain(["NAME".to_string()])
        .collect();
    line(&header, &mut out);
    for r in &rows {
        match r {
            Some(cells) => line(cells, &mut out),
            None => out.push('\n'),
        }
    }
    if inv.groups.is_empty() {
        out.push_str("(no PCI devices)\n");
    }
    if inv.hidden_devices > 0 {
        let _ = writeln!(
            out,
            "\n{} bridge and chipset device(s) not shown; --all shows them.",
            inv.hidden_devices
        );
    }
    out.push_str("GPU: a display controller; +fn: another function of a GPU, which goes to the VM with it.\n");
    out
}

fn row(group: String, e: &Entry) -> [String; 10] {
    let mark = match e.role {
        Role::Gpu => "GPU",
        Role::GpuFunction => "+fn",
        Role::Bridge | Role::Device => "",
    };
    let driver = match (&e.driver, &e.driver_override) {
        (Some(d), Some(o)) => format!("{d} (override {o})"),
        (None, Some(o)) => format!("- (override {o})"),
        (Some(d), None) => d.clone(),
        (None, None) => "-".into(),
    };
    let reset = match &e.reset_method {
        Some(m) if !m.is_empty() => m.join(","),
        Some(_) => "none".into(),
        None if e.can_reset => "yes".into(),
        None => "none".into(),
    };
    let mut name = e.name();
    if let Some(sub) = &e.subsystem_name {
        let _ = write!(name, " ({sub})");
    }
    if e.boot_vga == Some(true) {
        name.push_str(" [boot VGA]");
    }
    [
        group,
        e.address.to_string(),
        mark.into(),
        format!("{} [{}]", e.class_name, &e.class[..4]),
        format!("{}:{}", e.vendor_id, e.device_id),
        e.subsystem_id.clone().unwrap_or_else(|| "-".into()),
        driver,
        reset,
        e.held_by.clone().unwrap_or_else(|| "-".into()),
        name,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::inventory::Group;

    fn entry(addr: &str, role: Role, class: &str) -> Entry {
        Entry {
            address: addr.parse().unwrap(),
            class: class.into(),
            class_name: "VGA compatible controller",
            role,
            vendor_id: "10de".into(),
            device_id: "2507".into(),
            vendor_name: Some("NVIDIA Corporation".into()),
            device_name: None,
            subsystem_id: Some("10de:0000".into()),
            subsystem_name: None,
            driver: Some("nvidia".into()),
            driver_override: None,
            boot_vga: Some(true),
            reset_method: Some(vec![]),
            can_reset: false,
            held_by: Some("win11".into()),
        }
    }

    #[test]
    fn table_marks_gpus_and_says_when_the_iommu_is_off() {
        let inv = Inventory {
            iommu: false,
            groups: vec![Group {
                group: None,
                devices: vec![entry("01:00.0", Role::Gpu, "030000")],
            }],
            hidden_devices: 2,
        };
        let text = render(&inv);
        assert!(text.starts_with("The IOMMU is off"), "{text}");
        assert!(text.contains("intel_iommu=on") && text.contains("amd_iommu=on"));
        let row = text.lines().find(|l| l.contains("0000:01:00.0")).unwrap();
        assert!(row.starts_with("-      0000:01:00.0  GPU"), "{row}");
        assert!(row.contains("VGA compatible controller [0300]"), "{row}");
        assert!(row.contains(" none "), "{row}");
        assert!(row.contains(" win11 "), "{row}");
        assert!(
            row.ends_with("NVIDIA Corporation Device 2507 [boot VGA]"),
            "{row}"
        );
        assert!(text.contains("2 bridge and chipset device(s) not shown"));
    }
}
