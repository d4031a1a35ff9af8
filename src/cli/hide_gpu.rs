//! `vmrun host hide-gpu VM|ADDRESS [--apply]` and `--undo`: prints each
//! file and its content (dry by default); `--apply` writes them, each
//! backed up first (`setup/backup.rs`), then has udevd apply the rule.

use std::path::Path;
use std::process::Command;

use super::out::outln;
use crate::config::PciAddress;
use crate::exit::Exit;
use crate::host::HostRoot;
use crate::plan::hostdev;
use crate::setup::backup;
use crate::setup::hide_gpu::{self, HideError, ENV_FILE, RULE_FILE};

pub(super) fn hide_gpu(root: &HostRoot, target: Option<&str>, apply: bool, undo: bool) -> Exit {
    if undo {
        return unhide(root, apply);
    }
    let targets = match target.map(|t| targets(root, t)) {
        Some(Ok(t)) => t,
        Some(Err(exit)) => return exit,
        None => return Exit::Usage,
    };
    let plan = match hide_gpu::plan(root, &targets) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::HostProblems;
        }
    };
    let list = |a: &[PciAddress]| {
        a.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    outln!(
        "hide {} from desktop compositors; they keep {}",
        list(&plan.hidden),
        list(&plan.kept)
    );
    for (path, text) in &plan.files {
        outln!("\n{} becomes:\n", path.display());
        for line in text.lines() {
            outln!("    {line}");
        }
    }
    outln!("\nthen: {}", reload_commands().join("; "));
    if !apply {
        outln!("(dry run: --apply writes the files, backing up any old ones, and reloads the udev rules)");
        return Exit::Ok;
    }
    let mut undo = Vec::new();
    for (path, text) in &plan.files {
        let at = root.path(path);
        if std::fs::read_to_string(&at).is_ok_and(|t| t == *text) {
            outln!("{} is current", at.display());
            undo.push(format!("rm '{}'", at.display()));
            continue;
        }
        // Our own earlier file goes without a backup: only a file of
        // someone else's is kept for the undo.
        if hide_gpu::is_ours(&at) {
            if let Err(e) = std::fs::remove_file(&at) {
                eprintln!("vmrun: replacing {}: {e}", at.display());
                return Exit::HostProblems;
            }
        }
        match backup::write_with_backup(&at, text) {
            Ok(change) => {
                outln!("wrote {}", change.path.display());
                undo.push(change.undo());
            }
            Err(e) => {
                eprintln!("vmrun: {e}");
                return Exit::HostProblems;
            }
        }
    }
    reload(root);
    outln!("the desktop still holds what it opened: restart the display manager once (or log out and in) to let go of {}", list(&plan.hidden));
    outln!(
        "undo: vmrun host hide-gpu --undo --apply (or: {})",
        undo.join("; ")
    );
    Exit::Ok
}

/// The GPUs named by `target`: a PCI address, or the display functions
/// among the VM's `[[hostdev]]`.
fn targets(root: &HostRoot, target: &str) -> Result<Vec<PciAddress>, Exit> {
    if let Ok(a) = target.parse::<PciAddress>() {
        return Ok(vec![a]);
    }
    let vm = super::load_vm(target)?;
    let mut findings = Vec::new();
    let gpus: Vec<PciAddress> = hostdev::plan_hostdevs(&vm.hostdevs, root, &mut findings)
        .into_iter()
        .filter_map(|h| h.device)
        .filter(|d| d.is_display())
        .map(|d| d.address)
        .collect();
    if gpus.is_empty() {
        for f in &findings {
            eprintln!("{f}");
        }
        eprintln!(
            "vmrun: {}",
            HideError::NoGpu {
                name: vm.name.to_string()
            }
        );
        return Err(Exit::HostProblems);
    }
    Ok(gpus)
}

/// `--undo`: each file hide-gpu wrote goes back to its backup, or away.
fn unhide(root: &HostRoot, apply: bool) -> Exit {
    let present: Vec<_> = [RULE_FILE, ENV_FILE]
        .into_iter()
        .map(|f| root.path(f))
        .filter(|p| p.exists())
        .collect();
    if present.is_empty() {
        outln!("{RULE_FILE} and {ENV_FILE} are absent: nothing to undo");
        return Exit::Ok;
    }
    for p in &present {
        // The first backup is the file from before vmrun (backup.rs never
        // overwrites it); one that is vmrun's own is no original.
        let original = std::path::PathBuf::from(format!("{}.vmrun-backup", p.display()));
        let change = backup::Change {
            path: p.clone(),
            backup: (original.exists() && !hide_gpu::is_ours(&original)).then_some(original),
        };
        if !apply {
            outln!("would run: {}", change.undo());
            continue;
        }
        match change.revert() {
            Ok(()) => {
                outln!("ran: {}", change.undo());
            }
            Err(e) => {
                eprintln!("vmrun: {}: {e}", change.undo());
                return Exit::HostProblems;
            }
        }
    }
    if !apply {
        outln!(
            "then: {}\n(dry run: --apply does it)",
            reload_commands().join("; ")
        );
        return Exit::Ok;
    }
    reload(root);
    outln!("restart the display manager once for the desktop to use the GPU again");
    Exit::Ok
}

/// udevd reads rule files again on `control --reload`; a `change` event
/// re-runs the rules on each card so its `ID_SEAT` is set now, not at the
/// next boot. All cards: the kept ones get their links, and a card
/// no longer hidden loses its seat.
fn reload_commands() -> Vec<String> {
    vec![
        "udevadm control --reload".into(),
        "udevadm trigger --action=change --subsystem-match=drm --sysname-match='card[0-9]*'".into(),
        "udevadm settle".into(),
    ]
}

/// Runs the reload on a real host with udevd running; says so otherwise.
fn reload(root: &HostRoot) {
    let shown = reload_commands().join("; ");
    // udevd's control socket exists while it runs (systemd-udevd,
    // eudev's udevd).
    if !root.is_real() || !Path::new("/run/udev/control").exists() {
        outln!("udevd is not running here (or the host root is a tree): the rule applies at the next boot, or run: {shown}");
        return;
    }
    let runs: [&[&str]; 3] = [
        &["control", "--reload"],
        &[
            "trigger",
            "--action=change",
            "--subsystem-match=drm",
            "--sysname-match=card[0-9]*",
        ],
        &["settle", "--timeout=30"],
    ];
    for args in runs {
        match Command::new("udevadm").args(args).status() {
            Ok(s) if s.success() => {
                outln!("ran: udevadm {}", args.join(" "));
            }
            Ok(s) => eprintln!(
                "vmrun: udevadm {} failed ({s}); run: {shown}",
                args.join(" ")
            ),
            Err(e) => eprintln!("vmrun: could not run udevadm: {e}; run: {shown}"),
        }
    }
}
