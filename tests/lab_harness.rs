//! The lab harness itself: failures must be loud and carry their evidence.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::time::Duration;

use vmrun_lab::{FailureKind, Lab, LabError, Scenario};

fn failed_run(scenario: Scenario) -> Box<vmrun_lab::FailedRun> {
    let lab = Lab::new().unwrap_or_else(|e| panic!("{e}"));
    match lab.run(&scenario) {
        Err(LabError::Scenario(failed)) => failed,
        Err(other) => panic!("expected a failed scenario, got: {other}"),
        Ok(run) => panic!("expected a failed scenario, got a success:\n{run}"),
    }
}

#[test]
fn failing_scenario_reports_exit_code_output_and_serial_log() {
    let failed = failed_run(Scenario::named("selftest_fail.sh"));
    let shown = failed.to_string();

    assert_eq!(failed.kind, FailureKind::ExitCode(3), "{shown}");
    assert!(
        shown.contains("selftest: failing on purpose"),
        "scenario output missing:\n{shown}"
    );
    assert!(
        shown.contains("lab-init: scenario exit 3"),
        "serial log missing:\n{shown}"
    );
    assert!(
        shown.contains("before-failure"),
        "partial result.json missing:\n{shown}"
    );
    assert!(
        failed.scratch.join("serial.log").is_file(),
        "scratch not kept:\n{shown}"
    );
    let _ = std::fs::remove_dir_all(&failed.scratch);
}

#[test]
fn guest_outliving_its_timeout_is_killed_and_reported() {
    let failed = failed_run(Scenario::named("smoke.sh").timeout(Duration::from_secs(2)));

    assert_eq!(
        failed.kind,
        FailureKind::Timeout(Duration::from_secs(2)),
        "{failed}"
    );
    assert!(failed.to_string().contains("QEMU was killed"), "{failed}");
    let _ = std::fs::remove_dir_all(&failed.scratch);
}
