//! `TestHost`: a fake host tree in a temporary directory, built by named,
//! chainable calls. Every call writes at once, so a test can keep adding to
//! a catalogue machine (`Machine::SingleGpu.build().file(...)`) before it acts.

use std::fs;
use std::path::Path;

use super::sysfs;
use crate::config::PciAddress;
use crate::host::HostRoot;

/// The kernel release the fake hosts run (`/proc/sys/kernel/osrelease`).
pub const RELEASE: &str = "6.1.0-26-amd64";

/// A fake host root; dropped with its directory.
pub struct TestHost {
    dir: tempfile::TempDir,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// An empty tree: no devices, no IOMMU groups, no files.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The directory standing for `/`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `HostRoot` reading this tree. The tree goes with the `TestHost`:
    /// keep the host bound (`let host = ...; host.root()`), not a temporary.
    pub fn root(&self) -> HostRoot {
        HostRoot::new(self.path())
    }

    /// Adds a PCI function.
    pub fn pci(self, device: Pci) -> Self {
        device.create(self.path());
        self
    }

    /// Binds the device at `addr` to `driver` (its `driver` link).
    pub fn bind(self, addr: &str, driver: &str) -> Self {
        sysfs::bind(self.path(), &full(addr), driver);
        self
    }

    /// Leaves the device at `addr` without a driver.
    pub fn unbind(self, addr: &str) -> Self {
        sysfs::unbind(self.path(), &full(addr));
        self
    }

    /// Writes the sysfs attribute `name` of the device at `addr`.
    pub fn attr(self, addr: &str, name: &str, value: &str) -> Self {
        sysfs::set_attr(self.path(), &full(addr), name, value);
        self
    }

    /// Writes any host file, e.g. `/proc/self/mounts`.
    pub fn file(self, abs: &str, contents: &str) -> Self {
        sysfs::write(self.path(), abs, contents);
        self
    }

    /// Creates a unix socket nobody listens on (the file stays after its
    /// listener is dropped), e.g. a sound server's `pulse/native`.
    pub fn socket(self, abs: &str) -> Self {
        let path = self.path().join(abs.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::net::UnixListener::bind(&path).unwrap();
        self
    }

    /// Creates an empty host directory, e.g. `/sys/kernel`.
    pub fn dir(self, abs: &str) -> Self {
        fs::create_dir_all(self.path().join(abs.trim_start_matches('/'))).unwrap();
        self
    }

    /// Removes a host file or directory, e.g. `/dev/kvm`.
    pub fn remove(self, abs: &str) -> Self {
        let path = self.path().join(abs.trim_start_matches('/'));
        if path.is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
        self
    }

    /// `/proc/cmdline` of a Debian boot with `args` after the root device.
    pub fn cmdline(self, args: &str) -> Self {
        let line = format!("BOOT_IMAGE=/vmlinuz-{RELEASE} root=/dev/nvme0n1p2 ro {args}\n");
        self.file("/proc/cmdline", &line)
    }

    /// `/proc/cpuinfo` of one socket.
    pub fn cpu(self, cpu: Cpu) -> Self {
        self.file("/proc/cpuinfo", &cpu.cpuinfo())
    }

    /// `/proc/meminfo`: `gib` in total, half free, three quarters available.
    pub fn memory_gib(self, gib: u64) -> Self {
        let kb = gib * 1024 * 1024;
        let text = format!(
            "MemTotal: {kb} kB\nMemFree: {} kB\nMemAvailable: {} kB\n",
            kb / 2,
            kb * 3 / 4
        );
        self.file("/proc/meminfo", &text)
    }

    /// `/dev/kvm` exists, open to every uid (0666) as QEMU's own needs it.
    pub fn kvm(self) -> Self {
        let host = self.file("/dev/kvm", "");
        let node = host.path().join("dev/kvm");
        fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        host
    }

    /// The running kernel (`RELEASE`) ships vfio-pci as a module.
    pub fn vfio_module(self) -> Self {
        self.file("/proc/sys/kernel/osrelease", &format!("{RELEASE}\n"))
            .file(
                &format!("/lib/modules/{RELEASE}/modules.dep"),
                "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko\n",
            )
    }

    /// A USB keyboard and mouse under `/dev/input/by-id`.
    pub fn usb_keyboard_and_mouse(self) -> Self {
        [
            "Keyboard-event-kbd",
            "Optical_Mouse-event-mouse",
            "Optical_Mouse-mouse",
        ]
        .into_iter()
        .fold(self, |host, name| {
            host.file(&format!("/dev/input/by-id/usb-Logitech_USB_{name}"), "")
        })
    }

    /// Reserved huge pages of size `kb`, all of them free.
    pub fn hugepages(self, kb: u64, free: u64) -> Self {
        let dir = format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB");
        self.file(&format!("{dir}/nr_hugepages"), &format!("{free}\n"))
            .file(&format!("{dir}/free_hugepages"), &format!("{free}\n"))
    }

    /// `/usr/share/misc/pci.ids` with these entries.
    pub fn pci_ids(self, text: &str) -> Self {
        self.file("/usr/share/misc/pci.ids", text)
    }

    /// A running VM `vm` holds the devices at `addrs` (its run dir's
    /// `devices` file under `/run/vmrun`).
    pub fn held_by(self, vm: &str, addrs: &[&str]) -> Self {
        let list: String = addrs.iter().map(|a| full(a) + "\n").collect();
        self.file(&format!("/run/vmrun/{vm}/devices"), &list)
    }

    /// An NVMe disk with partitions behind the controller at `addr`.
    pub fn disk(self, addr: &str, disk: &str, partitions: &[&str]) -> Self {
        sysfs::add_disk(self.path(), &full(addr), disk, partitions);
        self
    }

    /// A device-mapper device stacked on `under` (`disk` or `disk/part`).
    pub fn device_mapper(self, dm: &str, name: &str, under: &str) -> Self {
        sysfs::add_dm(self.path(), dm, name, under);
        self
    }

    /// DRM nodes (`card0`, `renderD128`) of the device at `addr`.
    pub fn drm(self, addr: &str, nodes: &[&str]) -> Self {
        sysfs::add_drm(self.path(), &full(addr), nodes);
        self
    }

    /// A process with open files at the host paths `fds`.
    pub fn process(self, pid: u32, comm: &str, fds: &[&str]) -> Self {
        sysfs::add_process(self.path(), pid, comm, fds);
        self
    }

    /// A symbolic link at host path `abs` to `target`, kept as given.
    pub fn symlink(self, abs: &str, target: &str) -> Self {
        sysfs::add_symlink(self.path(), abs, target);
        self
    }

    /// An evdev node `/dev/input/eventN` (an empty file) and its device
    /// under `/sys/class/input/eventN/device`.
    pub fn input(self, event: u32, device: Input) -> Self {
        device.create(self.path(), event);
        self
    }

    /// A USB device in `/sys/bus/usb/devices` with its `/dev/bus/usb` node.
    pub fn usb(self, device: Usb) -> Self {
        device.create(self.path());
        self
    }

    /// A virtual console, bound to its driver or not.
    pub fn vtcon(self, index: u32, name: &str, bound: bool) -> Self {
        sysfs::add_vtcon(self.path(), index, name, bound);
        self
    }

    /// A platform framebuffer device bound to `driver`, at `base` if known.
    pub fn framebuffer(self, driver: &str, device: &str, base: Option<u64>) -> Self {
        sysfs::add_framebuffer(self.path(), driver, device, base);
        self
    }

    /// A loaded module and the modules holding it.
    pub fn module(self, name: &str, holders: &[&str]) -> Self {
        sysfs::add_module(self.path(), name, holders);
        self
    }

    /// Makes `module` the module of the PCI driver `driver`.
    pub fn driver_module(self, driver: &str, module: &str) -> Self {
        sysfs::set_driver_module(self.path(), driver, module);
        self
    }
}

/// The sysfs name of an address given in any form `PciAddress` accepts.
fn full(addr: &str) -> String {
    addr.parse::<PciAddress>().unwrap().to_string()
}

/// One PCI function to add to a `TestHost`: identity first, then what the
/// kernel made of it (driver, IOMMU group, attributes).
#[derive(Debug, Clone)]
pub struct Pci {
    address: String,
    ids: (u16, u16),
    class: u32,
    driver: Option<String>,
    group: Option<u32>,
    attrs: Vec<(&'static str, String)>,
}

impl Pci {
    /// A function of `class`, unbound, outside any group.
    pub fn new(address: &str, ids: (u16, u16), class: Class) -> Self {
        Self {
            address: full(address),
            ids,
            class: class.code(),
            driver: None,
            group: None,
            attrs: Vec::new(),
        }
    }

    /// A VGA-compatible controller: a desktop GPU.
    pub fn vga(address: &str, ids: (u16, u16)) -> Self {
        Self::new(address, ids, Class::Vga)
    }

    /// HD audio: a GPU's HDMI audio function.
    pub fn audio(address: &str, ids: (u16, u16)) -> Self {
        Self::new(address, ids, Class::Audio)
    }

    /// The function's address as sysfs names it.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Bound to `driver`.
    pub fn driver(mut self, driver: &str) -> Self {
        self.driver = Some(driver.to_string());
        self
    }

    /// A member of IOMMU group `group`.
    pub fn group(mut self, group: u32) -> Self {
        self.group = Some(group);
        self
    }

    /// `boot_vga`: whether the firmware booted on this GPU.
    pub fn boot_vga(self, boot: bool) -> Self {
        self.attr("boot_vga", if boot { "1" } else { "0" })
    }

    /// `reset_method`: the enabled methods, e.g. `"flr bus"`; `""` for none.
    pub fn reset_method(self, methods: &str) -> Self {
        self.attr("reset_method", methods)
    }

    /// `subsystem_vendor` and `subsystem_device`: the board maker's ids.
    pub fn subsystem(self, ids: (u16, u16)) -> Self {
        self.attr("subsystem_vendor", &format!("0x{:04x}", ids.0))
            .attr("subsystem_device", &format!("0x{:04x}", ids.1))
    }

    /// Any other sysfs attribute, e.g. `resource`.
    pub fn attr(mut self, name: &'static str, value: &str) -> Self {
        self.attrs.push((name, value.to_string()));
        self
    }

    /// Writes this function into the tree at `root`.
    pub fn create(&self, root: &Path) {
        let addr = &self.address;
        let driver = self.driver.as_deref();
        sysfs::add_device(root, addr, self.ids, self.class, driver, self.group);
        for (name, value) in &self.attrs {
            sysfs::set_attr(root, addr, name, value);
        }
    }
}

/// The PCI classes the machines are made of (`0xCCSSPP` in sysfs `class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Vga,
    /// A 3D controller: a laptop's NVIDIA dGPU.
    Display3d,
    Audio,
    /// A chipset's HD audio controller (0x0403 prog-if 0x80).
    ChipsetAudio,
    HostBridge,
    /// A PCI-to-PCI bridge: a root port.
    RootPort,
    Nvme,
    /// A USB xHCI controller.
    Usb,
    Smbus,
    /// Other serial bus controller (0x0c80): a GPU's USB-C UCSI function.
    SerialBus,
}

impl Class {
    fn code(self) -> u32 {
        match self {
            Class::Vga => 0x030000,
            Class::Display3d => 0x030200,
            Class::Audio => 0x040300,
            Class::ChipsetAudio => 0x040380,
            Class::HostBridge => 0x060000,
            Class::RootPort => 0x060400,
            Class::Nvme => 0x010802,
            Class::Usb => 0x0c0330,
            Class::Smbus => 0x0c0500,
            Class::SerialBus => 0x0c8000,
        }
    }
}

/// An evdev input device as sysfs shows it: `name`, `phys`, `id/` and the
/// capability bitmaps (`"0"` until set), words most significant first.
#[derive(Debug, Clone)]
pub struct Input {
    name: String,
    ids: (u16, u16),
    phys: String,
    key: String,
    rel: String,
    abs: String,
    /// The USB device (`1-2`) whose first interface the input device is
    /// under; `None`: a virtual device.
    usb: Option<String>,
}

impl Input {
    /// A device with no capabilities yet.
    pub fn new(name: &str, ids: (u16, u16), phys: &str) -> Self {
        Self {
            name: name.to_string(),
            ids,
            phys: phys.to_string(),
            key: "0".into(),
            rel: "0".into(),
            abs: "0".into(),
            usb: None,
        }
    }

    /// On the USB device `name` (`1-2`), as a USB keyboard's evdev device
    /// sits under its HID interface in sysfs.
    pub fn on_usb(mut self, name: &str) -> Self {
        self.usb = Some(name.to_string());
        self
    }

    /// `capabilities/key`: keys and buttons.
    pub fn keys(mut self, bitmap: &str) -> Self {
        self.key = bitmap.to_string();
        self
    }

    /// `capabilities/rel`: relative axes (a mouse).
    pub fn rel(mut self, bitmap: &str) -> Self {
        self.rel = bitmap.to_string();
        self
    }

    /// `capabilities/abs`: absolute axes (a tablet).
    pub fn abs(mut self, bitmap: &str) -> Self {
        self.abs = bitmap.to_string();
        self
    }

    fn create(&self, root: &Path, event: u32) {
        let dev = match &self.usb {
            Some(name) => {
                let bus = name.split_once('-').map_or("1", |(b, _)| b);
                format!("/sys/devices/pci0000:00/0000:00:14.0/usb{bus}/{name}/{name}:1.0/input/input{event}")
            }
            None => format!("/sys/devices/virtual/input/input{event}"),
        };
        let files = [
            ("name", self.name.clone()),
            ("phys", self.phys.clone()),
            ("id/vendor", format!("{:04x}", self.ids.0)),
            ("id/product", format!("{:04x}", self.ids.1)),
            ("capabilities/key", self.key.clone()),
            ("capabilities/rel", self.rel.clone()),
            ("capabilities/abs", self.abs.clone()),
        ];
        for (file, value) in files {
            sysfs::write(root, &format!("{dev}/{file}"), &format!("{value}\n"));
        }
        let class = format!("/sys/class/input/event{event}/device");
        sysfs::add_symlink(root, &class, root.join(&dev[1..]).to_str().unwrap());
        sysfs::write(root, &format!("/dev/input/event{event}"), "");
    }
}

/// `/proc/cpuinfo` of one socket: vendor, its virtualization flag, cores
/// and threads per core.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    vendor: &'static str,
    flag: &'static str,
    cores: u32,
    threads: u32,
}

impl Cpu {
    /// An Intel CPU with VT-x (`vmx`).
    pub fn intel(cores: u32, threads: u32) -> Self {
        Self {
            vendor: "GenuineIntel",
            flag: "vmx",
            cores,
            threads,
        }
    }

    /// An AMD CPU with AMD-V (`svm`).
    pub fn amd(cores: u32, threads: u32) -> Self {
        Self {
            vendor: "AuthenticAMD",
            flag: "svm",
            cores,
            threads,
        }
    }

    fn cpuinfo(&self) -> String {
        let Self {
            vendor,
            flag,
            cores,
            threads,
        } = *self;
        (0..cores * threads)
            .map(|n| {
                format!(
                    "processor\t: {n}\nvendor_id\t: {vendor}\nphysical id\t: 0\nsiblings\t: {}\ncore id\t\t: {}\ncpu cores\t: {cores}\nflags\t\t: fpu {flag} lm\n\n",
                    cores * threads,
                    n % cores
                )
            })
            .collect()
    }
}

/// A USB device: where it is plugged (`BUS-PORT[.PORT...]`), its ids, the
/// address the bus gave it, its class and interfaces.
#[derive(Debug, Clone)]
pub struct Usb {
    name: String,
    ids: (u16, u16),
    devnum: u16,
    class: u8,
    interfaces: Vec<(u8, u8, u8)>,
    strings: Option<(String, String)>,
}

impl Usb {
    /// A device whose one interface is vendor-specific (class ff).
    pub fn new(name: &str, ids: (u16, u16), devnum: u16) -> Self {
        Self {
            name: name.to_string(),
            ids,
            devnum,
            class: 0,
            interfaces: vec![(0xff, 0, 0)],
            strings: None,
        }
    }

    /// A hub (device and interface class 09).
    pub fn hub(name: &str, ids: (u16, u16), devnum: u16) -> Self {
        let mut u = Self::new(name, ids, devnum);
        u.class = 0x09;
        u.interfaces = vec![(0x09, 0, 0)];
        u
    }

    /// A HID boot keyboard (interface 03/01/01).
    pub fn keyboard(name: &str, ids: (u16, u16), devnum: u16) -> Self {
        Self::new(name, ids, devnum).interfaces(&[(0x03, 0x01, 0x01)])
    }

    /// Its interfaces' `(class, subclass, protocol)`.
    pub fn interfaces(mut self, list: &[(u8, u8, u8)]) -> Self {
        self.interfaces = list.to_vec();
        self
    }

    /// Its `manufacturer` and `product` strings.
    pub fn product(mut self, manufacturer: &str, product: &str) -> Self {
        self.strings = Some((manufacturer.to_string(), product.to_string()));
        self
    }

    fn create(&self, root: &Path) {
        let strings = self.strings.as_ref().map(|(m, p)| (m.as_str(), p.as_str()));
        sysfs::add_usb(
            root,
            &self.name,
            self.ids,
            self.devnum,
            self.class,
            &self.interfaces,
            strings,
        );
    }
}
