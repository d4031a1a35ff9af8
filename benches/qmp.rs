//! QMP latency against real QEMU 7.2 (TCG, `-S`, no guest). Prints figures;
//! no harness. Run: `cargo bench --bench qmp` (or `cargo test --bench qmp
//! --profile dev` for unoptimised numbers).
//!
//! - cold: spawn QEMU -> `connect_with_retry` + negotiate -> first `query-status`
//! - warm: connect + greeting + `qmp_capabilities` + `query-status` on a
//!   running QEMU (a new session each time, as `vmrun qmp` would do)
//! - rtt: one `query-status` round trip on an open session
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmrun::qmp::{self, QmpClient};

const COLD_RUNS: usize = 10;
const WARM_RUNS: usize = 200;
const RTT_RUNS: usize = 2000;

fn spawn_qemu(sock: &std::path::Path) -> Child {
    Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-accel", "tcg", "-S", "-nodefaults"])
        .args(["-display", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)")
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "{what:<42} n={:<5} min={:>9.1?} median={:>9.1?} p95={:>9.1?} max={:>9.1?}",
        samples.len(),
        samples[0],
        pct(0.5),
        pct(0.95),
        samples[samples.len() - 1]
    );
}

async fn bench() {
    let dir = tempfile::tempdir().expect("tempdir");

    let mut cold = Vec::new();
    for i in 0..COLD_RUNS {
        let sock = dir.path().join(format!("cold{i}.sock"));
        let t = Instant::now();
        let mut child = spawn_qemu(&sock);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (qmp, _ev) = qmp::connect_with_retry(&sock, deadline)
            .await
            .expect("connect");
        qmp.query_status().await.expect("query-status");
        cold.push(t.elapsed());
        qmp.quit().await.expect("quit");
        child.wait().expect("wait");
    }
    report("cold: spawn -> negotiated -> query-status", cold);

    let sock = dir.path().join("warm.sock");
    let mut child = spawn_qemu(&sock);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    drop(
        qmp::connect_with_retry(&sock, deadline)
            .await
            .expect("first"),
    );

    let mut warm = Vec::new();
    for _ in 0..WARM_RUNS {
        let t = Instant::now();
        let (qmp, _ev) = QmpClient::connect(&sock).await.expect("connect");
        qmp.query_status().await.expect("query-status");
        warm.push(t.elapsed());
    }
    report("warm: connect+negotiate+query-status", warm);

    let (qmp, _ev) = QmpClient::connect(&sock).await.expect("connect");
    let mut rtt = Vec::new();
    for _ in 0..RTT_RUNS {
        let t = Instant::now();
        qmp.query_status().await.expect("query-status");
        rtt.push(t.elapsed());
    }
    report("rtt: query-status on an open session", rtt);

    qmp.quit().await.expect("quit");
    child.wait().expect("wait");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --bench` passes nothing
    // special. Either way run once.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
}
