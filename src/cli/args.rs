//! The command line, as clap sees it. `vmrun NAME` is `vmrun start NAME`.

use std::ffi::OsString;

use clap::{Parser, Subcommand, ValueEnum};

use crate::host::qemu::QemuVersion;
use crate::qemu::exec_as::UserIds;

#[derive(Debug, Parser)]
#[command(
    name = "vmrun",
    version,
    about = "Run QEMU VMs with VFIO GPU passthrough, without libvirt",
    long_about = "Run QEMU VMs with VFIO GPU passthrough, without libvirt.\n\n\
        A VM is one TOML file (vms/NAME.toml). `vmrun NAME` reads it, checks it against this host, \
        binds its PCI devices to vfio-pci, runs QEMU and gives everything back when QEMU exits.",
    after_help = "Exit status: 0 ok; 1 host problems found, nothing changed; 2 bad config or usage, \
        nothing changed; 3 the VM failed, host restored; 4 host not fully restored (run `vmrun restore NAME`); \
        5 the guest ignored the ACPI powerdown and was stopped by force, host restored. \
        `vmrun check`: 0 all passed, 1 warnings, 2 failures."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start a VM (also: `vmrun NAME`).
    Start(StartArgs),
    /// Shut a running VM down: ACPI powerdown, then quit, then signals.
    Stop(StopArgs),
    /// Show whether a VM runs, and how (exit 0 running, 1 not running).
    Status {
        /// VM name or config path.
        vm: String,
        #[arg(long)]
        json: bool,
    },
    /// List the VMs of every config directory and whether they run.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Send a raw QMP command to a running VM and print the reply.
    Qmp {
        /// VM name or config path.
        vm: String,
        /// The QMP command, e.g. query-status.
        command: String,
        /// Its arguments as a JSON object, e.g. '{"device": "net0"}'.
        arguments: Option<String>,
    },
    /// Attach the terminal to a VM's serial console (Ctrl-] leaves).
    Console {
        /// VM name or config path.
        vm: String,
    },
    /// Print a VM's log (the supervisor's and QEMU's messages).
    Logs {
        /// VM name or config path.
        vm: String,
        /// Show the serial console's log instead.
        #[arg(long)]
        console: bool,
        /// Keep printing as the log grows.
        #[arg(long, short)]
        follow: bool,
    },
    /// List the host's PCI devices by IOMMU group: ids, names, driver, reset, holder.
    Devices {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also show groups of only bridges and chipset functions.
        #[arg(long)]
        all: bool,
    },
    /// Keyboards and mice: `input list` shows them; `input NAME host|guest|toggle` moves a running VM's.
    Input(InputArgs),
    /// A running VM's host USB devices: `usb NAME list`, `attach SEL`, `detach SEL`.
    Usb(UsbArgs),
    /// Give back what a crashed or killed vmrun left changed on the host.
    Restore {
        /// VM name or config path.
        #[arg(required_unless_present = "all")]
        vm: Option<String>,
        /// Every VM with a run dir.
        #[arg(long, conflicts_with = "vm")]
        all: bool,
    },
    /// Check this host (and a VM) for passthrough: PASS, WARN or FAIL with the fix.
    /// Exit 0 all passed, 1 warnings, 2 failures.
    Check {
        /// Also check this VM: its devices' groups, firmware, huge pages, memlock.
        vm: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented vms/NAME.toml for this host (never overwrites).
    Init(InitArgs),
    /// Boot-time host setup: kernel arguments, a passthrough boot entry, the initramfs.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// GPU option ROMs (VBIOS).
    Rom {
        #[command(subcommand)]
        command: RomCommand,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Internal: how the supervisor opens a file with the rights of the
    /// user who controls its path (`qemu::open_as`). Not for people.
    #[command(name = "__open-as", hide = true)]
    OpenAs {
        #[command(flatten)]
        ids: UserIds,
        #[arg(long)]
        writable: bool,
        /// The file, after `--`.
        #[arg(last = true)]
        path: std::path::PathBuf,
    },
    /// Internal: how the supervisor execs QEMU as its unprivileged
    /// identity (`qemu::exec_as`). Not for people.
    #[command(name = "__exec-as", hide = true)]
    ExecAs {
        #[command(flatten)]
        ids: UserIds,
        /// The program and its arguments, after `--`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        program: Vec<OsString>,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// A VM name (looked up in the vms/ directories) or a path to its TOML file.
    pub vm: String,
    /// Print the plan and the QEMU command line; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print JSON instead of text.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Build for this QEMU version instead of asking the binary (e.g. 10.0).
    #[arg(long, value_name = "X.Y")]
    pub qemu_version: Option<QemuVersion>,
    /// Return once the guest runs; the supervisor stays in the background.
    #[arg(long, conflicts_with = "dry_run")]
    pub detach: bool,
    /// The background half of --detach (internal).
    #[arg(long, hide = true)]
    pub detached_child: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StopArgs {
    /// VM name or config path.
    pub vm: String,
    /// How long the guest gets to power off (default: the config's [shutdown] timeout).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<crate::config::Duration>,
    /// Don't wait for the guest: QMP quit at once (twice: SIGTERM; thrice: SIGKILL).
    #[arg(long, action = clap::ArgAction::Count)]
    pub force: u8,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// The VM's name: the file becomes vms/NAME.toml in the first config directory.
    pub name: String,
    /// The GPU to pass: a PCI address, `auto` (a secondary GPU, else the only one) or `none`.
    /// Default: auto, none for the headless template.
    #[arg(long, value_name = "ADDRESS|auto|none")]
    pub gpu: Option<String>,
    /// What the guest is.
    #[arg(long, value_enum, default_value = "windows")]
    pub template: TemplateArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TemplateArg {
    Windows,
    Linux,
    Headless,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HostCommand {
    /// Print the kernel arguments that isolate a VM's devices at boot.
    KernelArgs {
        /// The VM whose devices go to vfio-pci at boot (without: only the IOMMU).
        vm: Option<String>,
    },
    /// Manage a separate "passthrough" boot entry (grubby), or print the steps.
    BootEntry {
        /// The VM whose devices the entry isolates.
        vm: Option<String>,
        /// Make the change (default: show it). Every changed file is backed up first.
        #[arg(long)]
        apply: bool,
    },
    /// Put the vfio modules into the initramfs (dracut, mkinitcpio, initramfs-tools).
    Initramfs {
        /// Make the change (default: show it). The changed file is backed up first.
        #[arg(long)]
        apply: bool,
    },
    /// Keep desktop compositors off a GPU's card node (udev rule, device lists), so a VM takes it live.
    HideGpu {
        /// The VM whose GPUs to hide, or a PCI address (0000:01:00.0 or 01:00.0).
        #[arg(required_unless_present = "undo")]
        target: Option<String>,
        /// Make the change (default: show it). Every changed file is backed up first.
        #[arg(long)]
        apply: bool,
        /// Remove what hide-gpu wrote (with --apply; default: show it).
        #[arg(long, conflicts_with = "target")]
        undo: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RomCommand {
    /// Read a device's option ROM through sysfs, validate it and write it to a file.
    Dump {
        /// The device, e.g. 0000:01:00.0 or 01:00.0.
        address: crate::config::PciAddress,
        /// Where to write (default: firmware/VVVV-DDDD.rom beside the vms/ directory).
        #[arg(short, long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// Strip a header before the 55 AA signature (some NVIDIA dumps carry one).
        #[arg(long)]
        patch: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct InputArgs {
    /// `list`, or the name (or config path) of a running VM in router mode.
    pub target: String,
    /// Who gets the keyboard and mouse; without it, prints who has them.
    #[arg(value_enum)]
    pub side: Option<SideArg>,
    /// With `list`: print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct UsbArgs {
    /// The name (or config path) of a running VM.
    pub vm: String,
    #[command(subcommand)]
    pub action: UsbAction,
    /// With `list`: print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsbAction {
    /// The VM's USB host devices and whether each is attached.
    List,
    /// Give the guest a host device: SEL is `vvvv:pppp` or a port `BUS-PORT[.PORT...]`.
    Attach { sel: String },
    /// Take a device back from the guest (SEL as for attach, or as in [[usb]]).
    Detach { sel: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SideArg {
    Host,
    Guest,
    Toggle,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Subcommand names, so `vmrun NAME` can be told from `vmrun start`.
fn is_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == word || c.get_all_aliases().any(|a| a == word))
        || word == "help"
}

/// Parses `args`, rewriting `vmrun NAME ...` to `vmrun start NAME ...`.
pub(super) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        if !first.starts_with('-') && !is_subcommand(first) {
            args.insert(1, "start".into());
        }
    }
    Cli::try_parse_from(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn bare_name_means_start() {
        let cli = parse_strs(&["vmrun", "win11", "--dry-run"]).unwrap();
        match cli.command {
            Command::Start(s) => assert!(s.vm == "win11" && s.dry_run),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn json_needs_dry_run() {
        assert!(parse_strs(&["vmrun", "start", "x", "--json"]).is_err());
    }

    #[test]
    fn qemu_version_is_validated() {
        assert!(parse_strs(&["vmrun", "x", "--dry-run", "--qemu-version", "ten"]).is_err());
        assert!(parse_strs(&["vmrun", "x", "--dry-run", "--qemu-version", "10.0"]).is_ok());
    }

    #[test]
    fn verbs_parse_to_their_commands() {
        type Case = (&'static [&'static str], fn(&Command) -> bool);
        let cases: [Case; 4] = [
            (&["vmrun", "devices", "--json", "--all"], |c| {
                matches!(
                    c,
                    Command::Devices {
                        json: true,
                        all: true
                    }
                )
            }),
            (&["vmrun", "check", "win11", "--json"], |c| {
                matches!(
                    c,
                    Command::Check {
                        vm: Some(_),
                        json: true
                    }
                )
            }),
            (&["vmrun", "host", "boot-entry", "win11", "--apply"], |c| {
                matches!(
                    c,
                    Command::Host {
                        command: HostCommand::BootEntry { apply: true, .. }
                    }
                )
            }),
            (&["vmrun", "init", "w", "--template", "headless"], |c| {
                matches!(
                    c,
                    Command::Init(InitArgs {
                        template: TemplateArg::Headless,
                        ..
                    })
                )
            }),
        ];
        for (argv, expected) in cases {
            let cli = parse_strs(argv).unwrap();
            assert!(expected(&cli.command), "{argv:?}: {:?}", cli.command);
        }
        assert!(parse_strs(&["vmrun", "rom", "dump", "not-an-address"]).is_err());
    }

    #[test]
    fn input_is_a_verb_with_a_target_and_an_optional_side() {
        let cli = parse_strs(&["vmrun", "input", "win11", "toggle"]).unwrap();
        match cli.command {
            Command::Input(a) => assert!(a.target == "win11" && a.side == Some(SideArg::Toggle)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_strs(&["vmrun", "input", "win11", "sideways"]).is_err());
    }

    fn ids() -> UserIds {
        UserIds {
            uid: 60712,
            gid: 60712,
            groups: vec![36, 993],
        }
    }

    fn reparsed(args: Vec<OsString>) -> Command {
        let argv = std::iter::once(OsString::from("vmrun")).chain(args);
        parse(argv).unwrap().command
    }

    #[test]
    fn exec_as_parses_back_what_the_supervisor_writes() {
        let id = crate::plan::QemuIdentity {
            uid: 60712,
            gid: 60712,
            groups: vec![36, 993],
            label: "vmrun-60712".into(),
            dynamic: true,
        };
        let args = crate::qemu::exec_as::args(&id, std::path::Path::new("/usr/bin/qemu"));
        match reparsed(args) {
            Command::ExecAs { ids: got, program } => {
                assert_eq!(got, ids());
                assert_eq!(program, [OsString::from("/usr/bin/qemu")]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn open_as_parses_back_what_the_supervisor_writes() {
        let path = std::path::Path::new("/home/u/-disk.img");
        let args = crate::qemu::open_as::args(&ids(), true, path);
        match reparsed(args) {
            Command::OpenAs {
                ids: got,
                writable,
                path: got_path,
            } => assert!(got == ids() && writable && got_path == path),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn no_supplementary_groups_parse_back_to_none() {
        let none = UserIds {
            groups: Vec::new(),
            ..ids()
        };
        let args = crate::qemu::open_as::args(&none, false, std::path::Path::new("/d"));
        match reparsed(args) {
            Command::OpenAs { ids, writable, .. } => assert!(ids == none && !writable),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
