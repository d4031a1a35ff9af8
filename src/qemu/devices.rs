//! Guest devices on the command line: passed-through PCI functions, disks,
//! network, display, input and TPM.

use super::argv::{is_q35, Argv, Form};
use super::handoff::Key;
use super::opts::Opts;
use crate::config::PciAddress;
use crate::config::{
    Cache, Disk, DiskFormat, DiskInterface, DiskMedia, Display, InputMode, NetworkMode, Protocol,
};
use crate::input::readd::InputLinux;
use crate::plan::hostdev::guest_function;
use crate::plan::{Backing, Plan};

/// Root ports for passed-through devices sit at these pcie.0 slots, clear
/// of q35's fixed 0x1f (LPC/SATA/SMBus) and of auto-assigned low slots.
const FIRST_HOSTDEV_SLOT: u8 = 0x10;

/// One root port (q35) or one slot (i440fx) per physical device, with the
/// device's passed functions behind it numbered from 0 in host order
/// (`guest_function`), so a GPU and its audio stay one multifunction device
/// in the guest as on the host, and a device passed without its function 0
/// is still seen.
pub(crate) fn hostdevs(a: &mut Argv, plan: &Plan, form: Form<'_>) {
    let mut slots: Vec<(u16, u8, u8)> = Vec::new();
    let q35 = is_q35(&plan.machine);
    let passed: Vec<PciAddress> = plan.hostdevs.iter().map(|hd| hd.address).collect();
    for (n, hd) in plan.hostdevs.iter().enumerate() {
        let function = guest_function(&passed, hd.address);
        let key = hd.address.slot_key();
        let index = match slots.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                slots.push(key);
                let i = slots.len() - 1;
                if q35 {
                    a.opt(
                        "-device",
                        Opts::new("pcie-root-port")
                            .set("id", format!("rp{i}"))
                            .set("bus", "pcie.0")
                            .set("chassis", (i + 1).to_string())
                            .set("addr", format!("{:#04x}.0", FIRST_HOSTDEV_SLOT + i as u8)),
                    );
                }
                i
            }
        };
        let (bus, addr) = if q35 {
            (format!("rp{index}"), format!("00.{function}"))
        } else {
            (
                "pci.0".to_string(),
                format!("{:#04x}.{function}", FIRST_HOSTDEV_SLOT + index as u8),
            )
        };
        let mut o = Opts::new("vfio-pci")
            .set("host", hd.address.to_string())
            .set(
                "id",
                format!("hostdev{}", hd.address.to_string().replace([':', '.'], "-")),
            )
            .set("bus", bus)
            .set("addr", addr)
            .flag("multifunction", hd.multifunction)
            .flag("x-vga", hd.config.x_vga);
        if let Some(rom) = &hd.config.romfile {
            o = o.set("romfile", form.file(Key::Rom(n), rom));
        }
        if let Some(rombar) = hd.config.rombar {
            o = o.set("rombar", if rombar { "1" } else { "0" });
        }
        a.opt("-device", o);
    }
}

fn format_name(f: DiskFormat) -> &'static str {
    match f {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

/// Each disk as a `file` + format blockdev pair and a frontend device.
/// QEMU's legacy `cache=` modes map onto `cache.direct`/`cache.no-flush` of
/// the file node and `write-cache` of the device (docs: "-drive cache=").
pub(crate) fn disks(a: &mut Argv, plan: &Plan, form: Form<'_>) {
    let q35 = is_q35(&plan.machine);
    // One I/O thread for the SCSI controller when any of its disks asks.
    let scsi_io = plan
        .vm
        .disks
        .iter()
        .any(|d| d.iothread && d.interface == DiskInterface::Scsi);
    if scsi_io {
        a.opt("-object", Opts::new("iothread").set("id", "scsi0-io"));
    }
    let mut scsi_added = false;
    let mut sata_port = 0;
    for (i, disk) in plan.vm.disks.iter().enumerate() {
        let node = format!("disk{i}");
        let cache = disk.cache.unwrap_or(Cache::Writeback);
        let mut file = Opts::empty()
            .set("node-name", format!("{node}-file"))
            .set("driver", "file")
            .set("filename", form.file(Key::Disk(i), &disk.path))
            .flag("read-only", disk.readonly);
        if matches!(cache, Cache::None | Cache::Directsync) {
            file = file.switch("cache.direct", true);
        }
        if cache == Cache::Unsafe {
            file = file.switch("cache.no-flush", true);
        }
        file = file.set_opt("aio", disk.aio.map(|aio| aio.name()));
        if disk.discard {
            file = file.set("discard", "unmap");
        }
        a.opt("-blockdev", file);
        if plan.disk_backing.get(i) == Some(&Backing::Null) {
            a.opt("-blockdev", without_backing(disk, &node));
        } else {
            let mut fmt = Opts::empty()
                .set("node-name", &node)
                .set("driver", format_name(disk.format))
                .set("file", format!("{node}-file"))
                .flag("read-only", disk.readonly);
            if disk.discard {
                fmt = fmt.set("discard", "unmap");
            }
            a.opt("-blockdev", fmt);
        }

        if disk.iothread && disk.interface == DiskInterface::Virtio {
            a.opt(
                "-object",
                Opts::new("iothread").set("id", format!("{node}-io")),
            );
        }
        let bus = Bus {
            scsi_added: &mut scsi_added,
            scsi_io,
            sata_port: &mut sata_port,
        };
        let device = frontend(disk, q35, &node, bus, a);
        let mut dev = device
            .set("drive", &node)
            .set("bootindex", (i + 1).to_string());
        if matches!(cache, Cache::Writethrough | Cache::Directsync) {
            dev = dev.switch("write-cache", false);
        }
        a.opt("-device", dev);
    }
}

/// The format node of a qcow2 whose header names no backing file, with
/// `backing: null`, so a header rewritten later can't make QEMU open one.
/// JSON, because QEMU's keyval syntax has no null: `backing=null` names a
/// node called "null", and `backing=` is deprecated (QEMU 7.2 warns).
fn without_backing(disk: &Disk, node: &str) -> String {
    let mut o = serde_json::json!({
        "node-name": node,
        "driver": format_name(disk.format),
        "file": format!("{node}-file"),
        "backing": null,
    });
    if disk.readonly {
        o["read-only"] = true.into();
    }
    if disk.discard {
        o["discard"] = "unmap".into();
    }
    o.to_string()
}

/// Where the next disk's frontend goes: the SCSI controller (added once,
/// with its I/O thread when a disk asked) and the next SATA/IDE port.
struct Bus<'a> {
    scsi_added: &'a mut bool,
    scsi_io: bool,
    sata_port: &'a mut u32,
}

/// The guest-visible device for a disk. A cdrom on `virtio` goes on SATA:
/// virtio-blk has no removable media, and installers expect a CD drive.
fn frontend(disk: &Disk, q35: bool, node: &str, bus: Bus<'_>, a: &mut Argv) -> Opts {
    let Bus {
        scsi_added,
        scsi_io,
        sata_port,
    } = bus;
    let cdrom = disk.media == DiskMedia::Cdrom;
    match disk.interface {
        DiskInterface::Virtio if !cdrom => {
            let dev = Opts::new("virtio-blk-pci").set("id", format!("{node}-dev"));
            if disk.iothread {
                dev.set("iothread", format!("{node}-io"))
            } else {
                dev
            }
        }
        DiskInterface::Scsi => {
            if !*scsi_added {
                let mut ctl = Opts::new("virtio-scsi-pci").set("id", "scsi0");
                if scsi_io {
                    ctl = ctl.set("iothread", "scsi0-io");
                }
                a.opt("-device", ctl);
                *scsi_added = true;
            }
            Opts::new(if cdrom { "scsi-cd" } else { "scsi-hd" })
                .set("id", format!("{node}-dev"))
                .set("bus", "scsi0.0")
        }
        DiskInterface::Nvme if !cdrom => Opts::new("nvme")
            .set("id", format!("{node}-dev"))
            .set("serial", format!("vmrun-{node}")),
        _ => {
            // q35's built-in AHCI has six ports (ide.0-ide.5); i440fx's PIIX
            // IDE has two buses with two units each.
            let port = *sata_port;
            *sata_port += 1;
            let bus = if q35 {
                format!("ide.{port}")
            } else {
                format!("ide.{}", port / 2)
            };
            Opts::new(if cdrom { "ide-cd" } else { "ide-hd" })
                .set("id", format!("{node}-dev"))
                .set("bus", bus)
        }
    }
}

pub(crate) fn network(a: &mut Argv, plan: &Plan) {
    let net = &plan.vm.network;
    let backend = match &net.mode {
        NetworkMode::None => return,
        NetworkMode::User { forward } => {
            let mut o = Opts::new("user").set("id", "net0");
            for f in forward {
                let proto = match f.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                o = o.set(
                    "hostfwd",
                    format!("{proto}:{}:{}-:{}", f.host_addr, f.host_port, f.guest_port),
                );
            }
            o
        }
        NetworkMode::Bridge { bridge } => match &plan.bridge_tap {
            Some(tap) => tap_backend(&tap.ifname),
            None => Opts::new("bridge").set("id", "net0").set("br", bridge),
        },
        NetworkMode::Tap { ifname } => tap_backend(ifname),
    };
    a.opt("-netdev", backend);
    let mac = crate::plan::network::guest_mac(&plan.vm);
    a.opt(
        "-device",
        Opts::new(&net.model).set("netdev", "net0").set("mac", mac),
    );
}

/// An existing tap; `script=no`: QEMU would run /etc/qemu-ifup otherwise.
fn tap_backend(ifname: &str) -> Opts {
    Opts::new("tap")
        .set("id", "net0")
        .set("ifname", ifname)
        .set("script", "no")
        .set("downscript", "no")
}

pub(crate) fn display(a: &mut Argv, plan: &Plan, form: Form<'_>) {
    let x_vga = plan.hostdevs.iter().any(|h| h.config.x_vga);
    match plan.vm.display {
        Display::None | Display::Serial | Display::Spice => a.opt("-display", "none"),
        Display::Gtk => a.opt("-display", "gtk"),
    }
    if plan.spice() {
        // QEMU 7.2's `-spice unix=on` binds by path and takes no fd.
        // The socket's dir (`/run/vmrun-spice/NAME`) belongs to QEMU's
        // uid; QEMU is handed that dir and binds through its magic
        // link, so its parent stays root's.
        let addr = match form.handed(Key::SpiceDir) {
            Some((fd, _)) => std::path::PathBuf::from(format!("/proc/self/fd/{fd}/spice.sock")),
            None => plan.paths.spice_socket.clone(),
        };
        a.opt(
            "-spice",
            Opts::empty()
                .switch("unix", true)
                .set("addr", &addr)
                .switch("disable-ticketing", true),
        );
    }
    let window = matches!(plan.vm.display, Display::Gtk | Display::Spice);
    if x_vga {
        // x-vga=on routes the legacy VGA ranges to the real GPU; QEMU's
        // built-in VGA may not claim them. A secondary card is added as a
        // device of its own beside it, for setup before the GPU's driver.
        a.opt("-vga", "none");
        if let Some(card) = plan.vm.secondary_display {
            a.opt("-device", card.device());
        }
    } else if let Some(card) = plan.vm.secondary_display {
        a.opt("-device", card.device());
    } else if window {
        a.opt("-device", "virtio-vga");
    }
    usb_controller(a, plan);
    if window {
        // An absolute pointer, so the host cursor maps 1:1 into the window.
        a.opt("-device", format!("usb-tablet,bus={XHCI_BUS}"));
    }
}

/// The bus of the VM's one USB controller (`usb_controller`).
pub(crate) const XHCI_BUS: &str = "xhci.0";

/// Whether the VM needs a USB controller: a window's tablet, a host USB
/// device, a USB sound card. `-nodefaults` leaves q35 without one.
pub(crate) fn needs_usb_controller(plan: &Plan) -> bool {
    matches!(plan.vm.display, Display::Gtk | Display::Spice)
        || !plan.usb.is_empty()
        || plan
            .vm
            .audio
            .as_ref()
            .is_some_and(|a| a.model == crate::config::AudioModel::Usb)
}

/// One `qemu-xhci` for every USB device of the VM, before any of them
/// (a `-device` names only buses that exist by then).
pub(crate) fn usb_controller(a: &mut Argv, plan: &Plan) {
    if needs_usb_controller(plan) {
        a.opt("-device", "qemu-xhci,id=xhci");
    }
}

/// evdev input.
///
/// `router` mode: QEMU reads vmrun's uinput proxies (stable links in the run
/// dir) through `virtio-input-host-pci`. That device takes EVIOCGRAB at
/// realize and never lets go (`virtio_input_host_realize`: "failed to get
/// exclusive access" otherwise), so a proxy's events can never reach the
/// host's compositor; `input-linux` would toggle its own grab on its own
/// hotkey, and drops extra mouse buttons and the horizontal wheel, which
/// virtio-input-host passes through as raw events. The guest needs a
/// virtio-input driver (Linux has it; Windows: virtio-win's vioinput).
///
/// `qemu` mode: QEMU's `input-linux` reads the real devices, into
/// virtio-keyboard/mouse when the guest drives them and PS/2 otherwise.
pub(crate) fn input(a: &mut Argv, plan: &Plan, form: Form<'_>) {
    let Some(input) = &plan.vm.input else {
        return;
    };
    match input.mode {
        InputMode::Router => {
            let proxies = [
                (&input.keyboard, "kbd0", &plan.paths.keyboard_proxy),
                (&input.mouse, "mouse0", &plan.paths.mouse_proxy),
            ];
            // Run form: the proxy's own /dev/input/eventN, chowned to
            // QEMU's uid (the link in the 0700 run dir is out of its reach).
            for (index, (_, id, proxy)) in proxies.iter().enumerate() {
                if proxies[index].0.is_none() {
                    continue;
                }
                a.opt(
                    "-device",
                    Opts::new("virtio-input-host-pci")
                        .set("id", id)
                        .set("evdev", form.evdev(index, proxy)),
                );
            }
        }
        InputMode::Qemu => {
            for obj in InputLinux::of(input) {
                a.opt(
                    "-object",
                    Opts::new("input-linux")
                        .set("id", obj.id)
                        .set("evdev", &obj.evdev)
                        .flag("grab_all", obj.grab_all)
                        .flag("repeat", obj.repeat)
                        .set("grab-toggle", &obj.grab_toggle),
                );
            }
            a.opt("-device", "virtio-keyboard-pci");
            a.opt("-device", "virtio-mouse-pci");
        }
    }
}

/// TPM 2.0 through swtpm's control socket (started before QEMU).
pub(crate) fn tpm(a: &mut Argv, plan: &Plan, form: Form<'_>) {
    if !plan.vm.tpm {
        return;
    }
    // swtpm listens; QEMU connects as a client, or is handed vmrun's
    // connection (a socket chardev takes a connected socket as `fd=`).
    let chardev = Opts::new("socket").set("id", "chrtpm");
    a.opt(
        "-chardev",
        match form.handed(Key::Swtpm) {
            Some((fd, _)) => chardev.set("fd", fd.to_string()),
            None => chardev.set("path", &plan.paths.swtpm_socket),
        },
    );
    a.opt("-tpmdev", "emulator,id=tpm0,chardev=chrtpm");
    // tpm-crb needs q35's memory map; i440fx guests get the TIS interface.
    let model = if is_q35(&plan.machine) {
        "tpm-crb"
    } else {
        "tpm-tis"
    };
    a.opt("-device", Opts::new(model).set("tpmdev", "tpm0"));
}
