//! `vmrun restore` with a journal it cannot fully read: the lines it can
//! read are undone, the others are named, the journal is kept and the exit
//! status is 4 (host not fully restored). The host is a temp tree
//! (`VMRUN_HOST_ROOT`) holding a huge page pool, so no real host is touched.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::fs;
use std::path::{Path, PathBuf};

const HUGEPAGES: &str = r#"{"step":"hugepages","size_kb":2048,"before":2,"reserved":4}"#;

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    /// A VM `vm` whose dead run left `journal`; a pool of 6 huge pages.
    fn with_journal(journal: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir
            .path()
            .join("root/sys/kernel/mm/hugepages/hugepages-2048kB");
        fs::create_dir_all(&pool).unwrap();
        fs::write(pool.join("nr_hugepages"), "6\n").unwrap();
        fs::write(pool.join("free_hugepages"), "6\n").unwrap();
        fs::write(dir.path().join("vm.toml"), "memory = \"64M\"\n").unwrap();
        let host = Self { dir };
        fs::create_dir_all(host.journal().parent().unwrap()).unwrap();
        fs::write(host.journal(), journal).unwrap();
        host
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("run/vm/journal")
    }

    fn pages(&self) -> String {
        let nr = "root/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
        fs::read_to_string(self.dir.path().join(nr))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `vmrun restore`: its exit status and its stdout and stderr.
    fn restore(&self) -> (Option<i32>, String) {
        let d: &Path = self.dir.path();
        let out = assert_cmd::Command::cargo_bin("vmrun")
            .unwrap()
            .env("VMRUN_HOST_ROOT", d.join("root"))
            // A test build's seam: every step of these journals changes
            // the fake tree only (a release vmrun refuses the fake root).
            .env("VMRUN_TEST_FAKE_HOST_CHANGES", "1")
            .env("VMRUN_RUN_DIR", d.join("run"))
            .env("VMRUN_STATE_DIR", d.join("state"))
            .arg("restore")
            .arg(d.join("vm.toml"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }
}

#[test]
fn a_damaged_line_is_named_the_rest_undone_and_the_journal_kept_exit_4() {
    let host = Host::with_journal(&format!("{{\"step\":\"bind-vf\u{0}\n{HUGEPAGES}\n"));
    let (code, text) = host.restore();
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("line 1: not a journal step"), "{text}");
    assert!(text.contains("fix the line"), "{text}");
    assert!(text.contains("vmrun restore vm"), "{text}");
    assert_eq!(host.pages(), "2", "the readable step went back: {text}");
    assert!(host.journal().exists(), "{text}");

    // Repaired (here: the line removed, its change put back by hand).
    fs::write(host.journal(), format!("{HUGEPAGES}\n")).unwrap();
    let (code, text) = host.restore();
    assert_eq!(code, Some(0), "{text}");
    assert!(!host.journal().exists(), "{text}");
    assert!(!host.dir.path().join("run/vm").exists(), "{text}");
}

#[test]
fn a_step_of_a_newer_vmrun_is_named_by_its_tag_exit_4() {
    let newer = r#"{"step":"pin-cpuset","cpus":"2-5"}"#;
    let host = Host::with_journal(&format!("{HUGEPAGES}\n{newer}\n"));
    let (code, text) = host.restore();
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("line 2: a `pin-cpuset` step"), "{text}");
    assert_eq!(host.pages(), "2", "{text}");
    assert!(host.journal().exists(), "{text}");
}

#[test]
fn a_torn_last_line_is_skipped_exit_0() {
    let host = Host::with_journal(&format!("{HUGEPAGES}\n{{\"step\":\"bind-vf"));
    let (code, text) = host.restore();
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(host.pages(), "2", "{text}");
    assert!(!host.journal().exists(), "{text}");
}

#[test]
fn a_fake_host_root_is_refused_without_the_test_seam_exit_2() {
    // docs/security.md item 11: the checks would read the fake tree while the
    // changes (systemctl, modprobe, signals) hit this machine.
    let host = Host::with_journal(&format!("{HUGEPAGES}\n"));
    let d: &Path = host.dir.path();
    let out = assert_cmd::Command::cargo_bin("vmrun")
        .unwrap()
        .env("VMRUN_HOST_ROOT", d.join("root"))
        .env_remove("VMRUN_TEST_FAKE_HOST_CHANGES")
        .env("VMRUN_RUN_DIR", d.join("run"))
        .env("VMRUN_STATE_DIR", d.join("state"))
        .arg("restore")
        .arg(d.join("vm.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("VMRUN_HOST_ROOT is set"), "{err}");
    assert!(err.contains("`restore`"), "{err}");
    assert_eq!(host.pages(), "6", "nothing was undone: {err}");
    assert!(host.journal().exists(), "{err}");
}
