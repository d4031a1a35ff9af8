//! Moving PCI functions to vfio-pci and back, through `driver_override`
//! and `drivers_probe` as libvirt (virPCIDeviceBindWithDriverOverride) and
//! driverctl do, never `new_id`: new_id binds every matching card, now and
//! on every later probe.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::config::PciAddress;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::kernel::{link_name, WriteError};
use crate::prepare::Host;

pub const VFIO_DRIVER: &str = "vfio-pci";
/// How often a restore probes a device that did not come back.
const PROBE_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{address} is not on this host")]
    NoDevice { address: PciAddress },
    #[error(
        "could not load the vfio-pci module: {0}. Is it built for this kernel? (modinfo vfio-pci)"
    )]
    NoModule(String),
    #[error("{address} did not bind to vfio-pci: its driver is {found}")]
    NotBound { address: PciAddress, found: String },
    #[error("{path} did not appear after binding {address} to vfio-pci")]
    NoGroupNode { address: PciAddress, path: PathBuf },
}

/// The journal step: a PCI function moved to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindVfio {
    pub address: PciAddress,
    /// Its driver before (`None`: it was unbound).
    pub driver: Option<String>,
    /// Its `driver_override` before (`None`: the kernel's `(null)`).
    pub driver_override: Option<String>,
    /// `[[hostdev]] rescan_fallback`: kept here because `vmrun restore`
    /// has only the journal. Absent in journals of older vmruns.
    #[serde(default)]
    pub rescan_fallback: bool,
}

impl Undo for BindVfio {
    fn undo(&self, host: &Host) -> StepReport {
        let r = restore(
            host,
            self.address,
            self.driver.as_deref(),
            self.driver_override.as_deref(),
            self.rescan_fallback,
        );
        let what = format!(
            "{} back to {}{}",
            self.address,
            self.driver.as_deref().unwrap_or("no driver"),
            if r.rescanned {
                " (after remove + rescan)"
            } else {
                ""
            }
        );
        if r.ok() {
            tracing::info!("{what}");
        }
        StepReport {
            what,
            problem: r.problem,
        }
    }
}

/// Loads vfio-pci if its driver is not registered yet.
pub fn ensure_vfio_module(host: &Host) -> Result<(), VfioError> {
    if host.sys("drivers/vfio-pci").is_dir() {
        return Ok(());
    }
    match host.kernel.modprobe(VFIO_DRIVER) {
        Ok(true) if host.sys("drivers/vfio-pci").is_dir() => Ok(()),
        Ok(_) => Err(VfioError::NoModule("modprobe vfio-pci failed".into())),
        Err(e) => Err(VfioError::NoModule(e.to_string())),
    }
}

/// What `bind` needs to know of a device (three reads; `read_device` also
/// reads ids, class and boot_vga, which binding does not use).
struct DeviceState {
    driver: Option<String>,
    driver_override: Option<String>,
    iommu_group: Option<u32>,
}

impl DeviceState {
    /// `None` when the host has no such device.
    fn read(host: &Host, address: PciAddress) -> Option<Self> {
        let dir = host.root.pci_device(&address);
        let driver_override = match std::fs::read_to_string(dir.join("driver_override")) {
            Ok(s) => Some(s.trim().to_string()).filter(|s| s != "(null)" && !s.is_empty()),
            // Every PCI device has the file (since 3.16): no file, no device.
            Err(_) if !dir.is_dir() => return None,
            Err(_) => None,
        };
        Some(Self {
            driver: link_name(&dir.join("driver")),
            driver_override,
            iommu_group: link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
        })
    }
}

/// Binds `address` to vfio-pci, journaling its original driver and override
/// first. Returns its IOMMU group. A device already on vfio-pci is left
/// alone and not journaled (it was not ours to give back).
pub fn bind(
    host: &Host,
    journal: &mut Journal,
    address: PciAddress,
    rescan_fallback: bool,
) -> Result<Option<u32>, VfioError> {
    let dev = DeviceState::read(host, address).ok_or(VfioError::NoDevice { address })?;
    if dev.driver.as_deref() != Some(VFIO_DRIVER) {
        journal.record(&Step::BindVfio(BindVfio {
            address,
            driver: dev.driver.clone(),
            driver_override: dev.driver_override.clone(),
            rescan_fallback,
        }))?;
        let dir = host.root.pci_device(&address);
        // driver_override only decides the next probe; it unbinds nothing.
        host.kernel
            .write(&dir.join("driver_override"), VFIO_DRIVER)?;
        if dev.driver.is_some() {
            host.kernel
                .write(&dir.join("driver/unbind"), &address.to_string())?;
        }
        // "drivers_probe" runs driver matching for one device, and the core
        // honours driver_override (Documentation/ABI/testing/sysfs-bus-pci).
        host.kernel
            .write(&host.sys("drivers_probe"), &address.to_string())?;
        let now = host.wait_driver(address, |d| d == Some(VFIO_DRIVER));
        if now.as_deref() != Some(VFIO_DRIVER) {
            return Err(VfioError::NotBound {
                address,
                found: now.unwrap_or_else(|| "none".into()),
            });
        }
    }
    if let Some(group) = dev.iommu_group {
        let node = host.root.path(format!("/dev/vfio/{group}"));
        let deadline = Instant::now() + host.timings.probe_wait;
        while !node.exists() {
            if Instant::now() >= deadline {
                return Err(VfioError::NoGroupNode {
                    address,
                    path: node,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(dev.iommu_group)
}

/// How one device came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRestore {
    pub address: PciAddress,
    pub wanted: Option<String>,
    /// The driver it has now.
    pub driver: Option<String>,
    /// It came back only after being removed from the bus and rescanned.
    pub rescanned: bool,
    /// Why it is not as it was, when it isn't.
    pub problem: Option<String>,
}

impl DeviceRestore {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Gives `address` back: the old `driver_override` (or "\n", which clears
/// it), unbind from vfio-pci, `drivers_probe`, then verify. Every step is
/// tried even if one before it failed. With `rescan_fallback`, a device
/// that did not come back is removed from the bus and found again by a
/// rescan, which gives it a fresh `struct pci_dev` and a first probe, then
/// the same steps run once more (`remove` then `rescan` in sysfs, the
/// kernel's own way to forget and re-enumerate a device).
pub fn restore(
    host: &Host,
    address: PciAddress,
    driver: Option<&str>,
    driver_override: Option<&str>,
    rescan_fallback: bool,
) -> DeviceRestore {
    let first = restore_in_place(host, address, driver, driver_override);
    let Some(problem) = first.problem.clone().filter(|_| rescan_fallback) else {
        return first;
    };
    tracing::warn!("{address}: {problem}; removing it from the bus and rescanning");
    let mut second = match remove_and_rescan(host, address) {
        Ok(()) => restore_in_place(host, address, driver, driver_override),
        Err(why) => DeviceRestore {
            problem: Some(why),
            ..first
        },
    };
    second.rescanned = true;
    second.problem = second
        .problem
        .map(|p| format!("{problem}; after remove + rescan: {p}"));
    second
}

fn restore_in_place(
    host: &Host,
    address: PciAddress,
    driver: Option<&str>,
    driver_override: Option<&str>,
) -> DeviceRestore {
    let mut problems = Vec::new();
    let dir = host.root.pci_device(&address);
    if !dir.exists() {
        return DeviceRestore {
            address,
            wanted: driver.map(str::to_owned),
            driver: None,
            rescanned: false,
            problem: Some(
                "the device is gone from the bus: `echo 1 > /sys/bus/pci/rescan` may bring it back \
                 (`rescan_fallback = true` in its [[hostdev]] makes vmrun try that)"
                    .into(),
            ),
        };
    }
    let mut note = |r: Result<(), WriteError>| {
        if let Err(e) = r {
            problems.push(e.to_string());
        }
    };
    let override_value = match driver_override {
        Some(o) => format!("{o}\n"),
        None => "\n".to_string(),
    };
    note(
        host.kernel
            .write(&dir.join("driver_override"), &override_value),
    );
    // vfio-pci here; after a rescan, whatever the first probe picked.
    if let Some(current) = host
        .driver_of(address)
        .filter(|d| Some(d.as_str()) != driver)
    {
        note(host.kernel.write(
            &host.sys(&format!("drivers/{current}/unbind")),
            &address.to_string(),
        ));
    }
    // A device just released by a QEMU that was killed can fail its first
    // probe (seen in the lab with snd_hda_intel: EINVAL from drivers_probe
    // right after the nested QEMU died): probe again before giving up.
    let mut now = None;
    for attempt in 0..PROBE_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(host.timings.probe_retry_pause);
        }
        let probed = match driver {
            Some(_) => host
                .kernel
                .write(&host.sys("drivers_probe"), &address.to_string()),
            None => Ok(()),
        };
        now = host.wait_driver(address, |d| d == driver);
        if now.as_deref() == driver {
            break;
        }
        if attempt + 1 == PROBE_ATTEMPTS {
            note(probed);
        }
    }
    if now.as_deref() != driver {
        problems.push(format!(
            "its driver is {} instead of {}",
            now.as_deref().unwrap_or("none"),
            driver.unwrap_or("none")
        ));
    }
    DeviceRestore {
        address,
        wanted: driver.map(str::to_owned),
        driver: now,
        rescanned: false,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// `remove` hot-unplugs the device (and its children) from the kernel;
/// `/sys/bus/pci/rescan` rediscovers every device missing from the buses
/// (Documentation/ABI/testing/sysfs-bus-pci). Both are plain writes of "1".
fn remove_and_rescan(host: &Host, address: PciAddress) -> Result<(), String> {
    let dir = host.root.pci_device(&address);
    if dir.exists() {
        host.kernel
            .write(&dir.join("remove"), "1")
            .map_err(|e| e.to_string())?;
    }
    host.kernel
        .write(&host.sys("rescan"), "1")
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + host.timings.rescan_wait;
    while !dir.exists() {
        if Instant::now() >= deadline {
            return Err(format!(
                "it did not come back within {}s of a rescan",
                host.timings.rescan_wait.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::pci::read_device;
    use crate::host::HostRoot;
    use crate::prepare::journal::{self, Undone};
    use crate::prepare::kernel::fake::FakeKernel;
    use crate::prepare::kernel::{Kernel, Timings};
    use crate::testing::machines::ids::{BOCHS_VGA, ICH9_HDA};
    use crate::testing::{Pci, TestHost};
    use std::fs;

    const GPU: &str = "0000:01:00.0";
    const AUDIO: &str = "0000:01:00.1";

    /// A GPU (bochs-drm) and its audio function (snd_hda_intel) in IOMMU
    /// group 7, vfio-pci loaded, a journal at `journal`.
    struct Fixture {
        tree: TestHost,
        kernel: FakeKernel,
        root: HostRoot,
        journal: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            Self::with(|k| k)
        }

        fn with(tweak: impl FnOnce(FakeKernel) -> FakeKernel) -> Self {
            let tree = TestHost::new()
                .pci(Pci::vga(GPU, BOCHS_VGA).driver("bochs-drm").group(7))
                .pci(Pci::audio(AUDIO, ICH9_HDA).driver("snd_hda_intel").group(7));
            let kernel = tweak(
                FakeKernel::new(tree.path())
                    .native(GPU, "bochs-drm")
                    .native(AUDIO, "snd_hda_intel"),
            );
            kernel.modprobe(VFIO_DRIVER).unwrap();
            Self {
                root: tree.root(),
                journal: tree.path().join("journal"),
                tree,
                kernel,
            }
        }

        fn host(&self) -> Host<'_> {
            Host::new(&self.root, &self.kernel).with_timings(Timings::NONE)
        }

        fn bind(&self, addr: &str, rescan_fallback: bool) -> Result<Option<u32>, VfioError> {
            let mut journal = Journal::open(&self.journal).unwrap();
            bind(
                &self.host(),
                &mut journal,
                addr.parse().unwrap(),
                rescan_fallback,
            )
        }

        fn replay(&self) -> Undone {
            journal::undo_all(&self.journal, &self.host())
        }

        fn driver(&self, addr: &str) -> Option<String> {
            read_device(&self.root, addr.parse().unwrap())
                .unwrap()
                .driver
        }

        fn driver_override(&self, addr: &str) -> Option<String> {
            read_device(&self.root, addr.parse().unwrap())
                .unwrap()
                .driver_override
        }

        fn set_override(&self, addr: &str, value: &str) {
            let path = format!("sys/bus/pci/devices/{addr}/driver_override");
            fs::write(self.tree.path().join(path), format!("{value}\n")).unwrap();
        }

        fn wrote(&self, rel: &str) -> bool {
            self.kernel
                .writes
                .borrow()
                .iter()
                .any(|(path, _)| path == rel)
        }
    }

    #[test]
    fn bind_then_replay_restores_both_functions() {
        let f = Fixture::new();
        for a in [GPU, AUDIO] {
            assert_eq!(f.bind(a, false).unwrap(), Some(7));
            assert_eq!(f.driver(a).as_deref(), Some("vfio-pci"));
        }
        assert!(f.tree.path().join("dev/vfio/7").exists());
        let report = f.replay();
        assert!(report.complete(), "{report:?}");
        assert_eq!(f.driver(GPU).as_deref(), Some("bochs-drm"));
        assert_eq!(f.driver(AUDIO).as_deref(), Some("snd_hda_intel"));
        assert_eq!(f.driver_override(GPU), None);
    }

    #[test]
    fn the_vfio_module_is_loaded_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = FakeKernel::new(dir.path());
        let root = HostRoot::new(dir.path());
        let host = Host::new(&root, &kernel);
        ensure_vfio_module(&host).unwrap();
        assert!(dir.path().join("sys/bus/pci/drivers/vfio-pci").is_dir());
    }

    #[test]
    fn writes_follow_the_driver_override_sequence() {
        let f = Fixture::new();
        f.bind(GPU, false).unwrap();
        let writes: Vec<String> = f
            .kernel
            .writes
            .borrow()
            .iter()
            .map(|(p, v)| format!("{p} <- {v}"))
            .collect();
        assert_eq!(
            writes,
            [
                format!("sys/bus/pci/devices/{GPU}/driver_override <- vfio-pci"),
                format!("sys/bus/pci/devices/{GPU}/driver/unbind <- {GPU}"),
                format!("sys/bus/pci/drivers_probe <- {GPU}"),
            ]
        );
    }

    #[test]
    fn a_device_already_on_vfio_is_not_journaled() {
        let f = Fixture::new();
        f.bind(GPU, false).unwrap();
        let mut second = Journal::open(&f.tree.path().join("journal2")).unwrap();
        bind(&f.host(), &mut second, GPU.parse().unwrap(), false).unwrap();
        assert!(journal::read(&f.tree.path().join("journal2"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bind_refused_by_vfio_is_reported_and_rolls_back() {
        let f = Fixture::with(|k| k.refusing("vfio-pci"));
        let err = f.bind(GPU, false).unwrap_err();
        assert!(matches!(err, VfioError::NotBound { .. }), "{err}");
        assert!(f.replay().complete());
        assert_eq!(f.driver(GPU).as_deref(), Some("bochs-drm"));
    }

    #[test]
    fn a_hung_unbind_is_an_error_naming_the_path() {
        let f = Fixture::with(|k| k.hanging_unbind(AUDIO));
        let err = f.bind(AUDIO, false).unwrap_err();
        assert!(
            matches!(err, VfioError::Write(WriteError::Hung { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("unbind"));
    }

    #[test]
    fn restore_of_a_vanished_device_says_how_to_rescan() {
        let f = Fixture::new();
        let gone = "0000:09:00.0".parse().unwrap();
        let r = restore(&f.host(), gone, Some("nvidia"), None, false);
        assert!(r.problem.unwrap().contains("rescan"));
    }

    #[test]
    fn restore_keeps_a_previous_override() {
        let f = Fixture::new();
        f.set_override(AUDIO, "snd_hda_intel");
        f.bind(AUDIO, false).unwrap();
        assert!(f.replay().complete());
        assert_eq!(f.driver_override(AUDIO).as_deref(), Some("snd_hda_intel"));
    }

    #[test]
    fn a_wedged_device_comes_back_after_remove_and_rescan_when_configured() {
        let f = Fixture::new();
        f.set_override(AUDIO, "snd_hda_intel");
        f.bind(AUDIO, true).unwrap();
        f.kernel.wedge(AUDIO);
        let report = f.replay();
        assert!(report.complete(), "{report:?}");
        assert!(report.steps[0].what.contains("after remove + rescan"));
        assert_eq!(f.driver(AUDIO).as_deref(), Some("snd_hda_intel"));
        // The rescanned device starts with no override: the old one is set again.
        assert_eq!(f.driver_override(AUDIO).as_deref(), Some("snd_hda_intel"));
        assert!(f.wrote(&format!("sys/bus/pci/devices/{AUDIO}/remove")));
        assert!(f.wrote("sys/bus/pci/rescan"));
    }

    #[test]
    fn without_the_fallback_a_wedged_device_is_reported_and_left_on_the_bus() {
        let f = Fixture::new();
        f.bind(AUDIO, false).unwrap();
        f.kernel.wedge(AUDIO);
        let problems: Vec<String> = f.replay().problems().collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("instead of snd_hda_intel"),
            "{problems:?}"
        );
        assert!(!f.wrote("sys/bus/pci/rescan"));
    }

    #[test]
    fn a_device_that_fell_off_the_bus_is_rescanned_when_configured() {
        let f = Fixture::new();
        f.bind(AUDIO, true).unwrap();
        let remove = format!("sys/bus/pci/devices/{AUDIO}/remove");
        f.kernel.write(&f.tree.path().join(remove), "1").unwrap();
        let report = f.replay();
        assert!(report.complete(), "{report:?}");
        assert_eq!(f.driver(AUDIO).as_deref(), Some("snd_hda_intel"));
    }
}
