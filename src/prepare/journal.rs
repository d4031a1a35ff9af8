//! The journal: every host change is appended here, and fsync'd, *before*
//! it is made, with what is needed to undo it. A `kill -9` at any moment
//! leaves enough on disk for `vmrun restore` to put the host back. Undo
//! steps are "make it as it was", so replaying a step whose change never
//! happened is harmless.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::change::takeover::{display_manager, framebuffer, holders, modules, units, vtconsoles};
use super::change::{group_owner, hugepages, vfio, StepReport, Undo};
use super::Host;

/// One change to the host, with the state it replaced. Each variant's data
/// lives in the module that makes and undoes that change. On disk: one JSON
/// object per line, the variant's name in kebab-case under `step` beside
/// the fields (journals of older vmruns replay: the format is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    BindVfio(vfio::BindVfio),
    ChownVfioGroup(group_owner::ChownVfioGroup),
    Hugepages(hugepages::Hugepages),
    StopUnit(units::StopUnit),
    StopCommand(display_manager::StopCommand),
    StopProcess(holders::StopProcess),
    UnbindVtcon(vtconsoles::UnbindVtcon),
    UnbindFramebuffer(framebuffer::UnbindFramebuffer),
    UnloadModule(modules::UnloadModule),
}

impl Step {
    /// Puts back what this step changed, and says how that went.
    pub fn undo(&self, host: &Host) -> StepReport {
        match self {
            Self::BindVfio(s) => s.undo(host),
            Self::ChownVfioGroup(s) => s.undo(host),
            Self::Hugepages(s) => s.undo(host),
            Self::StopUnit(s) => s.undo(host),
            Self::StopCommand(s) => s.undo(host),
            Self::StopProcess(s) => s.undo(host),
            Self::UnbindVtcon(s) => s.undo(host),
            Self::UnbindFramebuffer(s) => s.undo(host),
            Self::UnloadModule(s) => s.undo(host),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// An open journal, appended to by `prepare`.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    recorded: usize,
    /// Fault injection for crash tests: `VMRUN_FAULT_ABORT_AT_STEP=N` makes
    /// the process abort right after step N is recorded, before the change
    /// is made: the moment a `kill -9` hurts most.
    abort_at: Option<usize>,
}

/// The fault-injection variable (see `Journal::abort_at`).
pub const ABORT_AT_STEP_ENV: &str = "VMRUN_FAULT_ABORT_AT_STEP";

impl Journal {
    /// Opens (creating) the journal at `path` for appending.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| JournalError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            recorded: 0,
            abort_at: std::env::var(ABORT_AT_STEP_ENV)
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `step` durably: the change may be made once this returns.
    pub fn record(&mut self, step: &Step) -> Result<(), JournalError> {
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(step).map_err(|e| err(e.into()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(err)?;
        self.file.sync_data().map_err(err)?;
        self.recorded += 1;
        if self.abort_at == Some(self.recorded) {
            std::process::abort();
        }
        Ok(())
    }
}

/// The steps recorded at `path`, oldest first. A torn last line (a crash
/// mid-append, before fsync returned) was never acted on and is skipped.
pub fn read(path: &Path) -> Result<Vec<Step>, JournalError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(JournalError {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    Ok(BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect())
}

/// Removes a fully replayed journal.
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

/// The change modules' round-trip tests undo what they did with this:
/// teardown's walk (newest first), without removing the journal.
#[cfg(test)]
pub(crate) fn undo_all(path: &Path, host: &Host) -> Undone {
    Undone {
        steps: read(path)
            .unwrap()
            .iter()
            .rev()
            .map(|s| s.undo(host))
            .collect(),
    }
}

/// The reports of `undo_all`, newest step first.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Undone {
    pub steps: Vec<StepReport>,
}

#[cfg(test)]
impl Undone {
    pub(crate) fn complete(&self) -> bool {
        self.steps.iter().all(|s| s.problem.is_none())
    }

    pub(crate) fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.steps
            .iter()
            .filter_map(|s| s.problem.as_ref().map(|p| format!("{}: {p}", s.what)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modules::ModuleDevice;

    fn bind(addr: &str) -> Step {
        Step::BindVfio(vfio::BindVfio {
            address: addr.parse().unwrap(),
            driver: Some("snd_hda_intel".into()),
            driver_override: None,
            rescan_fallback: false,
        })
    }

    fn hugepages(before: u64, reserved: u64) -> Step {
        Step::Hugepages(hugepages::Hugepages {
            size_kb: 2048,
            before,
            reserved,
        })
    }

    /// A journal path in a fresh temp dir (kept alive by the first item).
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        (dir, path)
    }

    #[test]
    fn recorded_steps_read_back_in_order() {
        let (_dir, path) = scratch();
        let mut j = Journal::open(&path).unwrap();
        j.record(&bind("01:00.0")).unwrap();
        j.record(&hugepages(0, 8)).unwrap();
        drop(j);
        let mut j = Journal::open(&path).unwrap();
        j.record(&bind("01:00.1")).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            vec![bind("01:00.0"), hugepages(0, 8), bind("01:00.1")]
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let (_dir, path) = scratch();
        let mut j = Journal::open(&path).unwrap();
        j.record(&bind("01:00.0")).unwrap();
        fs::write(
            &path,
            format!("{}{{\"step\":\"bind-vf", fs::read_to_string(&path).unwrap()),
        )
        .unwrap();
        assert_eq!(read(&path).unwrap(), vec![bind("01:00.0")]);
    }

    #[test]
    fn takeover_steps_read_back() {
        let (_dir, path) = scratch();
        let steps = vec![
            Step::StopCommand(display_manager::StopCommand {
                stop: vec!["dm-stop".into()],
                start: vec!["dm-start".into()],
            }),
            Step::UnbindVtcon(vtconsoles::UnbindVtcon {
                index: 1,
                name: "(M) frame buffer device".into(),
            }),
            Step::UnloadModule(modules::UnloadModule {
                module: "bochs".into(),
                devices: vec![ModuleDevice {
                    address: "00:0a.0".parse().unwrap(),
                    driver: "bochs-drm".into(),
                }],
            }),
        ];
        let mut j = Journal::open(&path).unwrap();
        for s in &steps {
            j.record(s).unwrap();
        }
        assert_eq!(read(&path).unwrap(), steps);
    }

    #[test]
    fn a_missing_journal_is_empty() {
        assert!(read(Path::new("/nonexistent/journal")).unwrap().is_empty());
    }

    /// Journals written by older vmruns replay: every step's line, as they
    /// wrote it, reads back and is written again byte for byte.
    #[test]
    fn the_on_disk_format_is_unchanged() {
        let lines = [
            r#"{"step":"bind-vfio","address":"0000:01:00.1","driver":"snd_hda_intel","driver_override":null,"rescan_fallback":true}"#,
            r#"{"step":"chown-vfio-group","group":7,"uid":1000,"gid":1000}"#,
            r#"{"step":"hugepages","size_kb":2048,"before":4,"reserved":6}"#,
            r#"{"step":"stop-unit","unit":"plasma-kwin_wayland.service","user":"alice"}"#,
            r#"{"step":"stop-command","stop":["dm","stop"],"start":["dm","start"]}"#,
            r#"{"step":"stop-process","pid":500,"comm":"gpuhold"}"#,
            r#"{"step":"unbind-vtcon","index":1,"name":"(M) frame buffer device"}"#,
            r#"{"step":"unbind-framebuffer","driver":"efi-framebuffer","device":"efi-framebuffer.0","gpu":"0000:00:0a.0"}"#,
            r#"{"step":"unload-module","module":"bochs","devices":[{"address":"0000:00:0a.0","driver":"bochs-drm"}]}"#,
        ];
        for line in lines {
            let step: Step = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&step).unwrap(), line);
        }
        let old: Step = serde_json::from_str(
            r#"{"step":"bind-vfio","address":"0000:01:00.0","driver":null,"driver_override":null}"#,
        )
        .unwrap();
        assert!(matches!(old, Step::BindVfio(b) if !b.rescan_fallback));
    }
}
