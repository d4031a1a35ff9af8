//! Helpers for tests that run the real `vmrun` binary against real QEMU
//! (TCG): a private set of dirs per test, VM configs written on the fly,
//! and waits on conditions with a deadline (never a blind sleep).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Default time a condition gets before the test fails. TCG boots share
/// two cores with the other tests of the file.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Polls `probe` every 20 ms until it yields a value or `within` passes.
pub(crate) fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process exists (a zombie counts until it is reaped).
pub(crate) fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok() && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A field of `/proc/PID/status` (`Uid`, `VmRSS`...), value only.
pub(crate) fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// The real id of a `Uid:` or `Gid:` line of `/proc/PID/status` (the
/// first of its real, effective, saved and filesystem ids).
pub(crate) fn proc_id(pid: i32, field: &str) -> u32 {
    proc_status_field(pid, field)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} for process {pid}"))
}

/// What a VM config can vary in these tests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Firmware {
    /// OVMF: prints to the serial console, ignores ACPI powerdown (no OS).
    Uefi,
    /// OVMF with Secure Boot, chosen from QEMU's firmware descriptors.
    UefiSecureBoot,
    /// SeaBIOS with no disk: silent, ignores ACPI powerdown.
    Bios,
    /// SeaBIOS booting `pwrbtn.img`: a guest that powers off on the ACPI
    /// power button.
    BiosPowerButton,
}

pub(crate) struct VmSpec {
    pub firmware: Firmware,
    pub memory: &'static str,
    pub timeout: &'static str,
    pub tpm: bool,
    /// `[qemu] user`; `root` keeps QEMU as root (the tests run as root).
    pub user: &'static str,
    /// `[qemu] extra_args`, as a TOML array.
    pub extra_args: &'static str,
    /// The body of a `[cpu]` table; empty: none.
    pub cpu: &'static str,
}

impl Default for VmSpec {
    fn default() -> Self {
        Self {
            firmware: Firmware::Bios,
            memory: "128M",
            timeout: "2s",
            tpm: false,
            user: "root",
            extra_args: "[]",
            cpu: "",
        }
    }
}

/// One test's private vmrun world: its own VMRUN_HOME (configs), run and
/// state dirs. Processes it started are killed when it is dropped, so a
/// failing test leaves nothing running.
pub(crate) struct World {
    tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub run_base: PathBuf,
    pub state_base: PathBuf,
}

impl World {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("vmrun-it-")
            .tempdir()
            .unwrap();
        let home = tmp.path().join("home");
        let run_base = tmp.path().join("run");
        let state_base = tmp.path().join("state");
        fs::create_dir_all(home.join("vms")).unwrap();
        Self {
            tmp,
            home,
            run_base,
            state_base,
        }
    }

    /// Writes `vms/NAME.toml` for `spec`.
    pub(crate) fn vm(&self, name: &str, spec: &VmSpec) -> String {
        fs::write(
            self.home.join("vms").join(format!("{name}.toml")),
            self.config_text(spec),
        )
        .unwrap();
        name.to_string()
    }

    /// Writes `NAME.toml` for `spec` in a directory of this world that no
    /// config search looks in, and returns its path.
    pub(crate) fn vm_elsewhere(&self, name: &str, spec: &VmSpec) -> PathBuf {
        let dir = self.tmp.path().join("elsewhere");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        fs::write(&path, self.config_text(spec)).unwrap();
        path
    }

    fn config_text(&self, spec: &VmSpec) -> String {
        let (fw, disk) = match spec.firmware {
            Firmware::Uefi => ("type = \"uefi\"\nsecure_boot = false", String::new()),
            Firmware::UefiSecureBoot => ("type = \"uefi\"\nsecure_boot = true", String::new()),
            Firmware::Bios => ("type = \"bios\"", String::new()),
            Firmware::BiosPowerButton => {
                let img = self.home.join("pwrbtn.img");
                write_power_button_guest(&img);
                (
                    "type = \"bios\"",
                    format!("[[disk]]\npath = \"{}\"\nformat = \"raw\"\n", img.display()),
                )
            }
        };
        format!(
            "memory = \"{mem}\"\n\n[firmware]\n{fw}\n\n{disk}\n[tpm]\nenabled = {tpm}\n\n\
             [network]\nmode = \"none\"\n\n[display]\nmode = \"serial\"\n\n\
             [shutdown]\ntimeout = \"{timeout}\"\n\n[qemu]\naccel = \"tcg\"\nuser = \"{user}\"\nextra_args = {extra}\n\n[cpu]\n{cpu}\n",
            mem = spec.memory,
            tpm = spec.tpm,
            timeout = spec.timeout,
            user = spec.user,
            extra = spec.extra_args,
            cpu = spec.cpu,
        )
    }

    /// Opens the world's root to everyone (0755), as `/var/lib` and `/run`
    /// are: a tempdir is 0700.
    pub(crate) fn make_world_readable(&self) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(self.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub(crate) fn run_dir(&self, name: &str) -> PathBuf {
        self.run_base.join(name)
    }

    /// Where QEMU binds `name`'s SPICE socket: the run base's sibling
    /// `vmrun-spice`, as `DirsEnv::spice_base` says.
    pub(crate) fn spice_socket(&self, name: &str) -> PathBuf {
        self.run_base
            .with_file_name("vmrun-spice")
            .join(name)
            .join("spice.sock")
    }

    pub(crate) fn state_dir(&self, name: &str) -> PathBuf {
        self.state_base.join(name)
    }

    pub(crate) fn log(&self, name: &str) -> String {
        fs::read_to_string(self.state_dir(name).join("vmrun.log")).unwrap_or_default()
    }

    /// `vmrun ARGS` in this world, not yet run.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
        cmd.args(args)
            .env("VMRUN_HOME", &self.home)
            .env("VMRUN_RUN_DIR", &self.run_base)
            .env("VMRUN_STATE_DIR", &self.state_base)
            .env("VMRUN_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `vmrun ARGS` to its end.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `vmrun start NAME --detach`, which must succeed.
    pub(crate) fn start_detached(&self, name: &str) -> Output {
        let out = self.run(&["start", name, "--detach"]);
        assert_ok(&out, &format!("vmrun start {name} --detach"));
        out
    }

    /// `name`'s entry in `vmrun list --json`, if it is listed.
    pub(crate) fn list_entry(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.run(&["list", "--json"]);
        assert_ok(&out, "vmrun list --json");
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()?.iter().find(|e| e["name"] == name).cloned()
    }

    /// `vmrun status NAME --json`, parsed.
    pub(crate) fn status(&self, name: &str) -> (Option<i32>, serde_json::Value) {
        let out = self.run(&["status", name, "--json"]);
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}): {}", text(&out)));
        (out.status.code(), json)
    }

    /// The pid in a run dir file (`supervisor.pid`, `qemu.pid`).
    pub(crate) fn pid_in(&self, name: &str, file: &str) -> Option<i32> {
        fs::read_to_string(self.run_dir(name).join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Spawns `vmrun start NAME` in the foreground with piped stdout and stderr.
    pub(crate) fn spawn_foreground(&self, name: &str) -> Child {
        self.cmd(&["start", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Only processes of this world: pids recorded in its own run dirs.
        let Ok(dirs) = fs::read_dir(&self.run_base) else {
            return;
        };
        for dir in dirs.flatten() {
            for file in ["supervisor.pid", "qemu.pid"] {
                let pid = fs::read_to_string(dir.path().join(file))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                if let Some(pid) = pid.filter(|p| *p > 1) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let _ = self.tmp.path();
    }
}

/// A one-sector guest (SeaBIOS boots it from a raw disk) that honours the
/// ACPI power button the way an OS does, without ACPI tables: it enables
/// PWRBTN_EN in PM1_EN, waits for PWRBTN_STS in PM1_STS, then writes
/// SLP_EN with SLP_TYP 0 (soft-off on QEMU's ICH9) to PM1_CNT. SeaBIOS sets
/// q35's ICH9 PMBASE to 0x600 (`info mtree`: acpi-evt 0x600, acpi-cnt 0x604).
/// QEMU then reports SHUTDOWN with guest=true, reason guest-shutdown.
pub(crate) fn write_power_button_guest(path: &Path) {
    #[rustfmt::skip]
    let code: [u8; 29] = [
        0xBA, 0x02, 0x06,       // mov dx, 0x602   (PM1_EN)
        0xB8, 0x00, 0x01,       // mov ax, 0x0100  (PWRBTN_EN)
        0xEF,                   // out dx, ax
        0xBA, 0x00, 0x06,       // wait: mov dx, 0x600 (PM1_STS)
        0xED,                   // in ax, dx
        0xA9, 0x00, 0x01,       // test ax, 0x0100 (PWRBTN_STS)
        0x74, 0xF7,             // jz wait
        0xBA, 0x04, 0x06,       // mov dx, 0x604   (PM1_CNT)
        0xB8, 0x00, 0x20,       // mov ax, 0x2000  (SLP_EN, SLP_TYP=0)
        0xEF,                   // out dx, ax
        0xF4,                   // hlt
        0xEB, 0xFD,             // jmp hlt
        0x90, 0x90, 0x90,
    ];
    // SeaBIOS does not boot a disk of a single sector: 1 MiB.
    let mut img = vec![0u8; 1 << 20];
    img[..code.len()].copy_from_slice(&code);
    img[510] = 0x55;
    img[511] = 0xAA;
    fs::write(path, img).unwrap();
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", text(out));
}
