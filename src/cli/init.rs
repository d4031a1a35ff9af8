//! `vmrun init NAME`: writes the config `setup::init` makes for this host
//! into the first config directory, never over an existing file.

use super::out::outln;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use super::args::{InitArgs, TemplateArg};
use crate::config::{self, VmName};
use crate::exit::Exit;
use crate::host::HostRoot;
use crate::setup::init::{self, GpuChoice, Template};

/// `$VMRUN_HOME/vms`, else `~/.config/vmrun/vms`: where `vmrun NAME` looks first.
pub(super) fn config_dir() -> PathBuf {
    config::SearchEnv::from_process()
        .dirs()
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from("vms"))
}

pub(super) fn init(args: &InitArgs) -> Exit {
    let name: VmName = match args.name.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::Usage;
        }
    };
    let template = match args.template {
        TemplateArg::Windows => Template::Windows,
        TemplateArg::Linux => Template::Linux,
        TemplateArg::Headless => Template::Headless,
    };
    let gpu = match args.gpu.as_deref() {
        None if template == Template::Headless => GpuChoice::None,
        None | Some("auto") => GpuChoice::Auto,
        Some("none") => GpuChoice::None,
        Some(addr) => match addr.parse() {
            Ok(a) => GpuChoice::Address(a),
            Err(e) => {
                eprintln!("vmrun: --gpu {addr}: {e} (or `auto`, `none`)");
                return Exit::Usage;
            }
        },
    };
    let search = config::SearchEnv::from_process();
    if let Ok(existing) = config::locate(name.as_str(), &search) {
        eprintln!(
            "vmrun: {name} already exists at {}: not overwritten (edit it, or pick another name)",
            existing.display()
        );
        return Exit::Usage;
    }
    let text = match init::generate(&HostRoot::from_env(), &name, template, gpu) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::HostProblems;
        }
    };
    let dir = config_dir();
    let path = dir.join(format!("{name}.toml"));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        // create_new: a file that appeared since the search is not replaced.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(text.as_bytes())
    });
    if let Err(e) = written {
        eprintln!("vmrun: writing {}: {e}", path.display());
        return Exit::HostProblems;
    }
    outln!("wrote {}", path.display());
    outln!(
        "next: `vmrun check {name}`, create the disk it names, then `vmrun start {name} --dry-run`"
    );
    Exit::Ok
}
