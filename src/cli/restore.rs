//! `vmrun restore [NAME|--all]`: after a crash or a `kill -9` of vmrun,
//! stops a QEMU left running and replays the VM's journal. Works from a
//! text console or over SSH: it needs nothing but the run dir.

use super::out::outln;
use std::path::PathBuf;

use super::target::{known_vm, with_run_dirs};
use crate::exit::Exit;
use crate::host::HostRoot;
use crate::plan::VmPaths;
use crate::prepare::kernel::RealKernel;
use crate::prepare::Host;
use crate::supervisor::rundir::{supervisor_pid, RunDir, RunDirError};
use crate::teardown;

pub(super) fn restore(vm: Option<&str>, all: bool) -> Exit {
    let root = match HostRoot::for_changes("restore") {
        Ok(root) => root,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::Usage;
        }
    };
    let targets: Vec<(String, VmPaths)> = if all {
        let dirs = match super::process_dirs() {
            Ok(dirs) => dirs,
            Err(exit) => return exit,
        };
        with_run_dirs(&dirs)
            .into_iter()
            .map(|(name, paths)| (name.to_string(), paths))
            .collect()
    } else {
        match vm.map(known_vm) {
            Some(Ok((name, paths))) => vec![(name.to_string(), paths)],
            Some(Err(exit)) => return exit,
            None => {
                eprintln!("vmrun: name a VM, or --all");
                return Exit::Usage;
            }
        }
    };
    let mut worst = Exit::Ok;
    for (name, paths) in &targets {
        let exit = restore_one(name, paths, &root);
        if exit.code() > worst.code() {
            worst = exit;
        }
    }
    if targets.is_empty() {
        outln!("nothing to restore");
    }
    worst
}

fn restore_one(name: &str, paths: &VmPaths, root: &HostRoot) -> Exit {
    if let Some(pid) = supervisor_pid(paths) {
        eprintln!("vmrun: {name} is running (supervisor pid {pid}); `vmrun stop {name}` restores the host when it ends");
        return Exit::HostProblems;
    }
    // A VM that ran and ended cleanly left no run dir: nothing to stop or
    // give back, and no dir to create just to remove it.
    if !paths.run_dir.exists() {
        outln!("{name}: nothing to restore");
        return Exit::Ok;
    }
    let (run_dir, leftovers) = match RunDir::acquire(name, paths) {
        Ok(v) => v,
        Err(e @ RunDirError::QemuSurvived { .. }) => {
            eprintln!("vmrun: {name}: {e}");
            return Exit::RestoreIncomplete;
        }
        Err(e) => {
            eprintln!("vmrun: {name}: {e}");
            return Exit::HostProblems;
        }
    };
    if let Some(pid) = leftovers.killed_qemu {
        outln!("{name}: stopped the QEMU (pid {pid}) its dead supervisor left running");
    }
    let kernel = RealKernel::default();
    let journal: PathBuf = paths.run_dir.join("journal");
    let report = teardown::replay(&journal, &Host::new(root, &kernel));
    for step in &report.steps {
        match &step.problem {
            None => outln!("{name}: {}: ok", step.what),
            Some(p) => outln!("{name}: {}: FAILED: {p}", step.what),
        };
    }
    if report.complete() {
        run_dir.finish(None);
        if report.steps.is_empty() {
            outln!("{name}: nothing to restore");
        } else {
            outln!("{name}: host restored");
        }
        Exit::Ok
    } else {
        for p in report.problems() {
            eprintln!("vmrun: {name}: not restored: {p}");
        }
        eprintln!("vmrun: {name}: the journal is kept in {}; fix the above and run `vmrun restore {name}` again", journal.display());
        run_dir.finish(Some(&journal));
        Exit::RestoreIncomplete
    }
}
