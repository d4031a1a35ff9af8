//! As root, the programs a config names (`[qemu] binary`, `[input]
//! on_switch`) run only if no other user could have written them: a config
//! given by path is the caller's choice, but a program in another user's
//! directory would run that user's code as root.

use std::path::{Path, PathBuf};

use crate::config::trust::{self, Untrusted};
use crate::config::VmConfig;
use crate::exit::Exit;
use crate::host::qemu::find_in_path;

/// A program of the config that root must not run.
#[derive(Debug)]
pub(super) struct Refused {
    pub key: &'static str,
    pub path: PathBuf,
    pub reason: Untrusted,
}

/// Refuses (exit 2, each program named) when running as root and a program
/// the config names is not root's alone; a no-op for other users.
pub(super) fn check(vm: &VmConfig) -> Result<(), Exit> {
    if !trust::running_as_root() {
        return Ok(());
    }
    let refused = refused(vm);
    for r in &refused {
        eprintln!(
            "vmrun: {}: {} = {}: not run as root: {}; use a program that root owns and no other user can write (nor any directory above it)",
            vm.source.display(),
            r.key,
            r.path.display(),
            r.reason
        );
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Exit::Usage)
    }
}

/// The programs of `vm` root must not run. One not found is left to the
/// plan, which says so.
fn refused(vm: &VmConfig) -> Vec<Refused> {
    let mut programs: Vec<(&'static str, &Path)> = vec![("[qemu] binary", &vm.qemu.binary)];
    if let Some(program) = vm.input.as_ref().and_then(|i| i.on_switch.first()) {
        programs.push(("[input] on_switch", Path::new(program)));
    }
    programs
        .into_iter()
        .filter_map(|(key, program)| {
            let path = find_in_path(program)?;
            if !path.exists() {
                return None;
            }
            let reason = trust::root_may_use_file(&path).err()?;
            Some(Refused { key, path, reason })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn vm_with(binary: &Path, on_switch: &Path) -> VmConfig {
        let text = format!(
            "memory = \"64M\"\n[qemu]\nbinary = \"{}\"\n[input]\nkeyboard = \"/dev/null\"\non_switch = [\"{}\", \"x\"]\n",
            binary.display(),
            on_switch.display()
        );
        crate::config::load_str("v", Path::new("/nonexistent/v.toml"), &text)
            .map_err(|e| crate::config::render(&e))
            .unwrap()
    }

    #[test]
    fn programs_another_user_could_change_are_refused_by_key() {
        // Runs as root (here and in CI).
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let qemu = theirs.join("qemu");
        std::fs::write(&qemu, "#!/bin/sh\n").unwrap();
        let hook = tmp.path().join("hook");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o777)).unwrap();
        let found = refused(&vm_with(&qemu, &hook));
        let keys: Vec<(&str, &Path)> = found.iter().map(|r| (r.key, r.path.as_path())).collect();
        assert_eq!(
            keys,
            [
                ("[qemu] binary", qemu.as_path()),
                ("[input] on_switch", hook.as_path())
            ]
        );
        assert!(matches!(
            found[0].reason,
            Untrusted::Owner { owner: 65534, .. }
        ));
        assert!(matches!(found[1].reason, Untrusted::Writable { .. }));
    }

    #[test]
    fn roots_programs_are_run() {
        let sh = Path::new("/bin/sh");
        assert!(refused(&vm_with(sh, sh)).is_empty());
    }
}
