//! The edge: parses the command line, runs the stages, prints errors once
//! and turns the outcome into an exit status.

mod args;
mod dry_run;
pub mod exit;
mod shell;

use std::ffi::OsString;
use std::io::Write;

use clap::CommandFactory;

pub use args::{Cli, Command, StartArgs};
pub use exit::Exit;

use crate::config;
use crate::host::HostRoot;
use crate::plan::{self, DirsEnv, PlanContext};

/// Runs vmrun with `args` (including argv[0]) and returns the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match args::parse(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.code()
            } else {
                Exit::Ok.code()
            };
        }
    };
    match cli.command {
        Command::Start(start) => self::start(&start).code(),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let shell = match shell {
                args::Shell::Bash => clap_complete::Shell::Bash,
                args::Shell::Zsh => clap_complete::Shell::Zsh,
                args::Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "vmrun", &mut std::io::stdout());
            Exit::Ok.code()
        }
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => {
                    let _ = std::io::stdout().write_all(&out);
                    Exit::Ok.code()
                }
                Err(e) => {
                    eprintln!("vmrun: could not render the man page: {e}");
                    Exit::Usage.code()
                }
            }
        }
    }
}

fn start(args: &StartArgs) -> Exit {
    let search = config::SearchEnv::from_process();
    let vm = match config::locate(&args.vm, &search).and_then(|path| config::load(&path)) {
        Ok(vm) => vm,
        Err(e) => {
            eprint!("{}", config::render(&e));
            return Exit::Usage;
        }
    };
    let ctx = PlanContext {
        root: HostRoot::from_env(),
        dirs: DirsEnv::from_process(),
        qemu_version: args.qemu_version,
    };
    let plan = plan::plan(vm, &ctx);
    let argv = crate::qemu::build_argv(&plan);
    if args.dry_run {
        let text = if args.json {
            dry_run::render_json(&plan, &argv)
        } else {
            dry_run::render_text(&plan, &argv)
        };
        print!("{text}");
        return if plan.has_errors() {
            Exit::HostProblems
        } else {
            Exit::Ok
        };
    }
    eprintln!("vmrun: starting VMs is not built yet; use --dry-run");
    Exit::Usage
}
