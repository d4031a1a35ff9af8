//! The edge: parses the command line, runs the stages, prints errors once
//! and turns the outcome into an exit status.
// `print!` panics when stdout is a closed pipe; stdout goes through `out!`.
#![deny(clippy::print_stdout)]

mod args;
mod check;
mod console;
mod devices;
mod dry_run;
mod hide_gpu;
mod host_setup;
mod init;
mod input;
mod logging;
mod out;
mod programs;
mod restore;
mod rom;
mod shell;
mod start;
mod target;
mod usb;
mod vm_ops;

use std::ffi::OsString;

use clap::CommandFactory;
use out::{out, outln};

pub(crate) use crate::exit::Exit;
pub(crate) use args::{Cli, Command, StartArgs, StopArgs};

/// Runs vmrun with `args` (including argv[0]) and returns the exit status.
pub(crate) fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let code = run_verb(args);
    // A reader that closed stdout wanted no more (`| head -1`): that is
    // not a failure. A host left changed still says so.
    if out::closed() && code != Exit::RestoreIncomplete.code() {
        return Exit::Ok.code();
    }
    code
}

fn run_verb(args: impl IntoIterator<Item = OsString>) -> i32 {
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
        Command::Start(args) => start::start(&args).code(),
        Command::Stop(args) => with_logs(|| vm_ops::stop(&args)),
        Command::Status { vm, json } => with_logs(|| vm_ops::status(&vm, json)),
        Command::List { json } => with_logs(|| vm_ops::list(json)),
        Command::Qmp {
            vm,
            command,
            arguments,
        } => with_logs(|| vm_ops::qmp(&vm, &command, arguments.as_deref())),
        Command::Devices { json, all } => devices::devices(json, all).code(),
        Command::Input(args) => with_logs(|| input::input(&args)),
        Command::Usb(args) => with_logs(|| usb::usb(&args)),
        Command::Restore { vm, all } => with_logs(|| restore::restore(vm.as_deref(), all)),
        Command::Console { vm } => with_logs(|| console::console(&vm)),
        Command::Logs {
            vm,
            console,
            follow,
        } => with_logs(|| vm_ops::logs(&vm, console, follow)),
        Command::Check { vm, json } => check::check(vm.as_deref(), json),
        Command::Init(args) => init::init(&args).code(),
        Command::Host { command } => host_setup::host(command).code(),
        Command::Rom {
            command:
                args::RomCommand::Dump {
                    address,
                    output,
                    patch,
                },
        } => rom::dump(address, output.as_deref(), patch).code(),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let shell = match shell {
                args::Shell::Bash => clap_complete::Shell::Bash,
                args::Shell::Zsh => clap_complete::Shell::Zsh,
                args::Shell::Fish => clap_complete::Shell::Fish,
            };
            // Into a buffer: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "vmrun", &mut script);
            out::write_bytes(&script);
            Exit::Ok.code()
        }
        Command::ExecAs { ids, program } => {
            let Some((program, args)) = program.split_first() else {
                return Exit::Usage.code();
            };
            let error = crate::qemu::exec_as::exec_as(&ids, program, args);
            // QEMU's stderr: the supervisor logs it.
            eprintln!("vmrun {}: {error}", crate::qemu::exec_as::VERB);
            127
        }
        Command::OpenAs {
            ids,
            writable,
            path,
        } => crate::qemu::open_as::hold_open(&ids, writable, &path),
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => {
                    out::write_bytes(&out);
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

/// Finds and validates a VM's config, and as root refuses the programs it
/// names that another user could change; every error is printed here
/// (exit 2).
fn load_vm(name_or_path: &str) -> Result<crate::config::VmConfig, Exit> {
    use crate::config;
    let search = config::SearchEnv::from_process();
    let vm = config::locate(name_or_path, &search)
        .and_then(|path| config::load(&path))
        .map_err(|e| {
            eprint!("{}", config::render(&e));
            Exit::Usage
        })?;
    programs::check(&vm)?;
    Ok(vm)
}

/// Where this process keeps VMs' run and state dirs; a user without a
/// private runtime dir is refused here (exit 2).
fn process_dirs() -> Result<crate::plan::DirsEnv, Exit> {
    crate::plan::DirsEnv::from_process().map_err(|e| {
        eprintln!("vmrun: {e}");
        Exit::Usage
    })
}

/// Prints a device listing as JSON or as `render` makes it; exit 0 unless
/// it cannot be encoded.
fn print_listing<T: serde::Serialize>(
    value: &T,
    json: bool,
    render: impl Fn(&T) -> String,
) -> Exit {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => {
                outln!("{text}");
            }
            Err(e) => {
                eprintln!("vmrun: could not encode the device list: {e}");
                return Exit::HostProblems;
            }
        }
    } else {
        out!("{}", render(value));
    }
    Exit::Ok
}

fn with_logs(verb: impl FnOnce() -> Exit) -> i32 {
    logging::init_terminal();
    verb().code()
}
