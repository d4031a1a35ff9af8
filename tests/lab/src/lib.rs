//! vmrun's lab: a real Linux kernel with an emulated IOMMU and GPU, booted
//! under QEMU TCG, running a scenario script as root inside the guest.
//!
//! The guest's root is the host's own `/` (read-only over 9p, with a tmpfs
//! overlay on top), so a scenario can run the host's `qemu-system-x86_64`,
//! `python3` and the freshly built `vmrun`. The scenario records facts in
//! `$LAB_SCRATCH/result.json` (helpers in `guest/lib.sh`); [`Lab::run`] returns
//! them with the guest's serial log. See `tests/lab/README.md`.
#![forbid(unsafe_code)]

mod cache;
mod cpio;
mod error;
mod qemu;

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub use cache::{find_program, target_dir, GuestImage, Tools, KERNEL_ENV};
pub use error::{FailedRun, FailureKind, LabError, INSTALL_HINT};
pub use qemu::{Firmware, Topology, UnknownName};
/// The JSON library of [`LabRun::results`], for tests.
pub use serde_json;

/// Helpers every scenario can source as `$LAB_LIB`.
const GUEST_LIB: &str = include_str!("../guest/lib.sh");

/// Run by the guest's /init in the overlay root before it hands PID 1 to
/// systemd ([`Init::Systemd`]): units, masks, the display server.
const SYSTEMD_SETUP: &str = include_str!("../guest/systemd.sh");

/// Environment variable overriding the default per-run timeout, in seconds.
pub const TIMEOUT_ENV: &str = "VMRUN_LAB_TIMEOUT";

/// A guest run's default limit; a scenario takes 10-90 s under TCG.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Environment variable setting how many guests may run at once.
pub const JOBS_ENV: &str = "VMRUN_LAB_JOBS";

/// Guests that may run at once by default. A TCG guest with a nested QEMU
/// keeps about 1.3 host cores busy (measured: lab_usb, 64 s of CPU in 50 s),
/// so two share a 2-core machine with little idle time and no starvation.
const DEFAULT_JOBS: usize = 2;

/// A ready guest image and the tools to boot it.
#[derive(Debug)]
pub struct Lab {
    tools: Tools,
    image: GuestImage,
    cache: PathBuf,
    runs: PathBuf,
    prepare_time: Duration,
}

/// What runs the scenario inside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// The initramfs's busybox /init chroots into the overlay root and runs
    /// the script; nothing else runs (no udev, no systemd).
    #[default]
    Busybox,
    /// The host root's systemd boots as PID 1 (`guest/systemd.sh` sets it
    /// up): udev, journald, logind, an Xorg display server as
    /// `display-manager.service` on the lab VGA, a lingering user with a user
    /// unit; `lab-scenario.service` runs the script once the desktop is
    /// started and powers the guest off.
    Systemd,
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Init::Busybox => "busybox",
            Init::Systemd => "systemd",
        })
    }
}

impl std::str::FromStr for Init {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "busybox" => Ok(Init::Busybox),
            "systemd" => Ok(Init::Systemd),
            _ => Err(UnknownName::new("init", s, "busybox, systemd")),
        }
    }
}

/// One scenario to run: a guest script, where, and with which vmrun.
#[derive(Debug, Clone)]
pub struct Scenario {
    script: PathBuf,
    topology: Topology,
    firmware: Firmware,
    init: Init,
    vmrun: Option<PathBuf>,
    timeout: Duration,
    memory_mib: u32,
    keep_scratch: bool,
    echo_serial: bool,
}

impl Scenario {
    /// A scenario running `script` (a busybox sh script) on the `gpu`
    /// topology with SeaBIOS.
    pub fn new(script: impl Into<PathBuf>) -> Scenario {
        let timeout = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        Scenario {
            script: script.into(),
            topology: Topology::default(),
            firmware: Firmware::default(),
            init: Init::default(),
            vmrun: None,
            timeout,
            memory_mib: 1024,
            keep_scratch: false,
            echo_serial: false,
        }
    }

    /// A script under `tests/lab/scenarios/`.
    pub fn named(file: &str) -> Scenario {
        Scenario::new(scenarios_dir().join(file))
    }

    /// Devices the guest gets.
    pub fn topology(mut self, topology: Topology) -> Scenario {
        self.topology = topology;
        self
    }

    /// SeaBIOS or OVMF.
    pub fn firmware(mut self, firmware: Firmware) -> Scenario {
        self.firmware = firmware;
        self
    }

    /// Busybox chroot (default) or the host root's systemd as PID 1.
    pub fn init(mut self, init: Init) -> Scenario {
        self.init = init;
        self
    }

    /// The vmrun binary the guest sees as `$VMRUN` (host path; the guest
    /// sees the host's files at the same paths).
    pub fn vmrun(mut self, path: impl Into<PathBuf>) -> Scenario {
        self.vmrun = Some(path.into());
        self
    }

    /// Kill QEMU after this long.
    pub fn timeout(mut self, timeout: Duration) -> Scenario {
        self.timeout = timeout;
        self
    }

    /// Keep the scratch folder (serial log, result.json) after a success too.
    pub fn keep_scratch(mut self, keep: bool) -> Scenario {
        self.keep_scratch = keep;
        self
    }

    /// Copy the serial console to stderr while the guest runs.
    pub fn echo_serial(mut self, echo: bool) -> Scenario {
        self.echo_serial = echo;
        self
    }

    fn setup(&self) -> String {
        format!(
            "--topology {} --firmware {} --init {}",
            self.topology, self.firmware, self.init
        )
    }
}

/// The folder holding the checked-in scenario scripts.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// A scenario that ran to its end with exit code 0.
#[derive(Debug)]
pub struct LabRun {
    /// What the scenario recorded in result.json.
    pub results: serde_json::Value,
    /// The guest's whole serial console, then QEMU's stderr.
    pub serial_log: String,
    /// What the scenario printed.
    pub scenario_output: String,
    /// The scenario's exit code (0).
    pub exit_code: i32,
    /// QEMU start to QEMU exit.
    pub duration: Duration,
    /// The run's scratch folder (removed after a success unless kept).
    pub scratch: PathBuf,
}

impl LabRun {
    /// The recorded value under `key` (`Null` when absent).
    pub fn get(&self, key: &str) -> &serde_json::Value {
        &self.results[key]
    }
}

impl fmt::Display for LabRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let results = serde_json::to_string_pretty(&self.results).unwrap_or_default();
        writeln!(
            f,
            "lab run took {:.1} s, scratch {}",
            self.duration.as_secs_f64(),
            self.scratch.display()
        )?;
        writeln!(f, "----- result.json -----\n{results}")?;
        writeln!(
            f,
            "----- scenario output -----\n{}",
            self.scenario_output.trim_end()
        )?;
        write!(
            f,
            "----- guest serial log -----\n{}",
            self.serial_log.trim_end()
        )
    }
}

impl Lab {
    /// Checks the host tools and makes sure the guest image is cached
    /// (downloading and building it the first time).
    pub fn new() -> Result<Lab, LabError> {
        let tools = Tools::find()?;
        let target = target_dir();
        let cache = target.join("lab-cache");
        let start = Instant::now();
        let image = cache::prepare(&cache, &tools)?;
        Ok(Lab {
            tools,
            image,
            cache,
            runs: target.join("lab-runs"),
            prepare_time: start.elapsed(),
        })
    }

    /// The cached kernel and initramfs.
    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    /// How long [`Lab::new`] took to check or build the cache.
    pub fn prepare_time(&self) -> Duration {
        self.prepare_time
    }

    /// Boots a guest, runs the scenario, powers the guest off. At most
    /// `VMRUN_LAB_JOBS` guests (default 2) run at once, across processes
    /// (a file lock per slot): TCG guests are CPU-heavy.
    pub fn run(&self, scenario: &Scenario) -> Result<LabRun, LabError> {
        let script = fs::canonicalize(&scenario.script)
            .map_err(LabError::io("find scenario", &scenario.script))?;
        let vmrun = match &scenario.vmrun {
            Some(path) => {
                Some(fs::canonicalize(path).map_err(LabError::io("find vmrun binary", path))?)
            }
            None => None,
        };
        let ovmf = match scenario.firmware {
            Firmware::Bios => None,
            Firmware::Uefi => {
                Some(
                    qemu::Ovmf::find().ok_or_else(|| LabError::MissingPrerequisite {
                        what: "OVMF firmware in /usr/share/OVMF (package ovmf)".into(),
                    })?,
                )
            }
        };
        let scratch = self.new_scratch(&script, scenario)?;
        self.write_guest_env(&scratch, &script, vmrun.as_deref(), scenario)?;
        let vars = match &ovmf {
            Some(o) => {
                let vars = scratch.join("OVMF_VARS.fd");
                fs::copy(&o.vars, &vars).map_err(LabError::io("copy OVMF vars to", &vars))?;
                Some(vars)
            }
            None => None,
        };
        let args = qemu::qemu_args(&qemu::BootConfig {
            kernel: &self.image.kernel,
            initramfs: &self.image.initramfs,
            scratch: &scratch,
            topology: scenario.topology,
            uefi: ovmf
                .as_ref()
                .zip(vars.as_ref())
                .map(|(o, v)| (o.code.as_path(), v.as_path())),
            memory_mib: scenario.memory_mib,
        });
        let mut cmdline = format!("{}", self.tools.qemu.display());
        for arg in &args {
            cmdline.push(' ');
            cmdline.push_str(&arg.to_string_lossy());
        }
        fs::write(scratch.join("qemu-cmdline"), &cmdline)
            .map_err(LabError::io("write", &scratch))?;

        let slot = self.boot_slot()?;
        let boot = self.boot(&args, &scratch, scenario)?;
        drop(slot);
        self.collect(boot, script, scratch, scenario)
    }

    /// Waits for one of the boot slots and holds it until dropped. The slots
    /// are `boot.N.lock` in the cache, locked with flock(2), so a test binary
    /// killed mid-run frees its slot with its last fd.
    fn boot_slot(&self) -> Result<File, LabError> {
        let jobs = std::env::var(JOBS_ENV)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_JOBS);
        let mut slots = (0..jobs)
            .map(|n| {
                let path = self.cache.join(format!("boot.{n}.lock"));
                File::create(&path).map_err(LabError::io("create", &path))
            })
            .collect::<Result<Vec<_>, _>>()?;
        loop {
            for n in 0..slots.len() {
                match slots[n].try_lock() {
                    Ok(()) => return Ok(slots.swap_remove(n)),
                    Err(fs::TryLockError::WouldBlock) => {}
                    Err(fs::TryLockError::Error(e)) => {
                        let path = self.cache.join(format!("boot.{n}.lock"));
                        return Err(LabError::io("lock", &path)(e));
                    }
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn new_scratch(&self, script: &Path, scenario: &Scenario) -> Result<PathBuf, LabError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let stem = script
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario");
        let name = format!(
            "{stem}-{}-{}-{}-{}",
            scenario.topology,
            scenario.firmware,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.runs.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(LabError::io("create", &dir))?;
        Ok(dir)
    }

    fn write_guest_env(
        &self,
        scratch: &Path,
        script: &Path,
        vmrun: Option<&Path>,
        scenario: &Scenario,
    ) -> Result<(), LabError> {
        let dir = script.parent().unwrap_or(Path::new("/"));
        let vars: [(&str, String); 10] = [
            ("LAB_SCRIPT", script.display().to_string()),
            ("LAB_SCENARIO_DIR", dir.display().to_string()),
            ("LAB_SCRATCH", "/lab".into()),
            ("LAB_LIB", "/lab/lib.sh".into()),
            ("LAB_MODULES", self.image.modules.display().to_string()),
            ("LAB_KERNEL_VERSION", self.image.version.clone()),
            ("LAB_TOPOLOGY", scenario.topology.to_string()),
            ("LAB_FIRMWARE", scenario.firmware.to_string()),
            ("LAB_INIT", scenario.init.to_string()),
            (
                "VMRUN",
                vmrun.map(|p| p.display().to_string()).unwrap_or_default(),
            ),
        ];
        let env: String = vars
            .iter()
            .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', r"'\''")))
            .collect();
        let env_path = scratch.join("lab.env");
        fs::write(&env_path, env).map_err(LabError::io("write", &env_path))?;
        let lib_path = scratch.join("lib.sh");
        fs::write(&lib_path, GUEST_LIB).map_err(LabError::io("write", &lib_path))?;
        if scenario.init == Init::Systemd {
            let setup = scratch.join("systemd.sh");
            fs::write(&setup, SYSTEMD_SETUP).map_err(LabError::io("write", &setup))?;
        }
        Ok(())
    }

    fn boot(
        &self,
        args: &[std::ffi::OsString],
        scratch: &Path,
        scenario: &Scenario,
    ) -> Result<Boot, LabError> {
        let serial_path = scratch.join("serial.log");
        let mut serial_file =
            File::create(&serial_path).map_err(LabError::io("create", &serial_path))?;
        let start = Instant::now();
        let mut child = Command::new(&self.tools.qemu)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(LabError::io("start", &self.tools.qemu))?;

        let mut stdout = child.stdout.take().expect("piped stdout");
        let echo = scenario.echo_serial;
        let serial_reader = thread::spawn(move || {
            let mut log = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = serial_file.write_all(&buf[..n]);
                if echo {
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
                log.extend_from_slice(&buf[..n]);
            }
            log
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr_reader = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        let mut timed_out = false;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() >= scenario.timeout => {
                    timed_out = true;
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(LabError::io("wait for", &self.tools.qemu)(e)),
            }
        }
        let duration = start.elapsed();
        let mut serial_log =
            String::from_utf8_lossy(&serial_reader.join().unwrap_or_default()).into_owned();
        let qemu_stderr = stderr_reader.join().unwrap_or_default();
        if !qemu_stderr.trim().is_empty() {
            serial_log.push_str("\n----- qemu stderr -----\n");
            serial_log.push_str(&qemu_stderr);
        }
        Ok(Boot {
            serial_log,
            duration,
            timed_out,
        })
    }

    fn collect(
        &self,
        boot: Boot,
        script: PathBuf,
        scratch: PathBuf,
        scenario: &Scenario,
    ) -> Result<LabRun, LabError> {
        let read = |name: &str| fs::read_to_string(scratch.join(name)).ok();
        let scenario_output = read("scenario.out").unwrap_or_default();
        let result_text = read("result.json");
        let exit_code = read("exit_code").and_then(|s| s.trim().parse::<i32>().ok());
        let parsed = result_text
            .as_deref()
            .map(serde_json::from_str::<serde_json::Value>);

        let failure = if boot.timed_out {
            Some(FailureKind::Timeout(scenario.timeout))
        } else {
            match (exit_code, &parsed) {
                (None, _) => Some(FailureKind::NoExitCode),
                (Some(code), _) if code != 0 => Some(FailureKind::ExitCode(code)),
                (Some(_), None) => Some(FailureKind::NoResult),
                (Some(_), Some(Err(e))) => Some(FailureKind::BadResult(e.to_string())),
                (Some(_), Some(Ok(_))) => None,
            }
        };
        if let Some(kind) = failure {
            return Err(LabError::Scenario(Box::new(FailedRun {
                kind,
                script,
                setup: scenario.setup(),
                scenario_output,
                result_text,
                serial_log: boot.serial_log,
                dmesg: read("dmesg.log"),
                scratch,
            })));
        }
        if !scenario.keep_scratch {
            let _ = fs::remove_dir_all(&scratch);
        }
        Ok(LabRun {
            results: parsed.and_then(Result::ok).unwrap_or_default(),
            serial_log: boot.serial_log,
            scenario_output,
            exit_code: 0,
            duration: boot.duration,
            scratch,
        })
    }
}

struct Boot {
    serial_log: String,
    duration: Duration,
    timed_out: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_names_round_trip() {
        for i in [Init::Busybox, Init::Systemd] {
            assert_eq!(i.to_string().parse::<Init>(), Ok(i));
        }
        assert!("openrc".parse::<Init>().is_err());
        assert_eq!(Init::default(), Init::Busybox);
    }
}
