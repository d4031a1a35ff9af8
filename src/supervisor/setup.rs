//! Everything before QEMU runs, with one way out on failure: a dead run's
//! journal replayed, the UEFI vars and swtpm, the control socket and
//! signal handlers, the device locks, the input side, the host prepared,
//! QEMU spawned. Whatever step fails, `abandon` stops the swtpm, replays
//! the journal through the same `teardown::replay` as every other path, and
//! finishes the run dir.

use std::os::unix::net::UnixStream;
use std::path::Path;

use tokio::net::UnixListener;
use tokio::process::Child;

use super::inhibit::{self, SleepInhibitor};
use super::rundir::RunDir;
use super::{vmfiles, Signals, SupervisorError};
use crate::config::InputMode;
use crate::input::readd::Readd;
use crate::input::router::Router;
use crate::plan::identity::{self, UidLock};
use crate::plan::Plan;
use crate::prepare::{self, DeviceLocks, Host, PrepareError};
use crate::qemu::{handoff, process, swtpm, FdPlan};
use crate::teardown;

/// What setup made, handed to the loop.
pub(super) struct Started {
    /// QEMU, started with `-S` (no vCPU runs before the loop says `cont`),
    /// and our end of its QMP socket, already connected.
    pub qemu: (Child, UnixStream),
    /// What the loop listens to besides QEMU: `control.sock` (`vmrun
    /// status`, `stop`, `input`) and the signals.
    pub listeners: (UnixListener, Signals),
    /// Router mode's proxies and real devices, or qemu mode's re-adder.
    pub input: (Option<Router>, Option<Readd>),
    /// Held until the supervisor ends: the devices, QEMU's per-VM uid and
    /// the host's sleep inhibitor are ours until then.
    pub device_locks: (DeviceLocks, Option<UidLock>, Option<SleepInhibitor>),
}

/// Why setup stopped, before the undo is known.
pub(super) enum SetupFailure {
    /// A dead run's journal did not fully go back; nothing of ours was done.
    Stale {
        vm: String,
        problems: Vec<String>,
    },
    /// Claiming or changing the host failed: the undo's report goes with it.
    Prepare(PrepareError),
    Other(SupervisorError),
}

impl From<SupervisorError> for SetupFailure {
    fn from(e: SupervisorError) -> Self {
        Self::Other(e)
    }
}

/// Sets up the run of `plan` up to a spawned QEMU. A swtpm it starts is
/// left in `tpm`, so `abandon` can stop it.
pub(super) fn set_up(
    plan: &Plan,
    host: &Host,
    journal: &Path,
    tpm: &mut Option<swtpm::Swtpm>,
) -> Result<Started, SetupFailure> {
    // A dead supervisor's journal: its changes go back before ours start.
    if journal.exists() {
        tracing::warn!(
            "{}: restoring what a previous run left changed",
            plan.vm.name
        );
        let stale = teardown::replay(journal, host);
        if !stale.complete() {
            return Err(SetupFailure::Stale {
                vm: plan.vm.name.to_string(),
                problems: stale.problems().collect(),
            });
        }
    }
    // Before anything is given to the uid: it is this VM's from now on.
    let uid_lock = identity::claim(
        plan.qemu_identity.as_ref(),
        plan.vm.name.as_str(),
        &plan.root,
    )
    .map_err(|e| SupervisorError::from(process::SpawnError::from(e)))?;
    // Before swtpm and QEMU are forked: they start in our cgroup.
    prepare::isolate::enter_own_cgroup(plan, host).map_err(SetupFailure::Prepare)?;
    let no_sleep = plan
        .vm
        .inhibit_sleep
        .then(|| inhibit::hold(&plan.root, plan.vm.name.as_str()))
        .flatten();
    vmfiles::ensure_vars_copy(plan).map_err(SupervisorError::from)?;
    vmfiles::ensure_console_log(plan).map_err(SupervisorError::from)?;
    if plan.vm.tpm {
        *tpm = Some(
            swtpm::start(&plan.paths, plan.qemu_identity.as_ref())
                .map_err(SupervisorError::from)?,
        );
    }
    let control_path = plan.paths.run_dir.join("control.sock");
    let control = UnixListener::bind(&control_path).map_err(SupervisorError::Runtime)?;
    let signals = Signals::new().map_err(SupervisorError::Runtime)?;
    let device_locks = prepare::lock_devices(plan).map_err(SetupFailure::Prepare)?;
    // The proxies exist before QEMU, which opens them at realize; made
    // before the host is changed, so a missing uinput costs no rebind.
    let input = input_side(plan)?;
    prepare::prepare(plan, host).map_err(|e| {
        tracing::error!("preparing the host failed: {e}; undoing what was done");
        SetupFailure::Prepare(e)
    })?;
    let mut fds = FdPlan::new(plan);
    fds.evdev = proxy_nodes(plan)?;
    let ctrl = tpm.as_mut().and_then(|t| t.ctrl.take());
    let handed = handoff::open(&fds, plan.qemu_identity.as_ref(), ctrl)
        .map_err(|e| SupervisorError::from(process::SpawnError::from(e)))?;
    let argv = crate::qemu::build_run_argv(plan, &fds);
    let (listener, qmp_stream) =
        process::qmp_listen(&plan.paths.qmp_socket).map_err(SupervisorError::from)?;
    let child = process::spawn(plan, &argv, listener, handed).map_err(SupervisorError::from)?;
    // QEMU has no -pidfile (it could not write in root's run dir): the
    // pid is the one spawned, which __exec-as keeps across its exec.
    // `rundir::live_qemu_of` reads it after a crash.
    if let Some(pid) = child.id() {
        let _ = std::fs::write(&plan.paths.pidfile, format!("{pid}\n"));
    }
    Ok(Started {
        qemu: (child, qmp_stream),
        listeners: (control, signals),
        input,
        device_locks: (device_locks, uid_lock, no_sleep),
    })
}

/// The one way out of a failed setup: the swtpm stopped, the journal
/// replayed (it holds nothing unless prepare got going), the run dir
/// removed but for a journal that did not fully go back.
pub(super) fn abandon(
    failure: SetupFailure,
    tpm: &mut Option<swtpm::Swtpm>,
    journal: &Path,
    host: &Host,
    run_dir: RunDir,
) -> SupervisorError {
    if let Some(t) = tpm.as_mut() {
        t.stop();
    }
    let undo = match &failure {
        // Replaying the dead run's journal again would fail again.
        SetupFailure::Stale { .. } => None,
        _ => Some(teardown::replay(journal, host)),
    };
    let complete = undo.as_ref().is_some_and(teardown::Report::complete);
    run_dir.finish((!complete).then_some(journal));
    match failure {
        SetupFailure::Stale { vm, problems } => SupervisorError::StaleRestore { vm, problems },
        SetupFailure::Prepare(error) => SupervisorError::Prepare {
            error,
            undo: undo.unwrap_or_default(),
        },
        // Spawning QEMU comes after prepare: a failure there must still
        // say when the host did not fully go back.
        SetupFailure::Other(error) => match undo {
            Some(undo) if !undo.complete() => SupervisorError::NotUndone {
                error: Box::new(error),
                undo,
            },
            _ => error,
        },
    }
}

/// Removes the dir QEMU's uid bound SPICE's socket in (made by
/// `handoff::own_dir`); a run killed before this is cleaned by the next
/// start's `own_dir`.
pub(super) fn remove_spice_dir(paths: &crate::plan::VmPaths) {
    if let Some(dir) = paths.spice_socket.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The `/dev/input/eventN` nodes behind router mode's proxy links, given
/// to QEMU's uid: QEMU opens them itself (virtio-input-host's `evdev=`
/// takes a path only), and the links sit in the 0700 run dir. A proxy's
/// node is vmrun's own and dies with it, so nothing needs undoing.
fn proxy_nodes(plan: &Plan) -> Result<[Option<std::path::PathBuf>; 2], SupervisorError> {
    let mut nodes = [None, None];
    let Some(input) = plan
        .vm
        .input
        .as_ref()
        .filter(|i| i.mode == InputMode::Router)
    else {
        return Ok(nodes);
    };
    let links = [
        (&input.keyboard, &plan.paths.keyboard_proxy),
        (&input.mouse, &plan.paths.mouse_proxy),
    ];
    for (slot, (source, link)) in nodes.iter_mut().zip(links) {
        if source.is_none() {
            continue;
        }
        let node = std::fs::read_link(link).map_err(SupervisorError::Runtime)?;
        if let Some(id) = &plan.qemu_identity {
            nix::unistd::chown(
                &node,
                Some(nix::unistd::Uid::from_raw(id.uid)),
                Some(nix::unistd::Gid::from_raw(id.gid)),
            )
            .map_err(|e| SupervisorError::Runtime(e.into()))?;
        }
        *slot = Some(node);
    }
    Ok(nodes)
}

/// Router mode's proxies and device side, or qemu mode's re-adder.
fn input_side(plan: &Plan) -> Result<(Option<Router>, Option<Readd>), SupervisorError> {
    let Some(input) = &plan.vm.input else {
        return Ok((None, None));
    };
    let links = [
        plan.paths.keyboard_proxy.clone(),
        plan.paths.mouse_proxy.clone(),
    ];
    match input.mode {
        InputMode::Router => Ok((
            Some(Router::new(plan.vm.name.as_str(), input, links)?),
            None,
        )),
        InputMode::Qemu => match Readd::new(input) {
            Some(Ok(mut readd)) => {
                readd.owner = plan.qemu_identity.as_ref().map(|id| (id.uid, id.gid));
                Ok((None, Some(readd)))
            }
            Some(Err(error)) => Err(crate::input::InputError::Watch { error }.into()),
            None => Ok((None, None)),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::host::HostRoot;
    use crate::plan::{DirsEnv, VmPaths};
    use crate::prepare::change::hugepages::Hugepages;
    use crate::prepare::journal::{Journal, Step};
    use crate::prepare::kernel::fake::FakeKernel;

    const POOL: &str = "sys/kernel/mm/hugepages/hugepages-2048kB";

    /// A run dir claimed by a setup that got as far as `steps` in its
    /// journal, on a host with a 2 MiB huge page pool of `pages` pages.
    struct Scene {
        _dir: tempfile::TempDir,
        root: HostRoot,
        kernel: FakeKernel,
        paths: VmPaths,
        journal: std::path::PathBuf,
    }

    impl Scene {
        fn new(pages: u64, steps: &[Step]) -> (Self, RunDir) {
            let dir = tempfile::tempdir().unwrap();
            let pool = dir.path().join(POOL);
            fs::create_dir_all(&pool).unwrap();
            fs::write(pool.join("nr_hugepages"), format!("{pages}\n")).unwrap();
            fs::write(pool.join("free_hugepages"), format!("{pages}\n")).unwrap();
            let env = DirsEnv {
                uid: 1000,
                xdg_runtime_dir: Some(dir.path().join("run")),
                xdg_data_home: Some(dir.path().join("data")),
                ..Default::default()
            };
            let paths = VmPaths::new(&"t1".parse().unwrap(), &env);
            let (run_dir, _) = RunDir::acquire("t1", &paths).unwrap();
            let journal = paths.run_dir.join("journal");
            let mut j = Journal::open(&journal).unwrap();
            for s in steps {
                j.record(s).unwrap();
            }
            let scene = Self {
                root: HostRoot::new(dir.path()),
                kernel: FakeKernel::new(dir.path()),
                paths,
                journal,
                _dir: dir,
            };
            (scene, run_dir)
        }

        fn abandon(&self, failure: SetupFailure, run_dir: RunDir) -> SupervisorError {
            let host = Host::new(&self.root, &self.kernel);
            abandon(failure, &mut None, &self.journal, &host, run_dir)
        }

        fn pages(&self) -> String {
            fs::read_to_string(self.root.path(format!("/{POOL}/nr_hugepages")))
                .unwrap()
                .trim()
                .to_string()
        }
    }

    /// Four 2 MiB pages reserved on top of two (or of a 1 GiB pool this
    /// host lacks: that undo fails).
    fn reserved(size_kb: u64) -> Step {
        Step::Hugepages(Hugepages {
            size_kb,
            before: 2,
            reserved: 4,
        })
    }

    fn busy() -> SetupFailure {
        SetupFailure::Prepare(PrepareError::DeviceBusy {
            address: "0000:01:00.0".into(),
            holder: "other".into(),
        })
    }

    #[test]
    fn a_failed_prepare_is_undone_and_the_run_dir_removed() {
        let (scene, run_dir) = Scene::new(6, &[reserved(2048)]);
        let err = scene.abandon(busy(), run_dir);
        assert!(
            matches!(&err, SupervisorError::Prepare { undo, .. } if undo.complete() && undo.steps.len() == 1),
            "{err}"
        );
        assert!(!err.host_left_changed());
        assert_eq!(scene.pages(), "2");
        assert!(!scene.paths.run_dir.exists());
    }

    #[test]
    fn an_undo_that_fails_keeps_the_journal_for_restore() {
        let (scene, run_dir) = Scene::new(6, &[reserved(1_048_576)]);
        let err = scene.abandon(busy(), run_dir);
        assert!(err.host_left_changed(), "{err}");
        assert!(err.to_string().contains("NOT everything could be undone"));
        assert!(scene.journal.exists());
    }

    #[test]
    fn any_other_failure_is_returned_as_is_after_the_same_undo() {
        let (scene, run_dir) = Scene::new(6, &[reserved(2048)]);
        let failure = SetupFailure::Other(SupervisorError::Runtime(std::io::Error::other("x")));
        let err = scene.abandon(failure, run_dir);
        assert!(matches!(err, SupervisorError::Runtime(_)), "{err}");
        assert_eq!(scene.pages(), "2");
        assert!(!scene.paths.run_dir.exists());
    }

    #[test]
    fn any_other_failure_whose_undo_fails_says_so_and_keeps_the_journal() {
        let (scene, run_dir) = Scene::new(6, &[reserved(1_048_576)]);
        let failure = SetupFailure::Other(SupervisorError::Runtime(std::io::Error::other("x")));
        let err = scene.abandon(failure, run_dir);
        assert!(matches!(err, SupervisorError::NotUndone { .. }), "{err}");
        assert!(err.host_left_changed(), "{err}");
        assert!(err.to_string().contains("NOT everything could be undone"));
        assert!(scene.journal.exists());
    }

    #[test]
    fn a_dead_runs_journal_that_did_not_go_back_is_kept_untouched() {
        let (scene, run_dir) = Scene::new(6, &[reserved(2048)]);
        let err = scene.abandon(
            SetupFailure::Stale {
                vm: "t".into(),
                problems: vec!["x".into()],
            },
            run_dir,
        );
        assert!(err.host_left_changed(), "{err}");
        assert_eq!(scene.pages(), "6", "not replayed a second time");
        assert!(scene.journal.exists());
    }
}
