//! The QEMU command line: a pure function of the plan. Values are argv
//! elements, never shell text; option values go through `Opts`, which
//! escapes commas the way QEMU's option parser wants.

use std::ffi::OsString;

use super::devices;
use super::handoff::{FdPlan, Key, Source};
use super::opts::Opts;
use crate::config::{Accel, Topology};
use crate::plan::Plan;

/// Accumulates `-option value` pairs.
#[derive(Debug, Default)]
pub(crate) struct Argv(Vec<OsString>);

impl Argv {
    pub(crate) fn flag(&mut self, flag: &str) {
        self.0.push(flag.into());
    }

    pub(crate) fn opt(&mut self, flag: &str, value: impl Into<OsString>) {
        self.0.push(flag.into());
        self.0.push(value.into());
    }
}

/// The `hv-*` enlightenments virt-manager enables for a Windows guest
/// (libvirt's `<hyperv>` features); each is a Hyper-V interface Windows
/// uses instead of emulated timers, APIC and IPIs.
const HYPERV_FLAGS: [&str; 12] = [
    "hv-relaxed=on",
    "hv-vapic=on",
    "hv-spinlocks=0x1fff",
    "hv-vpindex=on",
    "hv-runtime=on",
    "hv-synic=on",
    "hv-stimer=on",
    "hv-reset=on",
    "hv-frequencies=on",
    "hv-time=on",
    "hv-tlbflush=on",
    "hv-ipi=on",
];

/// The `host` CPU model's `migratable` property appeared in QEMU 2.1.
const MIGRATABLE_SINCE: (u32, u32) = (2, 1);

/// Used for `hv-vendor-id` when `hide_hypervisor` is set without `vendor_id`.
pub(crate) const DEFAULT_VENDOR_ID: &str = "0123456789ab";

/// Where the supervisor's QMP monitor listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QmpListener {
    /// QEMU binds `qmp.sock` itself (what `--dry-run` prints: pasteable).
    Path,
    /// vmrun binds and listens on `qmp.sock` and hands the listening socket
    /// to QEMU as its stdin (`fd=0`), having connected already: no polling
    /// for the socket to appear, and the first QMP byte arrives the moment
    /// QEMU's main loop accepts. QEMU's socket chardev takes a pre-opened
    /// listening socket (`socket_listen()`, SOCKET_ADDRESS_TYPE_FD: "If the
    /// socket is already listening then this updates the backlog").
    Stdin,
}

/// How the files QEMU needs are named: by path (what `--dry-run` prints,
/// pasteable), or as the descriptors vmrun hands the QEMU it spawns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Form<'a> {
    Path,
    Run(&'a FdPlan),
}

impl Form<'_> {
    /// A file QEMU opens with `qemu_open`: its path, or its fdset.
    pub(crate) fn file(&self, key: Key, path: &std::path::Path) -> OsString {
        match self.handed(key) {
            Some((_, Source::File { set, .. })) => format!("/dev/fdset/{set}").into(),
            Some((fd, _)) => format!("/proc/self/fd/{fd}").into(),
            None => path.as_os_str().to_owned(),
        }
    }

    /// A socket chardev QEMU serves: bound at `path` by QEMU, or the
    /// listening socket vmrun bound, as `fd=`.
    pub(crate) fn server(&self, key: Key, id: &str, path: &std::path::Path) -> Opts {
        let o = Opts::new("socket").set("id", id);
        let o = match self.handed(key) {
            Some((fd, _)) => o.set("fd", fd.to_string()),
            None => o.set("path", path),
        };
        o.switch("server", true).switch("wait", false)
    }

    /// The evdev node of router proxy `index` (0 keyboard, 1 mouse).
    pub(crate) fn evdev(&self, index: usize, link: &std::path::Path) -> OsString {
        match self {
            Form::Run(fds) => fds.evdev[index]
                .as_deref()
                .unwrap_or(link)
                .as_os_str()
                .to_owned(),
            Form::Path => link.as_os_str().to_owned(),
        }
    }

    pub(crate) fn handed(&self, key: Key) -> Option<(i32, &Source)> {
        match self {
            Form::Run(fds) => fds.get(key).map(|h| (h.fd, &h.source)),
            Form::Path => None,
        }
    }
}

/// Builds the full argv (without the binary itself) for `plan`, as
/// `--dry-run` shows it.
pub fn build_argv(plan: &Plan) -> Vec<OsString> {
    build_argv_with(plan, QmpListener::Path)
}

/// `build_argv`, with the supervisor's monitor on `listener`.
pub fn build_argv_with(plan: &Plan, listener: QmpListener) -> Vec<OsString> {
    build(plan, listener, Form::Path)
}

/// The argv the supervisor spawns: its monitor on stdin, and every file
/// of `fds` named by its descriptor (`-add-fd`, `fd=`, `/proc/self/fd/N`).
pub fn build_run_argv(plan: &Plan, fds: &FdPlan) -> Vec<OsString> {
    build(plan, QmpListener::Stdin, Form::Run(fds))
}

fn build(plan: &Plan, listener: QmpListener, form: Form<'_>) -> Vec<OsString> {
    let vm = &plan.vm;
    let mut a = Argv::default();
    a.opt(
        "-name",
        Opts::empty()
            .set("guest", vm.name.as_str())
            .switch("debug-threads", true),
    );
    a.opt("-uuid", &plan.uuid);
    super::gaming::smbios(&mut a, plan);
    a.flag("-nodefaults");
    a.flag("-no-user-config");
    a.opt("-msg", "timestamp=on");
    if let Form::Run(fds) = form {
        for h in &fds.items {
            if let Source::File { set, .. } = h.source {
                a.opt(
                    "-add-fd",
                    Opts::empty()
                        .set("fd", h.fd.to_string())
                        .set("set", set.to_string()),
                );
            }
        }
    }
    machine(&mut a, plan);
    a.opt(
        "-accel",
        match vm.qemu.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        },
    );
    cpu(&mut a, plan);
    a.opt("-smp", smp(&vm.cpu.topology));
    memory(&mut a, plan);
    firmware(&mut a, plan, form);
    devices::hostdevs(&mut a, plan, form);
    devices::disks(&mut a, plan, form);
    devices::network(&mut a, plan);
    devices::display(&mut a, plan, form);
    super::gaming::looking_glass(&mut a, plan);
    super::gaming::usb(&mut a, plan);
    super::audio::audio(&mut a, plan);
    devices::input(&mut a, plan, form);
    devices::tpm(&mut a, plan, form);
    monitors(&mut a, plan, listener, form);
    // No `-pidfile`: QEMU, unprivileged, can't write in root's run dir;
    // the supervisor writes `qemu.pid` from the pid it spawned.
    if vm.cpu.hyperv {
        // Windows keeps the RTC in local time unless told otherwise.
        a.opt("-rtc", "base=localtime,driftfix=slew");
    } else {
        a.opt("-rtc", "base=utc,driftfix=slew");
    }
    if vm.qemu.accel == Accel::Kvm {
        a.opt("-global", "kvm-pit.lost_tick_policy=discard");
    }
    if is_q35(&plan.machine) {
        // S3/S4 inside the guest leave a passed-through GPU in a state it
        // often can't resume from; virt-manager's `<pm>` defaults disable both.
        a.opt("-global", "ICH9-LPC.disable_s3=1");
        a.opt("-global", "ICH9-LPC.disable_s4=1");
    }
    sandbox(&mut a, plan);
    for extra in &vm.qemu.extra_args {
        a.flag(extra);
    }
    a.0
}

pub(crate) fn is_q35(machine: &str) -> bool {
    machine == "q35" || machine.starts_with("pc-q35-")
}

fn machine(a: &mut Argv, plan: &Plan) {
    let mut m = Opts::new(&plan.machine).set("memory-backend", "mem0");
    if plan.firmware.is_some() {
        m = m.set("pflash0", "fw-code").set("pflash1", "fw-vars");
    }
    if plan.firmware.as_ref().is_some_and(|f| f.requires_smm) {
        m = m.switch("smm", true);
    }
    // vmport emulates VMware's backdoor port; nothing here wants it.
    m = m.switch("vmport", false);
    // A QEMU crash's core would otherwise hold all of guest RAM; libvirt
    // passes the same unless qemu.conf sets `dump_guest_core = 1`.
    m = m.switch("dump-guest-core", false);
    if plan.vm.cpu.hyperv {
        // Windows keeps time on the Hyper-V reference TSC page (hv-time);
        // an HPET it would use instead costs a VM exit per read.
        // virt-manager's Windows guests get `<timer name='hpet'
        // present='no'/>`. A machine property (7.2 has it; `-no-hpet` was
        // deprecated for it in 8.0 and removed in 9.0).
        m = m.switch("hpet", false);
    }
    a.opt("-machine", m);
}

fn cpu(a: &mut Argv, plan: &Plan) {
    let cpu = &plan.vm.cpu;
    // `-cpu host` exists only under KVM (or HVF); TCG's closest is `max`.
    let model = if plan.vm.qemu.accel == Accel::Tcg && cpu.model == "host" {
        "max"
    } else {
        cpu.model.as_str()
    };
    let mut o = Opts::new(model);
    if model == "host"
        && plan
            .qemu
            .version
            .at_least(MIGRATABLE_SINCE.0, MIGRATABLE_SINCE.1)
    {
        // A VM with passed-through devices can't migrate anyway; a
        // non-migratable `host` passes every host CPUID feature, invtsc
        // (the invariant TSC Windows and Linux prefer as a clock) among them.
        o = o.switch("migratable", false);
    }
    for feature in &cpu.features {
        o = o.item(feature);
    }
    if cpu.hide_hypervisor {
        // Hides KVM's CPUID signature (NVIDIA's pre-465 "Code 43" check).
        o = o.switch("kvm", false);
    }
    if cpu.hide_hypervisor || cpu.vendor_id.is_some() {
        o = o.set(
            "hv-vendor-id",
            cpu.vendor_id.as_deref().unwrap_or(DEFAULT_VENDOR_ID),
        );
    }
    if cpu.hyperv {
        for flag in HYPERV_FLAGS {
            o = o.item(flag);
        }
    }
    a.opt("-cpu", o);
}

/// `-smp N,sockets=,[dies=,]cores=,threads=`. QEMU 9.0 rejects zeros and
/// deprecates members x86 lacks, so only x86's levels appear, and `dies`
/// only when the config sets it.
pub(crate) fn smp(t: &Topology) -> OsString {
    let mut o = Opts::new(t.vcpus().to_string()).set("sockets", t.sockets.to_string());
    if let Some(dies) = t.dies {
        o = o.set("dies", dies.to_string());
    }
    o.set("cores", t.cores.to_string())
        .set("threads", t.threads.to_string())
        .into_os_string()
}

/// Guest RAM as an explicit backend (`-machine memory-backend=`).
///
/// Without huge pages it is private anonymous memory (`memory-backend-ram`),
/// which the kernel backs with transparent huge pages under its default
/// (`enabled=always` or `madvise`: QEMU madvises guest RAM MADV_HUGEPAGE).
/// A `memory-backend-memfd,share=on` would be shmem, which gets THP only
/// when `/sys/kernel/mm/transparent_hugepage/shmem_enabled` allows it (its
/// default is `never`): 4 KiB pages for the whole guest, as measured in
/// BENCHMARKS.md. Shared RAM is only needed for vhost-user devices
/// (virtiofsd, vhost-user-net), which vmrun does not configure.
///
/// With huge pages it is a hugetlbfs memfd: those pages are huge whatever
/// the sharing.
fn memory(a: &mut Argv, plan: &Plan) {
    let size = format!("{}M", plan.vm.memory.mib());
    a.opt("-m", &size);
    let o = match plan.vm.hugepages {
        Some(pages) => Opts::new("memory-backend-memfd")
            .set("id", "mem0")
            .set("size", &size)
            .switch("share", true)
            .switch("hugetlb", true)
            .set("hugetlbsize", pages.size().to_string()),
        None => Opts::new("memory-backend-ram")
            .set("id", "mem0")
            .set("size", &size),
    };
    a.opt("-object", o);
}

/// OVMF as two pflash blockdevs (firmware.json's recommended form since 4.0).
fn firmware(a: &mut Argv, plan: &Plan, form: Form<'_>) {
    let Some(fw) = &plan.firmware else {
        return;
    };
    let format = |f| match f {
        crate::plan::firmware::ImageFormat::Raw => "raw",
        crate::plan::firmware::ImageFormat::Qcow2 => "qcow2",
    };
    a.opt(
        "-blockdev",
        Opts::empty()
            .set("node-name", "fw-code-file")
            .set("driver", "file")
            .set("filename", form.file(Key::FwCode, &fw.code))
            .switch("read-only", true),
    );
    a.opt(
        "-blockdev",
        Opts::empty()
            .set("node-name", "fw-code")
            .set("driver", format(fw.code_format))
            .set("file", "fw-code-file")
            .switch("read-only", true),
    );
    a.opt(
        "-blockdev",
        Opts::empty()
            .set("node-name", "fw-vars-file")
            .set("driver", "file")
            .set("filename", form.file(Key::FwVars, &plan.paths.vars_file)),
    );
    a.opt(
        "-blockdev",
        Opts::empty()
            .set("node-name", "fw-vars")
            .set("driver", format(fw.vars_format))
            .set("file", "fw-vars-file"),
    );
    if fw.requires_smm {
        // firmware.json: "requires-smm" firmware keeps its varstore behind
        // SMM; the flash must then be writable only from SMM.
        a.opt("-global", "driver=cfi.pflash01,property=secure,value=on");
    }
}

/// Two QMP monitors (the supervisor's and `vmrun qmp`'s) and the serial
/// console, all unix sockets in the run dir. `wait=off`: QEMU must not block
/// on a client.
fn monitors(a: &mut Argv, plan: &Plan, listener: QmpListener, form: Form<'_>) {
    let paths = &plan.paths;
    let supervisor = match listener {
        QmpListener::Path => socket_chardev("qmp", &paths.qmp_socket),
        QmpListener::Stdin => Opts::new("socket")
            .set("id", "qmp")
            .set("fd", "0")
            .switch("server", true)
            .switch("wait", false),
    };
    for (id, chardev) in [
        ("qmp", supervisor),
        (
            "qmp-ctl",
            form.server(Key::QmpCtl, "qmp-ctl", &paths.qmp_ctl_socket),
        ),
    ] {
        a.opt("-chardev", chardev);
        a.opt(
            "-mon",
            Opts::empty().set("chardev", id).set("mode", "control"),
        );
    }
    a.opt(
        "-chardev",
        form.server(Key::Console, "console", &paths.console_socket)
            .set("logfile", form.file(Key::ConsoleLog, &paths.console_log))
            .switch("logappend", true),
    );
    a.opt("-serial", "chardev:console");
}

pub(crate) fn socket_chardev(id: &str, path: &std::path::Path) -> Opts {
    Opts::new("socket")
        .set("id", id)
        .set("path", path)
        .switch("server", true)
        .switch("wait", false)
}

/// QEMU's seccomp filter, as strict as the VM allows. QEMU never changes
/// its uid (it is exec'd as its identity), so set*uid is always denied;
/// fork/exec is allowed only for qemu-bridge-helper, which a bridged VM
/// needs when vmrun, not root, could not make its tap.
fn sandbox(a: &mut Argv, plan: &Plan) {
    let needs_spawn = matches!(
        plan.vm.network.mode,
        crate::config::NetworkMode::Bridge { .. }
    ) && plan.bridge_tap.is_none();
    a.opt(
        "-sandbox",
        Opts::new("on")
            .set("obsolete", "deny")
            .set("elevateprivileges", "deny")
            .set("spawn", if needs_spawn { "allow" } else { "deny" })
            .set("resourcecontrol", "deny"),
    );
}
