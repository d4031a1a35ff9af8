//! Errors of the lab. A failed guest run carries everything needed to see why:
//! the scenario's own output and the guest's full serial log.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What a developer runs to get every host tool the lab needs.
/// (python3 is the guest scenarios' QMP client; the guest runs the host's own.)
pub const INSTALL_HINT: &str =
    "apt-get install -y qemu-system-x86 ovmf busybox-static kmod python3";

/// Anything that stops the lab from producing a run.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A host tool or file the lab needs is not installed.
    #[error("the lab needs {what}, which is missing: install it with `{INSTALL_HINT}`")]
    MissingPrerequisite {
        /// The tool or file, with the path or command that was looked for.
        what: String,
    },
    /// apt knows no guest kernel package.
    #[error(
        "no guest kernel package: `apt-cache search --names-only '^linux-image-6.1.0-[0-9]+-amd64$'` \
         found nothing; run `apt-get update` (Debian 12 sources), or set VMRUN_LAB_KERNEL to a \
         package name or a .deb path"
    )]
    NoKernelPackage,
    /// A host command the lab ran failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for copy and paste.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the lab was doing.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The guest ran but the scenario did not succeed.
    #[error("{0}")]
    Scenario(Box<FailedRun>),
}

impl LabError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io {
            action,
            path,
            source,
        }
    }
}

/// Why a guest run counts as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The host killed QEMU after this long.
    Timeout(Duration),
    /// The scenario script exited with this code.
    ExitCode(i32),
    /// The guest powered off without recording the scenario's exit code
    /// (the init failed before or while running it).
    NoExitCode,
    /// The scenario exited 0 but wrote no result.json.
    NoResult,
    /// result.json is not valid JSON.
    BadResult(String),
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Timeout(t) => {
                write!(f, "timed out after {} s; QEMU was killed", t.as_secs())
            }
            FailureKind::ExitCode(c) => write!(f, "the scenario exited with code {c}"),
            FailureKind::NoExitCode => write!(f, "the guest stopped before the scenario finished"),
            FailureKind::NoResult => write!(f, "the scenario wrote no result.json"),
            FailureKind::BadResult(e) => write!(f, "result.json is not valid JSON: {e}"),
        }
    }
}

/// A guest run that failed, with its evidence.
#[derive(Debug)]
pub struct FailedRun {
    /// Why it failed.
    pub kind: FailureKind,
    /// The scenario script.
    pub script: PathBuf,
    /// Topology and firmware, as given on the lab's command line.
    pub setup: String,
    /// What the scenario printed (stdout and stderr).
    pub scenario_output: String,
    /// result.json as written, if any.
    pub result_text: Option<String>,
    /// The guest's whole serial console.
    pub serial_log: String,
    /// The guest kernel's log after the scenario, if it got that far.
    pub dmesg: Option<String>,
    /// The run's scratch folder (kept on failure).
    pub scratch: PathBuf,
}

impl fmt::Display for FailedRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lab scenario {} ({}) failed: {}",
            self.script.display(),
            self.setup,
            self.kind
        )?;
        writeln!(f, "scratch folder (kept): {}", self.scratch.display())?;
        if let Some(result) = &self.result_text {
            writeln!(f, "----- result.json -----\n{}", result.trim_end())?;
        }
        writeln!(
            f,
            "----- scenario output -----\n{}",
            self.scenario_output.trim_end()
        )?;
        if let Some(dmesg) = &self.dmesg {
            writeln!(f, "----- guest dmesg -----\n{}", dmesg.trim_end())?;
        }
        write!(
            f,
            "----- guest serial log -----\n{}",
            self.serial_log.trim_end()
        )
    }
}
