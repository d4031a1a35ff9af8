//! By-hand entry to the lab: run one guest script on one topology.
//!
//! `cargo run -p vmrun-lab -- --topology gpu [--firmware uefi] --script FILE`
//! prints result.json on stdout; the scratch folder with the serial log is
//! kept and named on stderr.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vmrun_lab::{target_dir, Firmware, Init, Lab, LabError, Scenario, Topology};

const USAGE: &str = "\
usage: vmrun-lab --script FILE [--topology gpu|gpu4|dual|usb] [--firmware bios|uefi]
                 [--init busybox|systemd] [--vmrun BIN] [--timeout SECONDS] [--quiet]
       vmrun-lab --prepare

Boots the lab guest (QEMU TCG, emulated IOMMU and GPU), runs FILE (a busybox sh
script) as root inside it and prints the JSON it recorded; with --init systemd
the host root's systemd boots as PID 1 (with an Xorg desktop) and runs it. The guest's serial
console is echoed to stderr unless --quiet. --vmrun defaults to
target/debug/vmrun when it exists. --prepare only fetches and builds the
cached guest kernel and initramfs. See tests/lab/README.md.";

struct Args {
    /// None: --prepare.
    scenario: Option<Scenario>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut script = None;
    let mut topology = Topology::default();
    let mut firmware = Firmware::default();
    let mut init = Init::default();
    let mut vmrun = None;
    let mut timeout = None;
    let mut quiet = false;
    let mut prepare = false;
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--script" => script = Some(PathBuf::from(value("--script")?)),
            "--topology" => topology = value("--topology")?.parse().map_err(|e| format!("{e}"))?,
            "--firmware" => firmware = value("--firmware")?.parse().map_err(|e| format!("{e}"))?,
            "--init" => init = value("--init")?.parse().map_err(|e| format!("{e}"))?,
            "--vmrun" => vmrun = Some(PathBuf::from(value("--vmrun")?)),
            "--timeout" => {
                let secs: u64 = value("--timeout")?
                    .parse()
                    .map_err(|_| "--timeout takes seconds")?;
                timeout = Some(Duration::from_secs(secs));
            }
            "--quiet" => quiet = true,
            "--prepare" => prepare = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if prepare {
        return Ok(Args { scenario: None });
    }
    let script = script.ok_or("--script is required")?;
    let vmrun = vmrun.or_else(|| Some(target_dir().join("debug/vmrun")).filter(|p| p.is_file()));
    let mut scenario = Scenario::new(script)
        .topology(topology)
        .firmware(firmware)
        .init(init)
        .keep_scratch(true)
        .echo_serial(!quiet);
    if let Some(vmrun) = vmrun {
        scenario = scenario.vmrun(vmrun);
    }
    if let Some(timeout) = timeout {
        scenario = scenario.timeout(timeout);
    }
    Ok(Args {
        scenario: Some(scenario),
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("vmrun-lab: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmrun-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), LabError> {
    let lab = Lab::new()?;
    eprintln!(
        "vmrun-lab: guest kernel {} ready in {:.1} s",
        lab.image().version,
        lab.prepare_time().as_secs_f64()
    );
    let Some(scenario) = &args.scenario else {
        println!("kernel: {}", lab.image().kernel.display());
        println!("initramfs: {}", lab.image().initramfs.display());
        println!("modules: {}", lab.image().modules.display());
        return Ok(());
    };
    let run = lab.run(scenario)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&run.results).unwrap_or_default()
    );
    eprintln!(
        "vmrun-lab: guest ran {:.1} s; serial log: {}",
        run.duration.as_secs_f64(),
        run.scratch.join("serial.log").display()
    );
    if !run.scenario_output.trim().is_empty() {
        eprintln!(
            "vmrun-lab: scenario output: {}",
            run.scratch.join("scenario.out").display()
        );
    }
    Ok(())
}
