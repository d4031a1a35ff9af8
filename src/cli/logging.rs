//! Log output: the terminal for a foreground run, and always the VM's log
//! file in its state dir (what `vmrun logs` shows). `VMRUN_LOG` takes
//! tracing's filter syntax (`debug`, `vmrun=debug,qemu=warn`).
//!
//! The log file holds what QEMU and the guest cause (QEMU's stderr, QMP
//! events), each rate-limited at its source; the file itself is capped at
//! `VMRUN_LOG_CAP`, rotated to `vmrun.log.1` (see `supervisor::logcap`).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::supervisor::logcap;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("VMRUN_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Terminal only (commands that don't run a VM).
pub(super) fn init_terminal() {
    let _ = fmt()
        .with_env_filter(filter())
        .with_target(false)
        .without_time()
        .with_writer(std::io::stderr)
        .try_init();
}

/// The VM's log file, plus the terminal when `terminal` (a foreground run).
pub(super) fn init_vm(log: &Path, terminal: bool) {
    let file = crate::supervisor::vmfiles::open_private_log(log)
        .ok()
        .map(|file| CappedLog {
            file,
            path: log.to_owned(),
        });
    let file_layer = file.map(|f| {
        fmt::layer()
            .with_ansi(false)
            .with_span_events(FmtSpan::NONE)
            .with_writer(Mutex::new(f))
            .with_filter(filter())
    });
    let term_layer = terminal.then(|| {
        fmt::layer()
            .with_target(false)
            .without_time()
            .with_writer(std::io::stderr)
            .with_filter(filter())
    });
    let _ = tracing_subscriber::registry()
        .with(file_layer)
        .with(term_layer)
        .try_init();
}

/// The VM's log file, rotated once it passes `VMRUN_LOG_CAP`. Checked
/// after each write (one fstat): tracing writes each event in one call.
struct CappedLog {
    file: File,
    path: PathBuf,
}

impl Write for CappedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if self
            .file
            .metadata()
            .is_ok_and(|m| m.len() > logcap::VMRUN_LOG_CAP)
        {
            // Nowhere to report a failure but this very log; the next
            // write tries again.
            let _ = logcap::rotate_if_over(&self.path, logcap::VMRUN_LOG_CAP);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_log_is_rotated_once_past_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmrun.log");
        let mut log = CappedLog {
            file: crate::supervisor::vmfiles::open_private_log(&path).unwrap(),
            path: path.clone(),
        };
        let line = [b'q'; 64 * 1024];
        for _ in 0..(logcap::VMRUN_LOG_CAP / line.len() as u64) {
            log.write_all(&line).unwrap();
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            logcap::VMRUN_LOG_CAP
        );
        log.write_all(b"one more\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        log.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after\n");
        let old = logcap::rotated_path(&path);
        assert_eq!(
            std::fs::metadata(old).unwrap().len(),
            logcap::VMRUN_LOG_CAP + 9
        );
    }
}
