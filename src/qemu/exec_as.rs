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

/// The identity a hidden verb (`__exec-as`, `__open-as`) becomes. Its
/// flags are spelled once: clap parses them (the struct is flattened into
/// both verbs) and `to_args` writes them from the same names.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub(crate) struct UserIds {
    #[arg(long = UID)]
    pub uid: u32,
    #[arg(long = GID)]
    pub gid: u32,
    #[arg(long = GROUPS, value_delimiter = ',')]
    pub groups: Vec<u32>,
}

const UID: &str = "uid";
const GID: &str = "gid";
const GROUPS: &str = "groups";

impl UserIds {
    /// The flags that parse back to `self`.
    pub(crate) fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            format!("--{UID}").into(),
            self.uid.to_string().into(),
            format!("--{GID}").into(),
            self.gid.to_string().into(),
        ];
        // An empty `--groups ''` would parse as one unparsable group.
        if !self.groups.is_empty() {
            let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            a.push(format!("--{GROUPS}").into());
            a.push(groups.join(",").into());
        }
        a
    }
}

impl From<&QemuIdentity> for UserIds {
    fn from(id: &QemuIdentity) -> Self {
        UserIds {
            uid: id.uid,
            gid: id.gid,
            groups: id.groups.clone(),
        }
    }
}

/// The arguments that make `vmrun` exec `program` as `id`.
pub(crate) fn args(id: &QemuIdentity, program: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![VERB.into()];
    a.extend(UserIds::from(id).to_args());
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
pub(crate) fn exec_as(ids: &UserIds, program: &OsString, args: &[OsString]) -> ExecAsError {
    if let Err(e) = drop_to(ids) {
        return e;
    }
    let source = std::process::Command::new(program).args(args).exec();
    ExecAsError::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    }
}

pub(crate) fn drop_to(ids: &UserIds) -> Result<(), ExecAsError> {
    let UserIds { uid, gid, groups } = ids;
    let (uid, gid) = (*uid, *gid);
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
