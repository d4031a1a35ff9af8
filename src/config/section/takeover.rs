//! `[takeover]`: stopping the host's display (manager, units, processes,
//! modules) so a single GPU can go to the VM, and starting it again after.

use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::section::string_or::{Rich, StringOr};

/// `display_manager`: `"auto"`, a unit name, or `{ stop = [..], start = [..] }`.
type WireDisplayManager = StringOr<String, WireDmCommands>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDmCommands {
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default)]
    start: Vec<String>,
}

impl Rich for WireDmCommands {
    const EXPECTING: &'static str =
        "\"auto\", a systemd unit name, or a table { stop = [...], start = [...] }";
    const TABLE: bool = true;
}

/// `unload_modules`: `"auto"` or an explicit list.
type WireUnloadModules = StringOr<String, Vec<String>>;

impl Rich for Vec<String> {
    const EXPECTING: &'static str = "\"auto\" or a list of module names";
    const TABLE: bool = false;
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireTakeover {
    enabled: Option<bool>,
    display_manager: S<WireDisplayManager>,
    #[serde(default)]
    stop_units: Vec<String>,
    #[serde(default)]
    user_units: Vec<String>,
    #[serde(default)]
    stop_processes: Vec<String>,
    unload_modules: S<WireUnloadModules>,
    desktop: S<String>,
}

/// `desktop`: what the host's desktop does while the VM has the GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desktop {
    /// Down for the VM's lifetime (the only GPU goes to the VM).
    #[default]
    Stop,
    /// Started again at once on the GPU the host keeps.
    Restart,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayManager {
    Auto,
    Unit(String),
    Commands {
        stop: Vec<String>,
        start: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnloadModules {
    Auto,
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Takeover {
    pub display_manager: DisplayManager,
    pub stop_units: Vec<String>,
    pub user_units: Vec<String>,
    /// Names (`/proc/PID/comm`, globs allowed) of processes that may be
    /// stopped when they still hold the GPU; any other holder is refused.
    pub stop_processes: Vec<String>,
    pub unload_modules: UnloadModules,
    pub desktop: Desktop,
}

/// The takeover, when enabled; it needs a device to give the VM.
pub(crate) fn check(
    t: S<WireTakeover>,
    has_hostdev: bool,
    v: &mut Checker<'_>,
) -> Option<Takeover> {
    let (span, t) = parts(t?);
    match t.enabled {
        Some(true) => {}
        Some(false) => return None,
        None => {
            // Takeover stops the host's display: never implied.
            v.err("takeover", span, K::Missing("enabled"));
            return None;
        }
    }
    if !has_hostdev {
        v.err("takeover.enabled", span.clone(), K::TakeoverWithoutHostdev);
    }
    let display_manager = display_manager(t.display_manager, v);
    let unload_modules = match t.unload_modules.map(parts) {
        None => UnloadModules::Auto,
        Some((_, StringOr::Str(n))) if n == "auto" => UnloadModules::Auto,
        Some((s, StringOr::Str(value))) => {
            let allowed = vec!["auto".to_string()];
            let key = "takeover.unload_modules";
            v.err(key, s, K::UnknownValue { value, allowed });
            UnloadModules::Auto
        }
        Some((_, StringOr::Rich(l))) => UnloadModules::List(l),
    };
    let desktop = match t.desktop.map(parts) {
        None => Desktop::Stop,
        Some((_, d)) if d == "stop" => Desktop::Stop,
        Some((_, d)) if d == "restart" => Desktop::Restart,
        Some((s, value)) => {
            let allowed = vec!["stop".to_string(), "restart".to_string()];
            v.err("takeover.desktop", s, K::UnknownValue { value, allowed });
            Desktop::Stop
        }
    };
    for (key, list) in [
        ("takeover.user_units", &t.user_units),
        ("takeover.stop_processes", &t.stop_processes),
    ] {
        for p in list {
            if p.trim().is_empty() {
                v.err(key, span.clone(), K::Empty);
            } else if let Err(e) = glob::Pattern::new(p) {
                let why = format!("{p:?} is not a valid pattern: {e}");
                v.err(key, span.clone(), K::Invalid(why));
            }
        }
    }
    Some(Takeover {
        display_manager,
        stop_units: t.stop_units,
        user_units: t.user_units,
        stop_processes: t.stop_processes,
        unload_modules,
        desktop,
    })
}

fn display_manager(dm: S<WireDisplayManager>, v: &mut Checker<'_>) -> DisplayManager {
    match dm.map(parts) {
        None => DisplayManager::Auto,
        Some((_, StringOr::Str(n))) if n == "auto" => DisplayManager::Auto,
        Some((s, StringOr::Str(n))) if n.trim().is_empty() => {
            v.err("takeover.display_manager", s, K::Empty);
            DisplayManager::Auto
        }
        Some((_, StringOr::Str(n))) => DisplayManager::Unit(n),
        Some((s, StringOr::Rich(c))) => {
            let (stop, start) = (c.stop, c.start);
            if stop.is_empty() {
                v.err("takeover.display_manager.stop", s, K::Missing("stop"));
            }
            DisplayManager::Commands { stop, start }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{check as check_file, errors};

    const GPU: &str = "[[hostdev]]\naddress = \"01:00.0\"\n";

    #[test]
    fn takeover_process_patterns_are_checked() {
        let e = errors(&format!(
            "{GPU}[takeover]\nenabled = true\nstop_processes = [\"\", \"nv[\"]\n"
        ));
        assert_eq!(e, [K::Empty, K::Invalid("\"nv[\" is not a valid pattern: Pattern syntax error near position 2: invalid range pattern".into())]);
    }

    #[test]
    fn takeover_without_hostdev_is_rejected() {
        assert_eq!(
            errors("[takeover]\nenabled = true\n"),
            [K::TakeoverWithoutHostdev]
        );
    }

    #[test]
    fn disabled_takeover_is_none() {
        let c = check_file("[takeover]\nenabled = false\n").expect("valid");
        assert_eq!(c.takeover, None);
    }

    #[test]
    fn takeover_must_be_enabled_explicitly() {
        assert_eq!(
            errors("[takeover]\nstop_units = [\"x\"]\n"),
            [K::Missing("enabled")]
        );
    }

    #[test]
    fn unload_modules_word_other_than_auto_is_rejected() {
        let e = errors(&format!(
            "{GPU}[takeover]\nenabled = true\nunload_modules = \"all\"\n"
        ));
        assert!(matches!(e[..], [K::UnknownValue { .. }]));
    }

    #[test]
    fn desktop_is_stop_or_restart() {
        let cfg = |d: &str| format!("{GPU}[takeover]\nenabled = true\n{d}");
        let t = |d: &str| check_file(&cfg(d)).expect("valid").takeover.unwrap();
        assert_eq!(t("").desktop, Desktop::Stop);
        assert_eq!(t("desktop = \"restart\"\n").desktop, Desktop::Restart);
        let e = errors(&cfg("desktop = \"keep\"\n"));
        assert!(
            matches!(&e[..], [K::UnknownValue { value, .. }] if value == "keep"),
            "{e:?}"
        );
    }

    #[test]
    fn display_manager_commands_need_stop() {
        let e = errors(&format!(
            "{GPU}[takeover]\nenabled = true\ndisplay_manager = {{ start = [\"x\"] }}\n"
        ));
        assert_eq!(e, [K::Missing("stop")]);
    }
}
