//! The VM's own files in its state dir, made before QEMU starts.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use nix::unistd::{chown, User};

use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub(crate) struct VmFileError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Copies the firmware's VARS template to the VM's own VARS file, once: it
/// holds the guest's boot entries and Secure Boot state from then on. When
/// QEMU runs as another user it must own the copy (the guest writes to it).
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
    if let Some(user) = &plan.qemu_user {
        if let Ok(Some(u)) = User::from_name(user) {
            chown(vars, Some(u.uid), Some(u.gid)).map_err(|e| err(e.into()))?;
        }
    }
    Ok(())
}
