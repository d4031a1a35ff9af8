//! A fake kernel over a fake sysfs tree (`crate::testing::TestHost`): writes to
//! driver_override, unbind and drivers_probe change the tree the way the
//! PCI core does (drivers/pci/pci-driver.c, pci-sysfs.c), after libvirt's
//! virpcimock. Tests only.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::{Kernel, Ran, WriteError};

pub(crate) struct FakeKernel {
    root: PathBuf,
    /// The driver each device's ids match (what probing picks without an override).
    native: HashMap<String, String>,
    /// Drivers whose probe fails (the device stays unbound).
    refusing: HashSet<String>,
    /// Devices whose unbind hangs.
    hanging: HashSet<String>,
    /// Devices no probe binds until they are removed and rescanned (a
    /// driver's state for them went bad).
    wedged: RefCell<HashSet<String>>,
    /// The most huge pages the fake kernel can find (fragmented memory).
    hugepage_limit: Option<u64>,
    pub writes: RefCell<Vec<(String, String)>>,
    /// Every command run, joined with spaces.
    pub commands: RefCell<Vec<String>>,
    /// systemd units and whether they are active.
    pub units: RefCell<HashMap<String, bool>>,
    /// Processes that go when a unit stops or a command runs (key: the
    /// unit, or the command joined with spaces).
    stops: HashMap<String, Vec<u32>>,
    /// Commands that fail (joined with spaces), e.g. `modprobe -r bochs`.
    failing: HashSet<String>,
    /// PCI driver -> its module.
    modules: HashMap<String, String>,
    /// Processes that ignore SIGTERM.
    stubborn: HashSet<u32>,
    /// systemd unit properties set at runtime (`UNIT/NAME` -> value).
    pub properties: RefCell<HashMap<String, String>>,
}

impl FakeKernel {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            native: HashMap::new(),
            refusing: HashSet::new(),
            hanging: HashSet::new(),
            wedged: RefCell::new(HashSet::new()),
            hugepage_limit: None,
            writes: RefCell::new(Vec::new()),
            commands: RefCell::new(Vec::new()),
            units: RefCell::new(HashMap::new()),
            stops: HashMap::new(),
            failing: HashSet::new(),
            modules: HashMap::new(),
            stubborn: HashSet::new(),
            properties: RefCell::new(HashMap::new()),
        }
    }

    fn cgroup(&self, rel: &str) -> PathBuf {
        self.root
            .join("sys/fs/cgroup")
            .join(rel.trim_start_matches('/'))
    }

    /// A cgroup v2 directory as the kernel makes it on `mkdir`: empty
    /// `cgroup.procs`, `cgroup.events`, and `cpuset.cpus` (empty: its
    /// parent's) when the parent enables cpuset for its children.
    fn make_cgroup(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)?;
        fs::write(dir.join("cgroup.procs"), "")?;
        fs::write(dir.join("cgroup.events"), "populated 0\nfrozen 0\n")?;
        let parent = dir.parent().map(|p| p.join("cgroup.subtree_control"));
        if parent.is_some_and(|p| fs::read_to_string(p).is_ok_and(|c| c.contains("cpuset"))) {
            fs::write(dir.join("cpuset.cpus"), "")?;
        }
        Ok(())
    }

    /// Writing a PID to `cgroup.procs`: the process leaves every other
    /// cgroup; `/proc/self/cgroup` follows for this process.
    fn move_pid(&self, cgroup_dir: &Path, pid: &str) {
        let base = self.cgroup("");
        for entry in walkdir(&base) {
            let procs = entry.join("cgroup.procs");
            if let Ok(text) = fs::read_to_string(&procs) {
                let kept: Vec<&str> = text.lines().filter(|l| l.trim() != pid).collect();
                let mut out = kept.join("\n");
                if entry == cgroup_dir {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(pid);
                }
                fs::write(&procs, out).unwrap();
            }
        }
        if pid == std::process::id().to_string() {
            let rel = cgroup_dir.strip_prefix(&base).unwrap().to_string_lossy();
            fs::create_dir_all(self.root.join("proc/self")).unwrap();
            fs::write(self.root.join("proc/self/cgroup"), format!("0::/{rel}\n")).unwrap();
        }
    }

    /// An active unit whose stop ends `pids`.
    pub(crate) fn unit(self, name: &str, pids: &[u32]) -> Self {
        self.units.borrow_mut().insert(name.into(), true);
        self.on_command(name, pids)
    }

    /// Running `command` (or stopping unit `command`) ends `pids`.
    pub(crate) fn on_command(mut self, command: &str, pids: &[u32]) -> Self {
        self.stops.insert(command.into(), pids.to_vec());
        self
    }

    pub(crate) fn failing_command(mut self, command: &str) -> Self {
        self.failing.insert(command.into());
        self
    }

    pub(crate) fn driver_module(mut self, driver: &str, module: &str) -> Self {
        self.modules.insert(driver.into(), module.into());
        self
    }

    pub(crate) fn stubborn(mut self, pid: u32) -> Self {
        self.stubborn.insert(pid);
        self
    }

    fn kill(&self, pids: &[u32]) {
        for pid in pids {
            let _ = fs::remove_dir_all(self.root.join("proc").join(pid.to_string()));
        }
    }

    /// The PCI devices whose native driver comes from `module`.
    fn devices_of(&self, module: &str) -> Vec<(String, String)> {
        self.native
            .iter()
            .filter(|(_, drv)| self.modules.get(*drv).is_some_and(|m| m == module))
            .map(|(a, d)| (a.clone(), d.clone()))
            .collect()
    }

    /// `modprobe -r`: the module and the helpers only it used go; its
    /// devices lose their driver and DRM nodes.
    fn unload(&self, module: &str) {
        let root = crate::host::HostRoot::new(&self.root);
        let helpers = crate::host::display::unused_after(&root, &[module.to_string()]);
        for m in std::iter::once(module.to_string()).chain(helpers) {
            let _ = fs::remove_dir_all(self.root.join("sys/module").join(&m));
        }
        for (addr, drv) in self.devices_of(module) {
            if fs::read_link(self.dev(&addr).join("driver")).is_ok_and(|t| t.ends_with(&drv)) {
                self.unbind(&addr);
                let _ = fs::remove_dir_all(self.dev(&addr).join("drm"));
            }
            let _ = fs::remove_dir_all(self.driver_dir(&drv));
        }
    }

    /// `modprobe`: the module's drivers register and probe their devices.
    fn load(&self, module: &str) {
        let dir = self.root.join("sys/module").join(module);
        fs::create_dir_all(dir.join("holders")).unwrap();
        fs::write(dir.join("refcnt"), "0\n").unwrap();
        for (addr, drv) in self.devices_of(module) {
            fs::create_dir_all(self.driver_dir(&drv)).unwrap();
            let _ = symlink(&dir, self.driver_dir(&drv).join("module"));
            self.probe(&addr);
            if fs::read_link(self.dev(&addr).join("driver")).is_ok_and(|t| t.ends_with(&drv)) {
                fs::create_dir_all(self.dev(&addr).join("drm/card0")).unwrap();
            }
        }
    }

    pub(crate) fn native(mut self, addr: &str, driver: &str) -> Self {
        self.native.insert(addr.into(), driver.into());
        self
    }

    pub(crate) fn refusing(mut self, driver: &str) -> Self {
        self.refusing.insert(driver.into());
        self
    }

    pub(crate) fn hugepage_limit(mut self, pages: u64) -> Self {
        self.hugepage_limit = Some(pages);
        self
    }

    /// From now on `addr` is wedged (a VM left it in a bad state).
    pub(crate) fn wedge(&self, addr: &str) {
        self.wedged.borrow_mut().insert(addr.into());
    }

    /// Where `remove` keeps a device until `rescan` brings it back.
    fn removed(&self, addr: &str) -> PathBuf {
        self.root.join("removed").join(addr)
    }

    fn remove(&self, addr: &str) {
        self.unbind(addr);
        fs::create_dir_all(self.root.join("removed")).unwrap();
        fs::rename(self.dev(addr), self.removed(addr)).unwrap();
    }

    /// Each removed device comes back as new: no override, no bad state,
    /// and its first probe.
    fn rescan(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("removed")) else {
            return;
        };
        for entry in entries.flatten() {
            let addr = entry.file_name().to_string_lossy().into_owned();
            fs::rename(entry.path(), self.dev(&addr)).unwrap();
            fs::write(self.dev(&addr).join("driver_override"), "(null)\n").unwrap();
            self.wedged.borrow_mut().remove(&addr);
            self.probe(&addr);
        }
    }

    pub(crate) fn hanging_unbind(mut self, addr: &str) -> Self {
        self.hanging.insert(addr.into());
        self
    }

    fn dev(&self, addr: &str) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(addr)
    }

    fn driver_dir(&self, driver: &str) -> PathBuf {
        self.root.join("sys/bus/pci/drivers").join(driver)
    }

    fn group_of(&self, addr: &str) -> Option<String> {
        let link = fs::read_link(self.dev(addr).join("iommu_group")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    fn unbind(&self, addr: &str) {
        let link = self.dev(addr).join("driver");
        let was_vfio = fs::read_link(&link)
            .map(|t| t.ends_with("vfio-pci"))
            .unwrap_or(false);
        let _ = fs::remove_file(link);
        if was_vfio {
            if let Some(group) = self.group_of(addr) {
                let _ = fs::remove_file(self.root.join("dev/vfio").join(group));
            }
        }
    }

    fn probe(&self, addr: &str) {
        if self.dev(addr).join("driver").exists() || self.wedged.borrow().contains(addr) {
            return;
        }
        let over = fs::read_to_string(self.dev(addr).join("driver_override")).unwrap_or_default();
        let driver = match over.trim() {
            "(null)" | "" => self.native.get(addr).cloned(),
            name => Some(name.to_string()),
        };
        let Some(driver) = driver else { return };
        if !self.driver_dir(&driver).is_dir() || self.refusing.contains(&driver) {
            return;
        }
        symlink(self.driver_dir(&driver), self.dev(addr).join("driver")).unwrap();
        if driver == "vfio-pci" {
            if let Some(group) = self.group_of(addr) {
                fs::create_dir_all(self.root.join("dev/vfio")).unwrap();
                fs::write(self.root.join("dev/vfio").join(group), "").unwrap();
            }
        }
    }
}

/// `dir` and every directory below it.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            out.extend(walkdir(&e.path()));
        }
    }
    out
}

impl FakeKernel {
    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

impl Kernel for FakeKernel {
    fn write(&self, path: &Path, value: &str) -> Result<(), WriteError> {
        let rel = self.rel(path);
        self.writes
            .borrow_mut()
            .push((rel.clone(), value.to_string()));
        let v = value.trim_end_matches('\n');
        if let Some(drv) = rel
            .strip_prefix("sys/bus/platform/drivers/")
            .and_then(|r| r.strip_suffix("/unbind").or(r.strip_suffix("/bind")))
        {
            let drv_dir = self.root.join("sys/bus/platform/drivers").join(drv);
            let dev = self.root.join("sys/devices/platform").join(v);
            if rel.ends_with("/unbind") {
                let _ = fs::remove_file(drv_dir.join(v));
                let _ = fs::remove_file(dev.join("driver"));
            } else {
                symlink(&dev, drv_dir.join(v)).unwrap();
                symlink(&drv_dir, dev.join("driver")).unwrap();
            }
        } else if rel.ends_with("/driver_override") {
            let text = if v.is_empty() { "(null)" } else { v };
            fs::write(path, format!("{text}\n")).unwrap();
        } else if rel.ends_with("/unbind") {
            if self.hanging.contains(v) {
                return Err(WriteError::Hung {
                    path: path.to_path_buf(),
                    value: value.into(),
                    after: std::time::Duration::from_secs(10),
                });
            }
            self.unbind(v);
        } else if rel == "sys/bus/pci/drivers_probe" {
            self.probe(v);
        } else if rel == "sys/bus/pci/rescan" {
            self.rescan();
        } else if let Some(dev) = rel
            .strip_prefix("sys/bus/pci/devices/")
            .and_then(|r| r.strip_suffix("/remove"))
        {
            self.remove(dev);
        } else if rel.starts_with("sys/fs/cgroup") && rel.ends_with("cgroup.subtree_control") {
            // `+name` enables a controller for the children, `-name`
            // disables it; the file lists the enabled ones.
            let mut on: Vec<String> = fs::read_to_string(path)
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
            for word in v.split_whitespace() {
                let (sign, name) = word.split_at(1);
                on.retain(|c| c != name);
                if sign == "+" {
                    on.push(name.into());
                }
            }
            fs::write(path, on.join(" ") + "\n").unwrap();
        } else if rel.starts_with("sys/fs/cgroup") && rel.ends_with("cgroup.procs") {
            self.move_pid(path.parent().unwrap(), v);
        } else if rel.starts_with("sys/fs/cgroup") && rel.ends_with("/cpuset.cpus") && v.is_empty()
        {
            // cgroup-v2 cpuset: a populated cgroup's list can't go back to
            // empty.
            let populated = fs::read_to_string(path.with_file_name("cgroup.events"))
                .is_ok_and(|e| e.contains("populated 1"));
            if populated {
                return Err(WriteError::Io {
                    path: path.to_path_buf(),
                    value: value.into(),
                    source: io::Error::from_raw_os_error(nix::libc::ENOSPC),
                });
            }
            fs::write(path, "").unwrap();
        } else if rel.starts_with("proc/irq/") && path.with_file_name("fixed").exists() {
            // An interrupt that can't be moved (a per-CPU timer), marked
            // by the test with a `fixed` file.
            return Err(WriteError::Io {
                path: path.to_path_buf(),
                value: value.into(),
                source: io::Error::from_raw_os_error(nix::libc::EIO),
            });
        } else if rel.ends_with("/nr_hugepages") {
            // The pool grows as far as the kernel finds pages; free pages
            // follow the total.
            let old: u64 = fs::read_to_string(path).unwrap().trim().parse().unwrap();
            let free_path = path.with_file_name("free_hugepages");
            let free: u64 = fs::read_to_string(&free_path)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let want: u64 = v.parse().unwrap();
            let new = self.hugepage_limit.map_or(want, |l| want.min(l));
            fs::write(path, format!("{new}\n")).unwrap();
            fs::write(free_path, format!("{}\n", (free + new).saturating_sub(old))).unwrap();
        } else {
            fs::write(path, value).map_err(|source| WriteError::Io {
                path: path.to_path_buf(),
                value: value.into(),
                source,
            })?;
        }
        Ok(())
    }

    fn modprobe(&self, name: &str) -> io::Result<bool> {
        fs::create_dir_all(self.driver_dir(name))?;
        Ok(true)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.writes
            .borrow_mut()
            .push((self.rel(path), "mkdir".into()));
        if path.starts_with(self.cgroup("")) {
            return self.make_cgroup(path);
        }
        fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.writes
            .borrow_mut()
            .push((self.rel(path), "rmdir".into()));
        if path.starts_with(self.cgroup("")) {
            let busy = fs::read_to_string(path.join("cgroup.procs"))
                .is_ok_and(|p| !p.trim().is_empty())
                || fs::read_dir(path)?.flatten().any(|e| e.path().is_dir());
            if busy {
                return Err(io::Error::from_raw_os_error(nix::libc::EBUSY));
            }
            return fs::remove_dir_all(path);
        }
        fs::remove_dir(path)
    }

    fn run(&self, argv: &[String], _timeout: std::time::Duration) -> io::Result<Ran> {
        let line = argv.join(" ");
        self.commands.borrow_mut().push(line.clone());
        if self.failing.contains(&line) {
            return Ok(Ran::failed("refused (fake)"));
        }
        let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
        // A user manager's units are keyed `USER@:UNIT`.
        let mut user = String::new();
        if let ["systemctl", "--user", "-M", u, ..] = args.as_slice() {
            user = format!("{u}:");
            args.drain(1..4);
        }
        let key = |unit: &str| format!("{user}{unit}");
        match args.as_slice() {
            ["systemctl", "is-active", "--quiet", unit] => Ok(Ran {
                success: self
                    .units
                    .borrow()
                    .get(&key(unit))
                    .copied()
                    .unwrap_or(false),
                output: String::new(),
            }),
            ["systemctl", verb @ ("stop" | "start"), unit] => {
                self.units.borrow_mut().insert(key(unit), *verb == "start");
                if *verb == "stop" {
                    self.kill(self.stops.get(&key(unit)).map_or(&[], Vec::as_slice));
                }
                Ok(Ran::ok(""))
            }
            ["systemctl", "list-units", "--state=active", "--plain", "--no-legend", patterns @ ..] =>
            {
                let units = self.units.borrow();
                let mut active: Vec<&str> = units
                    .iter()
                    .filter(|(k, on)| **on && k.starts_with(&user) && !user.is_empty())
                    .map(|(k, _)| &k[user.len()..])
                    .filter(|u| {
                        patterns
                            .iter()
                            .any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(u)))
                    })
                    .collect();
                active.sort();
                let lines: Vec<String> = active
                    .iter()
                    .map(|u| format!("{u} loaded active running {u}"))
                    .collect();
                Ok(Ran::ok(&lines.join("\n")))
            }
            ["systemctl", "show", "-p", prop, "--value", unit] => Ok(Ran::ok(
                self.properties
                    .borrow()
                    .get(&format!("{unit}/{prop}"))
                    .map_or("", String::as_str),
            )),
            ["systemctl", "set-property", "--runtime", unit, assignment] => {
                let (prop, value) = assignment.split_once('=').unwrap();
                self.properties
                    .borrow_mut()
                    .insert(format!("{unit}/{prop}"), value.into());
                if prop == "AllowedCPUs" {
                    // systemd writes the unit's cpuset.cpus; an empty list
                    // the kernel refuses for a populated cgroup is logged.
                    let _ = self.write(&self.cgroup(unit).join("cpuset.cpus"), value);
                }
                Ok(Ran::ok(""))
            }
            ["busctl", "call", "org.freedesktop.systemd1", _, _, "StartTransientUnit", _, unit, "fail", _, "PIDs", "au", "1", pid, "Slice", "s", slice, ..] =>
            {
                let dir = self.cgroup(slice).join(unit);
                fs::create_dir_all(self.cgroup(slice)).unwrap();
                self.make_cgroup(&dir)?;
                self.move_pid(&dir, pid);
                self.units.borrow_mut().insert(unit.to_string(), true);
                Ok(Ran::ok("o \"/org/freedesktop/systemd1/job/1\""))
            }
            ["modprobe", "-r", module] => {
                self.unload(module);
                Ok(Ran::ok(""))
            }
            ["modprobe", module] => {
                self.load(module);
                Ok(Ran::ok(""))
            }
            _ => {
                self.kill(self.stops.get(&line).map_or(&[], Vec::as_slice));
                Ok(Ran::ok(""))
            }
        }
    }

    fn signal(&self, pid: u32, signal: nix::sys::signal::Signal) -> io::Result<()> {
        self.commands
            .borrow_mut()
            .push(format!("kill -{} {pid}", signal.as_str()));
        if signal == nix::sys::signal::Signal::SIGKILL || !self.stubborn.contains(&pid) {
            self.kill(&[pid]);
        }
        Ok(())
    }
}
