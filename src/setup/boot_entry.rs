//! `vmrun host boot-entry`: a separate "passthrough" boot entry beside the
//! normal one, so the host boots either with the GPU on its driver or with
//! it isolated for the VM. On grubby systems (Fedora,
//! RHEL) the default kernel's entry is cloned with the passthrough
//! arguments; after a kernel update the entry left on the old kernel is
//! removed and the new kernel cloned; the default boot stays what the
//! user chose (the normal entry, or the passthrough one if they made it
//! the default). Elsewhere `boot_steps` prints the GRUB or systemd-boot steps.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host::HostRoot;

/// Marks vmrun's entries: whatever follows the cloned entry's own title.
pub(crate) const TITLE_SUFFIX: &str = "[vmrun passthrough]";

/// One entry as `grubby --info=ALL` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    pub index: usize,
    pub kernel: String,
    pub args: String,
    pub root: Option<String>,
    pub initrd: Option<String>,
    pub title: String,
}

impl Entry {
    pub(crate) fn is_ours(&self) -> bool {
        self.title.ends_with(TITLE_SUFFIX)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BootEntryError {
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
pub(crate) fn parse_info(text: &str) -> Vec<Entry> {
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
pub(crate) struct Grubby {
    pub binary: PathBuf,
}

impl Grubby {
    /// `grubby` from `PATH`, if installed.
    pub(crate) fn find() -> Option<Self> {
        crate::host::qemu::find_in_path(Path::new("grubby"))
            .filter(|p| p.is_file())
            .map(|binary| Self { binary })
    }

    pub(crate) fn run(&self, args: &[String]) -> Result<String, BootEntryError> {
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
    pub(crate) fn state(&self) -> Result<(Vec<Entry>, usize), BootEntryError> {
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
pub(crate) struct GrubbyPlan {
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
pub(crate) fn plan(
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
pub(crate) fn default_after(entries: &[Entry], plan: &GrubbyPlan) -> Option<usize> {
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
pub(crate) fn apply(grubby: &Grubby, plan: &GrubbyPlan) -> Result<Vec<String>, BootEntryError> {
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
pub(crate) fn files_grubby_changes(root: &HostRoot) -> Vec<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
