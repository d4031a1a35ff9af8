//! The journal: every host change is appended here, and fsync'd, *before*
//! it is made, with what is needed to undo it. A `kill -9` at any moment
//! leaves enough on disk for `vmrun restore` to put the host back. Undo
//! steps are "make it as it was", so replaying a step whose change never
//! happened is harmless.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use std::os::unix::fs::MetadataExt;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::change::takeover::{display_manager, framebuffer, holders, modules, units, vtconsoles};
use super::change::{
    cgroup, cpuset, device_owner, governor, group_owner, hugepages, irq_affinity, shared_memory,
    tap, usb_driver, vfio, workqueue, StepReport, Undo,
};
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
    ChownDevice(device_owner::ChownDevice),
    Hugepages(hugepages::Hugepages),
    StopUnit(units::StopUnit),
    StopCommand(display_manager::StopCommand),
    RestartDesktop(display_manager::RestartDesktop),
    StopProcess(holders::StopProcess),
    UnbindVtcon(vtconsoles::UnbindVtcon),
    UnbindFramebuffer(framebuffer::UnbindFramebuffer),
    UnloadModule(modules::UnloadModule),
    CreateShm(shared_memory::CreateShm),
    UsbDriver(usb_driver::UsbDriver),
    VmScope(cgroup::VmScope),
    VmCgroup(cgroup::VmCgroup),
    AllowedCpus(cpuset::AllowedCpus),
    CgroupCpus(cpuset::CgroupCpus),
    WorkqueueMask(workqueue::WorkqueueMask),
    IrqAffinity(irq_affinity::IrqAffinity),
    Governor(governor::Governor),
    CreateTap(tap::CreateTap),
}

impl Step {
    /// Puts back what this step changed, and says how that went.
    pub fn undo(&self, host: &Host) -> StepReport {
        match self {
            Self::BindVfio(s) => s.undo(host),
            Self::ChownVfioGroup(s) => s.undo(host),
            Self::ChownDevice(s) => s.undo(host),
            Self::Hugepages(s) => s.undo(host),
            Self::StopUnit(s) => s.undo(host),
            Self::StopCommand(s) => s.undo(host),
            Self::RestartDesktop(s) => s.undo(host),
            Self::StopProcess(s) => s.undo(host),
            Self::UnbindVtcon(s) => s.undo(host),
            Self::UnbindFramebuffer(s) => s.undo(host),
            Self::UnloadModule(s) => s.undo(host),
            Self::CreateShm(s) => s.undo(host),
            Self::UsbDriver(s) => s.undo(host),
            Self::VmScope(s) => s.undo(host),
            Self::VmCgroup(s) => s.undo(host),
            Self::AllowedCpus(s) => s.undo(host),
            Self::CgroupCpus(s) => s.undo(host),
            Self::WorkqueueMask(s) => s.undo(host),
            Self::IrqAffinity(s) => s.undo(host),
            Self::Governor(s) => s.undo(host),
            Self::CreateTap(s) => s.undo(host),
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
    /// `open_running`'s shared lock, held while this journal lives.
    _running: Option<Flock<File>>,
    /// Fault injection for crash tests: `VMRUN_FAULT_ABORT_AT_STEP=N` makes
    /// the process abort right after step N is recorded, before the change
    /// is made: the moment a `kill -9` hurts most. Always `None` in a
    /// release build (see `abort_at_step`).
    abort_at: Option<usize>,
}

/// The fault-injection variable (see `Journal::abort_at`). Read only by
/// test builds: debug builds (the lab runs `cargo build`'s binary) and the
/// `testing` feature (`cargo test`'s). A release vmrun, running as root
/// with whatever environment its caller left, has no such switch.
#[cfg(any(debug_assertions, feature = "testing"))]
pub const ABORT_AT_STEP_ENV: &str = "VMRUN_FAULT_ABORT_AT_STEP";

#[cfg(any(debug_assertions, feature = "testing"))]
fn abort_at_step() -> Option<usize> {
    std::env::var(ABORT_AT_STEP_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
}

#[cfg(not(any(debug_assertions, feature = "testing")))]
fn abort_at_step() -> Option<usize> {
    None
}

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
            _running: None,
            abort_at: abort_at_step(),
        })
    }

    /// Opens the journal of a VM another process runs, to record a change
    /// made while it runs (`vmrun usb attach`). It must still exist, and a
    /// shared flock(2) is held for as long as the `Journal` lives:
    /// `teardown::replay` takes the exclusive lock before it reads and
    /// unlinks the journal before it lets go, so a step recorded here is
    /// either replayed by the VM's teardown or refused because that
    /// teardown has already read the journal.
    pub fn open_running(path: &Path) -> Result<Self, JournalError> {
        let err = |source| JournalError {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new().append(true).open(path).map_err(err)?;
        let lock = Flock::lock(file.try_clone().map_err(err)?, FlockArg::LockShared)
            .map_err(|(_, e)| err(e.into()))?;
        if file.metadata().map_err(err)?.nlink() == 0 {
            return Err(err(io::Error::new(
                io::ErrorKind::NotFound,
                "the VM's run is ending: its journal was replayed",
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            recorded: 0,
            _running: Some(lock),
            abort_at: abort_at_step(),
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

/// What a journal holds: the steps this vmrun can undo and the lines it
/// cannot read. An unreadable line is a change nobody undoes unless a person
/// looks at it, so it is kept and reported, never dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// The steps recorded, oldest first.
    pub steps: Vec<Step>,
    pub unreadable: Vec<UnreadableLine>,
}

impl Contents {
    /// Whether the journal records no change at all.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.unreadable.is_empty()
    }
}

/// A journal line holding a change this vmrun cannot undo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal {}, line {line}: {what}; the change it recorded was NOT undone: {}", path.display(), what.remedy())]
pub struct UnreadableLine {
    pub path: PathBuf,
    /// Counted from 1, as an editor shows it.
    pub line: usize,
    pub what: LineProblem,
}

/// What is wrong with an unreadable journal line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// Not a step at all: the line's text, escaped and shortened.
    #[error("not a journal step: \"{0}\"")]
    NotAStep(String),
    /// A step of a kind this vmrun has no undo for.
    #[error("a `{0}` step, a kind of change this vmrun does not know (a newer vmrun wrote it?)")]
    UnknownKind(String),
    /// A known kind of step whose fields do not read.
    #[error("a `{tag}` step that does not read ({reason})")]
    Damaged { tag: String, reason: String },
}

impl LineProblem {
    fn remedy(&self) -> &'static str {
        match self {
            Self::UnknownKind(_) => "restore with the vmrun that wrote it, or put that change back by hand and delete the line",
            _ => "fix the line, or put that change back by hand and delete the line",
        }
    }
}

/// The steps recorded at `path`, oldest first, and the lines that are not
/// steps this vmrun can read. A missing journal is empty.
///
/// Only a torn last line is skipped: `record` writes a step and its newline
/// in one append and makes the change only after the fsync, so a crash
/// mid-append leaves a last line without its newline, or one that is not
/// JSON, whose change was never made. (A whole step that lost only its
/// newline still reads and is undone: undoing a change never made is
/// harmless.) Any other line that does not read is reported: a damaged
/// line anywhere, or a step of a kind a newer vmrun wrote, even last.
pub fn read(path: &Path) -> Result<Contents, JournalError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::default()),
        Err(source) => {
            return Err(JournalError {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // Blank lines hold no step (a hand-edited journal may keep one).
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| (i + 1, l))
        .collect();
    let mut contents = Contents::default();
    for (k, &(line, text)) in lines.iter().enumerate() {
        match serde_json::from_slice::<Step>(text) {
            Ok(step) => contents.steps.push(step),
            Err(e) => {
                let last = k + 1 == lines.len();
                let json = serde_json::from_slice::<serde_json::Value>(text).ok();
                if last && (!bytes.ends_with(b"\n") || json.is_none()) {
                    tracing::warn!(
                        "journal {}, line {line}: torn by a crash while it was written (its change was never made); skipped",
                        path.display()
                    );
                    continue;
                }
                contents.unreadable.push(UnreadableLine {
                    path: path.to_path_buf(),
                    line,
                    what: describe(text, json.as_ref(), &e),
                });
            }
        }
    }
    Ok(contents)
}

/// What an unreadable line holds: its step kind when it names one, else
/// its text.
fn describe(
    text: &[u8],
    json: Option<&serde_json::Value>,
    error: &serde_json::Error,
) -> LineProblem {
    let tag = json.and_then(|v| v.get("step")).and_then(|t| t.as_str());
    let error = error.to_string();
    match tag {
        // serde's words for a tag no variant has.
        Some(tag) if error.starts_with("unknown variant") => LineProblem::UnknownKind(tag.into()),
        Some(tag) => LineProblem::Damaged {
            tag: tag.into(),
            // Its "at line 1 column N" counts within the line.
            reason: error.split(" at line ").next().unwrap_or_default().into(),
        },
        None => {
            const SHOWN: usize = 120;
            let text = String::from_utf8_lossy(text);
            let mut shown: String = text.chars().take(SHOWN).collect();
            if text.chars().count() > SHOWN {
                shown.push('…');
            }
            LineProblem::NotAStep(shown.escape_debug().to_string())
        }
    }
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
            .steps
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
            read(&path).unwrap().steps,
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
        let contents = read(&path).unwrap();
        assert_eq!(contents.steps, vec![bind("01:00.0")]);
        assert!(contents.unreadable.is_empty(), "{contents:?}");
    }

    /// What `read` makes of a journal of these lines, each ended by a
    /// newline.
    fn read_lines(lines: &[&str]) -> Contents {
        let (_dir, path) = scratch();
        fs::write(
            &path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        read(&path).unwrap()
    }

    fn line_of(step: &Step) -> String {
        serde_json::to_string(step).unwrap()
    }

    #[test]
    fn a_last_line_that_is_not_json_is_torn_and_skipped() {
        let contents = read_lines(&[&line_of(&bind("01:00.0")), r#"{"step":"hugepa"#]);
        assert_eq!(contents.steps, vec![bind("01:00.0")]);
        assert!(contents.unreadable.is_empty(), "{contents:?}");
    }

    #[test]
    fn a_damaged_first_line_is_reported_and_the_other_steps_read() {
        let first = line_of(&bind("01:00.0")).replace("\"step\"", "\"st\u{0}ep");
        let contents = read_lines(&[
            &first,
            &line_of(&hugepages(0, 8)),
            &line_of(&bind("01:00.1")),
        ]);
        assert_eq!(contents.steps, vec![hugepages(0, 8), bind("01:00.1")]);
        assert_eq!(contents.unreadable.len(), 1, "{contents:?}");
        let bad = &contents.unreadable[0];
        assert_eq!(bad.line, 1);
        let message = bad.to_string();
        // The text, control characters escaped, and what to do.
        assert!(message.contains("line 1: not a journal step"), "{message}");
        assert!(message.contains(r#"{\"st\0ep:"#), "{message}");
        assert!(message.contains("fix the line"), "{message}");
        assert!(!contents.is_empty());
    }

    #[test]
    fn a_damaged_middle_line_is_reported_even_when_it_is_not_utf8() {
        let (_dir, path) = scratch();
        let mut bytes = format!("{}\n", line_of(&bind("01:00.0"))).into_bytes();
        bytes.extend_from_slice(b"{\"step\":\"hugepages\",\xff\xfe\n");
        bytes.extend_from_slice(format!("{}\n", line_of(&bind("01:00.1"))).as_bytes());
        fs::write(&path, bytes).unwrap();
        let contents = read(&path).unwrap();
        assert_eq!(contents.steps, vec![bind("01:00.0"), bind("01:00.1")]);
        assert_eq!(contents.unreadable.len(), 1, "{contents:?}");
        assert_eq!(contents.unreadable[0].line, 2);
        let what = contents.unreadable[0].what.to_string();
        assert!(what.contains('\u{fffd}'), "{what}");
    }

    #[test]
    fn a_step_of_a_newer_vmrun_is_reported_by_its_tag_even_last() {
        let contents = read_lines(&[
            &line_of(&bind("01:00.0")),
            r#"{"step":"pin-cpuset","cgroup":"/sys/fs/cgroup/vmrun","cpus":"2-5"}"#,
        ]);
        assert_eq!(contents.steps, vec![bind("01:00.0")]);
        let message = contents.unreadable[0].to_string();
        assert!(message.contains("line 2: a `pin-cpuset` step"), "{message}");
        assert!(message.contains("newer vmrun"), "{message}");
        assert!(
            message.contains("restore with the vmrun that wrote it"),
            "{message}"
        );
        // The tag says it: the line's fields are not repeated.
        assert!(!message.contains("cgroup"), "{message}");
    }

    #[test]
    fn a_known_step_with_a_damaged_field_says_which() {
        let first = line_of(&bind("01:00.0")).replace("address", "adress");
        let contents = read_lines(&[&first, &line_of(&hugepages(0, 8))]);
        assert_eq!(contents.steps, vec![hugepages(0, 8)]);
        let what = contents.unreadable[0].what.to_string();
        assert!(
            what.contains("a `bind-vfio` step that does not read"),
            "{what}"
        );
        assert!(what.contains("missing field `address`"), "{what}");
        assert!(!what.contains("column"), "{what}");
    }

    #[test]
    fn blank_lines_hold_no_step() {
        let contents = read_lines(&["", &line_of(&bind("01:00.0")), "  "]);
        assert_eq!(contents.steps, vec![bind("01:00.0")]);
        assert!(contents.unreadable.is_empty(), "{contents:?}");
    }

    #[test]
    fn a_journal_of_only_a_torn_line_is_empty() {
        let (_dir, path) = scratch();
        fs::write(&path, r#"{"step":"bind"#).unwrap();
        assert!(read(&path).unwrap().is_empty());
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
            Step::RestartDesktop(display_manager::RestartDesktop {
                start: vec!["systemctl".into(), "start".into(), "gdm.service".into()],
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
        assert_eq!(read(&path).unwrap().steps, steps);
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
            r#"{"step":"chown-device","path":"/dev/input/by-id/usb-kbd-event-kbd","uid":0,"gid":104}"#,
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
