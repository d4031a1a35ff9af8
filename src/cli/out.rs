//! Standard output of every verb. Rust ignores SIGPIPE, so a reader that
//! went away (`vmrun qmp NAME query-version | head -1`) shows up as EPIPE on
//! the next write, and `println!` panics on it. Here a closed stdout ends
//! the output quietly, as in ripgrep: nothing more is written, no message,
//! and `run` exits 0. The verb itself still runs to its end, so a host
//! change is never cut off half-way by a closed pipe.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout failed; later output is dropped.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to stdout and flushes it. False when stdout is closed (or
/// failed otherwise, which is said once on stderr): a loop that only
/// produces output can stop.
pub(crate) fn write(args: std::fmt::Arguments<'_>) -> bool {
    emit(|out| out.write_fmt(args))
}

/// Writes raw bytes (a log, a man page), as `write`.
pub(crate) fn write_bytes(bytes: &[u8]) -> bool {
    emit(|out| out.write_all(bytes))
}

fn emit(write: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) -> bool {
    if CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            CLOSED.store(true, Ordering::Relaxed);
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("vmrun: cannot write to standard output: {e}");
            }
            false
        }
    }
}

/// Whether a write to stdout failed.
pub(crate) fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `print!` that never panics: see the module's doc.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}

/// `println!` that never panics: see the module's doc.
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
