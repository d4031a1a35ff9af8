//! The passthrough boot entry where there is no grubby: exact steps for
//! systemd-boot (a copy of the default loader entry with a new title and
//! the arguments added to `options`) or GRUB (`/etc/default/grub`, whose
//! arguments go on every entry), printed, never applied.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use super::boot_entry::TITLE_SUFFIX;
use crate::host::HostRoot;

/// Exact steps for a host without grubby: systemd-boot when its entries
/// exist, else GRUB through `/etc/default/grub`.
pub(crate) fn manual_steps(root: &HostRoot, args: &str) -> String {
    for dir in [
        "/boot/loader/entries",
        "/efi/loader/entries",
        "/boot/efi/loader/entries",
    ] {
        if let Some(steps) = systemd_boot_steps(root, dir, args) {
            return steps;
        }
    }
    let grub = ["/etc/default/grub", "/boot/grub", "/boot/grub2"];
    if grub.iter().any(|p| root.path(p).exists()) {
        return grub_steps(root, args);
    }
    format!(
        "No grubby, GRUB or systemd-boot config found: add these to your boot loader's kernel command line:\n    {args}\n"
    )
}

fn systemd_boot_steps(root: &HostRoot, dir: &str, args: &str) -> Option<String> {
    let mut confs: Vec<PathBuf> = fs::read_dir(root.path(dir))
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .filter(|p| !p.to_string_lossy().contains("vmrun-passthrough"))
        .collect();
    confs.sort();
    let loader = root.path(Path::new(dir).parent()?.join("loader.conf"));
    let default = fs::read_to_string(loader).ok().and_then(|t| {
        t.lines().find_map(|l| {
            l.trim()
                .strip_prefix("default")
                .map(|v| v.trim().to_string())
        })
    });
    let chosen = default
        .and_then(|d| {
            confs
                .iter()
                .find(|c| {
                    c.file_name().is_some_and(|n| {
                        n.to_string_lossy() == d || n.to_string_lossy() == format!("{d}.conf")
                    })
                })
                .cloned()
        })
        .or_else(|| confs.last().cloned())?;
    let text = fs::read_to_string(&chosen).ok()?;
    let stem = chosen.file_stem()?.to_string_lossy().into_owned();
    let host_dir = dir.to_string();
    let new = format!("{host_dir}/{stem}-vmrun-passthrough.conf");
    let body: Vec<String> = text
        .lines()
        .map(|l| match l.split_once(char::is_whitespace) {
            Some(("title", t)) => format!("title {} {TITLE_SUFFIX}", t.trim()),
            Some(("options", o)) => format!("options {} {args}", o.trim()),
            _ => l.to_string(),
        })
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "systemd-boot: no grubby here; make the passthrough entry by hand:"
    );
    let _ = writeln!(s, "1. Write {new} with this content (a copy of {host_dir}/{stem}.conf with a new title and the arguments added):\n");
    for line in &body {
        let _ = writeln!(s, "    {line}");
    }
    let _ = writeln!(s, "\n2. Keep the default as it is, or pick an entry once at the next boot: bootctl set-oneshot {stem}-vmrun-passthrough.conf");
    let _ = writeln!(s, "3. After every kernel update, redo step 1 from the new kernel's entry and delete the old copy.");
    Some(s)
}

fn grub_steps(root: &HostRoot, args: &str) -> String {
    let current = fs::read_to_string(root.path("/etc/default/grub"))
        .ok()
        .and_then(|t| {
            t.lines().rev().find_map(|l| {
                l.trim()
                    .strip_prefix("GRUB_CMDLINE_LINUX_DEFAULT=")
                    .map(|v| v.trim_matches(['"', '\'']).to_string())
            })
        });
    let regen = if root.path("/usr/sbin/update-grub").exists() {
        "update-grub"
    } else if root.path("/boot/grub2").is_dir() {
        "grub2-mkconfig -o /boot/grub2/grub.cfg"
    } else {
        "grub-mkconfig -o /boot/grub/grub.cfg"
    };
    let mut s = String::new();
    let _ = writeln!(s, "GRUB without grubby: GRUB has no second entry that survives kernel updates, so the arguments go on every entry:");
    match current {
        Some(c) => {
            let merged = [c.as_str(), args]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(s, "1. In /etc/default/grub change\n       GRUB_CMDLINE_LINUX_DEFAULT=\"{c}\"\n   to\n       GRUB_CMDLINE_LINUX_DEFAULT=\"{merged}\"");
        }
        None => {
            let _ = writeln!(
                s,
                "1. Add to /etc/default/grub:\n       GRUB_CMDLINE_LINUX_DEFAULT=\"{args}\""
            );
        }
    }
    let _ = writeln!(s, "2. Run: {regen}");
    let _ = writeln!(s, "3. To boot without them once: press e on the entry in the GRUB menu and delete them from the `linux` line.");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    #[test]
    fn systemd_boot_steps_show_the_new_entry_file() {
        let dir = TestHost::new()
            .file("/boot/loader/loader.conf", "default arch.conf\ntimeout 3\n")
            .file("/boot/loader/entries/arch.conf", "title Arch Linux\nlinux /vmlinuz-linux\ninitrd /initramfs-linux.img\noptions root=UUID=ab rw\n");
        let s = manual_steps(&HostRoot::new(dir.path()), "amd_iommu=on iommu=pt");
        assert!(
            s.contains("/boot/loader/entries/arch-vmrun-passthrough.conf"),
            "{s}"
        );
        assert!(
            s.contains("    title Arch Linux [vmrun passthrough]"),
            "{s}"
        );
        assert!(
            s.contains("    options root=UUID=ab rw amd_iommu=on iommu=pt"),
            "{s}"
        );
    }

    #[test]
    fn without_a_known_boot_loader_the_arguments_are_printed() {
        let dir = TestHost::new();
        let s = manual_steps(&HostRoot::new(dir.path()), "amd_iommu=on");
        assert!(
            s.starts_with("No grubby, GRUB or systemd-boot") && s.contains("    amd_iommu=on"),
            "{s}"
        );
    }

    #[test]
    fn grub_steps_merge_the_current_default_line() {
        let dir = TestHost::new()
            .file(
                "/etc/default/grub",
                "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n",
            )
            .file("/usr/sbin/update-grub", "");
        let s = manual_steps(&HostRoot::new(dir.path()), "intel_iommu=on iommu=pt");
        assert!(
            s.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash intel_iommu=on iommu=pt\""),
            "{s}"
        );
        assert!(s.contains("2. Run: update-grub"), "{s}");
    }
}
