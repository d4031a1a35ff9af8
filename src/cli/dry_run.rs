//! `vmrun start --dry-run`: the plan as shell comments, the commands that
//! make the VM's dirs and VARS copy, then QEMU's argv one option per line.
//! Pasted into a shell as root, it starts the same QEMU vmrun would (minus
//! the host preparation, which is listed but not done).

use std::ffi::OsString;
use std::fmt::Write;

use serde::Serialize;

use super::shell::quote;
use crate::plan::Plan;

/// The JSON form: the plan and the argv.
#[derive(Serialize)]
struct DryRunJson<'a> {
    plan: &'a Plan,
    argv: Vec<String>,
}

pub(super) fn render_json(plan: &Plan, argv: &[OsString]) -> String {
    let json = DryRunJson {
        plan,
        argv: std::iter::once(plan.qemu.binary.as_os_str())
            .chain(argv.iter().map(|a| a.as_os_str()))
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    };
    serde_json::to_string_pretty(&json).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Writes one comment line; see `comment`.
macro_rules! note {
    ($out:expr, $($arg:tt)*) => {
        comment(&mut $out, &format!($($arg)*))
    };
}

/// Appends `line` (which starts with `#`) as comment lines only, whatever
/// the strings it was formatted from hold: a newline (a description may hold
/// some) continues the comment on a `#` line of its own, and every other
/// control character but tab is shown escaped (`\u{1b}`), so nothing of a
/// config or host string reaches a shell that the dry-run is pasted into,
/// nor a terminal's escape sequences.
fn comment(out: &mut String, line: &str) {
    for (i, part) in line.split('\n').enumerate() {
        if i > 0 {
            out.push_str("#     ");
        }
        for c in part.chars() {
            if c.is_control() && c != '\t' {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
        }
        out.push('\n');
    }
}

pub(super) fn render_text(plan: &Plan, argv: &[OsString]) -> String {
    let mut out = String::new();
    let vm = &plan.vm;
    note!(
        out,
        "# vmrun dry-run of {} ({})",
        vm.name,
        vm.source.display()
    );
    if let Some(d) = &vm.description {
        note!(out, "#   {d}");
    }
    note!(
        out,
        "# QEMU {} ({}), machine {}",
        plan.qemu.version,
        plan.qemu.binary.display(),
        plan.machine
    );
    match &plan.firmware {
        Some(fw) => {
            note!(out, "# firmware: {}", fw.code.display());
            note!(out, "#   why: {}", fw.reason);
            note!(
                out,
                "#   VARS: {} (copied once from {})",
                plan.paths.vars_file.display(),
                fw.vars_template.display()
            );
        }
        None => {
            note!(
                out,
                "# firmware: {}",
                match vm.firmware.kind {
                    crate::config::FirmwareKind::Bios => "BIOS (QEMU's built-in SeaBIOS)",
                    crate::config::FirmwareKind::Uefi => "UEFI, none found (see findings)",
                }
            );
        }
    }
    if !plan.hostdevs.is_empty() {
        note!(out, "# devices to bind to vfio-pci:");
        for hd in &plan.hostdevs {
            let state = match &hd.device {
                Some(d) => format!(
                    "{:04x}:{:04x} class {:06x}, driver {}, IOMMU group {}",
                    d.vendor,
                    d.device,
                    d.class,
                    d.driver.as_deref().unwrap_or("none"),
                    d.iommu_group.map_or("none".into(), |g| g.to_string())
                ),
                None => "not on this host".into(),
            };
            note!(out, "#   {} ({state})", hd.address);
        }
    }
    if let Some(t) = &plan.takeover {
        note!(out, "# takeover (the host display gives up the GPU first):");
        for (i, step) in t.describe(&plan.root).iter().enumerate() {
            match step.strip_prefix("  ") {
                Some(detail) => {
                    note!(out, "#      {detail}");
                }
                None => {
                    note!(out, "#   {}. {step}", i + 1);
                }
            }
        }
    }
    if let Some(iso) = &plan.isolation {
        note!(out, "# CPU isolation (journaled, put back after the run):");
        for step in iso.describe(vm.name.as_str()) {
            note!(out, "#   {step}");
        }
    }
    if let Some(tap) = &plan.bridge_tap {
        let owner = plan
            .qemu_identity
            .as_ref()
            .map_or_else(|| "root".into(), |id| format!("uid {}", id.uid));
        note!(
            out,
            "# network: tap {} made for {owner} (MAC {}) on bridge {}, deleted after the run",
            tap.ifname,
            tap.mac,
            tap.bridge
        );
    }
    if let Some(lg) = &plan.looking_glass {
        let owner = match &lg.owner {
            Some(o) => format!("{} (uid {}) with group {}", o.user, o.uid, o.gid),
            None => "vmrun's user".into(),
        };
        let made = match lg.device {
            crate::config::LgDevice::Shm => "made before QEMU starts, removed after",
            crate::config::LgDevice::Kvmfr => "handed over for the run, given back after",
        };
        note!(
            out,
            "# Looking Glass: {} of shared memory at {}, owned by {owner}, mode 0660 ({made})",
            lg.size,
            lg.path.display()
        );
        if let Some(client) = plan.looking_glass_client() {
            note!(out, "#   client: {}", super::shell::line(&client));
        }
    }
    usb_notes(&mut out, plan);
    note!(out, "# run dir: {}", plan.paths.run_dir.display());
    note!(out, "# state dir: {}", plan.paths.state_dir.display());
    note!(
        out,
        "# (vmrun binds qmp.sock itself and hands it to QEMU as stdin, fd=0, started with -S)"
    );
    match &plan.qemu_identity {
        Some(id) => {
            note!(
                out,
                "# vmrun execs QEMU and swtpm as uid {} gid {} ({}{}), never as root, and hands them",
                id.uid,
                id.gid,
                id.label,
                if id.groups.is_empty() {
                    String::new()
                } else {
                    format!(", groups {}", id.groups.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
                }
            );
            note!(
                out,
                "#   their files as descriptors (-add-fd, fd=); pasted, this QEMU would run as root and open them by path"
            );
        }
        None => note!(
            out,
            "# QEMU and swtpm run as vmrun's own user; vmrun hands them their files as descriptors"
        ),
    }
    if let Some(line) = plan
        .audio
        .as_ref()
        .and_then(|a| crate::plan::audio::describe(a, plan.qemu_identity.as_ref()))
    {
        note!(out, "# {line}");
    }
    for finding in &plan.findings {
        for (i, line) in finding.to_string().lines().enumerate() {
            note!(out, "#{} {line}", if i == 0 { "" } else { " " });
        }
    }
    let q = |p: &std::path::Path| quote(p.as_os_str()).into_owned();
    let _ = writeln!(
        out,
        "mkdir -p -m 0700 {} {}",
        q(&plan.paths.run_dir),
        q(&plan.paths.state_dir)
    );
    if let Some(fw) = &plan.firmware {
        let _ = writeln!(
            out,
            "[ -e {vars} ] || cp {tmpl} {vars}",
            vars = q(&plan.paths.vars_file),
            tmpl = q(&fw.vars_template)
        );
    }
    // The environment QEMU finds the sound server through.
    for (var, value) in plan.audio.iter().flat_map(|a| a.env()) {
        let _ = write!(out, "{var}={} ", quote(value.as_os_str()));
    }
    let _ = write!(out, "{}", quote(plan.qemu.binary.as_os_str()));
    let mut i = 0;
    while i < argv.len() {
        let _ = write!(out, " \\\n  {}", quote(&argv[i]));
        // An option and its value share a line; flags stand alone.
        let takes_value = argv[i].to_string_lossy().starts_with('-')
            && argv
                .get(i + 1)
                .is_some_and(|v| !v.to_string_lossy().starts_with('-'));
        if takes_value {
            let _ = write!(out, " {}", quote(&argv[i + 1]));
            i += 1;
        }
        i += 1;
    }
    out.push('\n');
    out
}

/// `[[usb]]`: each device found now, and what QEMU matches it by.
fn usb_notes(out: &mut String, plan: &Plan) {
    if plan.usb.is_empty() {
        return;
    }
    note!(
        *out,
        "# USB devices (usb-host on qemu-xhci, taken again after a replug):"
    );
    for u in &plan.usb {
        let by = [
            u.matcher.ids.map(|i| format!("ids {i}")),
            u.matcher.port.as_ref().map(|p| format!("port {p}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" + ");
        let now = match &u.found {
            Some(d) => {
                let name = [
                    d.port.to_string(),
                    d.name.clone(),
                    format!("{},", d.node().display()),
                ]
                .into_iter()
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
                let to = if plan.qemu_identity.is_some() {
                    "handed to QEMU's user"
                } else {
                    "opened as vmrun's user"
                };
                format!("{name} {to}")
            }
            None => "not plugged in".into(),
        };
        note!(*out, "#   {} by {by} ({now})", u.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_stays_comments_whatever_it_holds() {
        let mut out = String::new();
        comment(&mut out, "#   one\n; rm -rf /\n\x1b]0;x\x07\tend\r");
        assert_eq!(
            out,
            "#   one\n#     ; rm -rf /\n#     \\u{1b}]0;x\\u{7}\tend\\u{d}\n"
        );
    }

    /// The dry-run of `toml` as root on the fixture desktop, for QEMU `version`.
    fn as_root_on_the_fixture(toml: &str, version: &str) -> String {
        let host = crate::testing::Machine::FixtureDesktop.build();
        let ctx = crate::plan::PlanContext {
            root: host.root(),
            dirs: crate::plan::DirsEnv {
                is_root: true,
                run_base: Some("/run/vmrun".into()),
                state_base: Some("/var/lib/vmrun".into()),
                ..Default::default()
            },
            qemu_version: Some(version.parse().unwrap()),
        };
        let plan = crate::plan::plan(crate::testing::vm(toml), &ctx);
        render_text(&plan, &crate::qemu::build_argv(&plan))
    }

    #[test]
    fn pipewire_audio_names_qemus_user_and_the_runtime_dir_it_needs() {
        let text = as_root_on_the_fixture(
            "memory = \"1G\"\n[audio]\nbackend = \"pipewire\"\nuser = \"nobody\"\n",
            "10.0.0",
        );
        assert!(
            text.contains("# audio: QEMU runs as nobody (not a per-VM uid) to join that user's sound server at /run/user/65534\n"),
            "{text}"
        );
        assert!(
            text.contains("PIPEWIRE_RUNTIME_DIR=/run/user/65534 qemu-system-x86_64"),
            "{text}"
        );
    }

    #[test]
    fn looking_glass_shows_its_memory_owner_and_the_client_command() {
        let text = as_root_on_the_fixture(
            "memory = \"1G\"\n[looking_glass]\nresolution = \"1920x1080\"\nuser = \"nobody\"\nspice = true\n",
            "7.2.0",
        );
        assert!(
            text.contains("# Looking Glass: 32M of shared memory at /dev/shm/looking-glass-vm1, owned by nobody (uid 65534) with group "),
            "{text}"
        );
        assert!(
            text.contains("#   client: looking-glass-client -f /dev/shm/looking-glass-vm1 -c /run/vmrun-spice/vm1/spice.sock -p 0\n"),
            "{text}"
        );
    }

    #[test]
    fn usb_devices_show_their_match_and_node() {
        let host = crate::testing::Machine::FixtureDesktop.build();
        let vm = crate::testing::vm(
            "memory = \"1G\"\n[[usb]]\nids = \"046d:c52b\"\n[[usb]]\nport = \"3-1\"\noptional = true\n",
        );
        let plan = crate::testing::plan_on(&host, vm, false, std::path::Path::new("/"));
        let text = render_text(&plan, &crate::qemu::build_argv(&plan));
        assert!(
            text.contains("#   usb-046d-c52b by ids 046d:c52b (1-7 Logitech USB Receiver /dev/bus/usb/001/009, opened as vmrun's user)\n"),
            "{text}"
        );
        assert!(
            text.contains("#   usb-3-1 by port 3-1 (not plugged in)\n"),
            "{text}"
        );
    }
}
