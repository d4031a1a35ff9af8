//! `vmrun check [NAME]`: the host's (and the VM's) preconditions, one line
//! each, exit 0 when all pass, 1 with warnings, 2 with failures.

use super::out::{out, outln};
use std::fmt::Write as _;
use std::path::Path;

use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

use crate::host::qemu::{self, find_in_path};
use crate::host::HostRoot;
use crate::plan::{self, PlanContext};
use crate::setup::check::{self, Check, CheckContext, Status};

const DEFAULT_QEMU: &str = "qemu-system-x86_64";

pub(super) fn check(vm: Option<&str>, json: bool) -> i32 {
    let vm = match vm.map(super::load_vm).transpose() {
        Ok(vm) => vm,
        Err(exit) => return exit.code(),
    };
    let dirs = match super::process_dirs() {
        Ok(dirs) => dirs,
        Err(exit) => return exit.code(),
    };
    let binary = vm
        .as_ref()
        .map(|v| v.qemu.binary.clone())
        .unwrap_or_else(|| DEFAULT_QEMU.into());
    let hard = getrlimit(Resource::RLIMIT_MEMLOCK).map(|(_, h)| h).ok();
    let ctx = CheckContext {
        root: HostRoot::from_env(),
        qemu: qemu::probe(&binary, dirs.cache_dir().as_deref()).map_err(|e| e.to_string()),
        swtpm: find_in_path(Path::new("swtpm")).filter(|p| p.is_file()),
        is_root: dirs.is_root,
        memlock_hard: hard.filter(|h| *h != RLIM_INFINITY),
        user_config_dir: dirs.config_home(),
    };
    let mut checks = check::host_checks(&ctx);
    if let Some(vm) = vm {
        let pctx = PlanContext {
            root: ctx.root.clone(),
            dirs,
            qemu_version: None,
        };
        crate::setup::check_vm::relax_host_checks(&vm, &mut checks);
        let plan = plan::plan(vm, &pctx);
        // The plan repeats some host lines (a GPU's missing reset, memlock).
        for c in crate::setup::check_vm::vm_checks(&plan, &ctx) {
            if !checks.contains(&c) {
                checks.push(c);
            }
        }
    }
    let worst = check::worst(&checks);
    if json {
        let value = serde_json::json!({ "status": worst, "checks": checks });
        outln!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        out!("{}", render(&checks));
    }
    match worst {
        Status::Pass => 0,
        Status::Warn => 1,
        Status::Fail => 2,
    }
}

/// One line per check, its fix indented under it, then a count.
pub(super) fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let status = match c.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        let message = c
            .message
            .replace('\n', &format!("\n{:w$}", "", w = width + 8));
        let _ = writeln!(out, "{status}  {:<width$}  {message}", c.name);
        if let Some(fix) = &c.fix {
            let fix = fix.replace('\n', &format!("\n{:w$}", "", w = width + 13));
            let _ = writeln!(out, "{:w$}fix: {fix}", "", w = width + 8);
        }
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let _ = writeln!(
        out,
        "\n{} passed, {} warnings, {} failures",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail)
    );
    out
}
