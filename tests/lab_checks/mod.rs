//! What the lab tests share: booting a scenario with this crate's vmrun,
//! and collecting every failed check before failing once with the run.

#![allow(dead_code)]

use std::time::Instant;

use vmrun_lab::serde_json::{json, Value};
use vmrun_lab::{Lab, LabRun, Scenario};

/// Boots the scenario with this crate's vmrun binary and returns its run;
/// any lab failure panics with the scenario output and serial log.
pub(crate) fn run(scenario: Scenario) -> LabRun {
    let start = Instant::now();
    let lab = Lab::new().unwrap_or_else(|e| panic!("{e}"));
    let scenario = scenario.vmrun(env!("CARGO_BIN_EXE_vmrun"));
    let run = lab.run(&scenario).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "lab timing: cache ready {:.1} s, guest {:.1} s, total {:.1} s",
        lab.prepare_time().as_secs_f64(),
        run.duration.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    run
}

/// Every mismatch of `expected`, as "key: expected X, got Y" lines.
pub(crate) fn mismatches(run: &LabRun, expected: &[(String, Value)]) -> Vec<String> {
    expected
        .iter()
        .filter(|(key, value)| run.get(key) != value)
        .map(|(key, value)| format!("{key}: expected {value}, got {}", run.get(key)))
        .collect()
}

/// The driver and driver_override each function must have under `prefix`
/// (fields recorded by `rec_devices` in vfio_lib.sh).
pub(crate) fn devices(prefix: &str, state: &[(&str, &str)]) -> Vec<(String, Value)> {
    state
        .iter()
        .enumerate()
        .flat_map(|(function, (driver, over))| {
            [
                (format!("{prefix}_driver_{function}"), json!(driver)),
                (format!("{prefix}_override_{function}"), json!(over)),
            ]
        })
        .collect()
}

pub(crate) fn fields(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

pub(crate) fn text<'a>(run: &'a LabRun, key: &str) -> &'a str {
    run.get(key).as_str().unwrap_or_default()
}

/// Whether `hay` has `word` delimited by non-alphanumeric characters.
pub(crate) fn has_word(hay: &str, word: &str) -> bool {
    hay.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// Collects every failed check and fails once, printing the whole run.
pub(crate) struct Checks<'a> {
    run: &'a LabRun,
    wrong: Vec<String>,
}

impl<'a> Checks<'a> {
    pub(crate) fn new(run: &'a LabRun) -> Self {
        Self {
            run,
            wrong: Vec::new(),
        }
    }

    pub(crate) fn fields(&mut self, expected: &[(String, Value)]) {
        let wrong = mismatches(self.run, expected);
        self.wrong.extend(wrong);
    }

    pub(crate) fn that(&mut self, ok: bool, what: &str) {
        if !ok {
            self.wrong.push(what.to_string());
        }
    }

    pub(crate) fn done(self) {
        assert!(
            self.wrong.is_empty(),
            "{}\n{}",
            self.wrong.join("\n"),
            self.run
        );
    }
}
