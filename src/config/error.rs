//! What can be wrong with a config, and how it is shown: one `ConfigError` per
//! file, holding every problem found in it, rendered by miette with
//! `file:line:col` locations.

use std::fmt;
use std::io::IsTerminal;
use std::ops::Range;
use std::path::PathBuf;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use super::types::VmNameError;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config for VM `{name}`")]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the file name `{stem}` is not a valid VM name", path.display())]
    BadName {
        path: PathBuf,
        stem: String,
        #[source]
        source: VmNameError,
    },
    /// As root, a config found by name in a place another user could have
    /// written.
    #[error("not using {} found for `{name}`: {reason}", path.display())]
    Untrusted {
        name: String,
        path: PathBuf,
        reason: super::trust::Untrusted,
    },
    #[error(transparent)]
    Invalid(Box<InvalidConfig>),
}

impl ConfigError {
    /// The problems of an invalid file; empty for the other kinds of error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid(inv) => &inv.problems,
            _ => &[],
        }
    }
}

impl Diagnostic for ConfigError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let code = match self {
            Self::NotFound { .. } => "vmrun::config::not_found",
            Self::Read { .. } => "vmrun::config::read",
            Self::BadName { .. } => "vmrun::config::name",
            Self::Untrusted { .. } => "vmrun::config::untrusted",
            Self::Invalid(_) => return None,
        };
        Some(Box::new(code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        match self {
            Self::NotFound { name, searched } => {
                let mut s = format!("looked for `{name}.toml` in:");
                for p in searched {
                    s.push_str(&format!("\n  {}", p.display()));
                }
                Some(Box::new(s))
            }
            Self::BadName { .. } => Some(Box::new(
                "rename the file: the VM name is the file name without `.toml`",
            )),
            Self::Untrusted { path, .. } => Some(Box::new(format!(
                "as root, vmrun takes a config found by name only from a root-owned directory \
                 that no other user can write (nor any directory above it), and only a \
                 root-owned file no other user can write: a config placed there by another \
                 user would run its programs as root. Move it to /etc/vmrun/vms/, or name the \
                 file itself if you trust it: `vmrun start {}`",
                path.display()
            ))),
            Self::Read { .. } => None,
            Self::Invalid(inv) => inv.help(),
        }
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        match self {
            Self::Invalid(inv) => inv.source_code(),
            _ => None,
        }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        match self {
            Self::Invalid(inv) => inv.related(),
            _ => None,
        }
    }
}

/// At most this many problems of one file are kept: rendering each one
/// scans the file for its line, so a file of 200k unknown keys would keep the
/// report busy for minutes, and nobody reads past the first screens.
pub(crate) const MAX_PROBLEMS: usize = 100;

/// A file that was read but has problems: the first `MAX_PROBLEMS` of them,
/// in file order, and how many more there were.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{}: {} problem{}", path.display(), self.total(), if self.total() == 1 { "" } else { "s" })]
pub struct InvalidConfig {
    pub path: PathBuf,
    #[source_code]
    pub src: NamedSource<String>,
    #[related]
    pub problems: Vec<Problem>,
    /// Problems found after the first `MAX_PROBLEMS`, not kept.
    pub omitted: usize,
    #[help]
    more: Option<String>,
}

impl InvalidConfig {
    /// Keeps the first `MAX_PROBLEMS` of `problems` (already in file order).
    pub(crate) fn new(path: PathBuf, src: NamedSource<String>, mut problems: Vec<Problem>) -> Self {
        let omitted = problems.len().saturating_sub(MAX_PROBLEMS);
        problems.truncate(MAX_PROBLEMS);
        let more = (omitted > 0).then(|| {
            format!(
                "{omitted} more problem{} not shown; the first {MAX_PROBLEMS} are below",
                if omitted == 1 { "" } else { "s" }
            )
        });
        Self {
            path,
            src,
            problems,
            omitted,
            more,
        }
    }

    /// Every problem found, shown or not.
    pub fn total(&self) -> usize {
        self.problems.len() + self.omitted
    }
}

/// One problem, at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{kind}", if key.is_empty() { String::new() } else { format!("`{key}`: ") })]
pub struct Problem {
    /// The key it is about, as a path (`hostdev[1].romfile`); empty for syntax.
    pub key: String,
    pub kind: ProblemKind,
    /// Byte range in the file.
    pub span: Range<usize>,
}

impl Diagnostic for Problem {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.kind
            .help()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let len = self.span.end.saturating_sub(self.span.start);
        let label = LabeledSpan::new(Some(self.kind.label()), self.span.start, len);
        Some(Box::new(std::iter::once(label)))
    }
}

/// Every way a config can be wrong. Tests match on these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error("TOML syntax: {0}")]
    Syntax(String),
    #[error("unknown key `{name}`")]
    UnknownKey { name: String, allowed: Vec<String> },
    #[error("unknown value `{value}`")]
    UnknownValue { value: String, allowed: Vec<String> },
    #[error("{0}")]
    Invalid(String),
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("must be at least 1")]
    ZeroCount,
    #[error("{0} vCPUs is more than the limit of {max}", max = super::section::cpu::MAX_VCPUS)]
    TooManyVcpus(u64),
    #[error("{got} entries, but the topology has {vcpus} vCPUs")]
    PinCount { got: usize, vcpus: u32 },
    #[error("host CPU {0} is listed twice")]
    DuplicatePin(u32),
    #[error("only virtio and scsi disks have an I/O thread of their own")]
    IothreadInterface,
    #[error("`isolate` keeps the host off the pinned CPUs, and no CPU is pinned")]
    IsolateWithoutPin,
    #[error("`{0}` is not a cpufreq governor's name")]
    BadGovernor(String),
    #[error("more than one hostdev has `x_vga = true`")]
    MultipleXVga,
    #[error("{0} is passed through twice")]
    DuplicateHostdev(String),
    #[error("a hostdev needs `address` or `ids`")]
    NoSelector,
    #[error("`address` and `ids` both given")]
    BothSelectors,
    #[error("`index` is only meaningful with `ids`")]
    IndexWithoutIds,
    #[error("{memory} is not a multiple of the {page} huge page size")]
    HugepagesMisaligned { memory: String, page: &'static str },
    #[error("{0} is less than the smallest guest RAM, 1M")]
    MemoryTooSmall(String),
    #[error("{size} is not a whole number of MiB, which QEMU takes guest RAM in")]
    NotWholeMib {
        size: String,
        below: String,
        above: String,
    },
    #[error("Hyper-V enlightenments need KVM; QEMU refuses them under `accel = \"tcg\"`")]
    HypervWithTcg,
    #[error(
        "`{0}` clears the hypervisor bit, so Windows ignores the enlightenments of `hyperv = true`"
    )]
    HypervisorBitCleared(String),
    #[error("a hostdev has `x_vga = true`, so the {0} window would show nothing")]
    WindowWithXVga(&'static str),
    #[error("{0} characters; at most 12")]
    VendorIdTooLong(usize),
    #[error("has no effect without `hide_hypervisor` or `hyperv`")]
    VendorIdUnused,
    #[error("`{0}` holds a character `hv-vendor-id` cannot carry")]
    BadVendorId(String),
    #[error("`{0}` is not a single `-cpu` flag")]
    BadCpuFeature(String),
    #[error("`{0}` is not a CPU model name")]
    BadCpuModel(String),
    #[error("secure boot needs UEFI firmware")]
    SecureBootWithBios,
    #[error("`{given}` is given without `{missing}`")]
    FirmwarePair {
        given: &'static str,
        missing: &'static str,
    },
    #[error("file not found: {}", searched.first().map(|p| p.display().to_string()).unwrap_or_default())]
    FileNotFound { searched: Vec<PathBuf> },
    #[error("bad port forward `{value}`: {reason}")]
    BadForward { value: String, reason: String },
    #[error("bad MAC address `{0}`")]
    BadMac(String),
    #[error("`{0}` is a multicast MAC address")]
    MulticastMac(String),
    #[error("mode = \"{mode}\" needs `{key}`")]
    ModeNeeds {
        mode: &'static str,
        key: &'static str,
    },
    #[error("only used with mode = \"{mode}\"")]
    OnlyWithMode { mode: &'static str },
    #[error("`{0}` is not one of QEMU's grab-toggle keys")]
    BadQemuToggle(String),
    #[error("`{0}` is not a key name")]
    BadToggleKey(String),
    #[error("takeover needs at least one [[hostdev]] to give the VM")]
    TakeoverWithoutHostdev,
    #[error("must be longer than zero")]
    ZeroTimeout,
    #[error("unsupported machine type `{0}`")]
    BadMachine(String),
    #[error("`{0}` is not a valid user name")]
    BadUser(String),
    #[error("must not be empty")]
    Empty,
    #[error("a cdrom cannot use this interface")]
    CdromInterface,
    #[error("`{0}` is not a network interface name")]
    BadIfname(String),
    #[error("[input] names neither `keyboard` nor `mouse`")]
    InputWithoutDevices,
    #[error("router mode grabs the mouse, and with no `keyboard` nothing can press the switch hotkey: the mouse would stay with the guest")]
    RouterWithoutKeyboard,
    #[error("holds the control character U+{:04X}", u32::from(*.0))]
    ControlChar(char),
    #[error("`{0}` is not a resolution")]
    BadResolution(String),
    #[error("`{0}` is not a power of two of at least 1M")]
    LgSizeNotPowerOfTwo(String),
    #[error("smaller than the {need} a {resolution} frame needs")]
    LgSizeTooSmall { resolution: String, need: String },
    #[error("[looking_glass] needs `resolution` or `size`")]
    LgNoSize,
    #[error("`{0}` is not a UUID")]
    BadUuid(String),
    #[error("a [[usb]] device needs `ids` or `port`")]
    UsbNoSelector,
    #[error("`ids` and `port` both given")]
    UsbBothSelectors,
    #[error("USB device {0} is given twice")]
    DuplicateUsb(String),
    #[error("the spice backend plays through a SPICE client: set [display] mode = \"spice\" (or [looking_glass] spice = true), or pick another backend")]
    AudioSpiceWithoutSpice,
}

impl ProblemKind {
    /// The variant's name (`UnknownKey`), stable across releases: the
    /// bad-config corpus names the kind each file must produce with it.
    pub fn name(&self) -> String {
        // Derived `Debug` starts with the variant's name.
        let debug = format!("{self:?}");
        let end = debug
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(debug.len());
        debug[..end].to_string()
    }

    /// The short text under the highlighted span.
    fn label(&self) -> String {
        match self {
            Self::Syntax(_) => "here".into(),
            Self::UnknownKey { .. } => "unknown key".into(),
            Self::UnknownValue { .. } => "unknown value".into(),
            Self::Missing(_) => "in this table".into(),
            _ => "here".into(),
        }
    }

    /// What to do about it.
    fn help(&self) -> Option<String> {
        Some(match self {
            Self::UnknownKey { name, allowed }
            | Self::UnknownValue {
                value: name,
                allowed,
            } => {
                let list = allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                match super::suggest::closest(name, allowed) {
                    Some(best) => format!("did you mean `{best}`? (expected one of {list})"),
                    None if allowed.is_empty() => "remove it".into(),
                    None => format!("expected one of {list}"),
                }
            }
            Self::Missing("memory") => "add e.g. `memory = \"8G\"` at the top of the file".into(),
            Self::ZeroCount | Self::TooManyVcpus(_) => {
                "vCPUs = sockets * dies * cores * threads, each at least 1".into()
            }
            Self::PinCount { .. } => "list one host CPU per vCPU, or remove `pin`".into(),
            Self::IothreadInterface => "set `interface = \"virtio\"` or \"scsi\", or remove `iothread`".into(),
            Self::IsolateWithoutPin => {
                "add `pin = [...]` (a host CPU per vCPU), or remove `isolate`".into()
            }
            Self::BadGovernor(_) => {
                "one of /sys/devices/system/cpu/cpu0/cpufreq/scaling_available_governors, e.g. \"performance\"".into()
            }
            Self::MultipleXVga => "only the primary GPU gets `x_vga = true`".into(),
            Self::NoSelector => {
                "add `address = \"0000:01:00.0\"`, or `ids = \"10de:25a1\"` (see `lspci -nn`)"
                    .into()
            }
            Self::BothSelectors | Self::UsbBothSelectors => "keep one of them".into(),
            Self::UsbNoSelector => "add `ids = \"046d:c52b\"` (see `lsusb`), or the host port \
                 `port = \"1-4.2\"` (see `lsusb -t`)"
                .into(),
            Self::DuplicateUsb(_) => "remove one; for two identical devices, select each by `port`".into(),
            Self::IndexWithoutIds => "remove `index`, or select the device by `ids`".into(),
            Self::HugepagesMisaligned { page, .. } => {
                format!("round `memory` to a multiple of {page}")
            }
            Self::MemoryTooSmall(_) => "give the guest at least `1M` (a real OS needs far more)".into(),
            Self::NotWholeMib { below, above, .. } => {
                format!("use `{below}` or `{above}`")
            }
            Self::HypervWithTcg => {
                "remove `hyperv` for a TCG guest, or use `accel = \"kvm\"`".into()
            }
            Self::HypervisorBitCleared(f) => format!(
                "remove `{f}`; to hide the VM from NVIDIA drivers before 465, \
                 `hide_hypervisor = true` hides KVM's signature and keeps the enlightenments"
            ),
            Self::WindowWithXVga(_) => "add `secondary = \"virtio\"` (or `\"std\"`) under [display]: \
                 an emulated display beside the GPU, which the window shows; or use `mode = \"none\"`: \
                 the GPU shows the guest on its own monitor"
                .into(),
            Self::BadResolution(_) => "write `WIDTHxHEIGHT`, e.g. `2560x1440`".into(),
            Self::LgSizeNotPowerOfTwo(_) => {
                "ivshmem's BAR is a power of two: e.g. `32M`, `64M`, `128M`".into()
            }
            Self::LgSizeTooSmall { need, .. } => {
                format!("use `size = \"{need}\"`, or remove `size` to have it computed")
            }
            Self::LgNoSize => {
                "add the guest's largest `resolution = \"2560x1440\"`, or a `size = \"64M\"`".into()
            }
            Self::BadUuid(_) => {
                "write 32 hex digits as 8-4-4-4-12, e.g. `3f2504e0-4f89-41d3-9a0c-0305e82c3301`".into()
            }
            Self::VendorIdTooLong(_) => "QEMU's hv-vendor-id takes at most 12 characters".into(),
            Self::BadVendorId(_) => {
                "use letters, digits, spaces and punctuation other than `,` and `=`: \
                 QEMU splits `-cpu` at every comma, so a comma would add a flag"
                    .into()
            }
            Self::BadCpuFeature(_) => "write one flag per entry: `+name`, `-name`, `name` or \
                 `name=value`, names of letters, digits, `-`, `_` and `.`, no `,` or spaces"
                .into(),
            Self::BadCpuModel(_) => {
                "use a name from `qemu-system-x86_64 -cpu help`, e.g. `host` or `EPYC-Rome`".into()
            }
            Self::VendorIdUnused => {
                "set `hide_hypervisor = true` or `hyperv = true`, or remove `vendor_id`".into()
            }
            Self::SecureBootWithBios => "use `type = \"uefi\"`, or remove `secure_boot`".into(),
            Self::FirmwarePair { missing, .. } => {
                format!("give both `code` and `vars`, or neither (add `{missing}`)")
            }
            Self::FileNotFound { searched } if searched.len() > 1 => {
                let list: Vec<String> = searched
                    .iter()
                    .map(|p| format!("  {}", p.display()))
                    .collect();
                format!("looked in:\n{}", list.join("\n"))
            }
            Self::BadForward { .. } => {
                "write `tcp:HOSTPORT:GUESTPORT` or `udp:HOSTPORT:GUESTPORT`, ports 1-65535; \
                 `tcp:0.0.0.0:HOSTPORT:GUESTPORT` listens beyond 127.0.0.1"
                    .into()
            }
            Self::BadMac(_) => "write six hex pairs, e.g. `52:54:00:12:34:56`".into(),
            Self::MulticastMac(_) => {
                "the first byte must be even; QEMU's prefix is `52:54:00`".into()
            }
            Self::BadQemuToggle(_) => format!(
                "with mode = \"qemu\" use one of {}, or switch to mode = \"router\"",
                super::section::input::QemuToggle::ALL
                    .map(|q| q.name())
                    .join(", ")
            ),
            Self::BadToggleKey(_) => {
                "use key names joined by `+`, e.g. `LeftCtrl+RightCtrl` or `ScrollLock`".into()
            }
            Self::BadMachine(_) => {
                "use `q35`, `pc`, or a versioned `pc-q35-*` / `pc-i440fx-*` type".into()
            }
            Self::ZeroTimeout => "e.g. `timeout = \"60s\"`".into(),
            Self::Missing("memory.size") => {
                "with a [memory] table, write the size as `size = \"16G\"`".into()
            }
            Self::Missing("enabled") => {
                "add `enabled = true` (takeover stops the host display, so it is never implied)"
                    .into()
            }
            Self::CdromInterface => "use `interface = \"sata\"` or `\"scsi\"` for a cdrom".into(),
            Self::BadIfname(_) => "1 to 15 characters, no `/`, `:` or spaces".into(),
            Self::InputWithoutDevices => {
                "add `keyboard = \"/dev/input/by-id/...-event-kbd\"` or remove [input]".into()
            }
            Self::RouterWithoutKeyboard => {
                "add the `keyboard = \"/dev/input/by-id/...-event-kbd\"` whose keys switch, or remove [input]".into()
            }
            Self::ControlChar(_) => "remove it: QEMU's arguments, paths and names cannot carry \
                 control characters (only `description` may hold tabs and newlines)"
                .into(),
            Self::TakeoverWithoutHostdev => {
                "add the GPU as a [[hostdev]], or remove [takeover]".into()
            }
            _ => return None,
        })
    }
}

/// The report as text: colors only when stderr is a terminal.
pub fn render(err: &ConfigError) -> String {
    let theme = if std::io::stderr().is_terminal() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    if handler.render_report(&mut out, err).is_err() {
        // Rendering into a String only fails on a formatter bug; fall back to
        // the plain messages rather than lose them.
        out = err.to_string();
        for p in err.problems() {
            out.push_str(&format!("\n  {p}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_the_variant_name() {
        assert_eq!(ProblemKind::ZeroCount.name(), "ZeroCount");
        assert_eq!(ProblemKind::BadMac("x".into()).name(), "BadMac");
        let missing = ProblemKind::FirmwarePair {
            given: "code",
            missing: "vars",
        };
        assert_eq!(missing.name(), "FirmwarePair");
    }
}
