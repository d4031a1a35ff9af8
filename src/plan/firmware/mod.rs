//! Firmware selection the way libvirt does it: explicit `[firmware]` paths,
//! else QEMU's firmware descriptors (docs/interop/firmware.json) matched
//! like `qemuFirmwareMatchDomain`, else a list of known distro paths.

mod descriptor;
mod fallback;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Firmware, FirmwareKind};
use crate::host::HostRoot;

use descriptor::Request;

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
    /// Descriptors that could not be read or parsed (and were skipped), and
    /// oddities in the chosen one; for `--dry-run` and the log.
    pub warnings: Vec<String>,
}

/// Where to look for descriptors: `HostRoot` plus the user's config dir.
#[derive(Debug, Clone)]
pub(crate) struct FirmwareSearch {
    pub root: HostRoot,
    /// `$XDG_CONFIG_HOME` (or `~/.config`); its `qemu/firmware` overrides.
    /// None for root, which reads only the root-owned system dirs.
    pub user_config_dir: Option<PathBuf>,
}

const INSTALL_HINT: &str = "install OVMF (apt install ovmf / dnf install edk2-ovmf / pacman -S edk2-ovmf) or set [firmware] code and vars";

#[derive(Debug, thiserror::Error)]
pub(crate) enum FirmwareError {
    #[error("[firmware] kind is bios: there is no UEFI firmware to resolve")]
    NotUefi,
    #[error(
        "no UEFI firmware found for machine {machine} ({}); searched {}{}: {INSTALL_HINT}",
        describe_request(*secure_boot),
        join_paths(searched),
        describe_rejected(rejected)
    )]
    NotFound {
        machine: String,
        secure_boot: Option<bool>,
        /// Descriptor directories, then the known image paths.
        searched: Vec<PathBuf>,
        /// `NAME: why` for each descriptor that was read but did not match.
        rejected: Vec<String>,
    },
    #[error("[firmware] names {}, which does not exist: fix the path or remove it to let vmrun pick the firmware", path.display())]
    ExplicitMissing { path: PathBuf },
}

fn describe_request(secure_boot: Option<bool>) -> &'static str {
    match secure_boot {
        Some(true) => "Secure Boot with enrolled keys required",
        Some(false) => "Secure Boot refused",
        None => "Secure Boot either way",
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

fn describe_rejected(rejected: &[String]) -> String {
    if rejected.is_empty() {
        String::new()
    } else {
        format!("; descriptors not matching: {}", rejected.join(", "))
    }
}

/// Picks the UEFI firmware for `fw` on the machine type `machine`: the
/// concrete one (`pc-q35-7.2`) as QEMU/libvirt match it, or the alias
/// `q35`/`pc` (see `descriptor::machine_matches`).
pub(crate) fn resolve(
    fw: &Firmware,
    machine: &str,
    search: &FirmwareSearch,
) -> Result<ResolvedFirmware, FirmwareError> {
    if fw.kind != FirmwareKind::Uefi {
        return Err(FirmwareError::NotUefi);
    }
    let root = &search.root;
    if let Some(files) = &fw.files {
        return explicit(fw, &files.code, &files.vars, root);
    }

    let req = Request {
        machine,
        secure_boot: fw.secure_boot,
    };
    let (mut searched, rejected, warnings) = match from_descriptors(&req, search) {
        Ok(found) => return Ok(found),
        Err(nothing) => nothing,
    };
    if let Some(known) = fallback::find(root, machine, fw.secure_boot) {
        return Ok(ResolvedFirmware {
            code: known.code.into(),
            code_format: known.format,
            vars_template: known.vars.into(),
            vars_format: known.format,
            secure_boot: known.secure_boot,
            enrolled_keys: known.enrolled_keys,
            requires_smm: known.secure_boot,
            source: FirmwareSource::Fallback,
            reason: format!(
                "no descriptor matched; known path {}: {}",
                known.code,
                describe_features(known.secure_boot, known.enrolled_keys)
            ),
            warnings,
        });
    }
    searched.extend(fallback::searched(root));
    Err(FirmwareError::NotFound {
        machine: machine.to_string(),
        secure_boot: fw.secure_boot,
        searched,
        rejected,
    })
}

/// What the descriptor search left when nothing matched: the directories
/// searched, `NAME: why` per rejected descriptor, warnings.
type NoMatch = (Vec<PathBuf>, Vec<String>, Vec<String>);

/// The first descriptor, by file name, that satisfies `req`.
fn from_descriptors(req: &Request, search: &FirmwareSearch) -> Result<ResolvedFirmware, NoMatch> {
    let mut warnings = Vec::new();
    let (candidates, searched) = descriptor::collect(search, &mut warnings);
    let mut rejected = Vec::new();
    for candidate in candidates {
        let wire = match descriptor::load(&candidate) {
            Ok(wire) => wire,
            Err(warning) => {
                warnings.push(warning);
                continue;
            }
        };
        match descriptor::evaluate(&candidate, &wire, req, &search.root) {
            Ok(mut firmware) => {
                warnings.append(&mut firmware.warnings);
                firmware.warnings = warnings;
                return Ok(firmware);
            }
            Err(why) => rejected.push(format!("{}: {why}", candidate.name)),
        }
    }
    Err((searched, rejected, warnings))
}

fn describe_features(secure_boot: bool, enrolled_keys: bool) -> &'static str {
    match (secure_boot, enrolled_keys) {
        (true, true) => "secure-boot + enrolled-keys",
        (true, false) => "secure-boot, no enrolled keys",
        (false, _) => "no secure-boot",
    }
}

/// `[firmware] code` + `vars` as given.
fn explicit(
    fw: &Firmware,
    code: &Path,
    vars: &Path,
    root: &HostRoot,
) -> Result<ResolvedFirmware, FirmwareError> {
    ensure_exists(root, code)?;
    ensure_exists(root, vars)?;
    let secure_code = looks_secure(code);
    let secure_boot = fw.secure_boot.unwrap_or(secure_code);
    let mut warnings = Vec::new();
    if fw.secure_boot == Some(false) && secure_code {
        warnings.push(format!(
            "{} looks like a Secure Boot build: SMM is enabled for it anyway",
            code.display()
        ));
    }
    Ok(ResolvedFirmware {
        code: code.to_path_buf(),
        code_format: format_from_extension(code),
        vars_template: vars.to_path_buf(),
        vars_format: format_from_extension(vars),
        secure_boot,
        // Asking for Secure Boot with one's own VARS means trusting them to
        // hold keys; otherwise only distro names tell.
        enrolled_keys: fw.secure_boot == Some(true) || (secure_boot && looks_enrolled(vars)),
        // OVMF built with SMM_REQUIRE (every secboot build) stops early
        // without `smm=on`, whatever the user wants for Secure Boot itself.
        requires_smm: fw.secure_boot == Some(true) || secure_code,
        source: FirmwareSource::Explicit,
        reason: "[firmware] code and vars from the config".into(),
        warnings,
    })
}

fn ensure_exists(root: &HostRoot, path: &Path) -> Result<(), FirmwareError> {
    if root.path(path).is_file() {
        Ok(())
    } else {
        Err(FirmwareError::ExplicitMissing {
            path: path.to_path_buf(),
        })
    }
}

fn file_name_lowercase(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Heuristic for an explicit code image: distros name their SMM/Secure Boot
/// builds `*secboot*` (Debian, Fedora, Arch), `*.ms.*` (Debian's alias) or
/// `*secure*` (QEMU's own `edk2-x86_64-secure-code.fd`).
fn looks_secure(code: &Path) -> bool {
    let name = file_name_lowercase(code);
    ["secboot", ".ms.", "secure"]
        .iter()
        .any(|s| name.contains(s))
}

/// Heuristic for an explicit VARS template with Microsoft's keys: Debian's
/// `OVMF_VARS_4M.ms.fd`, Fedora's `OVMF_VARS_4M.secboot.qcow2`.
fn looks_enrolled(vars: &Path) -> bool {
    let name = file_name_lowercase(vars);
    ["secboot", ".ms.", "enrolled"]
        .iter()
        .any(|s| name.contains(s))
}

fn format_from_extension(path: &Path) -> ImageFormat {
    match path.extension() {
        Some(ext) if ext.eq_ignore_ascii_case("qcow2") => ImageFormat::Qcow2,
        _ => ImageFormat::Raw,
    }
}

/// A descriptor's `format` string; `None` for formats QEMU's pflash cannot
/// take (libvirt accepts only these two).
fn image_format(format: &str) -> Option<ImageFormat> {
    match format {
        "raw" => Some(ImageFormat::Raw),
        "qcow2" => Some(ImageFormat::Qcow2),
        _ => None,
    }
}

/// The file name of a VM's own VARS copy in its state dir, as libvirt names
/// it (`<nvramDir>/<name>_VARS.fd`, `.qcow2` for a qcow2 template).
pub(crate) fn vars_copy_name(vm: &str, format: ImageFormat) -> String {
    match format {
        ImageFormat::Raw => format!("{vm}_VARS.fd"),
        ImageFormat::Qcow2 => format!("{vm}_VARS.qcow2"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FirmwareFiles;
    use crate::testing::{TestHost, Tree};

    const MACHINE: &str = "pc-q35-7.2";

    fn search(root: HostRoot) -> FirmwareSearch {
        FirmwareSearch {
            root,
            user_config_dir: None,
        }
    }

    /// Debian's descriptors, in the fixture desktop.
    fn debian() -> FirmwareSearch {
        search(Tree::DebianFirmware.root())
    }

    fn fedora() -> FirmwareSearch {
        search(Tree::FedoraFirmware.root())
    }

    fn uefi(secure_boot: Option<bool>) -> Firmware {
        Firmware {
            kind: FirmwareKind::Uefi,
            secure_boot,
            files: None,
        }
    }

    fn explicit_fw(secure_boot: Option<bool>, code: &str, vars: &str) -> Firmware {
        let files = FirmwareFiles {
            code: code.into(),
            vars: vars.into(),
        };
        Firmware {
            files: Some(files),
            ..uefi(secure_boot)
        }
    }

    fn descriptor_name(r: &ResolvedFirmware) -> String {
        match &r.source {
            FirmwareSource::Descriptor(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
            other => panic!("expected a descriptor, got {other:?}"),
        }
    }

    /// A descriptor for a split raw pair with `features`.
    fn descriptor_json(code: &str, vars: &str, features: &[&str]) -> String {
        serde_json::json!({
            "interface-types": ["uefi"],
            "mapping": {
                "device": "flash",
                "executable": {"filename": code, "format": "raw"},
                "nvram-template": {"filename": vars, "format": "raw"}
            },
            "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
            "features": features
        })
        .to_string()
    }

    /// Firmware files on a `TestHost`.
    trait WithFirmware {
        /// A plain (no Secure Boot) descriptor named `name` in `dir` with its images.
        fn plain(self, dir: &str, name: &str, code: &str) -> Self;
        fn search(&self) -> FirmwareSearch;
    }

    impl WithFirmware for TestHost {
        fn plain(self, dir: &str, name: &str, code: &str) -> Self {
            self.file(code, "fw").file("/fw/VARS.fd", "vars").file(
                &format!("{dir}/{name}"),
                &descriptor_json(code, "/fw/VARS.fd", &[]),
            )
        }
        fn search(&self) -> FirmwareSearch {
            search(self.root())
        }
    }

    #[test]
    fn secure_boot_picks_the_enrolled_descriptor_with_smm_in_its_format() {
        for (search, name, code, format) in [
            (
                debian(),
                "40-edk2-x86_64-secure-enrolled.json",
                "/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
                ImageFormat::Raw,
            ),
            (
                fedora(),
                "30-edk2-ovmf-4m-qcow2-x64-sb-enrolled.json",
                "/usr/share/edk2/ovmf/OVMF_CODE_4M.secboot.qcow2",
                ImageFormat::Qcow2,
            ),
        ] {
            let r = resolve(&uefi(Some(true)), MACHINE, &search).unwrap();
            assert_eq!(descriptor_name(&r), name);
            assert_eq!(r.code, Path::new(code));
            assert_eq!((r.code_format, r.vars_format), (format, format), "{name}");
            assert!(r.secure_boot && r.enrolled_keys && r.requires_smm, "{name}");
        }
    }

    #[test]
    fn debian_secure_boot_descriptor_is_explained() {
        let r = resolve(&uefi(Some(true)), MACHINE, &debian()).unwrap();
        assert_eq!(
            r.vars_template,
            Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        );
        assert_eq!(
            r.reason,
            "descriptor 40-edk2-x86_64-secure-enrolled.json: uefi, secure-boot + enrolled-keys, matches pc-q35-7.2 (pc-q35-*)"
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn debian_secure_boot_off_picks_plain_descriptor() {
        let r = resolve(&uefi(Some(false)), MACHINE, &debian()).unwrap();
        assert_eq!(descriptor_name(&r), "60-edk2-x86_64.json");
        assert_eq!(r.code, Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert!(!r.secure_boot && !r.enrolled_keys && !r.requires_smm);
    }

    /// libvirt leaves an absent `<feature>` unchecked, so the first file by
    /// name wins: on Debian that is the enrolled Secure Boot build.
    #[test]
    fn debian_unspecified_secure_boot_takes_first_by_name() {
        let r = resolve(&uefi(None), MACHINE, &debian()).unwrap();
        assert_eq!(descriptor_name(&r), "40-edk2-x86_64-secure-enrolled.json");
    }

    #[test]
    fn unversioned_q35_matches_pc_q35_globs() {
        let r = resolve(&uefi(Some(false)), "q35", &debian()).unwrap();
        assert_eq!(descriptor_name(&r), "60-edk2-x86_64.json");
    }

    #[test]
    fn debian_has_no_firmware_for_other_machines() {
        let err = resolve(&uefi(None), "microvm", &debian()).unwrap_err();
        assert!(matches!(err, FirmwareError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn fedora_secure_boot_off_picks_the_nosb_qcow2_images() {
        let r = resolve(&uefi(Some(false)), MACHINE, &fedora()).unwrap();
        assert_eq!(descriptor_name(&r), "50-edk2-ovmf-4m-qcow2-x64-nosb.json");
        assert_eq!(r.vars_format, ImageFormat::Qcow2);
    }

    #[test]
    fn fedora_confidential_and_microvm_builds_are_never_chosen() {
        let err = resolve(&uefi(None), "microvm", &fedora()).unwrap_err();
        let FirmwareError::NotFound { rejected, .. } = err else {
            panic!("expected NotFound");
        };
        assert!(
            rejected.contains(&"50-edk2-ovmf-x64-microvm.json: not a flash mapping".to_string()),
            "{rejected:?}"
        );
    }

    #[test]
    fn user_dir_overrides_same_named_descriptor() {
        // The user's file names host paths; those live in the Debian fixture.
        let user = TestHost::new().file(
            "/qemu/firmware/40-edk2-x86_64-secure-enrolled.json",
            &descriptor_json(
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
                &[],
            ),
        );
        let s = FirmwareSearch {
            root: Tree::DebianFirmware.root(),
            user_config_dir: Some(user.path().to_path_buf()),
        };
        let r = resolve(&uefi(None), MACHINE, &s).unwrap();
        let FirmwareSource::Descriptor(path) = &r.source else {
            panic!("{:?}", r.source);
        };
        assert_eq!(
            path,
            &user
                .path()
                .join("qemu/firmware/40-edk2-x86_64-secure-enrolled.json")
        );
        assert!(!r.secure_boot);
    }

    #[test]
    fn zero_length_file_hides_descriptor() {
        let user = TestHost::new().file("/qemu/firmware/40-edk2-x86_64-secure-enrolled.json", "");
        let s = FirmwareSearch {
            root: Tree::DebianFirmware.root(),
            user_config_dir: Some(user.path().to_path_buf()),
        };
        let r = resolve(&uefi(None), MACHINE, &s).unwrap();
        assert_eq!(descriptor_name(&r), "50-edk2-x86_64-secure.json");
    }

    #[test]
    fn etc_overrides_usr_share_and_can_unhide() {
        let host = TestHost::new()
            .plain("/usr/share/qemu/firmware", "50-a.json", "/fw/share.fd")
            .plain("/etc/qemu/firmware", "50-a.json", "/fw/etc.fd");
        let r = resolve(&uefi(None), MACHINE, &host.search()).unwrap();
        assert_eq!(r.code, Path::new("/fw/etc.fd"));
        assert_eq!(
            r.source,
            FirmwareSource::Descriptor("/etc/qemu/firmware/50-a.json".into())
        );

        // Hidden in /etc, provided again by the user's dir.
        let host = host.file("/etc/qemu/firmware/50-a.json", "").plain(
            "/home/u/.config/qemu/firmware",
            "50-a.json",
            "/fw/user.fd",
        );
        let mut s = host.search();
        assert!(matches!(
            resolve(&uefi(None), MACHINE, &s),
            Err(FirmwareError::NotFound { .. })
        ));
        s.user_config_dir = Some(host.root().path("/home/u/.config"));
        assert_eq!(
            resolve(&uefi(None), MACHINE, &s).unwrap().code,
            Path::new("/fw/user.fd")
        );
    }

    #[test]
    fn descriptors_are_taken_by_file_name_across_dirs() {
        let host = TestHost::new()
            .plain("/usr/share/qemu/firmware", "20-share.json", "/fw/share.fd")
            .plain("/etc/qemu/firmware", "30-etc.json", "/fw/etc.fd")
            .file("/usr/share/qemu/firmware/10-readme.txt", "not json");
        let r = resolve(&uefi(None), MACHINE, &host.search()).unwrap();
        assert_eq!(r.code, Path::new("/fw/share.fd"));
    }

    #[test]
    fn confidential_only_or_imageless_descriptor_is_skipped() {
        for (code, features) in [
            ("/fw/snp.fd", &["amd-sev", "amd-sev-es", "amd-sev-snp"][..]),
            ("/fw/gone.fd", &[]),
        ] {
            let host = TestHost::new()
                .file("/fw/snp.fd", "fw")
                .file("/fw/VARS.fd", "vars")
                .file(
                    "/usr/share/qemu/firmware/10-skipped.json",
                    &descriptor_json(code, "/fw/VARS.fd", features),
                )
                .plain("/usr/share/qemu/firmware", "20-plain.json", "/fw/plain.fd");
            let r = resolve(&uefi(None), MACHINE, &host.search()).unwrap();
            assert_eq!(r.code, Path::new("/fw/plain.fd"), "{code}");
        }
    }

    #[test]
    fn unparsable_descriptor_is_skipped_with_warning() {
        let host = TestHost::new()
            .file("/usr/share/qemu/firmware/10-bad.json", "{ not json")
            .file(
                "/usr/share/qemu/firmware/11-shape.json",
                r#"{"interface-types": 5}"#,
            )
            .plain("/usr/share/qemu/firmware", "20-good.json", "/fw/good.fd");
        let r = resolve(&uefi(None), MACHINE, &host.search()).unwrap();
        assert_eq!(r.code, Path::new("/fw/good.fd"));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("10-bad.json"));
    }

    #[test]
    fn inconsistent_descriptor_is_used_with_warning() {
        let host = TestHost::new()
            .file("/fw/c.fd", "fw")
            .file("/fw/v.fd", "vars")
            .file(
                "/usr/share/qemu/firmware/10-odd.json",
                &descriptor_json("/fw/c.fd", "/fw/v.fd", &["secure-boot", "enrolled-keys"]),
            );
        let r = resolve(&uefi(Some(true)), MACHINE, &host.search()).unwrap();
        assert!(!r.requires_smm);
        assert!(
            r.warnings[0].contains("requires-smm = false"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn no_descriptors_falls_back_to_known_paths() {
        let host = TestHost::new()
            .file("/usr/share/OVMF/OVMF_CODE_4M.fd", "fw")
            .file("/usr/share/OVMF/OVMF_VARS_4M.fd", "vars");
        let r = resolve(&uefi(Some(false)), MACHINE, &host.search()).unwrap();
        assert_eq!(r.source, FirmwareSource::Fallback);
        assert_eq!(r.code, Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert!(!r.requires_smm);
        assert!(
            r.reason.starts_with("no descriptor matched"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn nothing_installed_is_not_found() {
        let host = TestHost::new();
        let err = resolve(&uefi(Some(true)), MACHINE, &host.search()).unwrap_err();
        let FirmwareError::NotFound {
            machine,
            secure_boot,
            searched,
            rejected,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((machine.as_str(), *secure_boot), (MACHINE, Some(true)));
        assert_eq!(searched[0], host.root().path("/usr/share/qemu/firmware"));
        assert!(searched.contains(&host.root().path("/usr/share/OVMF/OVMF_CODE_4M.fd")));
        assert!(rejected.is_empty());
        assert!(err.to_string().contains("apt install ovmf"));
    }

    #[test]
    fn explicit_pair_is_used_as_given() {
        let host = TestHost::new()
            .file("/vm/CODE.secboot.fd", "fw")
            .file("/vm/VARS.qcow2", "vars");
        let fw = explicit_fw(None, "/vm/CODE.secboot.fd", "/vm/VARS.qcow2");
        let r = resolve(&fw, MACHINE, &host.search()).unwrap();
        assert_eq!(r.source, FirmwareSource::Explicit);
        assert_eq!(
            (r.code_format, r.vars_format),
            (ImageFormat::Raw, ImageFormat::Qcow2)
        );
        assert!(r.requires_smm && r.secure_boot);
    }

    #[test]
    fn explicit_secure_boot_request_needs_smm_whatever_the_name() {
        let host = TestHost::new()
            .file("/vm/code.fd", "fw")
            .file("/vm/vars.fd", "vars");
        let r = resolve(
            &explicit_fw(Some(true), "/vm/code.fd", "/vm/vars.fd"),
            MACHINE,
            &host.search(),
        )
        .unwrap();
        assert!(r.secure_boot && r.enrolled_keys && r.requires_smm);
        let r = resolve(
            &explicit_fw(None, "/vm/code.fd", "/vm/vars.fd"),
            MACHINE,
            &host.search(),
        )
        .unwrap();
        assert!(!r.secure_boot && !r.requires_smm);
    }

    #[test]
    fn explicit_missing_file_names_it() {
        let host = TestHost::new().file("/vm/code.fd", "fw");
        let err = resolve(
            &explicit_fw(None, "/vm/code.fd", "/vm/vars.fd"),
            MACHINE,
            &host.search(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, FirmwareError::ExplicitMissing { path } if path == Path::new("/vm/vars.fd")),
            "{err:?}"
        );
    }

    #[test]
    fn bios_is_not_resolved() {
        let fw = Firmware {
            kind: FirmwareKind::Bios,
            ..uefi(None)
        };
        let err = resolve(&fw, MACHINE, &debian()).unwrap_err();
        assert!(matches!(err, FirmwareError::NotUefi));
    }

    #[test]
    fn vars_copy_keeps_template_format() {
        assert_eq!(vars_copy_name("win11", ImageFormat::Raw), "win11_VARS.fd");
        assert_eq!(
            vars_copy_name("win11", ImageFormat::Qcow2),
            "win11_VARS.qcow2"
        );
    }

    /// This machine has Debian's `ovmf` installed (CI installs it too).
    #[test]
    fn real_host_descriptors_resolve() {
        let r = resolve(&uefi(Some(true)), MACHINE, &search(HostRoot::new("/"))).unwrap();
        assert!(
            matches!(r.source, FirmwareSource::Descriptor(_)),
            "{:?}",
            r.source
        );
        assert!(r.code.is_file() && r.vars_template.is_file());
        assert!(r.secure_boot && r.enrolled_keys && r.requires_smm);
    }
}
