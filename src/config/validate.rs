//! Wire -> model: defaults, cross-key rules and file checks. Every problem is
//! collected; the model is returned only when there are none.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::{Problem, ProblemKind as K};
use super::model::*;
use super::types::{ByteSize, Duration, VmName};
use super::wire::*;

/// QEMU's `-smp` limit for q35 with x2apic; also keeps the product in `u32`.
pub const MAX_VCPUS: u64 = 1024;

/// QEMU's `GrabToggleKeys` (qapi/common.json), the only values `input-linux`'s
/// `grab-toggle` accepts.
pub const QEMU_TOGGLES: &[&str] = &[
    "ctrl-ctrl",
    "alt-alt",
    "shift-shift",
    "meta-meta",
    "scrolllock",
    "ctrl-scrolllock",
];

/// Where the file is and how to ask whether a file exists (injected so tests
/// need no real files).
pub struct Context<'a> {
    pub name: VmName,
    /// Absolute path of the config file.
    pub source: PathBuf,
    pub exists: &'a dyn Fn(&Path) -> bool,
}

/// Checks `wire` and builds the model, or returns every problem found.
pub fn validate(wire: WireVm, cx: &Context<'_>) -> Result<VmConfig, Vec<Problem>> {
    let dir = cx.source.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut v = Validator {
        dir,
        exists: cx.exists,
        problems: Vec::new(),
    };
    let (memory, hugepages) = v.memory(wire.memory);
    let machine = v.machine(wire.machine);
    let cpu = v.cpu(wire.cpu);
    let firmware = v.firmware(wire.firmware);
    let hostdevs = v.hostdevs(wire.hostdev.unwrap_or_default());
    let disks = v.disks(wire.disk.unwrap_or_default());
    let network = v.network(wire.network);
    let display = match wire.display.and_then(|d| d.mode) {
        Some(mode) => display_mode(mode),
        // A passed-through GPU is the display; without one, the serial
        // console is the only way to see a headless guest.
        None if hostdevs.is_empty() => Display::Serial,
        None => Display::None,
    };
    let input = wire.input.map(|i| v.input(i));
    let takeover = wire
        .takeover
        .and_then(|t| v.takeover(t, !hostdevs.is_empty()));
    let shutdown_timeout = v.shutdown(wire.shutdown);
    let qemu = v.qemu(wire.qemu.unwrap_or_default());
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let Some(memory) = memory else {
        return Err(v.problems);
    };
    Ok(VmConfig {
        name: cx.name.clone(),
        source: cx.source.clone(),
        description: wire.description,
        memory,
        machine,
        cpu,
        hugepages,
        firmware,
        tpm: wire.tpm.and_then(|t| t.enabled).unwrap_or(false),
        hostdevs,
        disks,
        network,
        display,
        input,
        takeover,
        shutdown_timeout,
        qemu,
    })
}

struct Validator<'a> {
    dir: PathBuf,
    exists: &'a dyn Fn(&Path) -> bool,
    problems: Vec<Problem>,
}

fn parts<T>(s: Spanned<T>) -> (Range<usize>, T) {
    (s.span(), s.into_inner())
}

impl Validator<'_> {
    fn err(&mut self, key: impl Into<String>, span: Range<usize>, kind: K) {
        self.problems.push(Problem {
            key: key.into(),
            kind,
            span,
        });
    }

    /// Relative paths are relative to the config file's directory.
    fn resolve(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn memory(
        &mut self,
        m: Option<Spanned<WireMemory>>,
    ) -> (Option<ByteSize>, Option<HugePageSize>) {
        let Some(m) = m else {
            self.err("memory", 0..0, K::Missing("memory"));
            return (None, None);
        };
        let (span, m) = parts(m);
        let (size, size_span, hugepages) = match m {
            WireMemory::Size(size) => (Some(size), span.clone(), None),
            WireMemory::Table(t) => {
                let size = t.size.map(parts);
                if size.is_none() {
                    self.err("memory.size", span.clone(), K::Missing("memory.size"));
                }
                let size_span = size.as_ref().map_or(span.clone(), |s| s.0.clone());
                (size.map(|s| s.1), size_span, t.hugepages)
            }
        };
        let page = hugepages.and_then(|h| match h.into_inner() {
            WireHugepages::Off => None,
            WireHugepages::Size2M => Some(HugePageSize::Size2M),
            WireHugepages::Size1G => Some(HugePageSize::Size1G),
        });
        if let (Some(size), Some(page)) = (size, page) {
            if size.bytes() % page.size().bytes() != 0 {
                let page = if page == HugePageSize::Size2M {
                    "2M"
                } else {
                    "1G"
                };
                let memory = size.to_string();
                self.err("memory", size_span, K::HugepagesMisaligned { memory, page });
            }
        }
        (size, page)
    }

    fn machine(&mut self, m: Option<Spanned<String>>) -> String {
        let Some((span, m)) = m.map(parts) else {
            return "q35".into();
        };
        let ok = m == "q35"
            || m == "pc"
            || ["pc-q35-", "pc-i440fx-"]
                .iter()
                .any(|p| m.len() > p.len() && m.starts_with(p));
        if !ok {
            self.err("machine", span, K::BadMachine(m.clone()));
        }
        m
    }

    fn cpu(&mut self, c: Option<Spanned<WireCpu>>) -> Cpu {
        let (span, c) = c.map(parts).unwrap_or_default();
        let count = |key: &str, v: Option<Spanned<u32>>, this: &mut Self| -> Option<u32> {
            let (s, n) = parts(v?);
            if n == 0 {
                this.err(format!("cpu.{key}"), s, K::ZeroCount);
            }
            Some(n)
        };
        let sockets = count("sockets", c.sockets, self).unwrap_or(1);
        let dies = count("dies", c.dies, self);
        let cores = count("cores", c.cores, self).unwrap_or(1);
        let threads = count("threads", c.threads, self).unwrap_or(1);
        let product = [sockets, dies.unwrap_or(1), cores, threads]
            .iter()
            .fold(1u64, |acc, n| acc.saturating_mul(u64::from(*n)));
        let topology_ok = (1..=MAX_VCPUS).contains(&product);
        if product > MAX_VCPUS {
            self.err("cpu", span.clone(), K::TooManyVcpus(product));
        }
        let topology = if topology_ok {
            Topology {
                sockets,
                dies,
                cores,
                threads,
            }
        } else {
            Topology {
                sockets: 1,
                dies: None,
                cores: 1,
                threads: 1,
            }
        };
        let mut pin = Vec::new();
        if let Some((pin_span, list)) = c.pin.map(parts) {
            if topology_ok && list.len() as u64 != product {
                let vcpus = topology.vcpus();
                self.err(
                    "cpu.pin",
                    pin_span,
                    K::PinCount {
                        got: list.len(),
                        vcpus,
                    },
                );
            }
            let mut seen = HashSet::new();
            for item in list {
                let (s, host) = parts(item);
                if !seen.insert(host) {
                    self.err("cpu.pin", s, K::DuplicatePin(host));
                }
                pin.push(host);
            }
        }
        let hide_hypervisor = c.hide_hypervisor.unwrap_or(false);
        let hyperv = c.hyperv.unwrap_or(false);
        let vendor_id = c.vendor_id.map(|v| {
            let (s, id) = parts(v);
            if id.chars().count() > 12 {
                self.err(
                    "cpu.vendor_id",
                    s.clone(),
                    K::VendorIdTooLong(id.chars().count()),
                );
            } else if id.is_empty() {
                self.err("cpu.vendor_id", s.clone(), K::Empty);
            }
            if !hide_hypervisor && !hyperv {
                self.err("cpu.vendor_id", s, K::VendorIdUnused);
            }
            id
        });
        let model = match c.model.map(parts) {
            Some((s, m)) if m.trim().is_empty() => {
                self.err("cpu.model", s, K::Empty);
                m
            }
            Some((_, m)) => m,
            None => "host".into(),
        };
        Cpu {
            model,
            topology,
            features: c.features.unwrap_or_default(),
            pin,
            hide_hypervisor,
            vendor_id,
            hyperv,
        }
    }

    fn firmware(&mut self, f: Option<Spanned<WireFirmware>>) -> Firmware {
        let (_, f) = f.map(parts).unwrap_or_default();
        let kind = match f.kind.as_ref().map(|k| *k.get_ref()) {
            Some(WireFirmwareKind::Bios) => FirmwareKind::Bios,
            Some(WireFirmwareKind::Uefi) | None => FirmwareKind::Uefi,
        };
        let secure_boot = f.secure_boot.map(|sb| {
            if kind == FirmwareKind::Bios && *sb.get_ref() {
                self.err("firmware.secure_boot", sb.span(), K::SecureBootWithBios);
            }
            *sb.get_ref()
        });
        match (&f.code, &f.vars) {
            (Some(c), None) => self.err(
                "firmware.code",
                c.span(),
                K::FirmwarePair {
                    given: "code",
                    missing: "vars",
                },
            ),
            (None, Some(v)) => self.err(
                "firmware.vars",
                v.span(),
                K::FirmwarePair {
                    given: "vars",
                    missing: "code",
                },
            ),
            _ => {}
        }
        let code = f.code.map(|c| self.existing_file("firmware.code", c));
        let vars = f.vars.map(|c| self.existing_file("firmware.vars", c));
        Firmware {
            kind,
            secure_boot,
            code,
            vars,
        }
    }

    fn existing_file(&mut self, key: &str, p: Spanned<String>) -> PathBuf {
        let (span, p) = parts(p);
        let path = self.resolve(&p);
        if !(self.exists)(&path) {
            let searched = vec![path.clone()];
            self.err(key, span, K::FileNotFound { searched });
        }
        path
    }

    /// A bare romfile name is looked up next to the config and in the
    /// `firmware/` folders beside and above it.
    fn romfile(&mut self, key: &str, p: Spanned<String>) -> PathBuf {
        if p.get_ref().contains('/') {
            return self.existing_file(key, p);
        }
        let (span, name) = parts(p);
        let mut searched = vec![self.dir.join(&name)];
        if let Some(parent) = self.dir.parent() {
            searched.push(parent.join("firmware").join(&name));
        }
        searched.push(self.dir.join("firmware").join(&name));
        if let Some(found) = searched.iter().find(|p| (self.exists)(p)) {
            return found.clone();
        }
        let first = searched[0].clone();
        self.err(key, span, K::FileNotFound { searched });
        first
    }

    fn hostdevs(&mut self, list: Vec<Spanned<WireHostdev>>) -> Vec<Hostdev> {
        let mut out: Vec<Hostdev> = Vec::new();
        let mut x_vga_seen = false;
        for (i, h) in list.into_iter().enumerate() {
            let key = |k: &str| format!("hostdev[{i}].{k}");
            let (span, h) = parts(h);
            if let (Some(index), None) = (&h.index, &h.ids) {
                self.err(key("index"), index.span(), K::IndexWithoutIds);
            }
            let selector = match (h.address.map(parts), h.ids.map(parts)) {
                (Some((s, address)), None) => Some((s, HostdevSelector::Address(address))),
                (None, Some((s, ids))) => {
                    let index = h.index.map_or(0, |i| *i.get_ref());
                    Some((s, HostdevSelector::Ids { ids, index }))
                }
                (Some(_), Some((s, _))) => {
                    self.err(key("ids"), s, K::BothSelectors);
                    None
                }
                (None, None) => {
                    self.err(format!("hostdev[{i}]"), span, K::NoSelector);
                    None
                }
            };
            let x_vga = h.x_vga.map(|x| {
                if *x.get_ref() && std::mem::replace(&mut x_vga_seen, true) {
                    self.err(key("x_vga"), x.span(), K::MultipleXVga);
                }
                *x.get_ref()
            });
            let romfile = h.romfile.map(|r| self.romfile(&key("romfile"), r));
            let Some((sel_span, selector)) = selector else {
                continue;
            };
            if out.iter().any(|o| o.selector == selector) {
                let what = match selector {
                    HostdevSelector::Address(a) => a.to_string(),
                    HostdevSelector::Ids { ids, index } => format!("{ids} index {index}"),
                };
                let k = if matches!(selector, HostdevSelector::Address(_)) {
                    "address"
                } else {
                    "ids"
                };
                self.err(key(k), sel_span, K::DuplicateHostdev(what));
            }
            out.push(Hostdev {
                selector,
                x_vga: x_vga.unwrap_or(false),
                romfile,
                rombar: h.rombar,
                multifunction: h.multifunction,
                rescan_fallback: h.rescan_fallback.unwrap_or(false),
            });
        }
        out
    }

    fn disks(&mut self, list: Vec<Spanned<WireDisk>>) -> Vec<Disk> {
        let mut out = Vec::new();
        for (i, d) in list.into_iter().enumerate() {
            let (span, d) = parts(d);
            let media = match d.media {
                Some(WireDiskMedia::Cdrom) => DiskMedia::Cdrom,
                Some(WireDiskMedia::Disk) | None => DiskMedia::Disk,
            };
            let Some((path_span, raw)) = d.path.map(parts) else {
                self.err(format!("disk[{i}]"), span, K::Missing("path"));
                continue;
            };
            // Whether the image exists is host state (a disk may be created
            // later, a block device plugged in): the plan checks it.
            let path = self.resolve(&raw);
            let _ = path_span;
            let interface = match (d.interface, media) {
                (Some(i), _) => disk_interface(i),
                // virtio-blk cannot hold removable media; AHCI is what every
                // installer can boot from.
                (None, DiskMedia::Cdrom) => DiskInterface::Sata,
                (None, DiskMedia::Disk) => DiskInterface::Virtio,
            };
            if media == DiskMedia::Cdrom
                && matches!(interface, DiskInterface::Virtio | DiskInterface::Nvme)
            {
                self.err(
                    format!("disk[{i}].interface"),
                    span.clone(),
                    K::CdromInterface,
                );
            }
            let format = match d.format {
                Some(WireDiskFormat::Qcow2) => DiskFormat::Qcow2,
                Some(WireDiskFormat::Raw) => DiskFormat::Raw,
                None if path.extension().is_some_and(|e| e == "qcow2") => DiskFormat::Qcow2,
                None => DiskFormat::Raw,
            };
            out.push(Disk {
                path,
                interface,
                media,
                format,
                readonly: d.readonly.unwrap_or(media == DiskMedia::Cdrom),
                cache: d.cache.map(|c| cache_name(c).to_string()),
                aio: d.aio.map(|a| aio_name(a).to_string()),
                discard: d.discard.unwrap_or(false),
            });
        }
        out
    }

    fn network(&mut self, n: Option<Spanned<WireNetwork>>) -> Network {
        let (span, n) = n.map(parts).unwrap_or_default();
        let mode = n
            .mode
            .as_ref()
            .map_or(WireNetworkMode::User, |m| *m.get_ref());
        if mode != WireNetworkMode::User {
            if let Some(f) = &n.forward {
                self.err(
                    "network.forward",
                    f.span(),
                    K::OnlyWithMode { mode: "user" },
                );
            }
        }
        if mode != WireNetworkMode::Bridge {
            if let Some(b) = &n.bridge {
                self.err(
                    "network.bridge",
                    b.span(),
                    K::OnlyWithMode { mode: "bridge" },
                );
            }
        }
        if mode != WireNetworkMode::Tap {
            if let Some(t) = &n.ifname {
                self.err("network.ifname", t.span(), K::OnlyWithMode { mode: "tap" });
            }
        }
        let mode_span = n.mode.as_ref().map_or(span, |m| m.span());
        let mode = match mode {
            WireNetworkMode::User => {
                let mut forward = Vec::new();
                for f in n.forward.map(|f| f.into_inner()).unwrap_or_default() {
                    let (s, text) = parts(f);
                    match parse_forward(&text) {
                        Ok(fw)
                            if forward.iter().any(|o: &Forward| {
                                o.protocol == fw.protocol && o.host_port == fw.host_port
                            }) =>
                        {
                            let reason = format!("host port {} is already forwarded", fw.host_port);
                            self.err(
                                "network.forward",
                                s,
                                K::BadForward {
                                    value: text,
                                    reason,
                                },
                            );
                        }
                        Ok(fw) => forward.push(fw),
                        Err(reason) => {
                            self.err(
                                "network.forward",
                                s,
                                K::BadForward {
                                    value: text,
                                    reason,
                                },
                            );
                        }
                    }
                }
                NetworkMode::User { forward }
            }
            WireNetworkMode::Bridge => NetworkMode::Bridge {
                bridge: self.ifname(n.bridge, "network.bridge", "bridge", &mode_span),
            },
            WireNetworkMode::Tap => NetworkMode::Tap {
                ifname: self.ifname(n.ifname, "network.ifname", "tap", &mode_span),
            },
            WireNetworkMode::None => NetworkMode::None,
        };
        let mac = n.mac.map(|m| {
            let (s, mac) = parts(m);
            if let Err(kind) = check_mac(&mac) {
                self.err("network.mac", s, kind);
            }
            mac.to_ascii_lowercase()
        });
        let model = match n.model.map(parts) {
            Some((s, m)) if m.trim().is_empty() => {
                self.err("network.model", s, K::Empty);
                m
            }
            Some((_, m)) => m,
            None => "virtio-net-pci".into(),
        };
        Network { mode, mac, model }
    }

    /// A Linux interface name: 1-15 bytes (IFNAMSIZ - 1), no `/` or space.
    fn ifname(
        &mut self,
        v: Option<Spanned<String>>,
        key: &'static str,
        mode: &'static str,
        mode_span: &Range<usize>,
    ) -> String {
        let Some((s, name)) = v.map(parts) else {
            let short = key.trim_start_matches("network.");
            self.err(key, mode_span.clone(), K::ModeNeeds { mode, key: short });
            return String::new();
        };
        let ok = !name.is_empty()
            && name.len() <= 15
            && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
        if !ok {
            self.err(key, s, K::BadIfname(name.clone()));
        }
        name
    }

    fn input(&mut self, i: Spanned<WireInput>) -> Input {
        let (span, i) = parts(i);
        let mode = match i.mode {
            Some(WireInputMode::Qemu) => InputMode::Qemu,
            Some(WireInputMode::Router) | None => InputMode::Router,
        };
        if i.keyboard.is_none() && i.mouse.is_none() {
            self.err("input", span, K::InputWithoutDevices);
        }
        let toggle = match i.toggle.map(parts) {
            Some((s, t)) => {
                if let Err(kind) = check_toggle(&t, mode) {
                    self.err("input.toggle", s, kind);
                }
                t
            }
            None => "ctrl-ctrl".into(),
        };
        Input {
            keyboard: i.keyboard.map(|p| self.resolve(&p)),
            mouse: i.mouse.map(|p| self.resolve(&p)),
            toggle,
            mode,
            on_switch: i.on_switch.unwrap_or_default(),
        }
    }

    fn takeover(&mut self, t: Spanned<WireTakeover>, has_hostdev: bool) -> Option<Takeover> {
        let (span, t) = parts(t);
        match t.enabled {
            Some(true) => {}
            Some(false) => return None,
            None => {
                // Takeover stops the host's display: never implied.
                self.err("takeover", span, K::Missing("enabled"));
                return None;
            }
        }
        if !has_hostdev {
            self.err("takeover.enabled", span.clone(), K::TakeoverWithoutHostdev);
        }
        let display_manager = match t.display_manager.map(parts) {
            None => DisplayManager::Auto,
            Some((_, WireDisplayManager::Name(n))) if n == "auto" => DisplayManager::Auto,
            Some((s, WireDisplayManager::Name(n))) if n.trim().is_empty() => {
                self.err("takeover.display_manager", s, K::Empty);
                DisplayManager::Auto
            }
            Some((_, WireDisplayManager::Name(n))) => DisplayManager::Unit(n),
            Some((s, WireDisplayManager::Commands(c))) => {
                let (stop, start) = (c.stop.unwrap_or_default(), c.start.unwrap_or_default());
                if stop.is_empty() {
                    self.err("takeover.display_manager.stop", s, K::Missing("stop"));
                }
                DisplayManager::Commands { stop, start }
            }
        };
        let unload_modules = match t.unload_modules.map(parts) {
            None => UnloadModules::Auto,
            Some((_, WireUnloadModules::Name(n))) if n == "auto" => UnloadModules::Auto,
            Some((s, WireUnloadModules::Name(value))) => {
                let allowed = vec!["auto".to_string()];
                self.err(
                    "takeover.unload_modules",
                    s,
                    K::UnknownValue { value, allowed },
                );
                UnloadModules::Auto
            }
            Some((_, WireUnloadModules::List(l))) => UnloadModules::List(l),
        };
        for (key, list) in [
            ("takeover.user_units", &t.user_units),
            ("takeover.stop_processes", &t.stop_processes),
        ] {
            for p in list.iter().flatten() {
                if p.trim().is_empty() {
                    self.err(key, span.clone(), K::Empty);
                } else if let Err(e) = glob::Pattern::new(p) {
                    self.err(
                        key,
                        span.clone(),
                        K::Invalid(format!("{p:?} is not a valid pattern: {e}")),
                    );
                }
            }
        }
        Some(Takeover {
            display_manager,
            stop_units: t.stop_units.unwrap_or_default(),
            user_units: t.user_units.unwrap_or_default(),
            stop_processes: t.stop_processes.unwrap_or_default(),
            unload_modules,
        })
    }

    fn shutdown(&mut self, s: Option<WireShutdown>) -> Duration {
        match s.and_then(|s| s.timeout).map(parts) {
            Some((span, d)) => {
                if d.get().is_zero() {
                    self.err("shutdown.timeout", span, K::ZeroTimeout);
                }
                d
            }
            None => Duration::from_secs(60),
        }
    }

    fn qemu(&mut self, q: WireQemu) -> QemuSettings {
        // A bare binary name is looked up in PATH by the plan stage.
        let binary = match q.binary {
            Some(b) if b.contains('/') => self.resolve(&b),
            Some(b) => PathBuf::from(b),
            None => PathBuf::from("qemu-system-x86_64"),
        };
        let user = match q.user.map(parts) {
            None => QemuUser::Auto,
            Some((_, u)) if u == "auto" => QemuUser::Auto,
            Some((_, u)) if u == "root" => QemuUser::Root,
            Some((s, u)) => {
                if !is_user_name(&u) {
                    self.err("qemu.user", s, K::BadUser(u.clone()));
                }
                QemuUser::Named(u)
            }
        };
        QemuSettings {
            binary,
            accel: match q.accel {
                Some(WireAccel::Tcg) => Accel::Tcg,
                Some(WireAccel::Kvm) | None => Accel::Kvm,
            },
            user,
            extra_args: q.extra_args.unwrap_or_default(),
        }
    }
}

fn display_mode(m: WireDisplayMode) -> Display {
    match m {
        WireDisplayMode::None => Display::None,
        WireDisplayMode::Gtk => Display::Gtk,
        WireDisplayMode::Spice => Display::Spice,
        WireDisplayMode::Serial => Display::Serial,
    }
}

fn disk_interface(i: WireDiskInterface) -> DiskInterface {
    match i {
        WireDiskInterface::Virtio => DiskInterface::Virtio,
        WireDiskInterface::Scsi => DiskInterface::Scsi,
        WireDiskInterface::Nvme => DiskInterface::Nvme,
        WireDiskInterface::Sata => DiskInterface::Sata,
    }
}

fn cache_name(c: WireCache) -> &'static str {
    match c {
        WireCache::None => "none",
        WireCache::Writeback => "writeback",
        WireCache::Writethrough => "writethrough",
        WireCache::Directsync => "directsync",
        WireCache::Unsafe => "unsafe",
    }
}

fn aio_name(a: WireAio) -> &'static str {
    match a {
        WireAio::Threads => "threads",
        WireAio::Native => "native",
        WireAio::IoUring => "io_uring",
    }
}

/// `tcp:HOSTPORT:GUESTPORT` or `udp:...`.
pub fn parse_forward(s: &str) -> Result<Forward, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [proto, host, guest] = parts.as_slice() else {
        return Err("expected PROTOCOL:HOSTPORT:GUESTPORT".into());
    };
    let protocol = match *proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(format!("protocol `{other}` is not tcp or udp")),
    };
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("`{p}` is not a port from 1 to 65535")),
    };
    Ok(Forward {
        protocol,
        host_port: port(host)?,
        guest_port: port(guest)?,
    })
}

/// Six hex pairs separated by `:`, with the multicast bit clear.
pub fn check_mac(s: &str) -> Result<(), K> {
    let bytes: Vec<&str> = s.split(':').collect();
    let well_formed = bytes.len() == 6
        && bytes
            .iter()
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
    if !well_formed {
        return Err(K::BadMac(s.to_string()));
    }
    match u8::from_str_radix(bytes[0], 16) {
        Ok(first) if first & 1 == 0 => Ok(()),
        _ => Err(K::MulticastMac(s.to_string())),
    }
}

/// Key names a router-mode toggle may combine (evdev names, `KEY_` dropped).
const KEY_NAMES: &[&str] = &[
    "leftctrl",
    "rightctrl",
    "leftshift",
    "rightshift",
    "leftalt",
    "rightalt",
    "leftmeta",
    "rightmeta",
    "scrolllock",
    "pause",
    "sysrq",
    "insert",
    "home",
    "end",
    "pageup",
    "pagedown",
    "delete",
    "esc",
    "tab",
    "space",
    "enter",
    "capslock",
    "numlock",
    "menu",
    "compose",
    "grave",
    "backslash",
];

fn is_key_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    let single = |c: u8| c.is_ascii_alphanumeric();
    KEY_NAMES.contains(&k.as_str())
        || (k.len() == 1 && single(k.as_bytes()[0]))
        || k.strip_prefix('f')
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=24).contains(&n) && !k.starts_with("f0"))
}

/// QEMU mode takes only QEMU's names; router mode also takes `Key+Key`.
pub fn check_toggle(t: &str, mode: InputMode) -> Result<(), K> {
    if QEMU_TOGGLES.contains(&t) {
        return Ok(());
    }
    if mode == InputMode::Qemu {
        return Err(K::BadQemuToggle(t.to_string()));
    }
    match t.split('+').find(|k| !is_key_name(k.trim())) {
        Some(bad) => Err(K::BadToggleKey(bad.to_string())),
        None => Ok(()),
    }
}

/// A POSIX-portable user name, as `useradd` accepts by default.
fn is_user_name(u: &str) -> bool {
    let mut chars = u.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && u.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `memory = "4G"` plus `rest`; files exist unless their path
    /// contains `missing`.
    fn check(rest: &str) -> Result<VmConfig, Vec<K>> {
        check_with(&format!("memory = \"4G\"\n{rest}"), &|p: &Path| {
            !p.to_string_lossy().contains("missing")
        })
    }

    fn check_with(text: &str, exists: &dyn Fn(&Path) -> bool) -> Result<VmConfig, Vec<K>> {
        let wire: WireVm = toml::from_str(text).expect("test TOML deserializes");
        let cx = Context {
            name: "t".parse().expect("valid name"),
            source: PathBuf::from("/cfg/vms/t.toml"),
            exists,
        };
        validate(wire, &cx).map_err(|ps| ps.into_iter().map(|p| p.kind).collect())
    }

    fn errors(rest: &str) -> Vec<K> {
        check(rest).err().unwrap_or_default()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = check("").expect("valid");
        assert_eq!(c.machine, "q35");
        assert_eq!(c.cpu.model, "host");
        assert_eq!(c.cpu.topology.vcpus(), 1);
        assert_eq!(c.display, Display::Serial);
        assert_eq!(c.network.mode, NetworkMode::User { forward: vec![] });
        assert_eq!(c.network.model, "virtio-net-pci");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(60));
        assert_eq!(c.qemu.binary, PathBuf::from("qemu-system-x86_64"));
        assert_eq!(c.qemu.accel, Accel::Kvm);
        assert_eq!(c.qemu.user, QemuUser::Auto);
        assert!(c.input.is_none() && c.takeover.is_none());
    }

    #[test]
    fn missing_memory_is_rejected() {
        let e = check_with("", &|_| true).unwrap_err();
        assert_eq!(e, [K::Missing("memory")]);
    }

    #[test]
    fn memory_table_form_carries_size_and_hugepages() {
        let c = check_with("[memory]\nsize = \"4G\"\nhugepages = \"1G\"\n", &|_| true);
        let c = c.expect("valid");
        assert_eq!(c.memory.bytes(), 4 << 30);
        assert_eq!(c.hugepages, Some(HugePageSize::Size1G));
    }

    #[test]
    fn memory_table_without_size_is_rejected() {
        let e = check_with("[memory]\nhugepages = \"2M\"\n", &|_| true).unwrap_err();
        assert_eq!(e, [K::Missing("memory.size")]);
    }

    #[test]
    fn misaligned_hugepages_are_rejected() {
        let e = check_with("memory = { size = \"1536M\", hugepages = \"1G\" }", &|_| {
            true
        });
        assert!(matches!(
            e.unwrap_err()[..],
            [K::HugepagesMisaligned { page: "1G", .. }]
        ));
    }

    #[test]
    fn zero_cores_is_rejected() {
        assert_eq!(errors("[cpu]\ncores = 0\n"), [K::ZeroCount]);
    }

    #[test]
    fn huge_topology_is_rejected_without_overflow() {
        let e = errors("[cpu]\nsockets = 4000000000\ncores = 4000000000\n");
        assert!(matches!(e[..], [K::TooManyVcpus(_)]));
    }

    #[test]
    fn pin_length_must_match_vcpus() {
        let e = errors("[cpu]\ncores = 2\nthreads = 2\npin = [1, 2, 3]\n");
        assert_eq!(e, [K::PinCount { got: 3, vcpus: 4 }]);
    }

    #[test]
    fn duplicate_pin_is_rejected() {
        assert_eq!(
            errors("[cpu]\ncores = 2\npin = [3, 3]\n"),
            [K::DuplicatePin(3)]
        );
    }

    #[test]
    fn dies_count_into_vcpus() {
        let c = check("[cpu]\nsockets = 2\ndies = 2\ncores = 2\npin = [0,1,2,3,4,5,6,7]\n");
        assert_eq!(c.expect("valid").cpu.topology.vcpus(), 8);
    }

    #[test]
    fn long_vendor_id_is_rejected() {
        let e = errors("[cpu]\nhyperv = true\nvendor_id = \"0123456789abc\"\n");
        assert_eq!(e, [K::VendorIdTooLong(13)]);
    }

    #[test]
    fn vendor_id_without_hiding_is_rejected() {
        assert_eq!(errors("[cpu]\nvendor_id = \"abc\"\n"), [K::VendorIdUnused]);
    }

    #[test]
    fn secure_boot_with_bios_is_rejected() {
        let e = errors("[firmware]\ntype = \"bios\"\nsecure_boot = true\n");
        assert_eq!(e, [K::SecureBootWithBios]);
    }

    #[test]
    fn firmware_code_without_vars_is_rejected() {
        let e = errors("[firmware]\ncode = \"/fw/CODE.fd\"\n");
        assert_eq!(
            e,
            [K::FirmwarePair {
                given: "code",
                missing: "vars"
            }]
        );
    }

    #[test]
    fn missing_firmware_file_is_rejected() {
        let e = errors("[firmware]\ncode = \"/missing/C.fd\"\nvars = \"/fw/V.fd\"\n");
        assert!(matches!(e[..], [K::FileNotFound { .. }]));
    }

    #[test]
    fn two_x_vga_is_rejected() {
        let e = errors(
            "[[hostdev]]\naddress = \"01:00.0\"\nx_vga = true\n\
             [[hostdev]]\naddress = \"02:00.0\"\nx_vga = true\n",
        );
        assert_eq!(e, [K::MultipleXVga]);
    }

    #[test]
    fn duplicate_hostdev_address_is_rejected() {
        let e =
            errors("[[hostdev]]\naddress = \"01:00.0\"\n[[hostdev]]\naddress = \"0000:01:00.0\"\n");
        assert_eq!(e, [K::DuplicateHostdev("0000:01:00.0".into())]);
    }

    #[test]
    fn duplicate_hostdev_ids_and_index_is_rejected() {
        let e = errors(
            "[[hostdev]]\nids = \"10de:25a1\"\n[[hostdev]]\nids = \"10de:25a1\"\nindex = 0\n",
        );
        assert!(matches!(e[..], [K::DuplicateHostdev(_)]));
    }

    #[test]
    fn hostdev_without_selector_is_rejected() {
        assert_eq!(errors("[[hostdev]]\nx_vga = true\n"), [K::NoSelector]);
    }

    #[test]
    fn hostdev_with_both_selectors_is_rejected() {
        let e = errors("[[hostdev]]\naddress = \"01:00.0\"\nids = \"10de:25a1\"\n");
        assert_eq!(e, [K::BothSelectors]);
    }

    #[test]
    fn index_without_ids_is_rejected() {
        let e = errors("[[hostdev]]\naddress = \"01:00.0\"\nindex = 1\n");
        assert_eq!(e, [K::IndexWithoutIds]);
    }

    #[test]
    fn hostdev_makes_display_default_to_none() {
        let c = check("[[hostdev]]\nids = \"10de:25a1\"\nindex = 1\n").expect("valid");
        assert_eq!(c.display, Display::None);
        let ids = "10de:25a1".parse().expect("ids");
        assert_eq!(
            c.hostdevs[0].selector,
            HostdevSelector::Ids { ids, index: 1 }
        );
    }

    #[test]
    fn bare_romfile_is_found_in_sibling_firmware_dir() {
        let text = "memory = \"1G\"\n[[hostdev]]\naddress = \"01:00.0\"\nromfile = \"gpu.rom\"\n";
        let c = check_with(text, &|p: &Path| p == Path::new("/cfg/firmware/gpu.rom"));
        let rom = c.expect("valid").hostdevs[0].romfile.clone();
        assert_eq!(rom, Some(PathBuf::from("/cfg/firmware/gpu.rom")));
    }

    #[test]
    fn missing_bare_romfile_lists_every_place_searched() {
        let text = "memory = \"1G\"\n[[hostdev]]\naddress = \"01:00.0\"\nromfile = \"gpu.rom\"\n";
        let e = check_with(text, &|_| false).unwrap_err();
        let K::FileNotFound { searched } = &e[0] else {
            panic!("expected FileNotFound, got {e:?}");
        };
        assert_eq!(
            searched,
            &[
                PathBuf::from("/cfg/vms/gpu.rom"),
                PathBuf::from("/cfg/firmware/gpu.rom"),
                PathBuf::from("/cfg/vms/firmware/gpu.rom"),
            ]
        );
    }

    #[test]
    fn a_missing_disk_is_left_to_the_plan() {
        let c = check_with(
            "memory = \"1G\"\n[[disk]]\npath = \"missing.qcow2\"\n",
            &|_| false,
        );
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn disk_defaults_follow_media_and_extension() {
        let c =
            check("[[disk]]\npath = \"d.qcow2\"\n[[disk]]\npath = \"i.iso\"\nmedia = \"cdrom\"\n");
        let disks = c.expect("valid").disks;
        assert_eq!(disks[0].path, PathBuf::from("/cfg/vms/d.qcow2"));
        assert_eq!(
            (disks[0].format, disks[0].readonly, disks[0].interface),
            (DiskFormat::Qcow2, false, DiskInterface::Virtio)
        );
        assert_eq!(
            (disks[1].format, disks[1].readonly, disks[1].interface),
            (DiskFormat::Raw, true, DiskInterface::Sata)
        );
    }

    #[test]
    fn virtio_cdrom_is_rejected() {
        let e = errors("[[disk]]\npath = \"i.iso\"\nmedia = \"cdrom\"\ninterface = \"virtio\"\n");
        assert_eq!(e, [K::CdromInterface]);
    }

    #[test]
    fn forward_parses_and_rejects() {
        assert_eq!(
            parse_forward("udp:5000:53"),
            Ok(Forward {
                protocol: Protocol::Udp,
                host_port: 5000,
                guest_port: 53
            })
        );
        for bad in [
            "tcp:0:1",
            "tcp:1:65536",
            "sctp:1:1",
            "tcp:1",
            "tcp:+1:1",
            "",
        ] {
            assert!(parse_forward(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_forward_host_port_is_rejected() {
        let e = errors("[network]\nforward = [\"tcp:80:80\", \"tcp:80:8080\"]\n");
        assert!(matches!(e[..], [K::BadForward { .. }]));
    }

    #[test]
    fn forward_outside_user_mode_is_rejected() {
        let e = errors("[network]\nmode = \"none\"\nforward = [\"tcp:1:1\"]\n");
        assert_eq!(e, [K::OnlyWithMode { mode: "user" }]);
    }

    #[test]
    fn mac_checks() {
        assert_eq!(check_mac("52:54:00:AB:cd:ef"), Ok(()));
        assert!(matches!(check_mac("52:54:00:ab:cd"), Err(K::BadMac(_))));
        assert!(matches!(check_mac("52:54:00:ab:cd:eg"), Err(K::BadMac(_))));
        assert!(matches!(
            check_mac("01:00:5e:00:00:01"),
            Err(K::MulticastMac(_))
        ));
    }

    #[test]
    fn bridge_mode_needs_bridge() {
        let e = errors("[network]\nmode = \"bridge\"\n");
        assert_eq!(
            e,
            [K::ModeNeeds {
                mode: "bridge",
                key: "bridge"
            }]
        );
    }

    #[test]
    fn tap_mode_needs_a_valid_ifname() {
        assert!(matches!(
            errors("[network]\nmode = \"tap\"\n")[..],
            [K::ModeNeeds { mode: "tap", .. }]
        ));
        assert!(matches!(
            errors("[network]\nmode = \"tap\"\nifname = \"a/b\"\n")[..],
            [K::BadIfname(_)]
        ));
    }

    #[test]
    fn toggle_rules_depend_on_mode() {
        assert_eq!(
            check_toggle("LeftCtrl+RightCtrl", InputMode::Router),
            Ok(())
        );
        assert_eq!(check_toggle("scrolllock", InputMode::Qemu), Ok(()));
        assert_eq!(check_toggle("f12+leftalt", InputMode::Router), Ok(()));
        assert!(matches!(
            check_toggle("LeftCtrl+RightCtrl", InputMode::Qemu),
            Err(K::BadQemuToggle(_))
        ));
        assert_eq!(
            check_toggle("LeftCtrl+Hyper", InputMode::Router),
            Err(K::BadToggleKey("Hyper".into()))
        );
        assert!(check_toggle("F0", InputMode::Router).is_err());
    }

    #[test]
    fn input_without_devices_is_rejected() {
        assert_eq!(
            errors("[input]\nmode = \"qemu\"\n"),
            [K::InputWithoutDevices]
        );
    }

    #[test]
    fn takeover_process_patterns_are_checked() {
        let e = errors("[[hostdev]]\naddress = \"01:00.0\"\n[takeover]\nenabled = true\nstop_processes = [\"\", \"nv[\"]\n");
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
        assert_eq!(
            check("[takeover]\nenabled = false\n")
                .expect("valid")
                .takeover,
            None
        );
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
        let e = errors("[[hostdev]]\naddress = \"01:00.0\"\n[takeover]\nenabled = true\nunload_modules = \"all\"\n");
        assert!(matches!(e[..], [K::UnknownValue { .. }]));
    }

    #[test]
    fn zero_shutdown_timeout_is_rejected() {
        assert_eq!(errors("[shutdown]\ntimeout = \"0s\"\n"), [K::ZeroTimeout]);
    }

    #[test]
    fn machine_types() {
        assert!(check("machine = \"pc-q35-8.2\"\n").is_ok());
        assert!(check("machine = \"pc\"\n").is_ok());
        assert_eq!(
            errors("machine = \"pc-q35-\"\n"),
            [K::BadMachine("pc-q35-".into())]
        );
    }

    #[test]
    fn bad_qemu_user_is_rejected() {
        assert_eq!(
            errors("[qemu]\nuser = \"Bad User\"\n"),
            [K::BadUser("Bad User".into())]
        );
        let c = check("[qemu]\nuser = \"root\"\n").expect("valid");
        assert_eq!(c.qemu.user, QemuUser::Root);
    }
}
