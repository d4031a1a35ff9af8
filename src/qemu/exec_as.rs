//! Exec'ing a program as another identity, supplementary groups included.
//! std's `CommandExt::groups` is unstable and vmrun forbids `unsafe` (a
//! `pre_exec` closure is unsafe), so the supervisor runs vmrun itself as a
//! hidden verb, `vmrun __exec-as --uid U --gid G --groups A,B -- PROGRAM
//! ARGS...`, which drops root and execs PROGRAM: QEMU never runs a single
//! instruction as root, and opens only what that identity may.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::unistd::{setgroups, setresgid, setresuid, setuid, Gid, Uid};

use crate::plan::QemuIdentity;

/// The hidden verb's name.
pub(crate) const VERB: &str = "__exec-as";

/// The arguments that make `vmrun` exec `program` as `id`.
pub(crate) fn args(id: &QemuIdentity, program: &Path) -> Vec<OsString> {
    let groups: Vec<String> = id.groups.iter().map(u32::to_string).collect();
    let mut a: Vec<OsString> = vec![
        VERB.into(),
        "--uid".into(),
        id.uid.to_string().into(),
        "--gid".into(),
        id.gid.to_string().into(),
    ];
    if !groups.is_empty() {
        a.push("--groups".into());
        a.push(groups.join(",").into());
    }
    a.push("--".into());
    a.push(program.as_os_str().to_owned());
    a
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecAsError {
    #[error("{what}: {source}")]
    Drop {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("uid {0} could take root back after dropping it: refusing to run")]
    Regained(u32),
    #[error("exec {program}: {source}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Becomes `uid`/`gid` with `groups` (real, effective and saved ids, so
/// nothing is left to go back to), sets no_new_privs, and execs `program`.
/// Returns only on failure. The fds the supervisor placed stay open: exec
/// keeps every fd without FD_CLOEXEC.
pub(crate) fn exec_as(
    uid: u32,
    gid: u32,
    groups: &[u32],
    program: &OsString,
    args: &[OsString],
) -> ExecAsError {
    if let Err(e) = drop_to(uid, gid, groups) {
        return e;
    }
    let source = std::process::Command::new(program).args(args).exec();
    ExecAsError::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    }
}

pub(crate) fn drop_to(uid: u32, gid: u32, groups: &[u32]) -> Result<(), ExecAsError> {
    let step = |what| move |source| ExecAsError::Drop { what, source };
    let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    // Groups first: only root may set them, and gid before uid likewise.
    setgroups(&groups).map_err(step("setgroups"))?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    setresgid(g, g, g).map_err(step("setresgid"))?;
    setresuid(u, u, u).map_err(step("setresuid"))?;
    if uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err(ExecAsError::Regained(uid));
    }
    // No setuid binary or file capability gives back what was dropped.
    nix::sys::prctl::set_no_new_privs().map_err(step("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    Ok(())
}
