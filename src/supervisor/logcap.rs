//! Size caps for the VM's logs that grow from what others write: the guest
//! (its serial console, which QEMU appends to `console.log`) and QEMU (its
//! stderr, in `vmrun.log`). Past its cap a log is copied to `NAME.1` and
//! truncated to 0 in place: the writers keep their file descriptors, and
//! because they write with O_APPEND (QEMU's chardev `logappend=on` opens
//! its `logfile` O_WRONLY|O_APPEND, chardev/char.c; ours are opened
//! `append`), each write lands at the new end, with no hole before it.
//!
//! The bound: a log holds at most its cap plus what is written in one
//! check interval, and `NAME.1` as much again. Bytes written between the
//! copy and the truncate are lost; a rotation is rare, so that is a few
//! bytes per cap's worth of output.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `console.log` past this is rotated. The guest's serial port writes
/// about 0.5 MB/s under TCG (one write(2) per byte in QEMU's 16550), so
/// the bound is 2 x (16 MiB + what one check interval lets through).
pub(crate) const CONSOLE_LOG_CAP: u64 = 16 << 20;
/// `vmrun.log` past this is rotated, checked at each write.
pub(crate) const VMRUN_LOG_CAP: u64 = 16 << 20;
/// How often the supervisor looks at `console.log`'s size.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Where a log's previous contents go: `console.log` -> `console.log.1`.
pub(crate) fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Whether `path` was over `cap` bytes and so was rotated: copied to
/// `PATH.1` (replacing what was there) and truncated to 0. Works on the
/// file by its path, whoever holds it open and however they opened it.
///
/// `PATH.1` is written under a fresh name made with O_EXCL, then renamed
/// over: a link planted at either name is replaced, never written through.
/// The log itself is opened O_NOFOLLOW and must be a regular file with one
/// link, or it is left alone.
pub(crate) fn rotate_if_over(path: &Path, cap: u64) -> io::Result<bool> {
    if fs::symlink_metadata(path)?.len() <= cap {
        return Ok(false);
    }
    let log = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = log.metadata()?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(io::Error::other(format!(
            "{} is not a plain file with a single link; not rotated",
            path.display()
        )));
    }
    if meta.len() <= cap {
        return Ok(false);
    }
    // A failed copy (disk full...) still truncates: the cap on the disk
    // used matters more than the old contents.
    let copied = copy_aside(&log, path);
    log.set_len(0)?;
    copied.map(|()| true)
}

fn copy_aside(mut log: &File, path: &Path) -> io::Result<()> {
    let old = rotated_path(path);
    let mut tmp_name = old.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut copy = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    // The umask may have taken bits away, never added any; 0600 either way.
    copy.set_permissions(fs::Permissions::from_mode(0o600))?;
    let copied = io::copy(&mut log, &mut copy).and_then(|_| fs::rename(&tmp, &old));
    if copied.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    copied
}

/// Rotates `console.log` at `path` whenever it passes `CONSOLE_LOG_CAP`,
/// until the task is aborted.
pub(super) async fn watch_console_log(path: PathBuf) {
    watch(path, CONSOLE_LOG_CAP).await;
}

/// The size is one stat(2) on the loop's thread; the copy runs on tokio's
/// blocking pool, as up to a cap's worth of I/O must not hold up the loop.
/// Only then: a pool thread lingers for a while after each use, and the
/// supervisor otherwise stays one thread.
async fn watch(path: PathBuf, cap: u64) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tick.tick().await;
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.len() > cap) {
            continue;
        }
        let p = path.clone();
        match tokio::task::spawn_blocking(move || rotate_if_over(&p, cap)).await {
            Ok(Ok(true)) => tracing::info!(
                "{} passed {cap} bytes: its contents moved to {}",
                path.display(),
                rotated_path(&path).display()
            ),
            Ok(Ok(false)) => {}
            // Missing: nothing to cap.
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Ok(Err(e)) => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!("capping {}: {e}", path.display());
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn appender(path: &Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn a_log_under_its_cap_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        fs::write(&log, b"0123456789").unwrap();
        assert!(!rotate_if_over(&log, 10).unwrap());
        assert_eq!(fs::read(&log).unwrap(), b"0123456789");
        assert!(!rotated_path(&log).exists());
    }

    #[test]
    fn a_log_past_its_cap_moves_to_dot_1_and_the_writer_goes_on_at_0() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        // Held open with O_APPEND, as QEMU holds its chardev's logfile.
        let mut writer = appender(&log);
        writer.write_all(b"old output, over the cap\n").unwrap();
        assert!(rotate_if_over(&log, 10).unwrap());
        writer.write_all(b"new\n").unwrap();
        // No hole: the next write went to offset 0 of the same file.
        assert_eq!(fs::read(&log).unwrap(), b"new\n");
        let old = rotated_path(&log);
        assert_eq!(fs::read(&old).unwrap(), b"old output, over the cap\n");
        assert_eq!(fs::metadata(&old).unwrap().mode() & 0o777, 0o600);
        // A second rotation replaces console.log.1: two files, never more.
        writer.write_all(b"more output, over it again\n").unwrap();
        assert!(rotate_if_over(&log, 10).unwrap());
        assert_eq!(
            fs::read(&old).unwrap(),
            b"new\nmore output, over it again\n"
        );
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_link_planted_at_dot_1_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, rotated_path(&log)).unwrap();
        fs::hard_link(&victim, dir.path().join("console.log.1.tmp")).unwrap();
        fs::write(&log, b"guest output past the cap").unwrap();
        assert!(rotate_if_over(&log, 4).unwrap());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let old = rotated_path(&log);
        assert!(!fs::symlink_metadata(&old).unwrap().is_symlink());
        assert_eq!(fs::read(&old).unwrap(), b"guest output past the cap");
    }

    #[test]
    fn a_log_that_is_a_link_is_not_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious and long").unwrap();
        let symlinked = dir.path().join("console.log");
        std::os::unix::fs::symlink(&victim, &symlinked).unwrap();
        assert!(rotate_if_over(&symlinked, 1).is_err());
        let hardlinked = dir.path().join("vmrun.log");
        fs::hard_link(&victim, &hardlinked).unwrap();
        assert!(rotate_if_over(&hardlinked, 1).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious and long");
    }

    #[tokio::test]
    async fn the_watcher_rotates_a_log_once_it_passes_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let mut writer = appender(&log);
        let watcher = tokio::spawn(watch(log.clone(), 1000));
        writer.write_all(&[b'a'; 1000]).unwrap();
        tokio::time::sleep(CHECK_EVERY * 2).await;
        assert_eq!(fs::metadata(&log).unwrap().len(), 1000, "at the cap");
        writer.write_all(b"!").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fs::metadata(&log).unwrap().len() != 0 {
            assert!(std::time::Instant::now() < deadline, "never rotated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fs::metadata(rotated_path(&log)).unwrap().len(), 1001);
        watcher.abort();
    }
}
