//! `vmrun host initramfs`: the vfio modules in the initramfs, so vfio-pci
//! is loaded (and, with `vfio-pci.ids=`, claims the devices) before any
//! GPU driver. One edit per initramfs generator, found by its config:
//! dracut (`/etc/dracut.conf.d`), mkinitcpio (`/etc/mkinitcpio.conf`
//! `MODULES=(...)`), initramfs-tools (`/etc/initramfs-tools/modules`).

use std::fs;
use std::path::PathBuf;

use crate::host::HostRoot;

/// vfio first: vfio_pci depends on vfio and vfio_iommu_type1 (kernel 6.2
/// folded vfio_virqfd into vfio).
pub(crate) const MODULES: [&str; 3] = ["vfio_pci", "vfio", "vfio_iommu_type1"];

/// The initramfs generators vmrun knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Generator {
    Dracut,
    Mkinitcpio,
    InitramfsTools,
}

impl Generator {
    /// The command that rebuilds every installed kernel's initramfs after
    /// the edit (the modules must be in the one the next boot uses).
    pub(crate) fn rebuild(self) -> &'static [&'static str] {
        match self {
            Self::Dracut => &["dracut", "--force", "--regenerate-all"],
            Self::Mkinitcpio => &["mkinitcpio", "-P"],
            Self::InitramfsTools => &["update-initramfs", "-u", "-k", "all"],
        }
    }

    fn file(self) -> &'static str {
        match self {
            Self::Dracut => "/etc/dracut.conf.d/10-vmrun-vfio.conf",
            Self::Mkinitcpio => "/etc/mkinitcpio.conf",
            Self::InitramfsTools => "/etc/initramfs-tools/modules",
        }
    }
}

/// The edit for this host: which file, its new text, or `None` when the
/// modules are already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edit {
    pub generator: Generator,
    /// The host path (not under the root).
    pub file: PathBuf,
    pub contents: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InitramfsError {
    #[error("no dracut, mkinitcpio or initramfs-tools config under /etc: add the modules {} to your initramfs by hand", MODULES.join(", "))]
    Unknown,
    #[error(
        "{0} has no MODULES=(...) line: add `MODULES=(vfio_pci vfio vfio_iommu_type1)` by hand"
    )]
    NoModulesLine(PathBuf),
}

/// Finds the generator of this host (dracut first: Fedora ships the
/// others' configs rarely, Arch and Debian never ship dracut's by default).
pub(crate) fn detect(root: &HostRoot) -> Option<Generator> {
    if root.path("/etc/dracut.conf.d").is_dir() || root.path("/etc/dracut.conf").is_file() {
        Some(Generator::Dracut)
    } else if root.path("/etc/mkinitcpio.conf").is_file() {
        Some(Generator::Mkinitcpio)
    } else if root.path("/etc/initramfs-tools").is_dir() {
        Some(Generator::InitramfsTools)
    } else {
        None
    }
}

/// The edit that puts the vfio modules in this host's initramfs.
pub(crate) fn plan(root: &HostRoot) -> Result<Edit, InitramfsError> {
    let generator = detect(root).ok_or(InitramfsError::Unknown)?;
    let file = PathBuf::from(generator.file());
    let current = fs::read_to_string(root.path(&file)).ok();
    let contents = match generator {
        // force_drivers (dracut >= 049) loads them early, unlike add_drivers.
        Generator::Dracut => {
            let want = format!(
                "# Written by `vmrun host initramfs`: vfio-pci before the GPU drivers.\nforce_drivers+=\" {} \"\n",
                MODULES.join(" ")
            );
            (current.as_deref() != Some(want.as_str())).then_some(want)
        }
        Generator::Mkinitcpio => {
            let text = current.unwrap_or_default();
            mkinitcpio(&text).ok_or_else(|| InitramfsError::NoModulesLine(file.clone()))?
        }
        Generator::InitramfsTools => {
            let text = current.unwrap_or_default();
            let present: Vec<&str> = text.lines().map(str::trim).collect();
            let missing: Vec<&str> = MODULES
                .iter()
                .copied()
                .filter(|m| !present.contains(m))
                .collect();
            (!missing.is_empty()).then(|| {
                let mut t = text.clone();
                if !t.is_empty() && !t.ends_with('\n') {
                    t.push('\n');
                }
                t.push_str("# vfio-pci before the GPU drivers (vmrun host initramfs)\n");
                for m in missing {
                    t.push_str(m);
                    t.push('\n');
                }
                t
            })
        }
    };
    Ok(Edit {
        generator,
        file,
        contents,
    })
}

/// `MODULES=(...)` with the vfio modules first (they must load before the
/// GPU drivers listed there); `Some(None)` when already present.
fn mkinitcpio(text: &str) -> Option<Option<String>> {
    let mut found = false;
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let Some(inner) = line
                .trim()
                .strip_prefix("MODULES=(")
                .and_then(|r| r.strip_suffix(')'))
            else {
                return line.to_string();
            };
            found = true;
            let existing: Vec<&str> = inner.split_whitespace().collect();
            if MODULES.iter().all(|m| existing.contains(m)) {
                return line.to_string();
            }
            changed = true;
            let rest = existing.iter().filter(|m| !MODULES.contains(m)).copied();
            let all: Vec<&str> = MODULES.iter().copied().chain(rest).collect();
            format!("MODULES=({})", all.join(" "))
        })
        .collect();
    found.then(|| changed.then(|| lines.join("\n") + "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sysfs::write;
    use crate::testing::TestHost;

    fn root_with(files: &[(&str, &str)]) -> (TestHost, HostRoot) {
        let host = files
            .iter()
            .fold(TestHost::new(), |host, (path, text)| host.file(path, text));
        let root = host.root();
        (host, root)
    }

    #[test]
    fn dracut_gets_its_own_conf_file_once() {
        let (dir, root) = root_with(&[("/etc/dracut.conf.d/local.conf", "hostonly=yes\n")]);
        let edit = plan(&root).unwrap();
        assert_eq!(edit.generator, Generator::Dracut);
        let text = edit.contents.unwrap();
        assert!(text.contains("force_drivers+=\" vfio_pci vfio vfio_iommu_type1 \""));
        write(dir.path(), "/etc/dracut.conf.d/10-vmrun-vfio.conf", &text);
        assert_eq!(plan(&root).unwrap().contents, None);
    }

    #[test]
    fn mkinitcpio_gets_the_modules_first_in_its_modules_line() {
        let (dir, root) = root_with(&[(
            "/etc/mkinitcpio.conf",
            "# conf\nMODULES=(amdgpu)\nHOOKS=(base udev modconf)\n",
        )]);
        let text = plan(&root).unwrap().contents.unwrap();
        assert!(
            text.contains(
                "MODULES=(vfio_pci vfio vfio_iommu_type1 amdgpu)\nHOOKS=(base udev modconf)"
            ),
            "{text}"
        );
        write(dir.path(), "/etc/mkinitcpio.conf", &text);
        assert_eq!(plan(&root).unwrap().contents, None);
        let (_d, bad) = root_with(&[("/etc/mkinitcpio.conf", "HOOKS=(base)\n")]);
        assert!(matches!(plan(&bad), Err(InitramfsError::NoModulesLine(_))));
    }

    #[test]
    fn initramfs_tools_gets_the_missing_lines_appended() {
        let (dir, root) = root_with(&[("/etc/initramfs-tools/modules", "# list\nvfio\n")]);
        let edit = plan(&root).unwrap();
        assert_eq!(
            edit.generator.rebuild().join(" "),
            "update-initramfs -u -k all"
        );
        let text = edit.contents.unwrap();
        assert!(text.starts_with("# list\nvfio\n"));
        assert!(text.ends_with("vfio_pci\nvfio_iommu_type1\n"), "{text}");
        write(dir.path(), "/etc/initramfs-tools/modules", &text);
        assert_eq!(plan(&root).unwrap().contents, None);
    }

    #[test]
    fn an_unknown_generator_is_an_error() {
        let (_d, root) = root_with(&[("/etc/hostname", "x\n")]);
        assert_eq!(plan(&root), Err(InitramfsError::Unknown));
    }
}
