//! `vmrun input list` and `vmrun input NAME [host|guest|toggle]`.

use super::out::outln;
use std::fmt::Write as _;

use super::args::{InputArgs, SideArg};
use super::target::running_vm;
use super::vm_ops::call_supervisor;
use crate::exit::Exit;
use crate::host::HostRoot;
use crate::input::list::{self, InputDevice};
use crate::input::Switch;
use crate::supervisor::control::{Reply, Request};

pub(super) fn input(args: &InputArgs) -> Exit {
    if args.target == "list" {
        if args.side.is_some() {
            eprintln!("vmrun: `input list` takes no side");
            return Exit::Usage;
        }
        return list(args.json);
    }
    let (name, paths) = match running_vm(&args.target) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let to = args.side.map(|s| match s {
        SideArg::Host => Switch::Host,
        SideArg::Guest => Switch::Guest,
        SideArg::Toggle => Switch::Toggle,
    });
    match call_supervisor(&name, &paths, &Request::Input { to }) {
        Ok(Reply::Input { focus }) => {
            outln!("{name}: the {} has the keyboard and mouse", focus.name());
            Exit::Ok
        }
        Ok(Reply::Error { message }) => {
            eprintln!("vmrun: {name}: {message}");
            Exit::HostProblems
        }
        Ok(other) => {
            eprintln!("vmrun: {name}: unexpected reply {other:?}");
            Exit::VmFailed
        }
        Err(exit) => exit,
    }
}

fn list(json: bool) -> Exit {
    let devices = list::list(&HostRoot::from_env());
    super::print_listing(&devices, json, |d: &Vec<InputDevice>| render(d))
}

/// One line per device, its stable names indented under it.
pub(super) fn render(devices: &[InputDevice]) -> String {
    let mut out = String::new();
    if devices.is_empty() {
        out.push_str("no input devices (is /sys mounted, and /sys/class/input there?)\n");
    }
    for d in devices {
        let kind = serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(out, "{:<9} {:<20} {} [{}]", kind, d.node, d.name, d.ids);
        for link in d.by_id.iter().chain(&d.by_path) {
            let _ = writeln!(out, "          {link}");
        }
    }
    out
}
