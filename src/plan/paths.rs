//! Where a VM's files live. The run dir holds what dies with the VM (sockets,
//! pidfile, journal); the state dir what outlives it (VARS copy, TPM state,
//! logs). Root gets system dirs; a user gets their XDG dirs, so headless VMs
//! need no root.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::VmName;

/// The process facts that decide the dirs; `from_process` in real runs,
/// literal values in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirsEnv {
    pub is_root: bool,
    pub uid: u32,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// `$VMRUN_RUN_DIR`: replaces the parent of every run dir.
    pub run_base: Option<PathBuf>,
    /// `$VMRUN_STATE_DIR`: replaces the parent of every state dir.
    pub state_base: Option<PathBuf>,
}

/// The process has no private place for vmrun's files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirsError {
    #[error("XDG_RUNTIME_DIR is not set: vmrun keeps its sockets and journals only in a private runtime dir; log in through a session that sets it (systemd-logind's /run/user/UID), or set VMRUN_RUN_DIR to a directory only you can write")]
    NoRuntimeDir,
    #[error("neither XDG_DATA_HOME nor HOME is set: vmrun keeps the VM's state (VARS, TPM, logs) under one of them; set HOME, or set VMRUN_STATE_DIR to a directory only you can write")]
    NoStateDir,
}

impl DirsEnv {
    /// The dirs of this process; refuses a user without a private runtime
    /// or data dir rather than falling back to a shared one such as `/tmp`,
    /// where another user could have made the dir first.
    pub fn from_process() -> Result<Self, DirsError> {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let uid = nix::unistd::geteuid();
        let env = Self {
            is_root: uid.is_root(),
            uid: uid.as_raw(),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_data_home: var("XDG_DATA_HOME"),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            home: var("HOME"),
            run_base: var("VMRUN_RUN_DIR"),
            state_base: var("VMRUN_STATE_DIR"),
        };
        env.check()?;
        Ok(env)
    }

    /// Whether this environment names a private run and state base.
    pub fn check(&self) -> Result<(), DirsError> {
        if self.is_root {
            return Ok(());
        }
        if self.run_base.is_none() && self.xdg_runtime_dir.is_none() {
            return Err(DirsError::NoRuntimeDir);
        }
        if self.state_base.is_none() && self.user_dir(&self.xdg_data_home, ".local/share").is_none()
        {
            return Err(DirsError::NoStateDir);
        }
        Ok(())
    }

    /// Parent of every VM's run dir: `/run/vmrun` for root, else
    /// `$XDG_RUNTIME_DIR/vmrun`. Without one (refused by `check`), the
    /// dir systemd-logind makes for the user, `/run/user/UID/vmrun`: only
    /// root can create entries in `/run/user`.
    pub fn run_base(&self) -> PathBuf {
        if let Some(dir) = &self.run_base {
            return dir.clone();
        }
        if self.is_root {
            return PathBuf::from("/run/vmrun");
        }
        match &self.xdg_runtime_dir {
            Some(dir) => dir.join("vmrun"),
            None => PathBuf::from(format!("/run/user/{}/vmrun", self.uid)),
        }
    }

    /// Parent of the dirs QEMU binds SPICE's socket in, one per VM: the
    /// run base's sibling `vmrun-spice` (`/run/vmrun-spice` for root),
    /// 0711 so that a Looking Glass client's user can pass through it to
    /// the one socket handed to them, and list nothing.
    pub fn spice_base(&self) -> PathBuf {
        self.run_base().with_file_name("vmrun-spice")
    }

    /// Parent of every VM's state dir: `/var/lib/vmrun` for root, else
    /// `$XDG_DATA_HOME/vmrun` (`~/.local/share/vmrun`). Without either
    /// (refused by `check`), under the logind runtime dir as `run_base`.
    pub fn state_base(&self) -> PathBuf {
        if let Some(dir) = &self.state_base {
            return dir.clone();
        }
        if self.is_root {
            return PathBuf::from("/var/lib/vmrun");
        }
        match self.user_dir(&self.xdg_data_home, ".local/share") {
            Some(dir) => dir.join("vmrun"),
            None => PathBuf::from(format!("/run/user/{}/vmrun-state", self.uid)),
        }
    }

    /// Where QEMU probe results are cached: `/var/cache/vmrun` for root,
    /// else `$XDG_CACHE_HOME/vmrun` (`~/.cache/vmrun`); none without either.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.is_root {
            return Some(PathBuf::from("/var/cache/vmrun"));
        }
        Some(self.user_dir(&self.xdg_cache_home, ".cache")?.join("vmrun"))
    }

    /// The user's config dir (`$XDG_CONFIG_HOME` or `~/.config`), whose
    /// `qemu/firmware` descriptors override the system's. None for root:
    /// root reads only root-owned system dirs, and `sudo` may have kept a
    /// user's `HOME` or `XDG_CONFIG_HOME`.
    pub fn config_home(&self) -> Option<PathBuf> {
        if self.is_root {
            return None;
        }
        self.user_dir(&self.xdg_config_home, ".config")
    }

    fn user_dir(&self, var: &Option<PathBuf>, fallback: &str) -> Option<PathBuf> {
        match (var, &self.home) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Some(home)) => Some(home.join(fallback)),
            (None, None) => None,
        }
    }
}

/// Every path of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmPaths {
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The supervisor's own QMP monitor.
    pub qmp_socket: PathBuf,
    /// A second monitor for `vmrun qmp` (one QMP monitor serves one client).
    pub qmp_ctl_socket: PathBuf,
    pub pidfile: PathBuf,
    pub console_socket: PathBuf,
    pub console_log: PathBuf,
    /// The supervisor's log, QEMU's stderr included (`vmrun logs`).
    pub log: PathBuf,
    pub swtpm_socket: PathBuf,
    pub tpm_state_dir: PathBuf,
    /// The VM's own OVMF VARS copy (name set once firmware is known).
    pub vars_file: PathBuf,
    /// In a dir of QEMU's uid under `DirsEnv::spice_base`, not in the run
    /// dir: the Looking Glass client's user must reach it (`[looking_glass]
    /// spice`), and the run dir stays root's 0700.
    pub spice_socket: PathBuf,
    /// Stable names of the router's uinput proxies, read by QEMU.
    pub keyboard_proxy: PathBuf,
    pub mouse_proxy: PathBuf,
}

impl VmPaths {
    pub fn new(name: &VmName, env: &DirsEnv) -> Self {
        let run = env.run_base().join(name.as_str());
        let state = env.state_base().join(name.as_str());
        let r = |f: &str| run.join(f);
        let s = |f: &str| state.join(f);
        Self {
            qmp_socket: r("qmp.sock"),
            qmp_ctl_socket: r("qmp-ctl.sock"),
            pidfile: r("qemu.pid"),
            console_socket: r("console.sock"),
            console_log: s("console.log"),
            log: s("vmrun.log"),
            swtpm_socket: r("swtpm.sock"),
            tpm_state_dir: s("tpm"),
            vars_file: s(&format!("{name}_VARS.fd")),
            spice_socket: env.spice_base().join(name.as_str()).join("spice.sock"),
            keyboard_proxy: r("input-keyboard"),
            mouse_proxy: r("input-mouse"),
            run_dir: run,
            state_dir: state,
        }
    }

    pub fn with_vars_file(mut self, file_name: &str) -> Self {
        self.vars_file = self.state_dir.join(file_name);
        self
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_env() -> DirsEnv {
        DirsEnv {
            is_root: false,
            uid: 1000,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            xdg_data_home: None,
            xdg_cache_home: None,
            xdg_config_home: None,
            home: Some("/home/u".into()),
            run_base: None,
            state_base: None,
        }
    }

    #[test]
    fn root_uses_system_dirs() {
        let env = DirsEnv {
            is_root: true,
            ..user_env()
        };
        let paths = VmPaths::new(&"win11".parse().unwrap(), &env);
        assert_eq!(paths.qmp_socket, Path::new("/run/vmrun/win11/qmp.sock"));
        assert_eq!(
            paths.vars_file,
            Path::new("/var/lib/vmrun/win11/win11_VARS.fd")
        );
    }

    #[test]
    fn user_uses_xdg_dirs() {
        let paths = VmPaths::new(&"demo".parse().unwrap(), &user_env());
        assert_eq!(paths.run_dir, Path::new("/run/user/1000/vmrun/demo"));
        assert_eq!(
            paths.state_dir,
            Path::new("/home/u/.local/share/vmrun/demo")
        );
    }

    #[test]
    fn env_overrides_win_over_root_and_xdg() {
        let env = DirsEnv {
            is_root: true,
            run_base: Some("/tmp/r".into()),
            state_base: Some("/tmp/s".into()),
            ..user_env()
        };
        let paths = VmPaths::new(&"x".parse().unwrap(), &env);
        assert_eq!(paths.qmp_socket, Path::new("/tmp/r/x/qmp.sock"));
        assert_eq!(paths.log, Path::new("/tmp/s/x/vmrun.log"));
    }

    #[test]
    fn user_without_runtime_dir_is_refused() {
        let env = DirsEnv {
            xdg_runtime_dir: None,
            ..user_env()
        };
        assert_eq!(env.check(), Err(DirsError::NoRuntimeDir));
        assert!(!env.run_base().starts_with("/tmp"));
    }

    #[test]
    fn user_without_home_or_data_dir_is_refused() {
        let env = DirsEnv {
            home: None,
            ..user_env()
        };
        assert_eq!(env.check(), Err(DirsError::NoStateDir));
        assert_eq!(env.cache_dir(), None);
        assert_eq!(env.config_home(), None);
    }

    #[test]
    fn explicit_bases_need_no_xdg_dirs() {
        let env = DirsEnv {
            xdg_runtime_dir: None,
            home: None,
            run_base: Some("/srv/r".into()),
            state_base: Some("/srv/s".into()),
            ..user_env()
        };
        assert_eq!(env.check(), Ok(()));
    }

    #[test]
    fn root_without_home_uses_only_system_dirs() {
        let env = DirsEnv {
            is_root: true,
            uid: 0,
            xdg_runtime_dir: None,
            home: None,
            ..user_env()
        };
        assert_eq!(env.check(), Ok(()));
        assert_eq!(env.run_base(), Path::new("/run/vmrun"));
        assert_eq!(env.state_base(), Path::new("/var/lib/vmrun"));
        assert_eq!(
            env.cache_dir().as_deref(),
            Some(Path::new("/var/cache/vmrun"))
        );
        assert_eq!(env.config_home(), None);
    }

    #[test]
    fn root_ignores_a_users_home_and_xdg_dirs() {
        let env = DirsEnv {
            is_root: true,
            uid: 0,
            xdg_cache_home: Some("/home/u/.cache".into()),
            xdg_config_home: Some("/home/u/.config".into()),
            ..user_env()
        };
        assert_eq!(
            env.cache_dir().as_deref(),
            Some(Path::new("/var/cache/vmrun"))
        );
        assert_eq!(env.config_home(), None);
    }
}
