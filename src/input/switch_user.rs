//! Who runs the `on_switch` command. vmrun runs as root; the command is
//! the desktop user's (a `ddcutil` switching the monitor's input, a
//! notification), so it runs as that user: the one behind `sudo`
//! (`SUDO_UID`/`SUDO_GID`, set by sudo(8)), else the owner of the active
//! session on `seat0` (`ACTIVE_UID=` in logind's `/run/systemd/seats/seat0`),
//! else `[input] on_switch_user` must say who, `"root"` included: a
//! command that runs as root by accident is refused.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

use crate::config::Input;

/// logind's state file of the first seat (systemd's `src/login/logind-seat.c`
/// writes `ACTIVE_UID=` for the session in the foreground).
pub(crate) const SEAT0: &str = "/run/systemd/seats/seat0";

/// The user `on_switch` runs as; `None` in `resolve` means vmrun's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
    pub name: String,
    pub home: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SwitchUserError {
    #[error("[input] on_switch would run as root: vmrun was not started through sudo and no desktop session is active on seat0; set `on_switch_user` under [input] to the user it is for (or to \"root\" if it must be root)")]
    NoUser,
    #[error("[input] on_switch_user = \"{0}\": no such user")]
    UnknownUser(String),
    #[error("{var} = \"{value}\" is not a uid of this machine")]
    BadSudo { var: &'static str, value: String },
}

/// What `resolve` needs from the process.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    pub euid: u32,
    pub sudo_uid: Option<String>,
    pub sudo_gid: Option<String>,
    /// logind's seat file (`SEAT0`, a fake one in the tests).
    pub seat: PathBuf,
}

impl Caller {
    pub(crate) fn from_process() -> Self {
        Self {
            euid: nix::unistd::geteuid().as_raw(),
            sudo_uid: std::env::var("SUDO_UID").ok(),
            sudo_gid: std::env::var("SUDO_GID").ok(),
            seat: PathBuf::from(SEAT0),
        }
    }
}

/// Who runs `input`'s `on_switch`: `None` for vmrun itself (it is not
/// root, or the config asks for root, or there is no command).
pub(crate) fn resolve(input: &Input, caller: &Caller) -> Result<Option<RunAs>, SwitchUserError> {
    if input.on_switch.is_empty() {
        return Ok(None);
    }
    match input.on_switch_user.as_deref() {
        Some("root") => return Ok(None),
        Some(name) => {
            return match User::from_name(name) {
                Ok(Some(u)) => Ok(Some(run_as(&u, None))),
                _ => Err(SwitchUserError::UnknownUser(name.to_string())),
            }
        }
        None => {}
    }
    if caller.euid != 0 {
        return Ok(None);
    }
    desktop_user(caller)?
        .map(Some)
        .ok_or(SwitchUserError::NoUser)
}

/// The desktop's user, as root: the one behind `sudo`, else the owner of
/// seat0's active session; `None` when neither names a user but root.
pub(crate) fn desktop_user(caller: &Caller) -> Result<Option<RunAs>, SwitchUserError> {
    if let Some(uid) = &caller.sudo_uid {
        let user = uid
            .parse::<u32>()
            .ok()
            .and_then(|u| User::from_uid(Uid::from_raw(u)).ok().flatten())
            .ok_or_else(|| SwitchUserError::BadSudo {
                var: "SUDO_UID",
                value: uid.clone(),
            })?;
        let gid = caller.sudo_gid.as_deref().and_then(|g| g.parse().ok());
        // sudo -u root (or root's own sudo) names root: no desktop user.
        if !user.uid.is_root() {
            return Ok(Some(run_as(&user, gid)));
        }
    }
    let seat_user = active_uid(&caller.seat)
        .filter(|u| *u != 0)
        .and_then(|u| User::from_uid(Uid::from_raw(u)).ok().flatten());
    Ok(seat_user.map(|user| run_as(&user, None)))
}

/// The user called `name`, if this host has one.
pub(crate) fn named_user(name: &str) -> Option<RunAs> {
    User::from_name(name)
        .ok()
        .flatten()
        .map(|u| run_as(&u, None))
}

fn run_as(user: &User, gid: Option<u32>) -> RunAs {
    let gid = gid.unwrap_or(user.gid.as_raw());
    // getgrouplist(3): NSS's view, LDAP and systemd-userdb users included.
    let groups = std::ffi::CString::new(user.name.as_str())
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, Gid::from_raw(gid)).ok())
        .map(|gs| gs.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_default();
    RunAs {
        uid: user.uid.as_raw(),
        gid,
        groups,
        name: user.name.clone(),
        home: user.dir.clone(),
    }
}

/// `ACTIVE_UID=N` of a logind seat file.
fn active_uid(seat: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(seat).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("ACTIVE_UID="))
        .and_then(|v| v.trim().parse().ok())
}

impl RunAs {
    /// `program` as this user, with the user's supplementary groups (`i2c`
    /// for ddcutil, `video` for a backlight): as root, vmrun execs itself
    /// as `__exec-as`, which sets them (std's uid switch drops them, and
    /// setting them needs a pre_exec hook, which is `unsafe`); otherwise
    /// uid and gid through std, which a non-root caller can only keep. The
    /// user's own HOME, USER, LOGNAME and, when it exists,
    /// XDG_RUNTIME_DIR, where desktop tools find their session.
    pub(crate) fn command(&self, program: &str) -> std::io::Result<tokio::process::Command> {
        let mut cmd = if nix::unistd::geteuid().is_root() {
            let ids = crate::qemu::exec_as::UserIds {
                uid: self.uid,
                gid: self.gid,
                groups: self.groups.clone(),
            };
            let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
            cmd.arg(crate::qemu::exec_as::VERB)
                .args(ids.to_args())
                .arg("--")
                .arg(program);
            cmd
        } else {
            let mut cmd = tokio::process::Command::new(program);
            cmd.uid(self.uid).gid(Gid::from_raw(self.gid).as_raw());
            cmd
        };
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .current_dir("/");
        let runtime = PathBuf::from(format!("/run/user/{}", self.uid));
        if runtime.is_dir() {
            cmd.env("XDG_RUNTIME_DIR", runtime);
        } else {
            cmd.env_remove("XDG_RUNTIME_DIR");
        }
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InputMode, Toggle};

    fn input(on_switch_user: Option<&str>) -> Input {
        Input {
            keyboard: Some("/dev/input/kbd".into()),
            mouse: None,
            toggle: Toggle::default(),
            mode: InputMode::Router,
            on_switch: vec!["ddcutil".into()],
            on_switch_user: on_switch_user.map(Into::into),
        }
    }

    fn root_caller(seat: &Path) -> Caller {
        Caller {
            euid: 0,
            seat: seat.to_path_buf(),
            ..Caller::default()
        }
    }

    // uid 65534 (`nobody`) is in every Debian /etc/passwd.
    const NOBODY: u32 = 65534;

    #[test]
    fn under_sudo_the_command_is_the_invoking_users() {
        let tmp = tempfile::tempdir().unwrap();
        let caller = Caller {
            sudo_uid: Some(NOBODY.to_string()),
            sudo_gid: Some("4242".into()),
            ..root_caller(&tmp.path().join("seat0"))
        };
        let who = resolve(&input(None), &caller).unwrap().unwrap();
        assert_eq!((who.uid, who.gid), (NOBODY, 4242));
        assert_eq!(who.name, "nobody");
    }

    #[test]
    fn without_sudo_the_active_seat_owner_runs_it() {
        let tmp = tempfile::tempdir().unwrap();
        let seat = tmp.path().join("seat0");
        std::fs::write(
            &seat,
            format!("IS_SEAT0=1\nACTIVE=3\nACTIVE_UID={NOBODY}\n"),
        )
        .unwrap();
        let who = resolve(&input(None), &root_caller(&seat)).unwrap().unwrap();
        assert_eq!(who.uid, NOBODY);
    }

    #[test]
    fn as_root_with_nobody_to_run_it_for_it_is_refused_unless_the_config_says_root() {
        let tmp = tempfile::tempdir().unwrap();
        let caller = root_caller(&tmp.path().join("seat0"));
        assert_eq!(resolve(&input(None), &caller), Err(SwitchUserError::NoUser));
        // A root session on the seat is no desktop user either.
        std::fs::write(&caller.seat, "ACTIVE_UID=0\n").unwrap();
        assert_eq!(resolve(&input(None), &caller), Err(SwitchUserError::NoUser));
        assert_eq!(resolve(&input(Some("root")), &caller), Ok(None));
    }

    #[test]
    fn a_configured_user_wins_and_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let caller = Caller {
            sudo_uid: Some("0".into()),
            ..root_caller(&tmp.path().join("seat0"))
        };
        let who = resolve(&input(Some("nobody")), &caller).unwrap().unwrap();
        assert_eq!(who.uid, NOBODY);
        assert_eq!(
            resolve(&input(Some("no-such-user-x")), &caller),
            Err(SwitchUserError::UnknownUser("no-such-user-x".into()))
        );
    }

    #[test]
    fn not_root_or_no_command_runs_as_vmrun_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let caller = Caller {
            euid: 1000,
            ..root_caller(&tmp.path().join("seat0"))
        };
        assert_eq!(resolve(&input(None), &caller), Ok(None));
        let mut none = input(None);
        none.on_switch.clear();
        assert_eq!(resolve(&none, &root_caller(&caller.seat)), Ok(None));
    }
}
