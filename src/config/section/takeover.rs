//! `[takeover]`: stopping the host's display (manager, units, processes,
//! modules) so a single GPU can go to the VM, and starting it again after.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;

/// `display_manager`: `"auto"`, a unit name, or `{ stop = [..], start = [..] }`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WireDisplayManager {
    Name(String),
    Commands(WireDmCommands),
}

#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireDmCommands {
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub start: Vec<String>,
}

/// `unload_modules`: `"auto"` or an explicit list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WireUnloadModules {
    Name(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireTakeover {
    pub enabled: Option<bool>,
    pub display_manager: S<WireDisplayManager>,
    #[serde(default)]
    pub stop_units: Vec<String>,
    #[serde(default)]
    pub user_units: Vec<String>,
    #[serde(default)]
    pub stop_processes: Vec<String>,
    pub unload_modules: S<WireUnloadModules>,
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
        Some((_, WireUnloadModules::Name(n))) if n == "auto" => UnloadModules::Auto,
        Some((s, WireUnloadModules::Name(value))) => {
            let allowed = vec!["auto".to_string()];
            let key = "takeover.unload_modules";
            v.err(key, s, K::UnknownValue { value, allowed });
            UnloadModules::Auto
        }
        Some((_, WireUnloadModules::List(l))) => UnloadModules::List(l),
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
    })
}

fn display_manager(dm: S<WireDisplayManager>, v: &mut Checker<'_>) -> DisplayManager {
    match dm.map(parts) {
        None => DisplayManager::Auto,
        Some((_, WireDisplayManager::Name(n))) if n == "auto" => DisplayManager::Auto,
        Some((s, WireDisplayManager::Name(n))) if n.trim().is_empty() => {
            v.err("takeover.display_manager", s, K::Empty);
            DisplayManager::Auto
        }
        Some((_, WireDisplayManager::Name(n))) => DisplayManager::Unit(n),
        Some((s, WireDisplayManager::Commands(c))) => {
            let (stop, start) = (c.stop, c.start);
            if stop.is_empty() {
                v.err("takeover.display_manager.stop", s, K::Missing("stop"));
            }
            DisplayManager::Commands { stop, start }
        }
    }
}

// Hand-written visitors for the "string or something richer" keys, so a
// wrong type gets a message naming every accepted form (serde's `untagged`
// would only say "did not match any variant").

impl<'de> Deserialize<'de> for WireDisplayManager {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireDisplayManager;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"auto\", a systemd unit name, or a table { stop = [...], start = [...] }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireDisplayManager::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let de = de::value::MapAccessDeserializer::new(map);
                WireDmCommands::deserialize(de).map(WireDisplayManager::Commands)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for WireUnloadModules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireUnloadModules;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or a list of module names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireUnloadModules::Name(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let de = de::value::SeqAccessDeserializer::new(seq);
                Vec::<String>::deserialize(de).map(WireUnloadModules::List)
            }
        }
        d.deserialize_any(V)
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
    fn display_manager_commands_need_stop() {
        let e = errors(&format!(
            "{GPU}[takeover]\nenabled = true\ndisplay_manager = {{ start = [\"x\"] }}\n"
        ));
        assert_eq!(e, [K::Missing("stop")]);
    }
}
