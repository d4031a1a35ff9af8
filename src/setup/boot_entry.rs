//! `vmrun host boot-entry`: a separate "passthrough" boot entry beside the
//! normal one (seed 000's dual-mode setup). On grubby systems (Fedora,
//! RHEL) the default kernel's entry is cloned with the passthrough
//! arguments; after a kernel update the entry left on the old kernel is
//! removed and the new kernel cloned; the default boot stays what the
//! user chose (the normal entry, or the passthrough one if they made it
//! the default). Elsewhere the exact GRUB or systemd-boot steps are printed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host::HostRoot;

/// Marks vmrun's entries: whatever follows the cloned entry's own title.
pub const TITLE_SUFFIX: &str = "[vmrun passthrough]";

/// One entry as `grubby --info=ALL` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub index: usize,
    pub kernel: String,
    pub args: String,
    pub root: Option<String>,
    pub initrd: Option<String>,
    pub title: String,
}

impl Entry {
    pub fn is_ours(&self) -> bool {
        self.title.ends_with(TITLE_SUFFIX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootEntryError {
    #[error("running {binary} {args}: {source}")]
    Spawn {
        binary: PathBuf,
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} {args} failed: {stderr}")]
    Failed {
        binary: PathBuf,
        args: String,
        stderr: String,
    },
    #[error("grubby lists no boot entry that is not vmrun's own: nothing to clone")]
    NoBaseEntry,
    #[error("grubby's default index {0} names no entry")]
    BadDefault(String),
}

/// Parses `grubby --info=ALL`: `key=value` lines, a new entry at `index=`.
pub fn parse_info(text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        if key == "index" {
            entries.push(Entry {
                index: value.parse().unwrap_or(entries.len()),
                ..Entry::default()
            });
            continue;
        }
        let Some(e) = entries.last_mut() else {
            continue;
        };
        match key {
            "kernel" => e.kernel = value,
            "args" => e.args = value,
            "root" => e.root = Some(value),
            "initrd" => e.initrd = Some(value),
            "title" => e.title = value,
            _ => {}
        }
    }
    entries
}

/// The `grubby` binary and how to call it.
#[derive(Debug, Clone)]
pub struct Grubby {
    pub binary: PathBuf,
}

impl Grubby {
    /// `grubby` from `PATH`, if installed.
    pub fn find() -> Option<Self> {
        crate::host::qemu::find_in_path(Path::new("grubby"))
            .filter(|p| p.is_file())
            .map(|binary| Self { binary })
    }

    pub fn run(&self, args: &[String]) -> Result<String, BootEntryError> {
        let shown = args.join(" ");
        let out = Command::new(&self.binary)
            .args(args)
            .output()
            .map_err(|source| BootEntryError::Spawn {
                binary: self.binary.clone(),
                args: shown.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(BootEntryError::Failed {
                binary: self.binary.clone(),
                args: shown,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The entries and the default entry's index.
    pub fn state(&self) -> Result<(Vec<Entry>, usize), BootEntryError> {
        let entries = parse_info(&self.run(&["--info=ALL".into()])?);
        let text = self.run(&["--default-index".into()])?;
        let default = text
            .trim()
            .parse()
            .map_err(|_| BootEntryError::BadDefault(text.trim().to_string()))?;
        Ok((entries, default))
    }
}

/// What to change so that exactly one up-to-date passthrough entry exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubbyPlan {
    /// The normal entry cloned (the default, or the newest normal one when
    /// the passthrough entry is the default).
    pub base: Entry,
    /// The passthrough entry is the user's default boot.
    pub default_is_ours: bool,
    /// Stale passthrough entries, highest index first (indexes below a
    /// removed one stay valid).
    pub remove: Vec<Entry>,
    /// `grubby` arguments adding the new entry; `None` when it is current.
    pub add: Option<Vec<String>>,
    pub title: String,
    pub args: String,
}

/// The arguments of `base` with `ours` added, an argument of ours
/// replacing the base's with the same key (`intel_iommu=off`).
fn merge_args(base: &Entry, ours: &[String]) -> String {
    let key = |a: &str| a.split('=').next().unwrap_or(a).to_string();
    let keys: BTreeSet<String> = ours.iter().map(|a| key(a)).collect();
    let mut args: Vec<String> = Vec::new();
    if let Some(root) = base.root.as_ref().filter(|_| !base.args.contains("root=")) {
        args.push(format!("root={root}"));
    }
    args.extend(
        base.args
            .split_whitespace()
            .filter(|a| !keys.contains(&key(a)))
            .map(str::to_string),
    );
    args.extend(ours.iter().cloned());
    args.join(" ")
}

fn same_args(a: &str, b: &str) -> bool {
    let set = |s: &str| {
        s.split_whitespace()
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
    };
    set(a) == set(b)
}

/// Plans the change from grubby's current state.
pub fn plan(
    entries: &[Entry],
    default: usize,
    ours: &[String],
) -> Result<GrubbyPlan, BootEntryError> {
    let default_entry = entries
        .iter()
        .find(|e| e.index == default)
        .ok_or_else(|| BootEntryError::BadDefault(default.to_string()))?;
    let default_is_ours = default_entry.is_ours();
    let base = if default_is_ours {
        entries.iter().find(|e| !e.is_ours())
    } else {
        Some(default_entry)
    }
    .ok_or(BootEntryError::NoBaseEntry)?
    .clone();
    let title = format!("{} {TITLE_SUFFIX}", base.title);
    let args = merge_args(&base, ours);
    let existing: Vec<&Entry> = entries.iter().filter(|e| e.is_ours()).collect();
    let current = existing.len() == 1
        && existing[0].kernel == base.kernel
        && existing[0].title == title
        && same_args(&merge_args(existing[0], &[]), &args);
    let mut remove: Vec<Entry> = if current {
        Vec::new()
    } else {
        existing.into_iter().cloned().collect()
    };
    remove.sort_by_key(|e| std::cmp::Reverse(e.index));
    let add = (!current).then(|| {
        let mut a = vec![format!("--add-kernel={}", base.kernel)];
        if let Some(initrd) = &base.initrd {
            a.push(format!("--initrd={initrd}"));
        }
        a.push(format!("--title={title}"));
        a.push(format!("--args={args}"));
        a
    });
    Ok(GrubbyPlan {
        base,
        default_is_ours,
        remove,
        add,
        title,
        args,
    })
}

/// The index the default must point at after the change.
pub fn default_after(entries: &[Entry], plan: &GrubbyPlan) -> Option<usize> {
    entries
        .iter()
        .find(|e| {
            if plan.default_is_ours {
                e.title == plan.title
            } else {
                !e.is_ours() && e.kernel == plan.base.kernel && e.title == plan.base.title
            }
        })
        .map(|e| e.index)
}

/// Carries the plan out; returns the commands run, in order.
pub fn apply(grubby: &Grubby, plan: &GrubbyPlan) -> Result<Vec<String>, BootEntryError> {
    let mut ran = Vec::new();
    let mut call = |args: Vec<String>| -> Result<String, BootEntryError> {
        ran.push(format!("grubby {}", args.join(" ")));
        grubby.run(&args)
    };
    for stale in &plan.remove {
        call(vec![format!("--remove-kernel={}", stale.index)])?;
    }
    if let Some(add) = &plan.add {
        call(add.clone())?;
    }
    // Adding and removing entries can move indexes (and with them a
    // default kept by index): the default is set again by name.
    let (entries, _) = grubby.state()?;
    if let Some(index) = default_after(&entries, plan) {
        call(vec![format!("--set-default-index={index}")])?;
    }
    Ok(ran)
}

/// The boot files grubby changes, to copy before `--apply`.
pub fn files_grubby_changes(root: &HostRoot) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(dir) = fs::read_dir(root.path("/boot/loader/entries")) {
        files.extend(
            dir.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf")),
        );
    }
    for f in [
        "/boot/grub2/grubenv",
        "/boot/grub2/grub.cfg",
        "/boot/grub/grubenv",
        "/boot/grub/grub.cfg",
    ] {
        let p = root.path(f);
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// Exact steps for a host without grubby: systemd-boot when its entries
/// exist, else GRUB through `/etc/default/grub`.
pub fn manual_steps(root: &HostRoot, args: &str) -> String {
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
    use crate::setup::fixtures::write;

    fn entry(index: usize, version: &str, title_extra: &str, args: &str) -> Entry {
        Entry {
            index,
            kernel: format!("/boot/vmlinuz-{version}"),
            args: args.into(),
            root: Some("UUID=abcd".into()),
            initrd: Some(format!("/boot/initramfs-{version}.img")),
            title: format!("Fedora Linux ({version}){title_extra}"),
        }
    }

    fn ours() -> Vec<String> {
        ["intel_iommu=on", "vfio-pci.ids=10de:25a1"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn info_all_is_parsed_into_entries() {
        let text = "index=0\nkernel=\"/boot/vmlinuz-6.6\"\nargs=\"ro rhgb quiet\"\nroot=\"UUID=ab\"\ninitrd=\"/boot/initramfs-6.6.img\"\ntitle=\"Fedora (6.6)\"\nid=\"x\"\nindex=1\nkernel=\"/boot/vmlinuz-6.5\"\ntitle=\"Fedora (6.5) [vmrun passthrough]\"\n";
        let e = parse_info(text);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].kernel.as_str(), e[0].args.as_str()),
            ("/boot/vmlinuz-6.6", "ro rhgb quiet")
        );
        assert!(e[1].is_ours() && !e[0].is_ours());
    }

    #[test]
    fn first_run_clones_the_default_with_root_and_our_args() {
        let entries = [entry(0, "6.6", "", "ro quiet intel_iommu=off")];
        let p = plan(&entries, 0, &ours()).unwrap();
        assert!(p.remove.is_empty() && !p.default_is_ours);
        assert_eq!(
            p.args,
            "root=UUID=abcd ro quiet intel_iommu=on vfio-pci.ids=10de:25a1"
        );
        let add = p.add.unwrap();
        assert_eq!(add[0], "--add-kernel=/boot/vmlinuz-6.6");
        assert_eq!(add[2], "--title=Fedora Linux (6.6) [vmrun passthrough]");
    }

    #[test]
    fn a_current_entry_means_nothing_to_do() {
        let mut mine = entry(0, "6.6", " [vmrun passthrough]", "");
        mine.args = "ro quiet intel_iommu=on vfio-pci.ids=10de:25a1".into();
        let entries = [mine, entry(1, "6.6", "", "ro quiet")];
        let p = plan(&entries, 1, &ours()).unwrap();
        assert!(p.add.is_none() && p.remove.is_empty(), "{p:?}");
    }

    #[test]
    fn after_a_kernel_update_the_stale_entry_goes_and_the_default_follows_the_user() {
        let entries = [
            entry(0, "6.7", "", "ro quiet"),
            entry(
                1,
                "6.6",
                " [vmrun passthrough]",
                "ro quiet intel_iommu=on vfio-pci.ids=10de:25a1",
            ),
            entry(2, "6.6", "", "ro quiet"),
        ];
        let p = plan(&entries, 0, &ours()).unwrap();
        assert_eq!(p.remove.iter().map(|e| e.index).collect::<Vec<_>>(), [1]);
        assert_eq!(p.base.kernel, "/boot/vmlinuz-6.7");
        // The user had made passthrough the default: it stays the default.
        let p = plan(&entries, 1, &ours()).unwrap();
        assert!(p.default_is_ours);
        assert_eq!(p.base.kernel, "/boot/vmlinuz-6.7");
        let after = [
            entry(0, "6.7", " [vmrun passthrough]", ""),
            entry(1, "6.7", "", "ro quiet"),
            entry(2, "6.6", "", "ro quiet"),
        ];
        assert_eq!(default_after(&after, &p), Some(0));
    }

    #[test]
    fn systemd_boot_steps_show_the_new_entry_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "/boot/loader/loader.conf",
            "default arch.conf\ntimeout 3\n",
        );
        write(dir.path(), "/boot/loader/entries/arch.conf", "title Arch Linux\nlinux /vmlinuz-linux\ninitrd /initramfs-linux.img\noptions root=UUID=ab rw\n");
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
        let dir = tempfile::tempdir().unwrap();
        let s = manual_steps(&HostRoot::new(dir.path()), "amd_iommu=on");
        assert!(
            s.starts_with("No grubby, GRUB or systemd-boot") && s.contains("    amd_iommu=on"),
            "{s}"
        );
    }

    #[test]
    fn grub_steps_merge_the_current_default_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "/etc/default/grub",
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n",
        );
        write(dir.path(), "/usr/sbin/update-grub", "");
        let s = manual_steps(&HostRoot::new(dir.path()), "intel_iommu=on iommu=pt");
        assert!(
            s.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash intel_iommu=on iommu=pt\""),
            "{s}"
        );
        assert!(s.contains("2. Run: update-grub"), "{s}");
    }
}
