//! QEMU built with modules (Debian, Ubuntu, Fedora, Arch) loads SPICE, the
//! GTK window, usb-host and most audio backends from shared objects in its
//! module dir, each distribution packaging some of them apart from the
//! emulator. A missing one surfaces only when QEMU starts, as "'usb-host'
//! is not a valid device model name" or "spice is not supported by this
//! QEMU build"; the plan names the file and the package instead, before
//! anything is changed.

use std::path::{Path, PathBuf};

use super::audio::AudioDriver;
use super::{Finding, Plan};
use crate::config::Display;
use crate::host::HostRoot;

/// A module the VM needs, why, and the Debian package that ships it
/// (checked against Debian 12's and 13's package contents).
struct Needed {
    module: &'static str,
    what: &'static str,
    debian: &'static str,
}

const SPICE: &str = "qemu-system-modules-spice (Debian 13; qemu-system-common on Debian 12)";

fn needed(plan: &Plan) -> Vec<Needed> {
    let mut needs = Vec::new();
    let mut need = |module, what, debian| {
        needs.push(Needed {
            module,
            what,
            debian,
        })
    };
    if plan.spice() {
        need("ui-spice-core", "SPICE", SPICE);
    }
    if plan.looking_glass.as_ref().is_some_and(|lg| lg.spice) {
        // The vdagent channel is a spicevmc chardev.
        need("chardev-spice", "Looking Glass's SPICE channel", SPICE);
    }
    if plan.vm.display == Display::Gtk {
        need("ui-gtk", "display mode \"gtk\"", "qemu-system-gui");
    }
    if !plan.usb.is_empty() {
        need("hw-usb-host", "[[usb]]", "qemu-system-common");
    }
    match plan.audio.as_ref().map(|a| &a.driver) {
        Some(AudioDriver::Pa) => need(
            "audio-pa",
            "[audio] through PulseAudio's protocol",
            "qemu-system-gui",
        ),
        Some(AudioDriver::Pipewire) => need(
            "audio-pipewire",
            "[audio] backend \"pipewire\"",
            "qemu-system-gui",
        ),
        Some(AudioDriver::Alsa) => need(
            "audio-alsa",
            "[audio] backend \"alsa\"",
            "qemu-system-common",
        ),
        Some(AudioDriver::Spice) => need("audio-spice", "[audio] backend \"spice\"", SPICE),
        None => {}
    }
    needs
}

/// Where a QEMU installed under `prefix` keeps its modules: Debian's
/// multiarch dir, Fedora's lib64, Arch's lib.
fn module_dir(root: &HostRoot, prefix: &Path) -> Option<PathBuf> {
    ["lib/x86_64-linux-gnu/qemu", "lib64/qemu", "lib/qemu"]
        .iter()
        .map(|rel| root.path(prefix.join(rel)))
        .find(|dir| has_modules(dir))
}

/// A dir with any `*.so`: QEMU here was built with modules.
fn has_modules(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".so"))
    })
}

/// The install prefix of the QEMU binary: `/usr` for `/usr/bin/qemu-…`.
fn prefix(binary: &Path, root: &HostRoot) -> PathBuf {
    let found = if root.is_real() {
        crate::host::qemu::find_in_path(binary)
    } else {
        binary.is_absolute().then(|| binary.to_path_buf())
    };
    found
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("/usr"), Path::to_path_buf)
}

/// An error for each module the VM needs that a modular QEMU lacks. A QEMU
/// without a module dir has everything built in (or is not here: the
/// probe's finding says so).
pub(crate) fn check(plan: &Plan, root: &HostRoot, findings: &mut Vec<Finding>) {
    let Some(dir) = module_dir(root, &prefix(&plan.qemu.binary, root)) else {
        return;
    };
    for n in needed(plan) {
        let file = format!("{}.so", n.module);
        if !dir.join(&file).exists() {
            findings.push(
                Finding::error(
                    "qemu",
                    format!(
                        "{} needs QEMU's module {file}, which this QEMU's module dir lacks",
                        n.what
                    ),
                )
                .fix(format!(
                    "install the package that ships it (Debian and Ubuntu: {}; elsewhere, the one with {file})",
                    n.debian
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    const DIR: &str = "/usr/lib/x86_64-linux-gnu/qemu";

    fn planned(host: &TestHost, text: &str) -> Vec<Finding> {
        let base = tempfile::tempdir().unwrap();
        let plan = crate::testing::plan_on(host, crate::testing::vm(text), true, base.path());
        let mut findings = Vec::new();
        check(&plan, &host.root(), &mut findings);
        findings
    }

    const SPICE_LG: &str = "memory = \"1G\"\n[display]\nmode = \"spice\"\n\
        [looking_glass]\nresolution = \"1920x1080\"\nspice = true\nuser = \"nobody\"\n";

    #[test]
    fn a_modular_qemu_without_the_spice_modules_is_told_which_package_ships_them() {
        let host = TestHost::new()
            .file("/etc/passwd", "nobody:x:65534:65534::/:/bin/false\n")
            .file(&format!("{DIR}/hw-usb-host.so"), "");
        let findings = planned(&host, SPICE_LG);
        let text: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(findings.len(), 2, "{text:?}");
        assert!(
            text[0].contains("SPICE needs QEMU's module ui-spice-core.so"),
            "{text:?}"
        );
        assert!(text[1].contains("chardev-spice.so"), "{text:?}");
        let fix = findings[0].fix.as_deref().unwrap();
        assert!(fix.contains("qemu-system-modules-spice"), "{fix}");
    }

    #[test]
    fn present_modules_or_a_qemu_without_modules_are_no_finding() {
        let host = TestHost::new()
            .file("/etc/passwd", "nobody:x:65534:65534::/:/bin/false\n")
            .file(&format!("{DIR}/ui-spice-core.so"), "")
            .file(&format!("{DIR}/chardev-spice.so"), "");
        assert!(planned(&host, SPICE_LG).is_empty());
        let built_in = TestHost::new().file("/etc/passwd", "nobody:x:65534:65534::/:/bin/false\n");
        assert!(planned(&built_in, SPICE_LG).is_empty());
    }

    #[test]
    fn usb_and_each_audio_backend_need_their_module() {
        let host = TestHost::new().file(&format!("{DIR}/ui-spice-core.so"), "");
        let usb = planned(
            &host,
            "memory = \"1G\"\n[[usb]]\nids = \"046d:c52b\"\noptional = true\n",
        );
        assert!(usb[0].message.contains("hw-usb-host.so"), "{usb:?}");
        let alsa = planned(&host, "memory = \"1G\"\n[audio]\nbackend = \"alsa\"\n");
        assert!(alsa[0].message.contains("audio-alsa.so"), "{alsa:?}");
    }
}
