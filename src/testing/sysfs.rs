//! The files a fake host tree is made of, one function per kernel object
//! (a PCI function, a disk, a DRM node, a process...), each written where
//! the real kernel shows it under `root`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

fn pci_dir(root: &Path, addr: &str) -> PathBuf {
    root.join("sys/bus/pci/devices").join(addr)
}

/// A PCI function: `vendor`, `device`, `class`, `driver_override` as the
/// kernel prints them; `driver` and `iommu_group` links when given.
pub fn add_device(
    root: &Path,
    addr: &str,
    ids: (u16, u16),
    class: u32,
    driver: Option<&str>,
    group: Option<u32>,
) {
    let dev = pci_dir(root, addr);
    fs::create_dir_all(&dev).unwrap();
    fs::write(dev.join("vendor"), format!("0x{:04x}\n", ids.0)).unwrap();
    fs::write(dev.join("device"), format!("0x{:04x}\n", ids.1)).unwrap();
    fs::write(dev.join("class"), format!("0x{class:06x}\n")).unwrap();
    fs::write(dev.join("driver_override"), "(null)\n").unwrap();
    if let Some(drv) = driver {
        bind(root, addr, drv);
    }
    if let Some(g) = group {
        let gdir = root.join("sys/kernel/iommu_groups").join(g.to_string());
        fs::create_dir_all(gdir.join("devices")).unwrap();
        symlink(&gdir, dev.join("iommu_group")).unwrap();
        symlink(&dev, gdir.join("devices").join(addr)).unwrap();
    }
}

/// Points the device's `driver` link at `drivers/DRIVER` (replacing it).
pub fn bind(root: &Path, addr: &str, driver: &str) {
    let d = root.join("sys/bus/pci/drivers").join(driver);
    fs::create_dir_all(&d).unwrap();
    let link = pci_dir(root, addr).join("driver");
    let _ = fs::remove_file(&link);
    symlink(&d, link).unwrap();
}

/// Removes the device's `driver` link: no driver bound.
pub fn unbind(root: &Path, addr: &str) {
    let _ = fs::remove_file(pci_dir(root, addr).join("driver"));
}

/// Writes `value` to the device's sysfs attribute `name` (e.g. `boot_vga`).
pub fn set_attr(root: &Path, addr: &str, name: &str, value: &str) {
    fs::write(pci_dir(root, addr).join(name), format!("{value}\n")).unwrap();
}

/// Writes a host file such as `/proc/cmdline` under the fake root.
pub fn write(root: &Path, abs: &str, contents: &str) {
    let path = root.join(abs.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

/// An NVMe-style disk behind the PCI device, as `/sys/block/DISK` with
/// its `device` link and one directory per partition.
pub fn add_disk(root: &Path, addr: &str, disk: &str, partitions: &[&str]) {
    let ctrl = pci_dir(root, addr).join("nvme/nvme0");
    let dir = ctrl.join(disk);
    fs::create_dir_all(&dir).unwrap();
    for part in partitions {
        fs::create_dir_all(dir.join(part)).unwrap();
        fs::write(dir.join(part).join("partition"), "1\n").unwrap();
    }
    symlink(&ctrl, dir.join("device")).unwrap();
    fs::create_dir_all(root.join("sys/block")).unwrap();
    symlink(&dir, root.join("sys/block").join(disk)).unwrap();
}

/// A device-mapper device `dm` named `name`, stacked on `under`
/// (`disk` or `disk/partition` under `/sys/block`).
pub fn add_dm(root: &Path, dm: &str, name: &str, under: &str) {
    let dir = root.join("sys/devices/virtual/block").join(dm);
    fs::create_dir_all(dir.join("dm")).unwrap();
    fs::write(dir.join("dm/name"), format!("{name}\n")).unwrap();
    symlink(&dir, root.join("sys/block").join(dm)).unwrap();
    let holders = root.join("sys/block").join(under).join("holders");
    fs::create_dir_all(&holders).unwrap();
    symlink(&dir, holders.join(dm)).unwrap();
}

/// DRM nodes (`card1`, `renderD128`) of a PCI device.
pub fn add_drm(root: &Path, addr: &str, nodes: &[&str]) {
    let drm = pci_dir(root, addr).join("drm");
    for node in nodes {
        fs::create_dir_all(drm.join(node)).unwrap();
    }
}

/// A process `pid` named `comm` with open files at host paths `fds`.
pub fn add_process(root: &Path, pid: u32, comm: &str, fds: &[&str]) {
    let dir = root.join("proc").join(pid.to_string());
    fs::create_dir_all(dir.join("fd")).unwrap();
    fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
    for (n, target) in fds.iter().enumerate() {
        symlink(target, dir.join("fd").join(n.to_string())).unwrap();
    }
}

/// A symbolic link at host path `abs` to `target` (as given: udev's
/// `/dev/input/by-id` links are relative, `../event3`).
pub fn add_symlink(root: &Path, abs: &str, target: &str) {
    let path = root.join(abs.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
}

/// A virtual console `vtconINDEX` named `name`, bound or not.
pub fn add_vtcon(root: &Path, index: u32, name: &str, bound: bool) {
    let dir = root.join(format!("sys/class/vtconsole/vtcon{index}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("name"), format!("{name}\n")).unwrap();
    fs::write(dir.join("bind"), if bound { "1\n" } else { "0\n" }).unwrap();
}

/// A platform framebuffer device bound to `driver`, with efifb's
/// `base` attribute when given.
pub fn add_framebuffer(root: &Path, driver: &str, device: &str, base: Option<u64>) {
    let dev = root.join("sys/devices/platform").join(device);
    fs::create_dir_all(&dev).unwrap();
    if let Some(b) = base {
        fs::write(dev.join("base"), format!("0x{b:x}\n")).unwrap();
    }
    let drv = root.join("sys/bus/platform/drivers").join(driver);
    fs::create_dir_all(&drv).unwrap();
    symlink(&dev, drv.join(device)).unwrap();
    symlink(&drv, dev.join("driver")).unwrap();
    let devs = root.join("sys/bus/platform/devices");
    fs::create_dir_all(&devs).unwrap();
    let _ = symlink(&dev, devs.join(device));
}

/// A loaded module with the modules holding it.
pub fn add_module(root: &Path, name: &str, holders: &[&str]) {
    let dir = root.join("sys/module").join(name);
    fs::create_dir_all(dir.join("holders")).unwrap();
    fs::write(dir.join("refcnt"), format!("{}\n", holders.len())).unwrap();
    for h in holders {
        let hdir = root.join("sys/module").join(h);
        fs::create_dir_all(&hdir).unwrap();
        let _ = symlink(&hdir, dir.join("holders").join(h));
    }
}

/// Makes `module` the module of PCI driver `driver`.
pub fn set_driver_module(root: &Path, driver: &str, module: &str) {
    let drv = root.join("sys/bus/pci/drivers").join(driver);
    fs::create_dir_all(&drv).unwrap();
    let _ = fs::remove_file(drv.join("module"));
    symlink(root.join("sys/module").join(module), drv.join("module")).unwrap();
}

/// A USB device as the kernel shows it: its directory under the xHCI of
/// bus `BUS` (`/sys/devices/pci0000:00/0000:00:14.0/usbBUS/NAME`), the
/// `/sys/bus/usb/devices/NAME` link to it, its attributes (hex ids and
/// classes, decimal numbers, as the kernel prints them), one interface
/// `NAME:1.0` per `(class, subclass, protocol)` and its `/dev/bus/usb` node.
/// Returns the device's host path.
pub fn add_usb(
    root: &Path,
    name: &str,
    ids: (u16, u16),
    devnum: u16,
    class: u8,
    interfaces: &[(u8, u8, u8)],
    strings: Option<(&str, &str)>,
) -> String {
    let (bus, devpath) = name.split_once('-').unwrap();
    let dev = format!("/sys/devices/pci0000:00/0000:00:14.0/usb{bus}/{name}");
    let mut attrs = vec![
        ("idVendor", format!("{:04x}", ids.0)),
        ("idProduct", format!("{:04x}", ids.1)),
        ("busnum", bus.to_string()),
        ("devnum", devnum.to_string()),
        ("devpath", devpath.to_string()),
        ("bDeviceClass", format!("{class:02x}")),
    ];
    if let Some((manufacturer, product)) = strings {
        attrs.push(("manufacturer", manufacturer.to_string()));
        attrs.push(("product", product.to_string()));
    }
    for (f, v) in attrs {
        write(root, &format!("{dev}/{f}"), &format!("{v}\n"));
    }
    for (i, (c, s, p)) in interfaces.iter().enumerate() {
        let iface = format!("{dev}/{name}:1.{i}");
        for (f, v) in [
            ("bInterfaceClass", c),
            ("bInterfaceSubClass", s),
            ("bInterfaceProtocol", p),
        ] {
            write(root, &format!("{iface}/{f}"), &format!("{v:02x}\n"));
        }
    }
    add_symlink(
        root,
        &format!("/sys/bus/usb/devices/{name}"),
        root.join(&dev[1..]).to_str().unwrap(),
    );
    let bus: u16 = bus.parse().unwrap();
    write(root, &format!("/dev/bus/usb/{bus:03}/{devnum:03}"), "");
    dev
}
