//! The TOML file as written: serde structs mirroring CONFIG.md key for key.
//!
//! Every field is optional here so that any subset of a file deserializes
//! (the error collector in `collect.rs` relies on it) and so that a missing
//! required key gets a message of our own in `validate.rs`. Values that a
//! semantic check may complain about are `Spanned`, so the complaint can point
//! at them.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::types::{ByteSize, Duration, PciAddress, PciIds};

type S<T> = Option<Spanned<T>>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireVm {
    pub description: Option<String>,
    pub memory: S<WireMemory>,
    pub machine: S<String>,
    pub cpu: S<WireCpu>,
    pub firmware: S<WireFirmware>,
    pub tpm: Option<WireTpm>,
    pub hostdev: Option<Vec<Spanned<WireHostdev>>>,
    pub disk: Option<Vec<Spanned<WireDisk>>>,
    pub network: S<WireNetwork>,
    pub display: Option<WireDisplay>,
    pub input: S<WireInput>,
    pub takeover: S<WireTakeover>,
    pub shutdown: Option<WireShutdown>,
    pub qemu: Option<WireQemu>,
}

/// `memory = "16G"`, or a `[memory]` table when hugepages are wanted: TOML
/// cannot hold both a `memory` string and a `[memory]` table, so the table
/// form carries the size as `size`.
#[derive(Debug)]
pub enum WireMemory {
    Size(ByteSize),
    Table(WireMemoryTable),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireMemoryTable {
    pub size: S<ByteSize>,
    pub hugepages: S<WireHugepages>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum WireHugepages {
    #[serde(rename = "off")]
    Off,
    #[serde(rename = "2M")]
    Size2M,
    #[serde(rename = "1G")]
    Size1G,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCpu {
    pub model: S<String>,
    pub sockets: S<u32>,
    pub dies: S<u32>,
    pub cores: S<u32>,
    pub threads: S<u32>,
    pub features: Option<Vec<String>>,
    pub pin: S<Vec<Spanned<u32>>>,
    pub hide_hypervisor: Option<bool>,
    pub vendor_id: S<String>,
    pub hyperv: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFirmwareKind {
    Uefi,
    Bios,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFirmware {
    #[serde(rename = "type")]
    pub kind: S<WireFirmwareKind>,
    pub secure_boot: S<bool>,
    pub code: S<String>,
    pub vars: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTpm {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHostdev {
    pub address: S<PciAddress>,
    pub ids: S<PciIds>,
    pub index: S<u32>,
    pub x_vga: S<bool>,
    pub romfile: S<String>,
    pub rombar: Option<bool>,
    pub multifunction: Option<bool>,
    pub rescan_fallback: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireDiskInterface {
    Virtio,
    Scsi,
    Nvme,
    Sata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireDiskMedia {
    Disk,
    Cdrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireDiskFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireCache {
    None,
    Writeback,
    Writethrough,
    Directsync,
    Unsafe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireAio {
    Threads,
    Native,
    IoUring,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDisk {
    pub path: S<String>,
    pub interface: Option<WireDiskInterface>,
    pub media: Option<WireDiskMedia>,
    pub format: Option<WireDiskFormat>,
    pub readonly: Option<bool>,
    pub cache: Option<WireCache>,
    pub aio: Option<WireAio>,
    pub discard: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireNetworkMode {
    User,
    Bridge,
    Tap,
    None,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireNetwork {
    pub mode: S<WireNetworkMode>,
    pub bridge: S<String>,
    pub forward: S<Vec<Spanned<String>>>,
    pub mac: S<String>,
    pub ifname: S<String>,
    pub model: S<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireDisplayMode {
    None,
    Gtk,
    Spice,
    Serial,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDisplay {
    pub mode: Option<WireDisplayMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireInputMode {
    Router,
    Qemu,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireInput {
    pub keyboard: Option<String>,
    pub mouse: Option<String>,
    pub toggle: S<String>,
    pub mode: Option<WireInputMode>,
    pub on_switch: Option<Vec<String>>,
}

/// `display_manager`: `"auto"`, a unit name, or `{ stop = [..], start = [..] }`.
#[derive(Debug, PartialEq, Eq)]
pub enum WireDisplayManager {
    Name(String),
    Commands(WireDmCommands),
}

#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDmCommands {
    pub stop: Option<Vec<String>>,
    pub start: Option<Vec<String>>,
}

/// `unload_modules`: `"auto"` or an explicit list.
#[derive(Debug, PartialEq, Eq)]
pub enum WireUnloadModules {
    Name(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTakeover {
    pub enabled: Option<bool>,
    pub display_manager: S<WireDisplayManager>,
    pub stop_units: Option<Vec<String>>,
    pub user_units: Option<Vec<String>>,
    pub stop_processes: Option<Vec<String>>,
    pub unload_modules: S<WireUnloadModules>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireShutdown {
    pub timeout: S<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireAccel {
    Kvm,
    Tcg,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireQemu {
    pub binary: Option<String>,
    pub accel: Option<WireAccel>,
    pub user: S<String>,
    pub extra_args: Option<Vec<String>>,
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

impl<'de> Deserialize<'de> for WireMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireMemory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"16G\", or a table with `size` and `hugepages`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireMemory, E> {
                v.parse().map(WireMemory::Size).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WireMemory, A::Error> {
                let de = de::value::MapAccessDeserializer::new(map);
                WireMemoryTable::deserialize(de).map(WireMemory::Table)
            }
        }
        d.deserialize_any(V)
    }
}
