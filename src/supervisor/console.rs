//! The serial console on the terminal of a foreground run.

use std::time::{Duration, Instant};

use super::QMP_CONNECT_TIMEOUT;

/// Shows the serial console on the terminal in the foreground (`display =
/// "serial"`), from the first byte: connects as soon as QEMU listens.
pub(super) async fn console_to_terminal(socket: std::path::PathBuf) {
    let deadline = Instant::now() + QMP_CONNECT_TIMEOUT;
    let stream = loop {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => return,
        }
    };
    let (mut read, _write) = stream.into_split();
    let _ = tokio::io::copy(&mut read, &mut tokio::io::stdout()).await;
}
