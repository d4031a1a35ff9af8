//! Host files the VM uses that the config can't vouch for: disk images and
//! block devices, install media, evdev input devices. They are host state
//! (a disk may be created after the config is written), so a missing one is
//! a finding of the plan, not a config error. So is one of a type QEMU
//! can't be handed (`host::file_kind`: a FIFO would block the start).

use std::path::Path;

use super::finding::Finding;
use crate::config::{trust, DiskMedia, VmConfig};
use crate::host::file_kind::{self, Wanted};
use crate::host::HostRoot;

pub(crate) fn check_host_files(vm: &VmConfig, root: &HostRoot, findings: &mut Vec<Finding>) {
    for disk in &vm.disks {
        if exists(root, &disk.path) {
            check_kind("[[disk]] path", &disk.path, Wanted::Image, root, findings);
            check_control(&disk.path, root, findings);
            continue;
        }
        let finding = Finding::error(disk.path.display(), "disk image or device does not exist");
        findings.push(match disk.media {
            DiskMedia::Cdrom => finding.fix("download the ISO there or correct [[disk]] path"),
            DiskMedia::Disk => finding.fix(format!(
                "create it: qemu-img create -f qcow2 {} 64G (or correct [[disk]] path)",
                disk.path.display()
            )),
        });
    }
    if let Some(files) = &vm.firmware.files {
        check_kind(
            "[firmware] code",
            &files.code,
            Wanted::Regular,
            root,
            findings,
        );
        check_kind(
            "[firmware] vars",
            &files.vars,
            Wanted::Regular,
            root,
            findings,
        );
    }
    for rom in vm.hostdevs.iter().filter_map(|h| h.romfile.as_ref()) {
        check_kind("[[hostdev]] romfile", rom, Wanted::Regular, root, findings);
    }
    if let Some(input) = &vm.input {
        for path in [&input.keyboard, &input.mouse].into_iter().flatten() {
            if !exists(root, path) {
                findings.push(
                    Finding::error(path.display(), "input device does not exist (unplugged?)")
                        .fix("`ls /dev/input/by-id/` lists the connected devices; correct [input]"),
                );
            }
        }
    }
}

/// A file vmrun opens for QEMU must be of a type it can open without
/// blocking and read to an end; one that isn't there is left to the
/// existence checks.
fn check_kind(
    key: &str,
    path: &Path,
    wanted: Wanted,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) {
    let Ok(meta) = std::fs::metadata(root.path(path)) else {
        return;
    };
    if let Some(why) = file_kind::refusal(meta.file_type(), wanted) {
        findings.push(
            Finding::error(path.display(), format!("{key} {why}"))
                .fix(format!("point {key} at {}", wanted.what())),
        );
    }
}

/// As root, a disk is opened with the rights of the one user who could
/// replace it (`trust::who_controls`); a path that several could replace
/// has no one to answer for it.
fn check_control(path: &Path, root: &HostRoot, findings: &mut Vec<Finding>) {
    if !root.is_real() || !trust::running_as_root() {
        return;
    }
    match trust::who_controls(path) {
        Ok(None) => {}
        Ok(Some(uid)) => findings.push(Finding::info(
            path.display(),
            format!("opened with the rights of uid {uid}, who may replace it"),
        )),
        Err(why) => findings.push(Finding::error(path.display(), why.to_string()).fix(
            "keep disks where root alone or their one user can write, e.g. /var/lib/vmrun/NAME/",
        )),
    }
}

fn exists(root: &HostRoot, path: &Path) -> bool {
    root.path(path).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::finding::Severity;

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    fn findings_for(root: &Path, text: &str) -> Vec<Finding> {
        let vm = crate::testing::vm(&format!("memory = \"1G\"\n{text}"));
        let mut findings = Vec::new();
        check_host_files(&vm, &HostRoot::new(root), &mut findings);
        findings
    }

    #[test]
    fn a_disk_that_is_a_fifo_is_an_error_naming_the_key_and_path() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("vm")).unwrap();
        mkfifo(&tmp.path().join("vm/disk.img"));
        std::fs::write(tmp.path().join("vm/ok.img"), b"").unwrap();

        let findings = findings_for(
            tmp.path(),
            "[[disk]]\npath = \"/vm/disk.img\"\n[[disk]]\npath = \"/vm/ok.img\"\n",
        );

        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.subject, "/vm/disk.img");
        assert_eq!(
            f.message,
            "[[disk]] path is a FIFO (named pipe), not a regular file or a block device"
        );
    }

    #[test]
    fn a_romfile_or_firmware_file_must_be_a_regular_file() {
        // The config step wants these to exist on the real filesystem.
        let tmp = tempfile::tempdir().unwrap();
        let at = |name: &str| tmp.path().join(name);
        mkfifo(&at("gpu.rom"));
        std::fs::create_dir(at("CODE.fd")).unwrap();
        std::fs::write(at("VARS.fd"), b"").unwrap();

        let findings = findings_for(
            Path::new("/"),
            &format!(
                "[firmware]\ncode = {:?}\nvars = {:?}\n\
                 [[hostdev]]\naddress = \"01:00.0\"\nromfile = {:?}\n",
                at("CODE.fd"),
                at("VARS.fd"),
                at("gpu.rom")
            ),
        );

        let said: Vec<(String, &str)> = findings
            .iter()
            .map(|f| (f.subject.clone(), f.message.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                (
                    at("CODE.fd").display().to_string(),
                    "[firmware] code is a directory, not a regular file"
                ),
                (
                    at("gpu.rom").display().to_string(),
                    "[[hostdev]] romfile is a FIFO (named pipe), not a regular file"
                ),
            ]
        );
    }
}
