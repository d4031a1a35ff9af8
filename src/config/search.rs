//! Where `vmrun NAME` finds `NAME.toml` (CONFIG.md's search order), with the
//! process environment injected so tests can build a fake one. As root, a
//! file found by name is used only from a place no other user could have
//! written (`trust.rs`): `sudo vmrun demo` in another user's directory must
//! not run that user's `./vms/demo.toml`.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::trust;
use super::types::VmName;

/// The parts of the environment the search depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchEnv {
    pub vmrun_home: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub cwd: PathBuf,
    /// Whether vmrun runs as root: then only root's own places are searched.
    pub as_root: bool,
}

impl SearchEnv {
    /// Reads `$VMRUN_HOME`, `$XDG_CONFIG_HOME`, `$HOME` and the working directory.
    pub fn from_process() -> Self {
        // Empty variables count as unset, as the XDG spec asks.
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            vmrun_home: var("VMRUN_HOME"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            home: var("HOME"),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            as_root: trust::running_as_root(),
        }
    }

    /// The `vms/` directories, in search order.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(h) = &self.vmrun_home {
            dirs.push(self.cwd.join(h).join("vms"));
        }
        // Relative XDG paths are invalid per the spec and are ignored.
        let xdg = self.xdg_config_home.clone().filter(|p| p.is_absolute());
        let config = xdg.or_else(|| self.home.as_ref().map(|h| h.join(".config")));
        if let Some(c) = config {
            dirs.push(c.join("vmrun").join("vms"));
        }
        dirs.push(PathBuf::from("/etc/vmrun/vms"));
        dirs.push(self.cwd.join("vms"));
        dirs
    }
}

/// Whether the argument is a path rather than a VM name.
pub(crate) fn is_path(arg: &str) -> bool {
    arg.contains('/') || arg.ends_with(".toml")
}

/// The config file for `name_or_path`: a path as given (relative to `cwd`),
/// else the first `NAME.toml` in `env.dirs()`. As root, that first file is
/// refused (not skipped for a later one) when another user could have
/// written it or its directory: the message says why.
pub fn locate(name_or_path: &str, env: &SearchEnv) -> Result<PathBuf, ConfigError> {
    if is_path(name_or_path) {
        let path = env.cwd.join(name_or_path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(ConfigError::NotFound {
            name: name_or_path.to_string(),
            searched: vec![path],
        });
    }
    let searched: Vec<PathBuf> = env
        .dirs()
        .into_iter()
        .map(|d| d.join(format!("{name_or_path}.toml")))
        .collect();
    match searched.iter().find(|p| p.is_file()) {
        Some(found) if env.as_root => match trust::root_may_use_file(found) {
            Ok(()) => Ok(found.clone()),
            Err(reason) => Err(ConfigError::Untrusted {
                name: name_or_path.to_string(),
                path: found.clone(),
                reason,
            }),
        },
        Some(found) => Ok(found.clone()),
        None => Err(ConfigError::NotFound {
            name: name_or_path.to_string(),
            searched,
        }),
    }
}

/// Every `*.toml` with a valid VM name in the search directories; when two
/// directories hold the same name, the one `locate` would pick wins. As
/// root, the files `locate` would refuse are left out.
pub fn list_all(env: &SearchEnv) -> Vec<(VmName, PathBuf)> {
    let mut found: Vec<(VmName, PathBuf)> = Vec::new();
    for dir in env.dirs() {
        if env.as_root && trust::root_may_use_dir(&dir).is_err() {
            continue;
        }
        for (name, path) in tomls_in(&dir) {
            if env.as_root && trust::root_may_use_file(&path).is_err() {
                continue;
            }
            if !found.iter().any(|(n, _)| *n == name) {
                found.push((name, path));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn tomls_in(dir: &Path) -> Vec<(VmName, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(VmName, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.parse().ok()?;
            Some((name, p))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary tree holding `files` (paths relative to its root), and an
    /// environment whose every directory is inside it.
    fn tree(files: &[&str]) -> (tempfile::TempDir, SearchEnv) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for f in files {
            let path = root.join(f);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(path, "memory = \"1G\"\n").unwrap();
        }
        let env = SearchEnv {
            vmrun_home: Some(root.join("vmrun-home")),
            xdg_config_home: Some(root.join("xdg")),
            home: Some(root.join("home")),
            cwd: root.join("cwd"),
            as_root: false,
        };
        (tmp, env)
    }

    #[test]
    fn search_order_follows_config_md() {
        let env = SearchEnv {
            vmrun_home: Some("/v".into()),
            xdg_config_home: Some("/x".into()),
            home: Some("/h".into()),
            cwd: "/c".into(),
            as_root: false,
        };
        let dirs: Vec<PathBuf> = ["/v/vms", "/x/vmrun/vms", "/etc/vmrun/vms", "/c/vms"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(env.dirs(), dirs);
    }

    #[test]
    fn xdg_defaults_to_home_config() {
        let env = SearchEnv {
            home: Some("/h".into()),
            cwd: "/c".into(),
            ..Default::default()
        };
        assert_eq!(env.dirs()[0], PathBuf::from("/h/.config/vmrun/vms"));
    }

    #[test]
    fn vmrun_home_wins_over_cwd() {
        let (tmp, env) = tree(&["cwd/vms/win.toml", "vmrun-home/vms/win.toml"]);
        assert_eq!(
            locate("win", &env).unwrap(),
            tmp.path().join("vmrun-home/vms/win.toml")
        );
    }

    #[test]
    fn a_path_is_used_as_given() {
        let (tmp, env) = tree(&["cwd/other/x.toml"]);
        assert_eq!(
            locate("other/x.toml", &env).unwrap(),
            tmp.path().join("cwd/other/x.toml")
        );
    }

    #[test]
    fn missing_name_lists_every_searched_path() {
        let (_tmp, env) = tree(&[]);
        match locate("nope", &env) {
            Err(ConfigError::NotFound { searched, .. }) => assert_eq!(searched.len(), 4),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn list_all_keeps_first_per_name_and_skips_bad_names() {
        let (tmp, env) = tree(&[
            "xdg/vmrun/vms/a.toml",
            "cwd/vms/a.toml",
            "cwd/vms/b.toml",
            "cwd/vms/bad name.toml",
        ]);
        let names: Vec<(String, PathBuf)> = list_all(&env)
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect();
        assert_eq!(
            names,
            [
                ("a".to_string(), tmp.path().join("xdg/vmrun/vms/a.toml")),
                ("b".to_string(), tmp.path().join("cwd/vms/b.toml")),
            ]
        );
    }

    fn give_away(path: &Path) {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    }

    // As root (the tests run as root, here and in CI): the attack of docs/security.md item 4.
    #[test]
    fn as_root_a_config_in_another_users_dir_is_refused_with_the_reason() {
        let (tmp, mut env) = tree(&["cwd/vms/demo.toml"]);
        env.as_root = true;
        assert!(locate("demo", &env).is_ok(), "root's own tree is fine");
        give_away(&tmp.path().join("cwd"));
        match locate("demo", &env) {
            Err(ConfigError::Untrusted { path, reason, .. }) => {
                assert_eq!(path, tmp.path().join("cwd/vms/demo.toml"));
                assert!(
                    matches!(&reason, trust::Untrusted::Owner { path, owner: 65534 } if *path == tmp.path().join("cwd")),
                    "{reason}"
                );
            }
            other => panic!("expected Untrusted, got {other:?}"),
        }
        assert!(list_all(&env).is_empty());
        // Not as root: another user's file gives no one more than they have.
        env.as_root = false;
        assert!(locate("demo", &env).is_ok());
    }

    #[test]
    fn as_root_a_config_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, mut env) = tree(&["cwd/vms/demo.toml"]);
        env.as_root = true;
        let file = tmp.path().join("cwd/vms/demo.toml");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            locate("demo", &env),
            Err(ConfigError::Untrusted {
                reason: trust::Untrusted::Writable { .. },
                ..
            })
        ));
        assert!(list_all(&env).is_empty());
    }

    #[test]
    fn as_root_a_path_given_is_the_users_choice() {
        let (tmp, mut env) = tree(&["cwd/vms/demo.toml"]);
        env.as_root = true;
        give_away(&tmp.path().join("cwd/vms/demo.toml"));
        assert!(locate("vms/demo.toml", &env).is_ok());
    }
}
