//! What the QEMU binary says about itself: its version and what `q35`/`pc`
//! alias to. Asking costs a process start (~30 ms warm, ~250 ms cold), so the
//! answer is cached per binary (path, size, mtime) under the user's cache dir.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// A QEMU release, `major.minor.micro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl QemuVersion {
    pub const fn new(major: u32, minor: u32, micro: u32) -> Self {
        Self {
            major,
            minor,
            micro,
        }
    }

    /// Whether this is `major.minor` or newer.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a QEMU version: write MAJOR.MINOR or MAJOR.MINOR.MICRO (e.g. 9.2)")]
pub struct QemuVersionError(String);

impl FromStr for QemuVersion {
    type Err = QemuVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || QemuVersionError(s.to_string());
        let mut parts = s.trim().split('.');
        let mut next = |required: bool| match parts.next() {
            Some(p) => p.parse::<u32>().map_err(|_| bad()),
            None if required => Err(bad()),
            None => Ok(0),
        };
        let v = Self::new(next(true)?, next(true)?, next(false)?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// The facts about one QEMU binary that the command line depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuInfo {
    /// As it will be executed (a name found in `PATH`, or a path).
    pub binary: PathBuf,
    pub version: QemuVersion,
    /// Machine aliases, e.g. `("q35", "pc-q35-7.2")`.
    pub aliases: Vec<(String, String)>,
}

impl QemuInfo {
    /// Facts for a QEMU that is not here: `q35` and `pc` alias to this
    /// version's machine types, as every QEMU release does.
    pub fn assumed(binary: PathBuf, version: QemuVersion) -> Self {
        let v = format!("{}.{}", version.major, version.minor);
        Self {
            binary,
            version,
            aliases: vec![
                ("q35".into(), format!("pc-q35-{v}")),
                ("pc".into(), format!("pc-i440fx-{v}")),
            ],
        }
    }

    /// The concrete machine type for `machine` (`q35` -> `pc-q35-7.2`).
    pub fn concrete_machine(&self, machine: &str) -> String {
        self.aliases
            .iter()
            .find(|(alias, _)| alias == machine)
            .map(|(_, target)| target.clone())
            .unwrap_or_else(|| machine.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QemuProbeError {
    #[error("QEMU binary `{binary}` could not be run: {source}. Install it (apt install qemu-system-x86 / dnf install qemu-system-x86 / pacman -S qemu-base) or set [qemu] binary")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{binary} --version` printed no version we understand: {output:?}")]
    Version { binary: PathBuf, output: String },
}

/// Asks `binary` for its version and machine aliases, through the cache.
pub fn probe(binary: &Path, cache_dir: Option<&Path>) -> Result<QemuInfo, QemuProbeError> {
    let resolved = find_in_path(binary);
    let key = resolved.as_deref().and_then(cache_key);
    // A cache dir another user made or can write to is neither read (its
    // answer picks the machine type) nor written (through a planted link).
    // A cache that can't be used only costs this run a probe.
    let cache_file = match (cache_dir, &key) {
        (Some(dir), Some(key)) if crate::fsutil::create_private_dir(dir).is_ok() => {
            Some(dir.join(format!("qemu-{key}.json")))
        }
        _ => None,
    };
    if let Some(info) = cache_file.as_deref().and_then(read_cache) {
        if info.binary == binary {
            return Ok(info);
        }
    }
    let info = probe_uncached(binary)?;
    if let Some(file) = cache_file {
        write_cache(&file, &info);
    }
    Ok(info)
}

/// Writes `info` to `file` through a new temporary file: O_CREAT|O_EXCL
/// fails on any existing name, a symbolic link included, so nothing is
/// written through a link; rename(2) then replaces `file` atomically.
fn write_cache(file: &Path, info: &QemuInfo) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(json) = serde_json::to_vec(info) else {
        return;
    };
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&json));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, file);
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn read_cache(file: &Path) -> Option<QemuInfo> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

/// The binary's identity: a changed file (upgrade) gets a new key.
fn cache_key(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!("{}|{}|{}", path.display(), meta.len(), mtime.as_nanos());
    for b in text.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    Some(format!("{hash:016x}"))
}

/// `binary` as `Command` would find it: a path as given, a name in `PATH`.
pub fn find_in_path(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return Some(binary.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

fn probe_uncached(binary: &Path) -> Result<QemuInfo, QemuProbeError> {
    let run = |args: &[&str]| {
        Command::new(binary)
            .args(args)
            .output()
            .map_err(|source| QemuProbeError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })
    };
    let out = run(&["--version"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = parse_version_banner(&text).ok_or_else(|| QemuProbeError::Version {
        binary: binary.to_path_buf(),
        output: text.clone(),
    })?;
    let machines = run(&["-machine", "help"])?;
    Ok(QemuInfo {
        binary: binary.to_path_buf(),
        version,
        aliases: parse_machine_aliases(&String::from_utf8_lossy(&machines.stdout)),
    })
}

/// `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)` -> 7.2.22.
pub fn parse_version_banner(text: &str) -> Option<QemuVersion> {
    let rest = text.split("version ").nth(1)?;
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    token.parse().ok()
}

/// Lines such as `q35   Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)`.
pub fn parse_machine_aliases(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            let target = line.split("(alias of ").nth(1)?.split(')').next()?;
            Some((name.to_string(), target.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_version_is_parsed() {
        let v = parse_version_banner(
            "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright",
        );
        assert_eq!(v, Some(QemuVersion::new(7, 2, 22)));
        assert_eq!(
            parse_version_banner("QEMU emulator version 10.0.2\n"),
            Some(QemuVersion::new(10, 0, 2))
        );
        assert_eq!(parse_version_banner("garbage"), None);
    }

    #[test]
    fn aliases_are_read_from_machine_help() {
        let text = "Supported machines are:\n\
            pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n\
            q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n\
            pc-q35-7.2           Standard PC (Q35 + ICH9, 2009) (default)\n";
        let info = QemuInfo {
            binary: "qemu".into(),
            version: QemuVersion::new(7, 2, 0),
            aliases: parse_machine_aliases(text),
        };
        assert_eq!(info.concrete_machine("q35"), "pc-q35-7.2");
        assert_eq!(info.concrete_machine("pc"), "pc-i440fx-7.2");
        assert_eq!(info.concrete_machine("pc-q35-6.0"), "pc-q35-6.0");
    }

    #[test]
    fn version_strings_parse_and_compare() {
        let v: QemuVersion = "9.2".parse().unwrap();
        assert_eq!(v, QemuVersion::new(9, 2, 0));
        assert!(v.at_least(9, 1) && !v.at_least(10, 0));
        assert!("9".parse::<QemuVersion>().is_err());
        assert!("9.x".parse::<QemuVersion>().is_err());
        assert!("1.2.3.4".parse::<QemuVersion>().is_err());
    }

    #[test]
    fn assumed_info_aliases_to_its_version() {
        let info = QemuInfo::assumed("qemu".into(), QemuVersion::new(10, 1, 0));
        assert_eq!(info.concrete_machine("q35"), "pc-q35-10.1");
    }

    /// A stand-in QEMU printing version 8.2.0, in `dir`.
    fn fake_qemu(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("qemu-system-x86_64");
        std::fs::write(&bin, "#!/bin/sh\necho 'QEMU emulator version 8.2.0'\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn probe_caches_in_a_private_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = fake_qemu(tmp.path());
        let cache = tmp.path().join("cache/vmrun");
        probe(&bin, Some(&cache)).unwrap();
        let files: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            files[0].metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn probe_writes_nothing_through_a_symlinked_cache_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = fake_qemu(tmp.path());
        let target = tmp.path().join("victim");
        std::fs::create_dir(&target).unwrap();
        let cache = tmp.path().join("cache");
        std::os::unix::fs::symlink(&target, &cache).unwrap();
        let info = probe(&bin, Some(&cache)).unwrap();
        assert_eq!(info.version, QemuVersion::new(8, 2, 0));
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }

    #[test]
    fn probe_ignores_a_cache_in_a_world_writable_dir() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let bin = fake_qemu(tmp.path());
        let cache = tmp.path().join("cache");
        probe(&bin, Some(&cache)).unwrap();
        // Another user rewrites the answer in a dir they may write to.
        let planted = QemuInfo::assumed(bin.clone(), QemuVersion::new(1, 0, 0));
        for entry in std::fs::read_dir(&cache).unwrap().flatten() {
            std::fs::write(entry.path(), serde_json::to_vec(&planted).unwrap()).unwrap();
        }
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let info = probe(&bin, Some(&cache)).unwrap();
        assert_eq!(info.version, QemuVersion::new(8, 2, 0));
    }
}
