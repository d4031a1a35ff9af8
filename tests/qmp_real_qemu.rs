//! The QMP client against a real QEMU (TCG, no guest): the whole lifecycle
//! the supervisor drives. Fails, never skips, when QEMU is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmrun::qmp::{self, QmpEvent, QmpEvents, RunStatus};

const QEMU: &str = "qemu-system-x86_64";

/// Kills QEMU if the test fails before `quit` ends it.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_qemu(sock: &std::path::Path) -> Qemu {
    let child = Command::new(QEMU)
        .args(["-machine", "q35", "-accel", "tcg", "-S", "-nodefaults"])
        .args(["-display", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {QEMU} ({e}); install it: sudo apt-get install qemu-system-x86")
        });
    Qemu(child)
}

async fn wait_for(events: &mut QmpEvents, name: &str) -> QmpEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {name} event within 10 s"))
            .unwrap_or_else(|| panic!("QMP closed before {name}"));
        if ev.name() == name {
            return ev;
        }
    }
}

#[tokio::test]
async fn real_qemu_lifecycle_over_qmp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("qmp.sock");
    let mut qemu = spawn_qemu(&sock);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (qmp, mut events) = qmp::connect_with_retry(&sock, deadline)
        .await
        .expect("QMP connects to the fresh QEMU");
    let v = qmp.version();
    // The QEMU this run is meant to test: Debian 12's 7.2, or the one
    // tests/qemu10/run.sh names.
    let expected = std::env::var("VMRUN_EXPECT_QEMU").unwrap_or_else(|_| "7.2".into());
    assert_eq!(
        format!("{}.{}", v.major, v.minor),
        expected,
        "QMP's greeting names another QEMU than the one under test: {v:?}"
    );

    let st = qmp.query_status().await.expect("query-status");
    assert_eq!(st.status, RunStatus::Known(qapi::qmp::RunState::prelaunch));
    assert!(!st.running);

    let cpus = qmp.query_cpus_fast().await.expect("query-cpus-fast");
    assert_eq!(cpus.len(), 1, "{cpus:?}");
    assert_eq!(cpus[0].cpu_index, 0);
    assert!(cpus[0].thread_id > 0, "{cpus:?}");
    let pid = i32::try_from(qemu.0.id()).expect("pid fits");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}/task/{}", cpus[0].thread_id)).exists(),
        "vCPU thread {} is a thread of QEMU {pid}",
        cpus[0].thread_id
    );

    let pci = qmp.query_pci().await.expect("query-pci");
    assert!(
        pci.iter().any(|f| f.vendor == 0x8086 && f.device == 0x29c0),
        "q35 host bridge listed: {pci:?}"
    );

    qmp.cont().await.expect("cont");
    let st = qmp.query_status().await.expect("query-status");
    assert_eq!(st.status, RunStatus::Known(qapi::qmp::RunState::running));
    assert!(st.running);

    qmp.system_powerdown().await.expect("system_powerdown");
    let ev = wait_for(&mut events, "POWERDOWN").await;
    assert!(
        matches!(ev.known(), Some(qapi::qmp::Event::POWERDOWN { .. })),
        "{ev:?}"
    );

    qmp.quit().await.expect("quit");
    let ev = wait_for(&mut events, "SHUTDOWN").await;
    assert!(
        matches!(ev.known(), Some(qapi::qmp::Event::SHUTDOWN { data, .. })
            if !data.guest && data.reason == qapi::qmp::ShutdownCause::host_qmp_quit),
        "{ev:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(matches!(end, Ok(None)), "EOF after quit: {end:?}");

    let start = Instant::now();
    let status = loop {
        if let Some(s) = qemu.0.try_wait().expect("wait QEMU") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "QEMU did not exit after quit"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(status.code(), Some(0), "QEMU exit after quit: {status:?}");
}

#[tokio::test]
async fn real_qemu_command_error_is_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("qmp.sock");
    let _qemu = spawn_qemu(&sock);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (qmp, _events) = qmp::connect_with_retry(&sock, deadline)
        .await
        .expect("QMP connects");

    let err = qmp
        .execute(qapi::qmp::device_del {
            id: "nonexistent".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            qmp::QmpError::Command {
                class: qmp::ErrorClass::Known(qapi::ErrorClass::DeviceNotFound),
                ..
            }
        ),
        "{err:?}"
    );
    let raw = qmp
        .execute_raw("query-name", None)
        .await
        .expect("raw query-name");
    assert!(raw.is_object(), "{raw}");
    qmp.quit().await.expect("quit");
}
