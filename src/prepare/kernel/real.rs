//! Running a host command for takeover (`systemctl`, `modprobe -r`, a
//! display manager's own start/stop commands): no shell, bounded in time,
//! output kept for the error message.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::sysfs::Ran;

/// Runs `argv` until it exits or `timeout` passes (then it is killed).
/// Output goes to an unlinked file, not a pipe: a start command that
/// leaves a daemon behind keeps a pipe open forever, but exits.
pub fn run(argv: &[String], timeout: Duration) -> io::Result<Ran> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    let mut out = scratch_file()?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut text = String::new();
    out.rewind()?;
    let _ = out.take(4096).read_to_string(&mut text);
    match status {
        Some(s) => Ok(Ran {
            success: s.success(),
            output: text.trim().to_string(),
        }),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("`{}` did not finish within {timeout:?}", argv.join(" ")),
        )),
    }
}

/// A file nobody else can open: created in the temp dir and unlinked.
fn scratch_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    for n in 0..100u32 {
        let path = dir.join(format!(".vmrun-cmd-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&path);
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no scratch file for command output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn output_and_status_are_kept() {
        let r = run(
            &argv(&["sh", "-c", "echo hi; echo err >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!r.success);
        assert_eq!(r.output, "hi\nerr");
    }

    #[test]
    fn a_daemon_left_behind_does_not_block() {
        let start = Instant::now();
        let r = run(
            &argv(&["sh", "-c", "sleep 3 & echo started"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(r.success && r.output == "started");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_command_past_its_timeout_is_killed() {
        let err = run(&argv(&["sleep", "5"]), Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
