//! Which VM a verb means. A VM's run and state dirs are named after the VM
//! alone (`<run base>/NAME/`, `<state base>/NAME/`), whatever file it was
//! started from, so the verbs that reach a running VM or what one left find
//! it by those dirs first. The config search is for starting: the other
//! verbs ask it only whether a name that left nothing behind is a VM.

use std::path::Path;

use crate::config::{self, ConfigError, SearchEnv, VmName};
use crate::exit::Exit;
use crate::fsutil::DirError;
use crate::plan::{DirsEnv, VmPaths};
use crate::supervisor::rundir::verify_vm_dir;

/// The VM `arg` (a name, or the path of its config) means for `status`,
/// `stop`, `qmp`, `console`, `logs`, `input` and `restore`.
pub(super) fn known_vm(arg: &str) -> Result<(VmName, VmPaths), Exit> {
    let dirs = super::process_dirs()?;
    trusted(printed(resolve(arg, &SearchEnv::from_process(), &dirs))?)
}

/// The VM `arg` means, when its supervisor runs (`input`, `usb`); a VM
/// that does not run is said so here (exit 1).
pub(super) fn running_vm(arg: &str) -> Result<(VmName, VmPaths), Exit> {
    let (name, paths) = known_vm(arg)?;
    if crate::supervisor::rundir::supervisor_pid(&paths).is_none() {
        eprintln!("vmrun: {name} is not running");
        return Err(Exit::HostProblems);
    }
    Ok((name, paths))
}

/// The VM of the config file `arg` names, found by the config search; the
/// file is not validated here.
pub(super) fn configured_vm(arg: &str) -> Result<(VmName, VmPaths), Exit> {
    let dirs = super::process_dirs()?;
    trusted(printed(from_config(
        arg,
        &SearchEnv::from_process(),
        &dirs,
    ))?)
}

/// The VM if its run and state dirs, where they exist, are vmrun's own:
/// the pidfiles, journal and logs in them are acted on or shown.
fn trusted(vm: (VmName, VmPaths)) -> Result<(VmName, VmPaths), Exit> {
    for dir in [&vm.1.run_dir, &vm.1.state_dir] {
        if std::fs::symlink_metadata(dir).is_ok() {
            if let Err(e) = verify_vm_dir(dir) {
                eprintln!("vmrun: {}: {e}", vm.0);
                return Err(Exit::HostProblems);
            }
        }
    }
    Ok(vm)
}

/// Every VM with a run dir under the run base: running, or left by a
/// supervisor that died.
pub(super) fn with_run_dirs(dirs: &DirsEnv) -> Vec<(VmName, VmPaths)> {
    let Ok(entries) = std::fs::read_dir(dirs.run_base()) else {
        return Vec::new();
    };
    let mut vms: Vec<(VmName, VmPaths)> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok()?.parse::<VmName>().ok())
        .filter(
            |name| match verify_vm_dir(&dirs.run_base().join(name.as_str())) {
                Ok(()) => true,
                Err(DirError::NotDir { .. }) => false,
                Err(e) => {
                    eprintln!("vmrun: skipping {name}: {e}");
                    false
                }
            },
        )
        .map(|name| {
            let paths = VmPaths::new(&name, dirs);
            (name, paths)
        })
        .collect();
    vms.sort_by(|a, b| a.0.cmp(&b.0));
    vms
}

fn printed<T>(result: Result<T, ConfigError>) -> Result<T, Exit> {
    result.map_err(|e| {
        eprint!("{}", config::render(&e));
        Exit::Usage
    })
}

fn resolve(
    arg: &str,
    search: &SearchEnv,
    dirs: &DirsEnv,
) -> Result<(VmName, VmPaths), ConfigError> {
    if let Some(name) = name_in(arg) {
        let paths = VmPaths::new(&name, dirs);
        if paths.run_dir.exists() || paths.state_dir.exists() {
            return Ok((name, paths));
        }
    }
    from_config(arg, search, dirs)
}

/// The VM name `arg` spells: itself, or a config path's file name without
/// `.toml`, as `start` names the VM of a path.
fn name_in(arg: &str) -> Option<VmName> {
    let name = if config::search::is_path(arg) {
        Path::new(arg).file_stem()?.to_str()?
    } else {
        arg
    };
    name.parse().ok()
}

fn from_config(
    arg: &str,
    search: &SearchEnv,
    dirs: &DirsEnv,
) -> Result<(VmName, VmPaths), ConfigError> {
    let path = config::locate(arg, search)?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let name: VmName =
        stem.parse()
            .map_err(|source| ConfigError::BadName { path, stem, source })?;
    let paths = VmPaths::new(&name, dirs);
    Ok((name, paths))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Fixture {
        tmp: tempfile::TempDir,
        search: SearchEnv,
        dirs: DirsEnv,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let search = SearchEnv {
            vmrun_home: Some(tmp.path().join("home")),
            cwd: tmp.path().join("cwd"),
            ..Default::default()
        };
        let dirs = DirsEnv {
            uid: 1000,
            run_base: Some(tmp.path().join("run")),
            state_base: Some(tmp.path().join("state")),
            ..Default::default()
        };
        Fixture { tmp, search, dirs }
    }

    impl Fixture {
        fn mkdir(&self, rel: &str) -> PathBuf {
            let dir = self.tmp.path().join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }

        fn resolve(&self, arg: &str) -> Result<(VmName, VmPaths), ConfigError> {
            resolve(arg, &self.search, &self.dirs)
        }
    }

    #[test]
    fn a_vm_with_a_run_dir_is_found_without_a_config() {
        let f = fixture();
        let run_dir = f.mkdir("run/dm");
        // A config path means the VM of its file name; the file is gone
        // since the start: the run dir is enough.
        for arg in ["dm", "/some/dir/dm.toml"] {
            let (name, paths) = f.resolve(arg).unwrap();
            assert_eq!(name.as_str(), "dm", "{arg}");
            assert_eq!(paths.run_dir, run_dir, "{arg}");
        }
    }

    #[test]
    fn a_vm_that_ran_is_found_by_its_state_dir() {
        let f = fixture();
        f.mkdir("state/dm");
        assert_eq!(f.resolve("dm").unwrap().0.as_str(), "dm");
    }

    #[test]
    fn a_name_that_never_ran_needs_a_config() {
        let f = fixture();
        assert!(matches!(f.resolve("dm"), Err(ConfigError::NotFound { .. })));
        let vms = f.mkdir("home/vms");
        std::fs::write(vms.join("dm.toml"), "").unwrap();
        let (name, paths) = f.resolve("dm").unwrap();
        assert_eq!(name.as_str(), "dm");
        assert_eq!(paths.run_dir, f.tmp.path().join("run/dm"));
    }

    #[test]
    fn a_config_file_with_a_bad_name_says_so() {
        let f = fixture();
        let vms = f.mkdir("cwd/other");
        std::fs::write(vms.join("bad name.toml"), "").unwrap();
        assert!(matches!(
            f.resolve("other/bad name.toml"),
            Err(ConfigError::BadName { .. })
        ));
    }

    #[test]
    fn run_dirs_with_valid_names_are_listed_in_order() {
        let f = fixture();
        f.mkdir("run/b");
        f.mkdir("run/a");
        f.mkdir("run/not a name");
        std::fs::write(f.tmp.path().join("run/c"), "").unwrap();
        let names: Vec<String> = with_run_dirs(&f.dirs)
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    fn chmod(dir: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_run_dir_other_users_may_write_is_not_acted_on() {
        let f = fixture();
        let run_dir = f.mkdir("run/dm");
        std::fs::write(run_dir.join("journal"), "").unwrap();
        chmod(&run_dir, 0o777);
        let vm = f.resolve("dm").unwrap();
        assert_eq!(trusted(vm).unwrap_err(), Exit::HostProblems);
        assert!(with_run_dirs(&f.dirs).is_empty());
    }

    #[test]
    fn a_run_base_other_users_may_write_is_not_acted_on() {
        let f = fixture();
        f.mkdir("run/dm");
        chmod(&f.tmp.path().join("run"), 0o1777);
        let vm = f.resolve("dm").unwrap();
        assert_eq!(trusted(vm).unwrap_err(), Exit::HostProblems);
        assert!(with_run_dirs(&f.dirs).is_empty());
    }

    #[test]
    fn a_symlinked_run_dir_is_not_acted_on() {
        let f = fixture();
        let elsewhere = f.mkdir("elsewhere");
        f.mkdir("run");
        std::os::unix::fs::symlink(&elsewhere, f.tmp.path().join("run/dm")).unwrap();
        let vm = f.resolve("dm").unwrap();
        assert_eq!(trusted(vm).unwrap_err(), Exit::HostProblems);
        assert!(with_run_dirs(&f.dirs).is_empty());
    }

    #[test]
    fn a_private_run_dir_is_acted_on() {
        let f = fixture();
        f.mkdir("run/dm");
        assert!(trusted(f.resolve("dm").unwrap()).is_ok());
    }
}
