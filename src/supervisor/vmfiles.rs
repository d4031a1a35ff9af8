//! The VM's own files in its state dir, made before QEMU starts.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub(crate) struct VmFileError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Copies the firmware's VARS template to the VM's own VARS file, once: it
/// holds the guest's boot entries and Secure Boot state from then on. It
/// stays root's, 0600: QEMU gets it as an open descriptor.
pub(crate) fn ensure_vars_copy(plan: &Plan) -> Result<(), VmFileError> {
    let Some(fw) = &plan.firmware else {
        return Ok(());
    };
    let vars = &plan.paths.vars_file;
    let err = |source| VmFileError {
        path: vars.clone(),
        source,
    };
    if !vars.exists() {
        let tmp = vars.with_extension("tmp");
        fs::copy(&fw.vars_template, &tmp).map_err(|source| VmFileError {
            path: fw.vars_template.clone(),
            source,
        })?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(err)?;
        fs::rename(&tmp, vars).map_err(err)?;
    }
    // An older vmrun gave the copy to QEMU's user: take it back.
    if nix::unistd::geteuid().is_root() {
        let root = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
        nix::unistd::chown(vars, Some(root.0), Some(root.1)).map_err(|e| err(e.into()))?;
    }
    Ok(())
}

/// Opens the log `path` for appending, made mode 0600 if new and set to
/// 0600 if an older vmrun left it readable: a VM's logs show what its
/// guest printed and what the host did, for its owner only.
pub(crate) fn open_private_log(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Makes the console log QEMU appends to (`logfile=` of the console
/// chardev) before QEMU runs: QEMU would create it 0666 less its umask,
/// and it opens an existing file without changing its mode.
pub(crate) fn ensure_console_log(plan: &Plan) -> Result<(), VmFileError> {
    let path = &plan.paths.console_log;
    open_private_log(path)
        .map(drop)
        .map_err(|source| VmFileError {
            path: path.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_log_is_made_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("console.log");
        open_private_log(&log).unwrap();
        assert_eq!(mode(&log), 0o600);
    }

    #[test]
    fn an_old_readable_log_is_made_0600_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("vmrun.log");
        fs::write(&log, "before\n").unwrap();
        fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
        open_private_log(&log).unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(fs::read_to_string(&log).unwrap(), "before\n");
    }

    #[test]
    fn the_console_log_exists_0600_before_qemu_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::plan::PlanContext {
            root: crate::host::HostRoot::new(tmp.path()),
            dirs: crate::plan::DirsEnv {
                is_root: true,
                uid: 0,
                run_base: Some(tmp.path().join("run")),
                state_base: Some(tmp.path().to_path_buf()),
                ..Default::default()
            },
            qemu_version: Some(crate::host::qemu::QemuVersion::new(8, 2, 0)),
        };
        let vm = crate::testing::vm("memory = \"256M\"\n[firmware]\ntype = \"bios\"\n");
        let plan = crate::plan::plan(vm, &ctx);
        fs::create_dir(&plan.paths.state_dir).unwrap();
        ensure_console_log(&plan).unwrap();
        assert_eq!(mode(&plan.paths.console_log), 0o600);
    }
}
