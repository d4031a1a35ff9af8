//! QEMU firmware descriptors (`docs/interop/firmware.json`): finding them,
//! parsing them, and matching one against what the VM asks for, after
//! libvirt's `qemuFirmwareMatchDomain`.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use glob::Pattern;
use serde::Deserialize;

use super::{describe_features, image_format, FirmwareSearch, FirmwareSource, ResolvedFirmware};
use crate::host::HostRoot;

/// The system directories, least specific first (firmware.json: "distro"
/// then "sysadmin"); the user's `qemu/firmware` comes after them.
const SYSTEM_DIRS: [&str; 2] = ["/usr/share/qemu/firmware", "/etc/qemu/firmware"];

/// Features that mark firmware built only for confidential guests. Plain
/// `amd-sev`/`amd-sev-es` are *not* here: Debian's and QEMU's general-purpose
/// descriptors list them ("supports SEV"), and libvirt only treats them as
/// requirements when the domain asks for launch security, never as a reason
/// to reject.
const CONFIDENTIAL_ONLY: [&str; 2] = ["amd-sev-snp", "intel-tdx"];

/// The wire form. No `deny_unknown_fields`: the schema grows (`tags`,
/// new mapping fields) and firmware.json asks consumers to ignore what they
/// do not know.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Wire {
    interface_types: Vec<String>,
    mapping: WireMapping,
    targets: Vec<WireTarget>,
    /// Strings, not an enum: unknown features (`host-uefi-vars`, ...) must
    /// not make a descriptor unreadable.
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "device", rename_all = "lowercase")]
enum WireMapping {
    Flash(WireFlash),
    /// `kernel`, `memory` and anything newer: not a pflash pair.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WireFlash {
    /// `split` | `combined` | `stateless`; absent means `split` (the
    /// "historical default" in libvirt). A string so new modes still parse.
    mode: Option<String>,
    executable: WireFile,
    /// Required only in split mode.
    nvram_template: Option<WireFile>,
}

#[derive(Debug, Deserialize)]
struct WireFile {
    filename: PathBuf,
    format: String,
}

#[derive(Debug, Deserialize)]
struct WireTarget {
    architecture: String,
    machines: Vec<String>,
}

/// A descriptor file that survived overriding and hiding.
#[derive(Debug)]
pub(super) struct Candidate {
    pub name: String,
    /// The path reported to the user (host path, outside the `HostRoot`).
    pub host_path: PathBuf,
    /// Where it is read from.
    fs_path: PathBuf,
}

/// The descriptor files in effect, sorted by file name, plus the directories
/// looked in. Unreadable directories are noted in `warnings`.
pub(super) fn collect(
    search: &FirmwareSearch,
    warnings: &mut Vec<String>,
) -> (Vec<Candidate>, Vec<PathBuf>) {
    let mut dirs: Vec<(PathBuf, PathBuf)> = SYSTEM_DIRS
        .iter()
        .map(|d| (PathBuf::from(d), search.root.path(d)))
        .collect();
    if let Some(config) = &search.user_config_dir {
        // The user's own directory is not part of the host tree.
        let dir = config.join("qemu/firmware");
        dirs.push((dir.clone(), dir));
    }

    // firmware.json: "a file in a more specific directory overrides a
    // same-named file in a less specific one; an empty file hides it".
    // `None` records a hiding file so that a yet more specific directory can
    // still provide one again.
    let mut by_name: BTreeMap<String, Option<Candidate>> = BTreeMap::new();
    for (host_dir, fs_dir) in &dirs {
        let entries = match fs::read_dir(fs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                warnings.push(format!("cannot read {}: {e}", fs_dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.ends_with(".json") {
                continue;
            }
            let fs_path = entry.path();
            // `fs::metadata` follows symlinks, as distros ship some.
            let Ok(meta) = fs::metadata(&fs_path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let candidate = (meta.len() > 0).then(|| Candidate {
                name: name.clone(),
                host_path: host_dir.join(&name),
                fs_path,
            });
            by_name.insert(name, candidate);
        }
    }
    let searched = dirs.into_iter().map(|(_, fs_dir)| fs_dir).collect();
    (by_name.into_values().flatten().collect(), searched)
}

/// What the VM asks of its firmware.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request<'a> {
    pub machine: &'a str,
    /// Tri-state as in libvirt's `<firmware><feature>`.
    pub secure_boot: Option<bool>,
}

/// Reads and parses `candidate`. The error is one line for the warnings.
pub(super) fn load(candidate: &Candidate) -> Result<Wire, String> {
    let text = fs::read_to_string(&candidate.fs_path)
        .map_err(|e| format!("{}: {e}", candidate.host_path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not a firmware descriptor, skipped: {e}",
            candidate.host_path.display()
        )
    })
}

/// The firmware `candidate` (parsed as `wire`) describes, if it satisfies
/// `req` on the host under `root`; `Err` says why not, for the "nothing
/// matched" error. libvirt's `qemuFirmwareSanityCheck` complaints become
/// warnings: the descriptor is still used.
pub(super) fn evaluate(
    candidate: &Candidate,
    wire: &Wire,
    req: &Request,
    root: &HostRoot,
) -> Result<ResolvedFirmware, String> {
    if !wire.interface_types.iter().any(|i| i == "uefi") {
        return Err("not uefi".into());
    }
    let pattern = matching_pattern(wire, req.machine)
        .ok_or_else(|| format!("no x86_64 target for machine {}", req.machine))?;

    let has = |f: &str| wire.features.iter().any(|x| x == f);
    if let Some(f) = CONFIDENTIAL_ONLY.iter().find(|f| has(f)) {
        return Err(format!("confidential-computing firmware ({f})"));
    }
    let secure_boot = has("secure-boot");
    let enrolled_keys = has("enrolled-keys");
    match req.secure_boot {
        // Windows 11 wants Secure Boot on with Microsoft's keys already
        // enrolled; an empty varstore boots in setup mode, unenforced.
        Some(true) if !secure_boot => return Err("no secure-boot".into()),
        Some(true) if !enrolled_keys => return Err("secure-boot without enrolled-keys".into()),
        // libvirt turns enrolled-keys off along with secure-boot.
        Some(false) if secure_boot || enrolled_keys => return Err("has secure-boot".into()),
        _ => {}
    }

    let WireMapping::Flash(flash) = &wire.mapping else {
        return Err("not a flash mapping".into());
    };
    // libvirt: "Discarding loader without split flash". vmrun always gives
    // the VM its own VARS copy, which needs the split pair.
    let mode = flash.mode.as_deref().unwrap_or("split");
    if mode != "split" {
        return Err(format!("flash mode {mode}, not split"));
    }
    let template = flash
        .nvram_template
        .as_ref()
        .ok_or("split flash without nvram-template")?;
    let code_format = image_format(&flash.executable.format)
        .ok_or_else(|| format!("executable format {}", flash.executable.format))?;
    let vars_format = image_format(&template.format)
        .ok_or_else(|| format!("nvram-template format {}", template.format))?;
    for file in [&flash.executable.filename, &template.filename] {
        if !root.path(file).is_file() {
            return Err(format!("{} is missing", file.display()));
        }
    }

    let requires_smm = has("requires-smm");
    let mut oddities = Vec::new();
    if secure_boot != requires_smm {
        oddities.push(format!(
            "secure-boot = {secure_boot} but requires-smm = {requires_smm}"
        ));
    }
    if enrolled_keys && !secure_boot {
        oddities.push("enrolled-keys without secure-boot".into());
    }
    let host_path = &candidate.host_path;
    Ok(ResolvedFirmware {
        reason: format!(
            "descriptor {}: uefi, {}, matches {} ({pattern})",
            candidate.name,
            describe_features(secure_boot, enrolled_keys),
            req.machine
        ),
        code: flash.executable.filename.clone(),
        code_format,
        vars_template: template.filename.clone(),
        vars_format,
        secure_boot,
        enrolled_keys,
        requires_smm,
        source: FirmwareSource::Descriptor(host_path.clone()),
        warnings: oddities
            .iter()
            .map(|o| format!("{}: {o}", host_path.display()))
            .collect(),
    })
}

/// The first x86_64 machine glob that accepts `machine`.
fn matching_pattern(wire: &Wire, machine: &str) -> Option<String> {
    wire.targets
        .iter()
        .filter(|t| t.architecture == "x86_64")
        .flat_map(|t| &t.machines)
        .find(|glob| machine_matches(glob, machine))
        .cloned()
}

/// Whether the descriptor glob `glob` accepts `machine`.
///
/// Descriptors list versioned globs (`pc-q35-*`) because QEMU and libvirt
/// match the *canonical* machine (`q35` is an alias of e.g. `pc-q35-7.2`
/// in `-machine help`). A caller that has not resolved the alias passes
/// `q35` or `pc`; those stand for "some version of `pc-q35-`" /
/// "`pc-i440fx-`": a glob accepts them when it matches the bare prefix
/// (`pc-q35-*`, as `*` may be empty) or names that prefix literally
/// (`pc-q35-8.*`: the version is unknown, so it is given the benefit of
/// the doubt).
pub(super) fn machine_matches(glob: &str, machine: &str) -> bool {
    let Ok(pattern) = Pattern::new(glob) else {
        return false;
    };
    let prefix = match machine {
        "q35" => "pc-q35-",
        "pc" => "pc-i440fx-",
        _ => return pattern.matches(machine),
    };
    pattern.matches(machine) || pattern.matches(prefix) || glob.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> Wire {
        serde_json::from_str(json).expect("test descriptor parses")
    }

    fn candidate() -> Candidate {
        Candidate {
            name: "test.json".into(),
            host_path: "/usr/share/qemu/firmware/test.json".into(),
            fs_path: "/nonexistent/test.json".into(),
        }
    }

    #[test]
    fn versioned_machine_matches_its_glob() {
        assert!(machine_matches("pc-q35-*", "pc-q35-7.2"));
        assert!(!machine_matches("pc-i440fx-*", "pc-q35-7.2"));
        assert!(!machine_matches("pc-q35-*", "microvm"));
    }

    #[test]
    fn unversioned_alias_matches_as_its_prefix() {
        assert!(machine_matches("pc-q35-*", "q35"));
        assert!(machine_matches("pc-q35-8.*", "q35"));
        assert!(!machine_matches("pc-i440fx-*", "q35"));
        assert!(machine_matches("pc-i440fx-*", "pc"));
        assert!(!machine_matches("pc-q35-*", "pc"));
    }

    #[test]
    fn invalid_glob_matches_nothing() {
        assert!(!machine_matches("pc-q35-[", "pc-q35-7.2"));
    }

    #[test]
    fn unknown_features_and_fields_parse() {
        let w = wire(
            r#"{"interface-types":["uefi"],"tags":[],"new-field":1,
                "mapping":{"device":"flash","executable":{"filename":"/c","format":"raw"},
                           "nvram-template":{"filename":"/v","format":"raw"}},
                "targets":[{"architecture":"x86_64","machines":["pc-q35-*"]}],
                "features":["host-uefi-vars","acpi-s3"]}"#,
        );
        assert_eq!(w.features, ["host-uefi-vars", "acpi-s3"]);
    }

    #[test]
    fn memory_mapping_parses_but_does_not_match() {
        let w = wire(
            r#"{"interface-types":["uefi"],
                "mapping":{"device":"memory","filename":"/x"},
                "targets":[{"architecture":"x86_64","machines":["pc-q35-*"]}]}"#,
        );
        let req = Request {
            machine: "q35",
            secure_boot: None,
        };
        let err = evaluate(&candidate(), &w, &req, &HostRoot::new("/nonexistent")).unwrap_err();
        assert_eq!(err, "not a flash mapping");
    }

    #[test]
    fn stateless_flash_does_not_match() {
        let w = wire(
            r#"{"interface-types":["uefi"],
                "mapping":{"device":"flash","mode":"stateless",
                           "executable":{"filename":"/c","format":"raw"}},
                "targets":[{"architecture":"x86_64","machines":["pc-q35-*"]}]}"#,
        );
        let req = Request {
            machine: "pc-q35-7.2",
            secure_boot: None,
        };
        let err = evaluate(&candidate(), &w, &req, &HostRoot::new("/nonexistent")).unwrap_err();
        assert!(err.contains("stateless"), "{err}");
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"interface-types":"uefi"}"#,
            r#"{"interface-types":["uefi"],"mapping":{"device":"flash"},"targets":[]}"#,
        ] {
            assert!(serde_json::from_str::<Wire>(bad).is_err(), "{bad:?}");
        }
    }
}
