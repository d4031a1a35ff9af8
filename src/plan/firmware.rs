//! Firmware selection the way libvirt does it: QEMU's firmware descriptors
//! (docs/interop/firmware.json), explicit paths, then a distro fallback list.
//! INTERFACE STUB: the types below are the contract; `resolve` is filled in
//! on the firmware branch.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Firmware;
use crate::host::HostRoot;

/// On-disk format of a firmware image (`raw` on Debian/Arch, `qcow2` on Fedora 39+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

/// Where the choice came from, for `--dry-run` to explain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum FirmwareSource {
    /// A QEMU firmware descriptor (its host path).
    Descriptor(PathBuf),
    /// `[firmware] code`/`vars` in the config.
    Explicit,
    /// No descriptor matched; a known distro path was used.
    Fallback,
}

/// The UEFI firmware picked for a VM. Paths are host paths (not under the
/// `HostRoot`): they go into QEMU's argv as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedFirmware {
    pub code: PathBuf,
    pub code_format: ImageFormat,
    /// The NVRAM template the VM's own VARS copy is made from.
    pub vars_template: PathBuf,
    pub vars_format: ImageFormat,
    pub secure_boot: bool,
    pub enrolled_keys: bool,
    /// `requires-smm`: the command line needs `smm=on` and a secure pflash.
    pub requires_smm: bool,
    pub source: FirmwareSource,
    /// One line on why this firmware was chosen.
    pub reason: String,
}

/// Where to look for descriptors: `HostRoot` plus the user's config dir.
#[derive(Debug, Clone)]
pub struct FirmwareSearch {
    pub root: HostRoot,
    /// `$XDG_CONFIG_HOME` (or `~/.config`); its `qemu/firmware` overrides.
    pub user_config_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("no UEFI firmware found for machine {machine}: install OVMF (apt install ovmf / dnf install edk2-ovmf / pacman -S edk2-ovmf) or set [firmware] code and vars")]
    NotFound { machine: String },
}

/// Picks the UEFI firmware for `fw` on the concrete machine type `machine`
/// (e.g. `pc-q35-7.2`).
pub fn resolve(
    _fw: &Firmware,
    machine: &str,
    _search: &FirmwareSearch,
) -> Result<ResolvedFirmware, FirmwareError> {
    Err(FirmwareError::NotFound {
        machine: machine.to_string(),
    })
}

/// The VM's own VARS copy, named as libvirt names it: `NAME_VARS.fd`
/// (`.qcow2` when the template is qcow2: a copy keeps the template's format).
pub fn vars_copy_name(vm: &str, format: ImageFormat) -> String {
    match format {
        ImageFormat::Raw => format!("{vm}_VARS.fd"),
        ImageFormat::Qcow2 => format!("{vm}_VARS.qcow2"),
    }
}
