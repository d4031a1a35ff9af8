//! A config using every key loads into the expected model, field by field.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use vmrun::config::*;

const FULL: &str = r#"
description = "Windows 11 with the RTX 3050"
machine = "pc-q35-8.2"

[memory]
size = "16G"
hugepages = "1G"

[cpu]
model = "host"
sockets = 1
dies = 1
cores = 6
threads = 2
features = ["+topoext", "l3-cache=on"]
pin = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
hide_hypervisor = true
vendor_id = "AuthenticAMD"
hyperv = true

[firmware]
type = "uefi"
secure_boot = true
code = "fw/OVMF_CODE.fd"
vars = "/FWDIR/OVMF_VARS.fd"

[tpm]
enabled = true

[[hostdev]]
address = "0000:01:00.0"
x_vga = true
romfile = "rtx3050.rom"
rombar = true
multifunction = true

[[hostdev]]
ids = "10de:228e"
index = 1

[[disk]]
path = "disk.qcow2"
interface = "nvme"
cache = "writeback"
aio = "io_uring"
discard = true

[[disk]]
path = "isos/Win11.iso"
media = "cdrom"

[network]
mode = "user"
forward = ["tcp:3389:3389", "udp:5000:5001"]
mac = "52:54:00:12:34:56"
model = "e1000e"

[display]
mode = "serial"

[input]
keyboard = "/dev/input/by-id/kbd"
mouse = "/dev/input/by-id/mouse"
toggle = "LeftCtrl+RightCtrl"
mode = "router"
on_switch = ["ddcutil", "setvcp", "60", "0x0f"]

[takeover]
enabled = true
display_manager = { stop = ["rc-service", "sddm", "stop"], start = ["rc-service", "sddm", "start"] }
stop_units = ["sunshine.service"]
user_units = ["plasma-*"]
stop_processes = ["nvidia-persistenced", "nvtop"]
unload_modules = ["nvidia_drm", "nvidia"]

[shutdown]
timeout = "90s"

[qemu]
binary = "/usr/bin/qemu-system-x86_64"
accel = "kvm"
user = "qemu"
extra_args = ["-device", "ivshmem-plain,memdev=lg"]
"#;

fn write(path: &Path) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, b"x").expect("write");
}

#[test]
fn full_config_loads_field_by_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let vms = root.join("vms");
    write(&root.join("firmware/rtx3050.rom"));
    write(&vms.join("fw/OVMF_CODE.fd"));
    write(&root.join("abs/OVMF_VARS.fd"));
    write(&vms.join("disk.qcow2"));
    write(&vms.join("isos/Win11.iso"));
    let text = FULL.replace("/FWDIR", &root.join("abs").display().to_string());
    let path = vms.join("win11.toml");
    std::fs::write(&path, text).expect("write config");

    let c = load(&path).unwrap_or_else(|e| panic!("{}", render(&e)));

    assert_eq!(c.name.as_str(), "win11");
    assert_eq!(c.source, path);
    assert_eq!(
        c.description.as_deref(),
        Some("Windows 11 with the RTX 3050")
    );
    assert_eq!(c.memory.bytes(), 16 << 30);
    assert_eq!(c.machine, "pc-q35-8.2");
    assert_eq!(c.hugepages, Some(HugePageSize::Size1G));

    assert_eq!(c.cpu.model, "host");
    let t = c.cpu.topology;
    assert_eq!((t.sockets, t.dies, t.cores, t.threads), (1, Some(1), 6, 2));
    assert_eq!(t.vcpus(), 12);
    assert_eq!(c.cpu.features, ["+topoext", "l3-cache=on"]);
    assert_eq!(c.cpu.pin, (2..=13).collect::<Vec<u32>>());
    assert!(c.cpu.hide_hypervisor && c.cpu.hyperv);
    assert_eq!(c.cpu.vendor_id.as_deref(), Some("AuthenticAMD"));

    assert_eq!(c.firmware.kind, FirmwareKind::Uefi);
    assert_eq!(c.firmware.secure_boot, Some(true));
    let files = c.firmware.files.as_ref().expect("code and vars");
    assert_eq!(files.code, vms.join("fw/OVMF_CODE.fd"));
    assert_eq!(files.vars, root.join("abs/OVMF_VARS.fd"));
    assert!(c.tpm);

    assert_eq!(c.hostdevs.len(), 2);
    let gpu = &c.hostdevs[0];
    assert_eq!(
        gpu.selector,
        HostdevSelector::Address("0000:01:00.0".parse().expect("address"))
    );
    assert!(gpu.x_vga);
    assert_eq!(gpu.romfile, Some(root.join("firmware/rtx3050.rom")));
    assert_eq!((gpu.rombar, gpu.multifunction), (Some(true), Some(true)));
    let audio = &c.hostdevs[1];
    assert_eq!(
        audio.selector,
        HostdevSelector::Ids {
            ids: "10de:228e".parse().expect("ids"),
            index: 1
        }
    );
    assert!(!audio.x_vga && audio.romfile.is_none());

    let d = &c.disks[0];
    assert_eq!(d.path, vms.join("disk.qcow2"));
    assert_eq!(
        (d.interface, d.media, d.format, d.readonly),
        (
            DiskInterface::Nvme,
            DiskMedia::Disk,
            DiskFormat::Qcow2,
            false
        )
    );
    assert_eq!(d.cache, Some(Cache::Writeback));
    assert_eq!(d.aio, Some(Aio::IoUring));
    assert!(d.discard);
    let cd = &c.disks[1];
    assert_eq!(cd.path, vms.join("isos/Win11.iso"));
    assert_eq!(
        (cd.interface, cd.media, cd.format, cd.readonly),
        (DiskInterface::Sata, DiskMedia::Cdrom, DiskFormat::Raw, true)
    );

    let forward = vec![
        PortForward {
            protocol: Protocol::Tcp,
            host_addr: Ipv4Addr::LOCALHOST,
            host_port: 3389,
            guest_port: 3389,
        },
        PortForward {
            protocol: Protocol::Udp,
            host_addr: Ipv4Addr::LOCALHOST,
            host_port: 5000,
            guest_port: 5001,
        },
    ];
    assert_eq!(c.network.mode, NetworkMode::User { forward });
    let mac = c.network.mac.map(|m| m.to_string());
    assert_eq!(mac.as_deref(), Some("52:54:00:12:34:56"));
    assert_eq!(c.network.model, "e1000e");
    assert_eq!(c.display, Display::Serial);

    let input = c.input.as_ref().expect("input");
    assert_eq!(input.keyboard, Some(PathBuf::from("/dev/input/by-id/kbd")));
    assert_eq!(input.mouse, Some(PathBuf::from("/dev/input/by-id/mouse")));
    assert_eq!(input.toggle.to_string(), "LeftCtrl+RightCtrl");
    assert_eq!(input.mode, InputMode::Router);
    assert_eq!(input.on_switch, ["ddcutil", "setvcp", "60", "0x0f"]);

    let t = c.takeover.as_ref().expect("takeover");
    assert_eq!(
        t.display_manager,
        DisplayManager::Commands {
            stop: vec!["rc-service".into(), "sddm".into(), "stop".into()],
            start: vec!["rc-service".into(), "sddm".into(), "start".into()],
        }
    );
    assert_eq!(t.stop_units, ["sunshine.service"]);
    assert_eq!(t.user_units, ["plasma-*"]);
    assert_eq!(t.stop_processes, ["nvidia-persistenced", "nvtop"]);
    assert_eq!(
        t.unload_modules,
        UnloadModules::List(vec!["nvidia_drm".into(), "nvidia".into()])
    );

    assert_eq!(c.shutdown_timeout, Duration::from_secs(90));
    assert_eq!(c.qemu.binary, PathBuf::from("/usr/bin/qemu-system-x86_64"));
    assert_eq!(c.qemu.accel, Accel::Kvm);
    assert_eq!(c.qemu.user, QemuUser::Named("qemu".into()));
    assert_eq!(c.qemu.extra_args, ["-device", "ivshmem-plain,memdev=lg"]);
}

#[test]
fn headless_config_needs_only_memory_and_a_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(&tmp.path().join("vms/disk.img"));
    let path = tmp.path().join("vms/headless.toml");
    std::fs::write(&path, "memory = \"2G\"\n[[disk]]\npath = \"disk.img\"\n").expect("write");
    let c = load(&path).unwrap_or_else(|e| panic!("{}", render(&e)));
    assert_eq!(c.display, Display::Serial);
    assert_eq!(c.disks[0].format, DiskFormat::Raw);
    assert_eq!(c.disks[0].interface, DiskInterface::Virtio);
}
