//! The journal: every host change is appended here, and fsync'd, *before*
//! it is made, with what is needed to undo it. A `kill -9` at any moment
//! leaves enough on disk for `vmrun restore` to put the host back. Undo
//! steps are "make it as it was", so replaying a step whose change never
//! happened is harmless.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::PciAddress;

/// One change to the host, with the state it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// A PCI function moved to vfio-pci.
    BindVfio {
        address: PciAddress,
        /// Its driver before (`None`: it was unbound).
        driver: Option<String>,
        /// Its `driver_override` before (`None`: the kernel's `(null)`).
        driver_override: Option<String>,
        /// `[[hostdev]] rescan_fallback`: kept here because `vmrun restore`
        /// has only the journal. Absent in journals of older vmruns.
        #[serde(default)]
        rescan_fallback: bool,
    },
    /// `/dev/vfio/GROUP` handed to the QEMU user.
    ChownVfioGroup { group: u32, uid: u32, gid: u32 },
    /// The persistent huge page pool, `before` pages, was grown by up to
    /// `reserved` pages.
    Hugepages {
        size_kb: u64,
        before: u64,
        reserved: u64,
    },
    /// Takeover: a systemd unit stopped (`user`: in that user's manager).
    StopUnit { unit: String, user: Option<String> },
    /// Takeover: the display manager stopped by its configured `stop`
    /// command; `start` brings it back.
    StopCommand {
        stop: Vec<String>,
        start: Vec<String>,
    },
    /// Takeover: a process still holding the GPU, stopped. Not restarted:
    /// whatever started it owns it.
    StopProcess { pid: u32, comm: String },
    /// Takeover: `/sys/class/vtconsole/vtconN`, named `name`, unbound
    /// from its framebuffer.
    UnbindVtcon { index: u32, name: String },
    /// Takeover: a firmware framebuffer on `gpu` unbound from its platform
    /// driver.
    UnbindFramebuffer {
        driver: String,
        device: String,
        gpu: PciAddress,
    },
    /// Takeover: a module unloaded; `devices` were bound to its drivers.
    UnloadModule {
        module: String,
        devices: Vec<ModuleDevice>,
    },
}

/// A PCI function and the driver it had from an unloaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDevice {
    pub address: PciAddress,
    pub driver: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(addr: &str) -> Step {
        Step::BindVfio {
            address: addr.parse().unwrap(),
            driver: Some("snd_hda_intel".into()),
            driver_override: None,
            rescan_fallback: false,
        }
    }

    #[test]
    fn recorded_steps_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut j = Journal::open(&path).unwrap();
        j.record(&bind("01:00.0")).unwrap();
        j.record(&Step::Hugepages {
            size_kb: 2048,
            before: 0,
            reserved: 8,
        })
        .unwrap();
        drop(j);
        let mut j = Journal::open(&path).unwrap();
        j.record(&bind("01:00.1")).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            vec![
                bind("01:00.0"),
                Step::Hugepages {
                    size_kb: 2048,
                    before: 0,
                    reserved: 8
                },
                bind("01:00.1")
            ]
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let steps = vec![
            Step::StopCommand {
                stop: vec!["dm-stop".into()],
                start: vec!["dm-start".into()],
            },
            Step::UnbindVtcon {
                index: 1,
                name: "(M) frame buffer device".into(),
            },
            Step::UnloadModule {
                module: "bochs".into(),
                devices: vec![ModuleDevice {
                    address: "00:0a.0".parse().unwrap(),
                    driver: "bochs-drm".into(),
                }],
            },
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
}
