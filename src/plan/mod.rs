//! What a config means on this host: firmware, devices, paths, QEMU version.
//! The only stage that reads the host before anything is changed; it yields
//! plain data that `--dry-run` prints. Host problems become findings, so a
//! dry-run for another machine still shows its command line.

pub mod audio;
pub(crate) mod backing;
pub(crate) mod desktop_restart;
pub(crate) mod files;
pub(crate) mod finding;
pub(crate) mod firmware;
pub(crate) mod hostdev;
pub mod identity;
pub mod isolation;
pub mod looking_glass;
mod memory;
pub(crate) mod module_keep;
pub mod network;
pub(crate) mod paths;
mod qemu_modules;
pub(crate) mod safety;
pub mod smbios;
pub(crate) mod takeover;
pub mod usb;
pub(crate) mod uuid;
pub(crate) mod viability;

use serde::Serialize;

pub use backing::Backing;
pub use finding::{Finding, Severity};
pub use firmware::ResolvedFirmware;
pub use hostdev::PlannedHostdev;
pub use identity::QemuIdentity;
pub use paths::{DirsEnv, DirsError, VmPaths};

use crate::config::{Accel, FirmwareKind, VmConfig};
use crate::host::qemu::{self, QemuInfo, QemuVersion};
use crate::host::HostRoot;

/// The newest QEMU whose command line vmrun knows; assumed when the binary
/// can't be asked.
pub const NEWEST_KNOWN_QEMU: QemuVersion = QemuVersion::new(10, 1, 0);

/// What the plan may read, and what it must not guess.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub root: HostRoot,
    pub dirs: DirsEnv,
    /// Build for this QEMU instead of asking the binary (`--qemu-version`).
    pub qemu_version: Option<QemuVersion>,
}

/// Everything needed to prepare the host and start QEMU.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub vm: VmConfig,
    pub qemu: QemuInfo,
    /// The concrete machine type (`q35` resolved to `pc-q35-7.2`).
    pub machine: String,
    /// `None` for BIOS guests (SeaBIOS is QEMU's built-in default).
    pub firmware: Option<ResolvedFirmware>,
    pub hostdevs: Vec<PlannedHostdev>,
    pub paths: VmPaths,
    /// Who QEMU and swtpm are exec'd as, when vmrun runs as root.
    pub qemu_identity: Option<QemuIdentity>,
    /// What each disk's qcow2 header says of a backing file, in disk order.
    pub disk_backing: Vec<Backing>,
    /// `-uuid`: `[smbios] uuid`, else derived from the host's machine-id
    /// and the VM's name.
    pub uuid: String,
    /// `[smbios] host = true`: the host's type 0/1/2 strings.
    pub smbios: Vec<smbios::SmbiosTable>,
    /// `[looking_glass]` on this host.
    pub looking_glass: Option<looking_glass::LgPlan>,
    /// `[[usb]]` on this host.
    pub usb: Vec<usb::UsbPlan>,
    /// `[audio]` on this host: the driver, whose server, its socket.
    pub audio: Option<audio::AudioPlan>,
    /// `[takeover]` on this host: what stops, in order.
    pub takeover: Option<takeover::TakeoverPlan>,
    /// `[cpu] isolate`, `emulator_pin`, `governor` on this host.
    pub isolation: Option<isolation::IsolationPlan>,
    /// `[network] mode = "bridge"` as root: the tap vmrun makes.
    pub bridge_tap: Option<network::BridgeTap>,
    pub findings: Vec<Finding>,
    /// The host the plan was made against, where prepare will write.
    #[serde(skip)]
    pub root: HostRoot,
}

impl Plan {
    /// Whether any finding forbids changing the host.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Whether QEMU serves SPICE: `[display] mode = "spice"`, or for the
    /// Looking Glass client's input.
    pub fn spice(&self) -> bool {
        self.vm.display == crate::config::Display::Spice
            || self.looking_glass.as_ref().is_some_and(|lg| lg.spice)
    }

    /// The Looking Glass client's command line for this VM, which the
    /// dry-run and `vmrun status` both show.
    pub fn looking_glass_client(&self) -> Option<Vec<String>> {
        self.looking_glass
            .as_ref()
            .map(|lg| lg.client_command(&self.paths.spice_socket))
    }
}

/// Plans `vm` against the host described by `ctx`.
pub fn plan(vm: VmConfig, ctx: &PlanContext) -> Plan {
    let mut findings = Vec::new();
    let qemu = qemu_info(&vm, ctx, &mut findings);
    let machine = qemu.concrete_machine(&vm.machine);
    let firmware = match vm.firmware.kind {
        FirmwareKind::Bios => None,
        FirmwareKind::Uefi => {
            let search = firmware::FirmwareSearch {
                root: ctx.root.clone(),
                user_config_dir: ctx.dirs.config_home(),
            };
            match firmware::resolve(&vm.firmware, &machine, &search) {
                Ok(fw) => Some(fw),
                Err(e) => {
                    findings.push(Finding::error("firmware", e.to_string()));
                    None
                }
            }
        }
    };
    let mut paths = VmPaths::new(&vm.name, &ctx.dirs);
    if let Some(fw) = &firmware {
        paths = paths.with_vars_file(&firmware::vars_copy_name(vm.name.as_str(), fw.vars_format));
    }
    files::check_host_files(&vm, &ctx.root, &mut findings);
    memory::check(&vm, &ctx.root, &mut findings);
    let hostdevs = hostdev::plan_hostdevs(&vm.hostdevs, &ctx.root, &mut findings);
    viability::check(&hostdevs, &ctx.root, &mut findings);
    let safety = safety::SafetyContext {
        root: &ctx.root,
        run_base: &ctx.dirs.run_base(),
        vm_name: vm.name.as_str(),
        takeover: vm.takeover.is_some(),
    };
    safety::check(&hostdevs, &safety, &mut findings);
    let takeover = vm
        .takeover
        .as_ref()
        .map(|t| takeover::plan(t, &hostdevs, &ctx.root, &mut findings));
    if takeover.is_some() {
        findings.extend(takeover::session_finding(&ctx.root));
    }
    let audio = vm
        .audio
        .as_ref()
        .map(|a| audio::plan(a, qemu.version, ctx.dirs.is_root, &ctx.root, &mut findings));
    let mut qemu_identity =
        match audio::runs_qemu_as(audio.as_ref(), &vm.qemu.user, ctx.dirs.is_root) {
            // Never root by accident: a user the lookup can't resolve
            // refuses the start.
            Some(user) => {
                identity::user_identity(&user.name, vm.qemu.accel, &ctx.root).or_else(|| {
                    findings.push(Finding::error(
                        "audio.user",
                        format!("can't resolve user `{}` for QEMU to run as", user.name),
                    ));
                    None
                })
            }
            None => identity::qemu_identity(
                &vm.qemu.user,
                ctx.dirs.is_root,
                vm.qemu.accel,
                vm.name.as_str(),
                &ctx.root,
                &mut findings,
            ),
        };
    if let Some(id) = &qemu_identity {
        identity::access_findings(&vm, id, &ctx.root, &mut findings);
    }
    if let Some(a) = &audio {
        audio::access_finding(a, qemu_identity.as_ref(), &mut findings);
    }
    if let (Some(a), Some(id)) = (&audio, qemu_identity.as_mut()) {
        audio::add_alsa_group(a, id, &ctx.root);
    }
    let disk_backing = backing::plan_backing(&vm, qemu_identity.as_ref(), &ctx.root, &mut findings);
    let uuid = match &vm.smbios.uuid {
        Some(u) => u.clone(),
        None => uuid::vm_uuid(&ctx.root, vm.name.as_str(), &mut findings),
    };
    let smbios = if vm.smbios.host {
        smbios::host_tables(&ctx.root, &mut findings)
    } else {
        Vec::new()
    };
    let looking_glass = vm.looking_glass.as_ref().map(|lg| {
        let id = qemu_identity.as_ref();
        looking_glass::plan(
            lg,
            vm.name.as_str(),
            ctx.dirs.is_root,
            id,
            &ctx.root,
            &mut findings,
        )
    });
    let usb = usb::plan(&vm.usb, vm.input.as_ref(), &ctx.root, &mut findings);
    if vm.qemu.accel == Accel::Kvm && !ctx.root.dev().join("kvm").exists() {
        findings.push(
            Finding::error("kvm", "/dev/kvm is missing: KVM is not available")
                .fix("enable virtualization (VT-x/AMD-V) in the firmware setup and load kvm_intel or kvm_amd, or set [qemu] accel = \"tcg\""),
        );
    }
    let isolation = isolation::plan(&vm, &ctx.root, &ctx.dirs.run_base(), &mut findings);
    if isolation.as_ref().is_some_and(|i| i.isolate) && !ctx.dirs.is_root {
        findings.push(
            Finding::error(
                "cpu.isolate",
                "confining the host's cgroups, workqueues and IRQs takes root",
            )
            .fix(
                "start the VM as root (sudo, or `systemctl start vmrun@NAME`), or remove `isolate`",
            ),
        );
    }
    let bridge_tap = network::plan(
        &vm,
        ctx.dirs.is_root,
        &ctx.root,
        &paths.run_dir,
        &mut findings,
    );
    let mut plan = Plan {
        vm,
        qemu,
        machine,
        firmware,
        hostdevs,
        paths,
        qemu_identity,
        disk_backing,
        uuid,
        smbios,
        looking_glass,
        usb,
        audio,
        takeover,
        isolation,
        bridge_tap,
        findings,
        root: ctx.root.clone(),
    };
    let mut modules = Vec::new();
    qemu_modules::check(&plan, &ctx.root, &mut modules);
    plan.findings.extend(modules);
    plan
}

fn qemu_info(vm: &VmConfig, ctx: &PlanContext, findings: &mut Vec<Finding>) -> QemuInfo {
    let binary = vm.qemu.binary.clone();
    if let Some(version) = ctx.qemu_version {
        return QemuInfo::assumed(binary, version);
    }
    match qemu::probe(&binary, ctx.dirs.cache_dir().as_deref()) {
        Ok(info) => info,
        Err(e) => {
            findings.push(Finding::error("qemu", e.to_string()));
            findings.push(Finding::info(
                "qemu",
                format!("command line built for QEMU {NEWEST_KNOWN_QEMU}"),
            ));
            QemuInfo::assumed(binary, NEWEST_KNOWN_QEMU)
        }
    }
}
