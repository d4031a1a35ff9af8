//! `[qemu]`: which QEMU, which accelerator, which user it runs as, and raw
//! extra arguments.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireQemu {
    binary: Option<String>,
    accel: Option<Accel>,
    user: S<String>,
    #[serde(default)]
    extra_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QemuUser {
    /// A uid of the VM's own (`plan::identity`).
    Auto,
    /// Keep QEMU running as root.
    Root,
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QemuSettings {
    pub binary: PathBuf,
    pub accel: Accel,
    pub user: QemuUser,
    pub extra_args: Vec<String>,
}

pub(crate) fn check(q: WireQemu, v: &mut Checker<'_>) -> QemuSettings {
    // A bare binary name is looked up in PATH by the plan stage.
    let binary = match q.binary {
        Some(b) if b.contains('/') => v.resolve(&b),
        Some(b) => PathBuf::from(b),
        None => PathBuf::from("qemu-system-x86_64"),
    };
    let user = match q.user.map(parts) {
        None => QemuUser::Auto,
        Some((_, u)) if u == "auto" => QemuUser::Auto,
        Some((_, u)) if u == "root" => QemuUser::Root,
        Some((s, u)) => {
            if !is_user_name(&u) {
                v.err("qemu.user", s, K::BadUser(u.clone()));
            }
            QemuUser::Named(u)
        }
    };
    QemuSettings {
        binary,
        accel: q.accel.unwrap_or(Accel::Kvm),
        user,
        extra_args: q.extra_args,
    }
}

/// A `user = "auto" | NAME` key naming a desktop's user (Looking Glass's
/// client, the sound server's): `None` for `auto`. `root` is refused: it
/// has no desktop session, and these users get no root-owned files.
pub(crate) fn desktop_user(
    user: crate::config::checker::S<String>,
    key: &str,
    v: &mut crate::config::checker::Checker<'_>,
) -> Option<String> {
    let (span, name) = crate::config::checker::parts(user?);
    if name == "auto" {
        return None;
    }
    if !is_user_name(&name) || name == "root" {
        v.err(
            key,
            span,
            crate::config::error::ProblemKind::BadUser(name.clone()),
        );
    }
    Some(name)
}

/// A POSIX-portable user name, as `useradd` accepts by default.
pub(crate) fn is_user_name(u: &str) -> bool {
    let mut chars = u.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && u.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{check as check_file, errors};

    #[test]
    fn defaults() {
        let c = check_file("").expect("valid");
        assert_eq!(c.qemu.binary, PathBuf::from("qemu-system-x86_64"));
        assert_eq!(c.qemu.accel, Accel::Kvm);
        assert_eq!(c.qemu.user, QemuUser::Auto);
    }

    #[test]
    fn tcg_is_read() {
        let c = check_file("[qemu]\naccel = \"tcg\"\n").expect("valid");
        assert_eq!(c.qemu.accel, Accel::Tcg);
    }

    #[test]
    fn bad_qemu_user_is_rejected() {
        assert_eq!(
            errors("[qemu]\nuser = \"Bad User\"\n"),
            [K::BadUser("Bad User".into())]
        );
        let c = check_file("[qemu]\nuser = \"root\"\n").expect("valid");
        assert_eq!(c.qemu.user, QemuUser::Root);
    }

    #[test]
    fn binary_with_a_slash_is_relative_to_the_config() {
        let c = check_file("[qemu]\nbinary = \"bin/qemu\"\n").expect("valid");
        assert_eq!(c.qemu.binary, PathBuf::from("/cfg/vms/bin/qemu"));
    }
}
