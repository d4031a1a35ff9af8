//! vmrun against bare QEMU driven over QMP, paired in one run on the same
//! headless VM (SeaBIOS, 128M, TCG, spawned with -S then `cont`):
//!
//! (a) start: bare QEMU spawned, QMP connected, `qmp_capabilities`, `cont`
//!     answered, vs `vmrun start --detach` until it returns (the guest runs);
//! (b) hard stop: QMP `quit` until QEMU has exited, vs `vmrun stop --force`
//!     until it returns (QEMU gone, supervisor gone, run dir removed);
//! (c) the detached supervisor's VmRSS while the VM runs.
//!
//! Not a test: it prints figures (median, p90) for BENCHMARKS.md.
//! `cargo bench --bench start_stop` (release profile); `BENCH_RUNS=N`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::Builder::new()
        .prefix("vmrun-bench-")
        .tempdir()
        .unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("vms")).unwrap();
    std::fs::write(
        home.join("vms/bench.toml"),
        "memory = \"128M\"\n[firmware]\ntype = \"bios\"\n[network]\nmode = \"none\"\n\
         [display]\nmode = \"serial\"\n[shutdown]\ntimeout = \"5s\"\n\
         [qemu]\naccel = \"tcg\"\nuser = \"root\"\n",
    )
    .unwrap();
    let env = Env {
        home,
        run: tmp.path().join("run"),
        state: tmp.path().join("state"),
    };
    let run_dir = env.run.join("bench");
    let qmp_socket = run_dir.join("qmp.sock");
    // The very command line vmrun runs, from its own dry run.
    let argv = env.dry_run_argv();
    // The console log lives in the state dir, which vmrun makes.
    std::fs::create_dir_all(env.state.join("bench")).unwrap();

    // Warm-up: page cache, QEMU's probe cache, firmware.
    for _ in 0..2 {
        bare_start(&argv, &run_dir, &qmp_socket).quit();
        env.vmrun(&["start", "bench", "--detach"]);
        env.vmrun(&["stop", "bench", "--force"]);
    }

    let (mut bare_up, mut vmrun_up) = (Vec::new(), Vec::new());
    let (mut bare_down, mut vmrun_down) = (Vec::new(), Vec::new());
    let mut rss_kib = Vec::new();
    for i in 0..runs {
        // Alternate the order so drift on a shared machine hits both alike.
        let bare_first = i % 2 == 0;
        for side in [bare_first, !bare_first] {
            if side {
                let began = Instant::now();
                let qemu = bare_start(&argv, &run_dir, &qmp_socket);
                bare_up.push(began.elapsed());
                let began = Instant::now();
                qemu.quit();
                bare_down.push(began.elapsed());
            } else {
                let began = Instant::now();
                env.vmrun(&["start", "bench", "--detach"]);
                vmrun_up.push(began.elapsed());
                let pid = std::fs::read_to_string(run_dir.join("supervisor.pid")).unwrap();
                rss_kib.push(vm_rss_kib(pid.trim()));
                let began = Instant::now();
                env.vmrun(&["stop", "bench", "--force"]);
                vmrun_down.push(began.elapsed());
            }
        }
    }

    println!("runs: {runs} of each, paired and alternated");
    ratio_row("(a) start -> running", &mut bare_up, &mut vmrun_up);
    ratio_row("(b) hard stop", &mut bare_down, &mut vmrun_down);
    rss_kib.sort_unstable();
    println!(
        "(c) supervisor VmRSS: median {:.1} MiB, p90 {:.1} MiB, max {:.1} MiB",
        pick(&rss_kib, 0.5) as f64 / 1024.0,
        pick(&rss_kib, 0.9) as f64 / 1024.0,
        *rss_kib.last().unwrap() as f64 / 1024.0
    );
}

struct Env {
    home: PathBuf,
    run: PathBuf,
    state: PathBuf,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
        cmd.args(args)
            .env("VMRUN_HOME", &self.home)
            .env("VMRUN_RUN_DIR", &self.run)
            .env("VMRUN_STATE_DIR", &self.state)
            .stdin(Stdio::null());
        cmd
    }

    fn vmrun(&self, args: &[&str]) {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "vmrun {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn dry_run_argv(&self) -> Vec<String> {
        let out = self
            .command(&["start", "bench", "--dry-run", "--json"])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }
}

/// A QEMU driven over QMP by hand, the way a script without vmrun would.
struct Bare {
    child: std::process::Child,
    qmp: BufReader<UnixStream>,
    run_dir: PathBuf,
}

fn bare_start(argv: &[String], run_dir: &Path, qmp_socket: &Path) -> Bare {
    std::fs::create_dir_all(run_dir).unwrap();
    let child = Command::new(&argv[0])
        .arg("-S")
        .args(&argv[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Same policy as vmrun's connect: retry every 1 ms until QEMU listens.
    let stream = loop {
        match UnixStream::connect(qmp_socket) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let mut bare = Bare {
        child,
        qmp: BufReader::new(stream),
        run_dir: run_dir.to_path_buf(),
    };
    bare.line(); // greeting
    bare.execute("qmp_capabilities");
    bare.execute("cont");
    bare
}

impl Bare {
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.qmp.read_line(&mut line).unwrap();
        line
    }

    /// Sends `command` and reads up to its reply, skipping events.
    fn execute(&mut self, command: &str) {
        writeln!(self.qmp.get_mut(), "{{\"execute\": \"{command}\"}}").unwrap();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "QMP closed during {command}");
            if line.contains("\"return\"") {
                return;
            }
            assert!(!line.contains("\"error\""), "{command}: {line}");
        }
    }

    fn quit(mut self) {
        self.execute("quit");
        self.child.wait().unwrap();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn vm_rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn pick<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio_row(what: &str, bare: &mut [Duration], vmrun: &mut [Duration]) {
    bare.sort_unstable();
    vmrun.sort_unstable();
    let (b50, b90) = (pick(bare, 0.5), pick(bare, 0.9));
    let (v50, v90) = (pick(vmrun, 0.5), pick(vmrun, 0.9));
    println!(
        "{what}: bare QEMU+QMP median {:.1} ms, p90 {:.1} ms | vmrun median {:.1} ms, p90 {:.1} ms | ratio of medians {:.2}x",
        ms(b50),
        ms(b90),
        ms(v50),
        ms(v90),
        ms(v50) / ms(b50)
    );
}
