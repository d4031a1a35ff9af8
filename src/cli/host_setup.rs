//! `vmrun host kernel-args | boot-entry | initramfs`: boot-time isolation.
//! Dry by default; `--apply` backs up every file it changes first and
//! prints how to undo.

use super::out::{out, outln};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::args::HostCommand;
use crate::exit::Exit;
use crate::host::pci::PciDevice;
use crate::host::HostRoot;
use crate::plan::hostdev;
use crate::setup::boot_entry::{self, Grubby};
use crate::setup::boot_steps;
use crate::setup::kernel_args::{kernel_args, KernelArgs};
use crate::setup::{backup, initramfs};

pub(super) fn host(command: HostCommand) -> Exit {
    let root = HostRoot::from_env();
    match command {
        HostCommand::KernelArgs { vm } => match args_for(&root, vm.as_deref()) {
            Ok(args) => {
                outln!("{}", args.line());
                for note in &args.notes {
                    eprintln!("# {note}");
                }
                Exit::Ok
            }
            Err(exit) => exit,
        },
        HostCommand::BootEntry { vm, apply } => match args_for(&root, vm.as_deref()) {
            Ok(args) => boot_entry(&root, &args, apply),
            Err(exit) => exit,
        },
        HostCommand::Initramfs { apply } => initramfs(&root, apply),
        HostCommand::HideGpu {
            target,
            apply,
            undo,
        } => super::hide_gpu::hide_gpu(&root, target.as_deref(), apply, undo),
    }
}

/// The kernel arguments for the VM's devices (or the IOMMU alone).
fn args_for(root: &HostRoot, vm: Option<&str>) -> Result<KernelArgs, Exit> {
    let Some(name) = vm else {
        return Ok(kernel_args(root, &[], None));
    };
    let vm = super::load_vm(name)?;
    let mut findings = Vec::new();
    let planned = hostdev::plan_hostdevs(&vm.hostdevs, root, &mut findings);
    let devices: Vec<PciDevice> = planned.into_iter().filter_map(|h| h.device).collect();
    if devices.len() < vm.hostdevs.len() {
        for f in &findings {
            eprintln!("{f}");
        }
        eprintln!(
            "vmrun: not every [[hostdev]] of {} is on this host",
            vm.name
        );
        return Err(Exit::HostProblems);
    }
    Ok(kernel_args(root, &devices, Some(&vm)))
}

fn boot_entry(root: &HostRoot, args: &KernelArgs, apply: bool) -> Exit {
    let Some(grubby) = Grubby::find() else {
        out!("{}", boot_steps::manual_steps(root, &args.line()));
        if apply {
            eprintln!("vmrun: nothing applied: without grubby the steps above are yours to make");
            return Exit::HostProblems;
        }
        return Exit::Ok;
    };
    // grubby acts on this machine's /boot, whatever the host root says.
    if let (true, Err(e)) = (apply, HostRoot::for_changes("host boot-entry --apply")) {
        eprintln!("vmrun: {e}");
        return Exit::Usage;
    }
    let result = grubby.state().and_then(|(entries, default)| {
        boot_entry::plan(&entries, default, &args.args).map(|p| (p, default))
    });
    let (plan, default) = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::HostProblems;
        }
    };
    if plan.add.is_none() {
        outln!(
            "the passthrough entry \"{}\" is current: nothing to do",
            plan.title
        );
        return Exit::Ok;
    }
    for stale in &plan.remove {
        outln!(
            "remove the stale entry {}: \"{}\" ({})",
            stale.index,
            stale.title,
            stale.kernel
        );
    }
    outln!(
        "add \"{}\": {} with\n    {}",
        plan.title,
        plan.base.kernel,
        plan.args
    );
    outln!(
        "the default boot stays {}",
        if plan.default_is_ours {
            "the passthrough entry"
        } else {
            "the normal entry"
        }
    );
    if !apply {
        outln!("(dry run: --apply makes the change)");
        return Exit::Ok;
    }
    let backup_dir = match snapshot(root, &boot_entry::files_grubby_changes(root)) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("vmrun: backing up the boot files: {e}; nothing changed");
            return Exit::HostProblems;
        }
    };
    match boot_entry::apply(&grubby, &plan) {
        Ok(ran) => {
            for cmd in ran {
                outln!("ran: {cmd}");
            }
            outln!("backup of the boot entries: {}", backup_dir.display());
            outln!(
                "undo: grubby --info=ALL, then grubby --remove-kernel=INDEX for \"{}\" and grubby --set-default-index={default}",
                plan.title
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!(
                "vmrun: {e}; the boot files before the change are in {}",
                backup_dir.display()
            );
            Exit::HostProblems
        }
    }
}

/// Copies `files` (under `root`) into a new dated backup folder.
fn snapshot(root: &HostRoot, files: &[PathBuf]) -> std::io::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let dir = root.path(format!("/var/lib/vmrun/backup/boot-entry-{stamp}"));
    for file in files {
        let rel = file.strip_prefix(root.dir()).unwrap_or(file);
        let to = dir.join(rel.strip_prefix("/").unwrap_or(rel));
        fs::create_dir_all(to.parent().unwrap_or(&dir))?;
        fs::copy(file, &to)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn initramfs(root: &HostRoot, apply: bool) -> Exit {
    let edit = match initramfs::plan(root) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::HostProblems;
        }
    };
    let Some(contents) = edit.contents else {
        outln!(
            "{} already loads {}: nothing to do (if the initramfs was not rebuilt since: {})",
            edit.file.display(),
            initramfs::MODULES.join(", "),
            edit.generator.rebuild().join(" ")
        );
        return Exit::Ok;
    };
    outln!("{} becomes:\n", edit.file.display());
    for line in contents.lines() {
        outln!("    {line}");
    }
    let rebuild = edit.generator.rebuild().join(" ");
    if !apply {
        outln!("\nthen: {rebuild}\n(dry run: --apply writes the file, backing up the old one, and rebuilds)");
        return Exit::Ok;
    }
    let change = match backup::write_with_backup(&root.path(&edit.file), &contents) {
        Ok(change) => change,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::HostProblems;
        }
    };
    outln!("\nwrote {}", change.path.display());
    let argv = edit.generator.rebuild();
    let undo = format!("undo: {}, then {rebuild}", change.undo());
    if !root.is_real() {
        // The generator would rebuild this machine's initramfs, not the
        // tree under VMRUN_HOST_ROOT.
        let dir = root.dir().display();
        outln!("the host root is {dir}: rebuild its initramfs from inside it: chroot {dir} {rebuild}\n{undo}");
        return Exit::Ok;
    }
    let Some(binary) = crate::host::qemu::find_in_path(Path::new(argv[0])) else {
        outln!(
            "{} is not on PATH: rebuild the initramfs yourself: {rebuild}\n{undo}",
            argv[0]
        );
        return Exit::Ok;
    };
    if run_rebuild(&binary, &argv[1..], &rebuild) {
        outln!("initramfs rebuilt: the vfio modules load early from the next boot\n{undo}");
        return Exit::Ok;
    }
    // The initramfs was not rebuilt: the file goes back too, so the host
    // is as it was (exit 1 says so).
    match change.revert() {
        Ok(()) => eprintln!("vmrun: {} is back as it was", change.path.display()),
        Err(e) => eprintln!("vmrun: putting {} back: {e}; {undo}", change.path.display()),
    }
    Exit::HostProblems
}

/// Runs the initramfs rebuild with the terminal attached (it prints its
/// progress); whether it succeeded.
fn run_rebuild(binary: &Path, args: &[&str], shown: &str) -> bool {
    outln!("running: {shown}");
    match Command::new(binary).args(args).status() {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("vmrun: `{shown}` failed ({status})");
            false
        }
        Err(e) => {
            eprintln!("vmrun: could not run `{shown}`: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in generator that logs its arguments and exits with `code`.
    fn stand_in(dir: &Path, code: i32) -> PathBuf {
        let bin = dir.join("update-initramfs");
        let log = dir.join("calls");
        fs::write(
            &bin,
            format!(
                "#!/bin/sh\necho \"$@\" >>'{}'\nexit {code}\n",
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn the_rebuild_runs_with_its_arguments_and_reports_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let argv = initramfs::Generator::InitramfsTools.rebuild();
        let ok = stand_in(tmp.path(), 0);
        assert!(run_rebuild(&ok, &argv[1..], "update-initramfs -u -k all"));
        assert_eq!(
            fs::read_to_string(tmp.path().join("calls")).unwrap(),
            "-u -k all\n"
        );
        let failing = stand_in(tmp.path(), 1);
        assert!(!run_rebuild(&failing, &argv[1..], "x"));
        let missing = tmp.path().join("nowhere");
        assert!(!run_rebuild(&missing, &[], "x"));
    }
}
