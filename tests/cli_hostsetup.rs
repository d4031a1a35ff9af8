//! Issue 8's host setup through the real binary: `init` output that
//! `start --dry-run` accepts, `check` on the fixture host, `host boot-entry`
//! against a stand-in grubby that records its calls (first run, re-run,
//! kernel update), and temp /etc trees for GRUB and the initramfs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::{json, Value};
use vmrun::testing::{Machine, TestHost};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A writable copy of the fixture host with an Intel /proc.
fn host_copy() -> TestHost {
    Machine::FixtureDesktop
        .build()
        .file("/proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu cores\t: 1\nsiblings\t: 1\nflags\t\t: fpu vmx\n\n")
        .file("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

struct Env {
    host: TestHost,
    home: tempfile::TempDir,
    path: String,
}

impl Env {
    fn new() -> Self {
        Self {
            host: host_copy(),
            home: tempfile::tempdir().unwrap(),
            // No grubby on PATH unless a test puts the stand-in there.
            path: "/usr/bin:/bin".into(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        cargo_bin_cmd!("vmrun")
            .current_dir(self.home.path())
            .env("VMRUN_HOST_ROOT", self.host.path())
            // grubby here is a stand-in on PATH: a test build may apply.
            .env("VMRUN_TEST_FAKE_HOST_CHANGES", "1")
            .env("VMRUN_HOME", self.home.path())
            .env("VMRUN_RUN_DIR", self.home.path().join("run"))
            .env("VMRUN_STATE_DIR", self.home.path().join("state"))
            .env("XDG_CACHE_HOME", self.home.path().join("cache"))
            .env("PATH", &self.path)
            .env("GRUBBY_STATE", self.home.path().join("grubby.json"))
            .env("GRUBBY_LOG", self.home.path().join("grubby.log"))
            .args(args)
            .output()
            .unwrap()
    }

    fn vm(&self, name: &str, text: &str) {
        write(self.home.path(), &format!("vms/{name}.toml"), text);
    }
}

fn out(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn init_writes_a_config_that_start_dry_run_validates_and_never_overwrites() {
    let env = Env::new();
    for (name, template) in [("win", "windows"), ("lin", "linux"), ("hl", "headless")] {
        let o = env.run(&["init", name, "--template", template]);
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        let dry = env.run(&["start", name, "--dry-run", "--qemu-version", "8.2"]);
        // 2 would be an invalid config; 1 is host findings (the disk to create).
        assert_ne!(dry.status.code(), Some(2), "{}", out(&dry));
        let text = String::from_utf8_lossy(&dry.stdout);
        if name == "win" {
            // The fixture's secondary GPU (RTX 3050, group 12) and its audio.
            assert!(text.contains("host=0000:01:00.0"), "{text}");
            assert!(text.contains("host=0000:01:00.1"), "{text}");
        }
    }
    let file = env.home.path().join("vms/win.toml");
    let before = fs::read_to_string(&file).unwrap();
    let again = env.run(&["init", "win", "--template", "linux"]);
    assert_eq!(again.status.code(), Some(2), "{}", out(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not overwritten"));
    assert_eq!(fs::read_to_string(&file).unwrap(), before);
    let bad = env.run(&["init", "x", "--gpu", "0000:05:00.0"]);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "a non-GPU address: {}",
        out(&bad)
    );
}

#[test]
fn check_reports_json_with_an_exit_status_matching_its_worst_result() {
    let env = Env::new();
    let o = env.run(&["check", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(&o)));
    let worst = v["status"].as_str().unwrap();
    let code = match worst {
        "PASS" => 0,
        "WARN" => 1,
        _ => 2,
    };
    assert_eq!(o.status.code(), Some(code), "{}", out(&o));
    let find = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {v:#}"))
    };
    assert_eq!(find("iommu")["status"], "PASS");
    assert_eq!(find("kvm")["status"], "PASS");
    // No intel_iommu= on the command line, yet the groups exist: the
    // kernel's default turned it on, which passes.
    let cmdline = find("cmdline");
    assert_eq!(cmdline["status"], "PASS");
    assert!(
        cmdline["message"].as_str().unwrap().contains("by default"),
        "{cmdline}"
    );
    assert!(find("0000:01:00.0")["message"]
        .as_str()
        .unwrap()
        .contains("IOMMU group 12 with 0000:01:00.1"));
    // With a VM: a hostdev without its group sibling is a failure, with the fix.
    env.vm(
        "half",
        "memory = \"1G\"\n[[hostdev]]\naddress = \"0000:01:00.0\"\n[qemu]\naccel = \"tcg\"\n",
    );
    let o = env.run(&["check", "half"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        text.contains("FAIL  0000:01:00.0") && text.contains("IOMMU group 12 is not viable"),
        "{text}"
    );
}

const VM_WITH_GPU: &str = "memory = \"4G\"\n[[hostdev]]\naddress = \"0000:01:00.0\"\n[[hostdev]]\naddress = \"0000:01:00.1\"\n";

#[test]
fn kernel_args_for_a_vm_name_its_ids() {
    let env = Env::new();
    env.vm("win", VM_WITH_GPU);
    let o = env.run(&["host", "kernel-args", "win"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(
        line.starts_with("intel_iommu=on iommu=pt vfio-pci.ids="),
        "{line}"
    );
    assert!(line.contains("rd.driver.pre=vfio-pci"), "{line}");
}

fn entry(version: &str, pt: bool) -> Value {
    let suffix = if pt { " [vmrun passthrough]" } else { "" };
    json!({
        "kernel": format!("/boot/vmlinuz-{version}"),
        "initrd": format!("/boot/initramfs-{version}.img"),
        "root": "UUID=1234",
        "args": "ro rhgb quiet",
        "title": format!("Fedora Linux ({version}){suffix}"),
    })
}

fn grubby_state(env: &Env) -> Value {
    serde_json::from_str(&fs::read_to_string(env.home.path().join("grubby.json")).unwrap()).unwrap()
}

/// The calls since the last `take`, each as its argument list.
fn take_log(env: &Env) -> Vec<Vec<String>> {
    let path = env.home.path().join("grubby.log");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let _ = fs::remove_file(&path);
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mutating(calls: &[Vec<String>]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c.join(" "))
        .filter(|c| !c.starts_with("--info") && !c.starts_with("--default-index"))
        .collect()
}

#[test]
fn boot_entry_with_grubby_first_run_rerun_and_kernel_update() {
    let mut env = Env::new();
    env.vm("win", VM_WITH_GPU);
    let bin = env.home.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(
        repo().join("tests/fixtures/grubby/grubby"),
        bin.join("grubby"),
    )
    .unwrap();
    env.path = format!("{}:/usr/bin:/bin", bin.display());
    let state = json!({"entries": [entry("6.6", false), entry("6.5", false)], "default_title": "Fedora Linux (6.6)"});
    fs::write(env.home.path().join("grubby.json"), state.to_string()).unwrap();
    write(
        env.host.path(),
        "boot/loader/entries/abc-6.6.conf",
        "title Fedora Linux (6.6)\n",
    );

    // Dry run: grubby is only asked.
    let o = env.run(&["host", "boot-entry", "win"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("dry run"));
    assert!(mutating(&take_log(&env)).is_empty());

    // First run: the default kernel cloned, the normal entry stays the default.
    let o = env.run(&["host", "boot-entry", "win", "--apply"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let calls = mutating(&take_log(&env));
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].starts_with("--add-kernel=/boot/vmlinuz-6.6 --initrd=/boot/initramfs-6.6.img --title=Fedora Linux (6.6) [vmrun passthrough] --args=root=UUID=1234 ro rhgb quiet intel_iommu=on iommu=pt vfio-pci.ids="), "{calls:#?}");
    assert_eq!(calls[1], "--set-default-index=1");
    let s = grubby_state(&env);
    assert_eq!(s["default_title"], "Fedora Linux (6.6)");
    assert_eq!(s["entries"].as_array().unwrap().len(), 3);
    let backups = env.host.path().join("var/lib/vmrun/backup");
    let backup = fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(backup.join("boot/loader/entries/abc-6.6.conf").is_file());
    assert!(String::from_utf8_lossy(&o.stdout).contains("undo: "));

    // Re-run: nothing to do.
    let o = env.run(&["host", "boot-entry", "win", "--apply"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to do"),
        "{}",
        out(&o)
    );
    assert!(mutating(&take_log(&env)).is_empty());

    // A kernel update adds 6.7 first and makes it the default (as Fedora's
    // kernel-install does): the 6.6 clone goes, 6.7 is cloned.
    let mut s = grubby_state(&env);
    s["entries"]
        .as_array_mut()
        .unwrap()
        .insert(0, entry("6.7", false));
    s["default_title"] = json!("Fedora Linux (6.7)");
    fs::write(env.home.path().join("grubby.json"), s.to_string()).unwrap();
    let o = env.run(&["host", "boot-entry", "win", "--apply"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let calls = mutating(&take_log(&env));
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(calls[0], "--remove-kernel=1");
    assert!(
        calls[1].starts_with("--add-kernel=/boot/vmlinuz-6.7 "),
        "{calls:#?}"
    );
    assert_eq!(calls[2], "--set-default-index=1");
    let s = grubby_state(&env);
    let titles: Vec<&str> = s["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Fedora Linux (6.7) [vmrun passthrough]",
            "Fedora Linux (6.7)",
            "Fedora Linux (6.6)",
            "Fedora Linux (6.5)"
        ]
    );
    assert_eq!(s["default_title"], "Fedora Linux (6.7)");
}

#[test]
fn boot_entry_without_grubby_prints_grub_steps_and_applies_nothing() {
    let env = Env::new();
    write(
        env.host.path(),
        "etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n",
    );
    let o = env.run(&["host", "boot-entry"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash intel_iommu=on iommu=pt\""),
        "{text}"
    );
    assert!(
        text.contains("grub-mkconfig -o /boot/grub/grub.cfg"),
        "{text}"
    );
    let o = env.run(&["host", "boot-entry", "--apply"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_eq!(
        fs::read_to_string(env.host.path().join("etc/default/grub")).unwrap(),
        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n"
    );
}

#[test]
fn initramfs_apply_backs_up_says_how_to_undo_and_is_idempotent() {
    for (file, before, rebuild) in [
        (
            "etc/mkinitcpio.conf",
            "MODULES=(amdgpu)\nHOOKS=(base udev)\n",
            "mkinitcpio -P",
        ),
        (
            "etc/initramfs-tools/modules",
            "# modules\n",
            "update-initramfs -u -k all",
        ),
    ] {
        let env = Env::new();
        write(env.host.path(), file, before);
        let dry = env.run(&["host", "initramfs"]);
        assert_eq!(dry.status.code(), Some(0), "{}", out(&dry));
        assert_eq!(
            fs::read_to_string(env.host.path().join(file)).unwrap(),
            before,
            "dry run wrote"
        );
        let o = env.run(&["host", "initramfs", "--apply"]);
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        let after = fs::read_to_string(env.host.path().join(file)).unwrap();
        assert!(
            after.contains("vfio_pci") && after.contains("vfio_iommu_type1"),
            "{after}"
        );
        let backup = env.host.path().join(format!("{file}.vmrun-backup"));
        assert_eq!(fs::read_to_string(backup).unwrap(), before);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains(rebuild) && text.contains("undo: cp -p "),
            "{text}"
        );
        // Under VMRUN_HOST_ROOT the generator would rebuild this machine's
        // initramfs: vmrun says how to do it inside the tree instead.
        assert!(
            text.contains(&format!("chroot {} {rebuild}", env.host.path().display())),
            "{text}"
        );
        let again = env.run(&["host", "initramfs", "--apply"]);
        assert!(
            String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
            "{}",
            out(&again)
        );
    }
    let env = Env::new();
    fs::create_dir_all(env.host.path().join("etc/dracut.conf.d")).unwrap();
    let o = env.run(&["host", "initramfs", "--apply"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let conf = env.host.path().join("etc/dracut.conf.d/10-vmrun-vfio.conf");
    assert!(fs::read_to_string(conf)
        .unwrap()
        .contains("force_drivers+=\" vfio_pci vfio vfio_iommu_type1 \""));
    assert!(String::from_utf8_lossy(&o.stdout).contains("undo: rm "));
}

#[test]
fn hide_gpu_dry_run_apply_refusal_and_undo_on_a_two_gpu_laptop() {
    let env = Env {
        host: Machine::IntelNvidiaLaptop.build(),
        ..Env::new()
    };
    let rule = env
        .host
        .path()
        .join("etc/udev/rules.d/72-vmrun-hide-gpu.rules");
    let vars = env
        .host
        .path()
        .join("etc/environment.d/90-vmrun-hide-gpu.conf");
    env.vm(
        "g",
        "memory = \"4G\"\n[[hostdev]]\naddress = \"0000:01:00.0\"\n[[hostdev]]\naddress = \"0000:01:00.1\"\n",
    );
    let dry = env.run(&["host", "hide-gpu", "g"]);
    assert_eq!(dry.status.code(), Some(0), "{}", out(&dry));
    let text = String::from_utf8_lossy(&dry.stdout);
    for want in [
        "hide 0000:01:00.0 from desktop compositors; they keep 0000:00:02.0",
        "KERNELS==\"0000:01:00.0\", ENV{ID_SEAT}=\"seat-vmrun-hidden\"",
        "KWIN_DRM_DEVICES=/dev/dri/vmrun-keep-0000-00-02.0",
        "then: udevadm control --reload",
        "(dry run",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
    assert!(!rule.exists() && !vars.exists(), "a dry run wrote");

    // The desktop's GPU (the laptop's boot VGA, the only other GPU).
    let refused = env.run(&["host", "hide-gpu", "00:02.0", "--apply"]);
    assert_eq!(refused.status.code(), Some(1), "{}", out(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("the desktop shows on 0000:00:02.0"),
        "{}",
        out(&refused)
    );
    let audio = env.run(&["host", "hide-gpu", "0000:01:00.1"]);
    assert!(
        String::from_utf8_lossy(&audio.stderr).contains("is not a display device"),
        "{}",
        out(&audio)
    );

    let o = env.run(&["host", "hide-gpu", "g", "--apply"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        fs::read_to_string(&rule)
            .unwrap()
            .contains("KERNELS==\"0000:01:00.0\", ENV{ID_SEAT}"),
        "{text}"
    );
    assert!(fs::read_to_string(&vars)
        .unwrap()
        .contains("AQ_DRM_DEVICES=/dev/dri/vmrun-keep-0000-00-02.0\n"));
    for want in [
        "the rule applies at the next boot",
        "restart the display manager once",
        "undo: vmrun host hide-gpu --undo --apply (or: rm ",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }

    // Again: nothing changes, and no backup of vmrun's own file is made
    // (the undo would put it back).
    let again = env.run(&["host", "hide-gpu", "g", "--apply"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("72-vmrun-hide-gpu.rules is current"),
        "{}",
        out(&again)
    );
    assert!(!env
        .host
        .path()
        .join("etc/udev/rules.d/72-vmrun-hide-gpu.rules.vmrun-backup")
        .exists());

    let dry_undo = env.run(&["host", "hide-gpu", "--undo"]);
    assert!(
        String::from_utf8_lossy(&dry_undo.stdout).contains("would run: rm "),
        "{}",
        out(&dry_undo)
    );
    assert!(rule.exists());
    let undo = env.run(&["host", "hide-gpu", "--undo", "--apply"]);
    assert_eq!(undo.status.code(), Some(0), "{}", out(&undo));
    assert!(!rule.exists() && !vars.exists(), "{}", out(&undo));
}
