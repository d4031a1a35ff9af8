//! A VM's run dir and the lock that says a supervisor owns it. The lock is
//! an flock(2) on `lock`: the kernel drops it when the supervisor dies, even
//! by SIGKILL, so a run dir whose lock is free is stale whatever it holds.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::fsutil::{self, DirError};
use crate::plan::VmPaths;

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunDirError {
    #[error("VM {name} is already running (supervisor pid {pid}): `vmrun status {name}`, or `vmrun stop {name}` first")]
    AlreadyRunning { name: String, pid: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The old QEMU outlived SIGKILL and the wait after it: its devices
    /// must not be unbound while any of its threads lives.
    #[error("the QEMU (pid {pid}) that a dead supervisor of {name} left running is still there {}s after SIGKILL, probably stuck releasing a device (see `cat /proc/{pid}/stack` and `dmesg`); its devices stay as they are while it lives and the journal is kept: once pid {pid} is gone, run `vmrun restore {name}`", waited.as_secs())]
    QemuSurvived {
        name: String,
        pid: i32,
        waited: Duration,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a previous, dead supervisor left behind.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Leftovers {
    /// A QEMU of this VM still running without its supervisor (now killed).
    pub killed_qemu: Option<i32>,
    /// Files of the old run (sockets, pidfiles) were found and removed.
    pub stale_files: bool,
}

/// The run dir of a VM, locked by this process for as long as it lives.
#[derive(Debug)]
pub(crate) struct RunDir {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("lock")
}

fn supervisor_pid_path(run_dir: &Path) -> PathBuf {
    run_dir.join("supervisor.pid")
}

fn config_record_path(run_dir: &Path) -> PathBuf {
    run_dir.join("config.path")
}

/// Creates a VM's run or state `dir` (and parents) with mode 0700: sockets
/// inside give control of the VM, so only the owner may reach them. The
/// base it sits in is checked as well as `dir` itself: whoever can write to
/// the base can rename `dir` away and put their own in its place.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), DirError> {
    if let Some(base) = dir.parent() {
        fsutil::create_private_dir(base)?;
    }
    fsutil::create_private_dir(dir)
}

/// Whether the existing VM dir `dir` and its base are vmrun's own (see
/// `fsutil::verify_private_dir`): a journal or pidfile in any other is
/// never read, as another user could have written it.
pub(crate) fn verify_vm_dir(dir: &Path) -> Result<(), DirError> {
    if let Some(base) = dir.parent() {
        fsutil::verify_private_dir(base)?;
    }
    fsutil::verify_private_dir(dir)
}

impl RunDir {
    /// Locks the run dir of `paths`, cleaning up after a dead supervisor.
    /// The journal, if any, is left for teardown to replay.
    pub(crate) fn acquire(name: &str, paths: &VmPaths) -> Result<(Self, Leftovers), RunDirError> {
        let dir = paths.run_dir.clone();
        create_private_dir(&dir)?;
        create_private_dir(&paths.state_dir)?;
        let lock_file = lock_path(&dir);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_file)
            .map_err(io_err(&lock_file))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                let pid = fs::read_to_string(supervisor_pid_path(&dir)).unwrap_or_default();
                return Err(RunDirError::AlreadyRunning {
                    name: name.to_string(),
                    pid: pid.trim().to_string(),
                });
            }
            Err((_, e)) => return Err(io_err(&lock_file)(e.into())),
        };
        let leftovers = clean_stale(name, paths)?;
        let pid_file = supervisor_pid_path(&dir);
        let mut f = File::create(&pid_file).map_err(io_err(&pid_file))?;
        writeln!(f, "{}", std::process::id()).map_err(io_err(&pid_file))?;
        Ok((Self { dir, _lock: lock }, leftovers))
    }

    /// Records the config file the VM was started from: `vmrun list` shows
    /// it, and a file given by path is in no directory the search knows.
    pub(crate) fn record_config(&self, source: &Path) -> Result<(), RunDirError> {
        let file = config_record_path(&self.dir);
        fs::write(&file, source.as_os_str().as_bytes()).map_err(io_err(&file))
    }

    /// Removes the run dir's files but `keep` (the journal when teardown
    /// was incomplete), then the dir itself if nothing is kept.
    pub(crate) fn finish(self, keep: Option<&Path>) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if keep != Some(path.as_path()) && path != lock_path(&self.dir) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        if keep.is_none() {
            let _ = fs::remove_file(lock_path(&self.dir));
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// Kills a QEMU the dead supervisor left running and removes stale sockets.
fn clean_stale(name: &str, paths: &VmPaths) -> Result<Leftovers, RunDirError> {
    let mut leftovers = Leftovers::default();
    if let Some(pid) = live_qemu_of(name, &paths.pidfile) {
        let end = Ending {
            signal: &|pid, sig| {
                let _ = kill(pid, sig);
            },
            grace: TERM_GRACE,
            after_kill: KILL_WAIT,
        };
        if !end.terminate(pid) {
            // Nothing is removed: the pidfile and the journal lead the
            // next restore back to it.
            return Err(RunDirError::QemuSurvived {
                name: name.to_string(),
                pid: pid.as_raw(),
                waited: KILL_WAIT,
            });
        }
        leftovers.killed_qemu = Some(pid.as_raw());
    }
    for file in [
        &paths.qmp_socket,
        &paths.qmp_ctl_socket,
        &paths.console_socket,
        &paths.swtpm_socket,
        &paths.pidfile,
        &paths.run_dir.join("control.sock"),
    ] {
        if fs::remove_file(file).is_ok() {
            leftovers.stale_files = true;
        }
    }
    Ok(leftovers)
}

/// The pid in `pidfile` if it is a live QEMU started for VM `name`
/// (checked against its command line, so a reused pid is never killed).
pub(crate) fn live_qemu_of(name: &str, pidfile: &Path) -> Option<Pid> {
    let pid: i32 = fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = format!("guest={name},");
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.starts_with(needle.as_bytes()));
    ours.then(|| Pid::from_raw(pid))
}

/// Whether `pid` is a process that still runs. A zombie does not: it has
/// exited and only waits for its parent (init, for an orphaned QEMU or a
/// killed detached supervisor) to reap it, and some inits (containers,
/// firecracker's) reap late or never. But a thread group leader turns
/// zombie as soon as its own thread exits, while the other threads may
/// still be exiting: the last one to go closes the files, QEMU's VFIO
/// group among them (seen in the lab: QEMU's "IO mon_iothread" released
/// the group after its leader showed Z, and a PCI `remove` written in
/// between crashed the kernel). So a zombie with threads left still runs.
pub(crate) fn is_running(pid: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
    };
    // "State:\tZ (zombie)", "Threads:\t3" (proc(5)).
    let exited = matches!(field("State:").chars().next(), None | Some('Z' | 'X'));
    let threads: u32 = field("Threads:").parse().unwrap_or(1);
    !exited || threads > 1
}

/// Waits up to `within` for `pid` to stop running.
fn gone_within(pid: Pid, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if !is_running(pid.as_raw()) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How long an old QEMU gets to end on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long the end of an old QEMU may take after SIGKILL. SIGKILL is not
/// the end: the kernel still runs each thread's exit, and the last one
/// closes the VFIO device and group fds, which resets the device and
/// unpins all guest RAM mapped for DMA: seconds for a big GPU and guest.
/// Unbinding the device before that crashed the lab's kernel.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// How an old QEMU is ended: the signal sender is a seam for the tests.
struct Ending<'a> {
    signal: &'a dyn Fn(Pid, Signal),
    grace: Duration,
    after_kill: Duration,
}

impl Ending<'_> {
    /// SIGTERM, then SIGKILL if it is still there after the grace period;
    /// true once no thread of it runs (`is_running`), false if one still
    /// does `after_kill` later. The old QEMU holds the VFIO devices, and
    /// locks on the VARS file and disk images the next QEMU needs.
    fn terminate(&self, pid: Pid) -> bool {
        (self.signal)(pid, Signal::SIGTERM);
        if gone_within(pid, self.grace) {
            return true;
        }
        tracing::warn!("the old QEMU (pid {pid}) ignored SIGTERM: sending SIGKILL");
        (self.signal)(pid, Signal::SIGKILL);
        gone_within(pid, self.after_kill)
    }
}

/// The config file the supervisor of `run_dir` was started from, if it
/// recorded one.
pub(crate) fn recorded_config(run_dir: &Path) -> Option<PathBuf> {
    let bytes = fs::read(config_record_path(run_dir)).ok()?;
    (!bytes.is_empty()).then(|| PathBuf::from(OsString::from_vec(bytes)))
}

/// Whether a supervisor holds the VM's run dir: the pid in its pidfile
/// holds the flock on its `lock` and runs. Read without taking the lock (a
/// starting supervisor must never lose a race to `vmrun status`), and
/// whatever the supervisor's binary is named (`/proc/PID/comm` is the
/// name it was run as).
pub(crate) fn supervisor_pid(paths: &VmPaths) -> Option<i32> {
    let pid: i32 = fs::read_to_string(supervisor_pid_path(&paths.run_dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    let holders = flock_holders(&locks, &lock_path(&paths.run_dir))?;
    (holders.contains(&pid) && is_running(pid)).then_some(pid)
}

/// The pids `/proc/locks` shows holding an flock(2) on `file`. Its lines
/// (proc(5), fs/locks.c `lock_get_status`) read
/// `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`: pid, then the device
/// as hex major:minor and the decimal inode; a waiter's line has `->`
/// after the ordinal and holds nothing.
fn flock_holders(locks: &str, file: &Path) -> Option<Vec<i32>> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(file).ok()?;
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev),
        meta.ino()
    );
    Some(
        locks
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields.as_slice() {
                    [_, "FLOCK", _, _, pid, file_id, ..] if *file_id == id => pid.parse().ok(),
                    _ => None,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DirsEnv;

    fn paths_in(dir: &Path) -> VmPaths {
        let env = DirsEnv {
            uid: 1000,
            xdg_runtime_dir: Some(dir.join("run")),
            xdg_data_home: Some(dir.join("data")),
            ..Default::default()
        };
        VmPaths::new(&"t1".parse().unwrap(), &env)
    }

    #[test]
    fn second_acquire_is_refused_while_the_first_holds_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths_in(tmp.path());
        let (first, _) = RunDir::acquire("t1", &paths).unwrap();
        let err = RunDir::acquire("t1", &paths).unwrap_err();
        assert!(matches!(err, RunDirError::AlreadyRunning { .. }), "{err}");
        drop(first);
        assert!(RunDir::acquire("t1", &paths).is_ok());
    }

    #[test]
    fn acquire_refuses_a_run_dir_another_user_made() {
        // Runs as root (here and in CI): chown(2) to another uid needs it.
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths_in(tmp.path());
        fs::create_dir_all(&paths.run_dir).unwrap();
        fs::write(&paths.pidfile, "1\n").unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&paths.run_dir, Some(nobody), None).unwrap();
        let err = RunDir::acquire("t1", &paths).unwrap_err();
        assert!(
            matches!(err, RunDirError::Dir(DirError::ForeignOwner { .. })),
            "{err}"
        );
        assert!(!paths.run_dir.join("lock").exists());
    }

    #[test]
    fn acquire_refuses_a_world_writable_run_base() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths_in(tmp.path());
        let base = paths.run_dir.parent().unwrap();
        fs::create_dir_all(base).unwrap();
        fs::set_permissions(base, fs::Permissions::from_mode(0o1777)).unwrap();
        let err = RunDir::acquire("t1", &paths).unwrap_err();
        assert!(
            matches!(err, RunDirError::Dir(DirError::Writable { .. })),
            "{err}"
        );
    }

    #[test]
    fn acquire_refuses_a_symlinked_state_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths_in(tmp.path());
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::create_dir_all(paths.state_dir.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &paths.state_dir).unwrap();
        let err = RunDir::acquire("t1", &paths).unwrap_err();
        assert!(
            matches!(err, RunDirError::Dir(DirError::Symlink { .. })),
            "{err}"
        );
    }

    #[test]
    fn stale_sockets_are_removed_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths_in(tmp.path());
        create_private_dir(&paths.run_dir).unwrap();
        fs::write(&paths.qmp_socket, "").unwrap();
        let (_dir, leftovers) = RunDir::acquire("t1", &paths).unwrap();
        assert!(leftovers.stale_files);
        assert!(!paths.qmp_socket.exists());
    }

    #[test]
    fn finish_removes_the_dir_unless_something_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths_in(tmp.path());
        let (dir, _) = RunDir::acquire("t1", &paths).unwrap();
        dir.finish(None);
        assert!(!paths.run_dir.exists());
        let (dir, _) = RunDir::acquire("t1", &paths).unwrap();
        let journal = paths.run_dir.join("journal");
        fs::write(&journal, "x").unwrap();
        dir.finish(Some(&journal));
        assert!(journal.exists());
    }

    #[test]
    fn the_recorded_config_is_read_back_and_goes_with_the_run_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths_in(tmp.path());
        let (dir, _) = RunDir::acquire("t1", &paths).unwrap();
        assert_eq!(recorded_config(&paths.run_dir), None);
        dir.record_config(Path::new("/some/dir/t1.toml")).unwrap();
        assert_eq!(
            recorded_config(&paths.run_dir),
            Some(PathBuf::from("/some/dir/t1.toml"))
        );
        dir.finish(None);
        assert_eq!(recorded_config(&paths.run_dir), None);
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: a zombie until `wait`.
        assert!(gone_within(Pid::from_raw(pid), Duration::from_secs(5)));
        assert!(nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok());
        child.wait().unwrap();
        assert!(is_running(std::process::id() as i32));
    }

    #[test]
    fn a_zombie_leader_with_a_thread_still_exiting_is_running() {
        // The main thread ends (pthread_exit) while a second one sleeps on,
        // as QEMU's iothread still closes the VFIO group after its leader
        // is gone.
        let script = "import ctypes, threading, time\n\
                      threading.Thread(target=time.sleep, args=(3,)).start()\n\
                      ctypes.CDLL(None).pthread_exit(None)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let leader_is_zombie = || {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            status.lines().any(|l| l.starts_with("State:\tZ"))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !leader_is_zombie() {
            assert!(
                std::time::Instant::now() < deadline,
                "the leader never exited"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_running(pid), "a thread is still running");
        assert!(gone_within(Pid::from_raw(pid), Duration::from_secs(10)));
        child.wait().unwrap();
    }

    /// A python3 process that ignores SIGTERM and, once `go` exists, ends
    /// its main thread while a second one lives `linger` seconds more.
    fn stubborn(go: &Path, linger: u32) -> std::process::Child {
        let script = format!(
            "import ctypes, os, signal, threading, time\n\
             signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
             print('ready', flush=True)\n\
             while not os.path.exists({go:?}): time.sleep(0.01)\n\
             threading.Thread(target=time.sleep, args=({linger},)).start()\n\
             ctypes.CDLL(None).pthread_exit(None)\n",
            go = go.display().to_string()
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The handler is in place once it says so.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        child
    }

    #[test]
    fn a_qemu_that_ignores_sigterm_is_killed_and_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = stubborn(&tmp.path().join("never"), 0);
        let pid = Pid::from_raw(child.id() as i32);
        let sent = std::cell::RefCell::new(Vec::new());
        let end = Ending {
            signal: &|pid, sig| {
                sent.borrow_mut().push(sig);
                let _ = kill(pid, sig);
            },
            grace: Duration::from_millis(300),
            after_kill: Duration::from_secs(10),
        };
        assert!(end.terminate(pid));
        assert_eq!(*sent.borrow(), [Signal::SIGTERM, Signal::SIGKILL]);
        assert!(!is_running(pid.as_raw()));
        child.wait().unwrap();
    }

    #[test]
    fn a_slow_exit_is_waited_for_past_the_old_four_seconds() {
        // SIGKILL, as the kernel does, ends nothing at once here: the
        // leader exits when told and a thread lives on for 5 s, as QEMU's
        // last thread releasing a GPU. The signals are only recorded.
        let tmp = tempfile::tempdir().unwrap();
        let go = tmp.path().join("go");
        let mut child = stubborn(&go, 5);
        let pid = Pid::from_raw(child.id() as i32);
        let end = Ending {
            signal: &|_, sig| {
                if sig == Signal::SIGKILL {
                    fs::write(&go, "").unwrap();
                }
            },
            grace: Duration::from_millis(300),
            after_kill: Duration::from_secs(30),
        };
        let started = std::time::Instant::now();
        assert!(end.terminate(pid));
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(!is_running(pid.as_raw()));
        child.wait().unwrap();
    }

    #[test]
    fn a_qemu_still_there_after_the_wait_is_reported_not_passed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = stubborn(&tmp.path().join("never"), 0);
        let pid = Pid::from_raw(child.id() as i32);
        // A process SIGKILL does not end in time (stuck in the kernel):
        // here one that never gets it.
        let end = Ending {
            signal: &|pid, sig| {
                if sig == Signal::SIGTERM {
                    let _ = kill(pid, sig);
                }
            },
            grace: Duration::from_millis(100),
            after_kill: Duration::from_millis(300),
        };
        assert!(!end.terminate(pid));
        assert!(is_running(pid.as_raw()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_survivor_message_names_the_pid_the_wait_and_what_to_do() {
        let err = RunDirError::QemuSurvived {
            name: "t1".into(),
            pid: 42,
            waited: KILL_WAIT,
        };
        let text = err.to_string();
        assert!(text.contains("pid 42"), "{text}");
        assert!(text.contains("30s after SIGKILL"), "{text}");
        assert!(text.contains("vmrun restore t1"), "{text}");
    }

    #[test]
    fn the_supervisor_is_the_pidfiles_pid_holding_the_lock_whatever_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths_in(tmp.path());
        assert_eq!(supervisor_pid(&paths), None);
        // This test binary's name is not `vmrun`.
        let (dir, _) = RunDir::acquire("t1", &paths).unwrap();
        assert_eq!(supervisor_pid(&paths), Some(std::process::id() as i32));
        // A pidfile naming a live process that holds no lock is no
        // supervisor (a reused pid, a pidfile left behind).
        fs::write(supervisor_pid_path(&paths.run_dir), "1\n").unwrap();
        assert_eq!(supervisor_pid(&paths), None);
        fs::write(
            supervisor_pid_path(&paths.run_dir),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        drop(dir);
        assert_eq!(supervisor_pid(&paths), None, "the lock went with it");
    }

    #[test]
    fn proc_locks_lines_are_read_by_device_and_inode() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("lock");
        fs::write(&file, "").unwrap();
        let meta = fs::metadata(&file).unwrap();
        let id = format!(
            "{:02x}:{:02x}:{}",
            nix::sys::stat::major(meta.dev()),
            nix::sys::stat::minor(meta.dev()),
            meta.ino()
        );
        let locks = format!(
            "1: POSIX  ADVISORY  WRITE 7 {id} 0 EOF\n\
             2: FLOCK  ADVISORY  WRITE 42 {id} 0 EOF\n\
             2: -> FLOCK  ADVISORY  WRITE 43 {id} 0 EOF\n\
             3: FLOCK  ADVISORY  WRITE 44 00:01:1 0 EOF\n"
        );
        assert_eq!(flock_holders(&locks, &file), Some(vec![42]));
    }

    #[test]
    fn a_pid_of_another_program_is_not_taken_for_qemu() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("qemu.pid");
        fs::write(&pidfile, std::process::id().to_string()).unwrap();
        assert_eq!(live_qemu_of("t1", &pidfile), None);
    }
}
