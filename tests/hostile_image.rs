//! docs/security.md items 3 and 7, replayed: a hostile disk image and VMs that
//! share a host. QEMU is exec'd as an unprivileged per-VM uid from its
//! first instruction, so a qcow2 whose header names a root-only backing
//! file can't make QEMU open it, and one VM's QEMU or swtpm can't touch
//! another's state. Runs as root (CI does); as any other user it fails at
//! once rather than pass without checking anything.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{assert_ok, proc_status_field, text, VmSpec, World};
use vmrun::plan::identity::DYNAMIC_UIDS;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "hostile_image replays attacks on a root vmrun and must run as root (CI does)"
    );
}

/// Real, effective, saved and fs ids of `field` (`Uid` or `Gid`).
fn ids(pid: i32, field: &str) -> Vec<u32> {
    proc_status_field(pid, field)
        .unwrap_or_default()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// A root-only file (0600) the guest must never read, as /etc/shadow; its
/// text is what no log or guest may show.
fn root_only_secret(w: &World) -> PathBuf {
    let secret = w.home.join("shadow");
    fs::write(&secret, format!("root:$6${SECRET}\n")).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

const SECRET: &str = "not-for-the-guest";

/// Writes vms/NAME.toml: a small BIOS guest on TCG whose one disk is
/// `disk`, run as a per-VM uid.
fn disk_vm(w: &World, name: &str, disk: &Path, format: &str) {
    fs::write(
        w.home.join(format!("vms/{name}.toml")),
        format!(
            "memory = \"128M\"\n[firmware]\ntype = \"bios\"\n\
             [[disk]]\npath = \"{}\"\nformat = \"{format}\"\n\
             [network]\nmode = \"none\"\n[display]\nmode = \"serial\"\n\
             [qemu]\naccel = \"tcg\"\nuser = \"auto\"\n",
            disk.display()
        ),
    )
    .unwrap();
}

/// docs/security.md item 3: a qcow2 owned by another user (65534) names a root-only
/// file as its backing file. QEMU, started by a root vmrun, must be refused
/// that file by the kernel: the start fails with Permission denied instead
/// of the guest reading the file.
#[test]
fn a_qcow2_backed_by_a_root_only_file_does_not_get_it() {
    require_root();
    let w = World::new();
    // The world plays `/`: searchable by everyone, so only the secret's own
    // mode keeps QEMU out, as with /etc/shadow.
    w.make_world_readable();
    let secret = root_only_secret(&w);
    let image = w.home.join("hostile.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&secret)
        .arg(&image)
        .arg("1M")
        .output()
        .unwrap();
    assert!(made.status.success(), "qemu-img: {made:?}");
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(&image, nobody, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    disk_vm(&w, "hostile", &image, "qcow2");

    let dry = w.run(&["start", "hostile", "--dry-run"]);
    let shown = text(&dry);
    assert!(
        shown.contains(&format!("backing file `{}`", secret.display())),
        "the plan names the backing file: {shown}"
    );

    let out = w.run(&["start", "hostile", "--detach"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let log = w.log("hostile");
    assert!(
        log.contains("Could not open backing file") && log.contains("Permission denied"),
        "QEMU is refused the backing file: {log}"
    );
    assert!(!log.contains(SECRET), "{log}");
}

fn start_tpm_vm(w: &World, name: &str) -> (i32, i32, u32) {
    let name = w.vm(
        name,
        &VmSpec {
            tpm: true,
            user: "auto",
            ..VmSpec::default()
        },
    );
    w.start_detached(&name);
    let qemu = w.pid_in(&name, "qemu.pid").expect("qemu.pid");
    let supervisor = w.pid_in(&name, "supervisor.pid").expect("supervisor.pid");
    let swtpm = swtpm_of(supervisor).expect("swtpm runs beside QEMU");
    let uid = ids(qemu, "Uid")[0];
    (qemu, swtpm, uid)
}

/// The child of `supervisor` named swtpm.
fn swtpm_of(supervisor: i32) -> Option<i32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(e.path().join("stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (comm.ends_with("(swtpm") && ppid == supervisor).then_some(pid)
    })
}

/// docs/security.md item 7: each VM's QEMU and swtpm run as a uid of its own, which
/// owns that VM's TPM state alone; vmrun's state dirs stay 0700.
#[test]
fn each_vm_runs_as_its_own_uid_and_owns_only_its_tpm_state() {
    require_root();
    let w = World::new();
    let (qemu_a, swtpm_a, uid_a) = start_tpm_vm(&w, "tenant-a");
    let (qemu_b, swtpm_b, uid_b) = start_tpm_vm(&w, "tenant-b");

    for (uid, qemu, swtpm) in [(uid_a, qemu_a, swtpm_a), (uid_b, qemu_b, swtpm_b)] {
        assert!(DYNAMIC_UIDS.contains(&uid), "per-VM uid, not {uid}");
        assert_eq!(ids(qemu, "Uid"), vec![uid; 4], "QEMU's uids");
        assert_eq!(ids(qemu, "Gid"), vec![uid; 4], "QEMU's gids");
        assert_eq!(ids(swtpm, "Uid"), vec![uid; 4], "swtpm's uids");
        assert_eq!(ids(swtpm, "Gid"), vec![uid; 4], "swtpm's gids");
        assert_eq!(
            proc_status_field(qemu, "NoNewPrivs")
                .as_deref()
                .map(str::trim),
            Some("1")
        );
    }
    assert_ne!(uid_a, uid_b, "two VMs, two uids");

    for (name, uid) in [("tenant-a", uid_a), ("tenant-b", uid_b)] {
        let tpm = w.state_dir(name).join("tpm");
        // swtpm writes its state once QEMU initialised the TPM.
        support::wait_for("swtpm's state", std::time::Duration::from_secs(10), || {
            fs::read_dir(&tpm).ok()?.flatten().next()
        });
        let meta = fs::metadata(&tpm).unwrap();
        assert_eq!((meta.uid(), meta.gid(), mode(&tpm)), (uid, uid, 0o700));
        for file in fs::read_dir(&tpm).unwrap().flatten() {
            let m = file.metadata().unwrap();
            if m.is_file() {
                assert_eq!(
                    (m.uid(), m.mode() & 0o777),
                    (uid, 0o600),
                    "{}",
                    file.path().display()
                );
            }
        }
        assert_eq!(mode(&w.state_dir(name)), 0o700, "the VM's state dir");
    }
    assert_eq!(
        mode(&w.state_base),
        0o700,
        "the state base (/var/lib/vmrun)"
    );

    for name in ["tenant-a", "tenant-b"] {
        assert_ok(&w.run(&["stop", name, "--force"]), "vmrun stop --force");
    }
}

/// docs/security.md item 3, the path: a disk in a directory another user
/// (65534) owns is opened with that user's rights, so the user's own image
/// runs, and the same path swapped for a link to a root-only file is
/// refused by the kernel instead of handed to the guest. A disk in a
/// directory anyone may write is refused by the plan.
#[test]
fn a_disk_in_another_users_dir_is_opened_with_that_users_rights() {
    require_root();
    let w = World::new();
    w.make_world_readable();
    let secret = root_only_secret(&w);
    let theirs = w.home.join("theirs");
    fs::create_dir(&theirs).unwrap();
    let disk = theirs.join("disk.img");
    fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o600)).unwrap();
    let nobody = (
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    );
    for path in [&theirs, &disk] {
        nix::unistd::chown(path, nobody.0, nobody.1).unwrap();
    }
    disk_vm(&w, "theirs", &disk, "raw");

    let dry = text(&w.run(&["start", "theirs", "--dry-run"]));
    assert!(
        dry.contains("opened with the rights of uid 65534"),
        "the plan says whose rights: {dry}"
    );
    w.start_detached("theirs");
    assert_ok(&w.run(&["stop", "theirs", "--force"]), "vmrun stop");

    // The owner of the dir swaps the image for a link to root's secret.
    fs::remove_file(&disk).unwrap();
    std::os::unix::fs::symlink(&secret, &disk).unwrap();
    let out = w.run(&["start", "theirs", "--detach"]);
    let said = format!("{}{}", text(&out), w.log("theirs"));
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("uid 65534") && said.contains("Permission denied"),
        "opened as 65534 and refused: {said}"
    );

    // A dir anyone may write: nobody answers for the path.
    fs::remove_file(&disk).unwrap();
    fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o777)).unwrap();
    let out = w.run(&["start", "theirs", "--detach"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("users other than its owner may replace"),
        "{}",
        text(&out)
    );
}

/// Runs `cmd` to its end, or kills it and fails after `within`: a start
/// that blocks shows as a failure, not as a test that never ends.
fn output_within(mut cmd: Command, within: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {within:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A disk that is a FIFO (docs/security.md item 3's disk path, pointed at
/// a pipe): open(2) of it would wait forever for a writer. The start is
/// refused at once by the plan, before any change, naming the key and the
/// path, whether root opens it or the user who owns its dir.
#[test]
fn a_disk_that_is_a_fifo_is_refused_at_once() {
    require_root();
    let w = World::new();
    w.make_world_readable();
    let theirs = w.home.join("theirs");
    fs::create_dir(&theirs).unwrap();
    let nobody = (
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    );
    nix::unistd::chown(&theirs, nobody.0, nobody.1).unwrap();
    for (name, dir) in [("rootfifo", &w.home), ("userfifo", &theirs)] {
        let fifo = dir.join(format!("{name}.img"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        if dir == &theirs {
            // Its dir's owner's: opened as them, were it opened.
            nix::unistd::chown(&fifo, nobody.0, nobody.1).unwrap();
        }
        disk_vm(&w, name, &fifo, "raw");

        let out = output_within(w.cmd(&["start", name, "--detach"]), Duration::from_secs(20));

        let said = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "refused, nothing changed: {said}"
        );
        assert!(
            said.contains(&fifo.display().to_string())
                && said.contains("[[disk]] path is a FIFO (named pipe)"),
            "{said}"
        );
        assert!(!w.run_dir(name).join("journal").exists(), "{said}");
    }
}
