//! Times vmrun's own VFIO code on a real kernel: bind + verify of some PCI
//! functions (`prepare::change::vfio::bind`, journaled as in a start) and restore +
//! verify (`teardown::replay` of that journal, as after a VM). Not a test:
//! the lab's `vfio_bench.sh` scenario runs it next to the same sysfs writes
//! done by a bare shell loop (BENCHMARKS.md, "VFIO bind/restore in the lab").
//!
//! usage: vfio_bench ITERATIONS ADDRESS...   (as root; changes the host!)
//! Prints one JSON object: {"n", "bind_ms": [...], "restore_ms": [...]}.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::time::Instant;

use vmrun::config::PciAddress;
use vmrun::host::HostRoot;
use vmrun::prepare::change::vfio;
use vmrun::prepare::journal::Journal;
use vmrun::prepare::kernel::RealKernel;
use vmrun::prepare::Host;
use vmrun::teardown;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("usage: vfio_bench ITERATIONS ADDRESS...");
    let addresses: Vec<PciAddress> = args
        .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
        .collect();
    let root = HostRoot::new("/");
    let kernel = RealKernel::default();
    let host = Host::new(&root, &kernel);
    vfio::ensure_vfio_module(&host).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("vfio-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch dir in $TMPDIR");
    let path = dir.join("journal");

    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let (mut bind_ms, mut restore_ms) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let mut journal = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        for &a in &addresses {
            vfio::bind(&host, &mut journal, a, false).unwrap_or_else(|e| panic!("{e}"));
        }
        drop(journal);
        bind_ms.push(ms(t));

        let t = Instant::now();
        let report = teardown::replay(&path, &host);
        restore_ms.push(ms(t));
        assert!(report.complete(), "restore failed: {report:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{{\"n\": {n}, \"bind_ms\": [{}], \"restore_ms\": [{}]}}",
        list(&bind_ms),
        list(&restore_ms)
    );
}
