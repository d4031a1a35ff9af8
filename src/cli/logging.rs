//! Log output: the terminal for a foreground run, and always the VM's log
//! file in its state dir (what `vmrun logs` shows). `VMRUN_LOG` takes
//! tracing's filter syntax (`debug`, `vmrun=debug,qemu=warn`).

use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

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
    let file = crate::supervisor::vmfiles::open_private_log(log).ok();
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
