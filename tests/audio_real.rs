//! `[audio]` against real sound servers, started by the test as the sound
//! user with no system or session bus: PulseAudio (Debian's `pulseaudio`,
//! a null sink its only output) and PipeWire with pipewire-pulse (Debian's
//! `pipewire`, `pipewire-pulse`), and a real QEMU (TCG) started by `vmrun`.
//! The server must list QEMU's playback stream under the VM's name while
//! the VM runs, and not after it stopped.
//!
//! As root (CI), the sound user is `nobody`: QEMU, which would otherwise
//! run as a per-VM uid, runs as `nobody` because PulseAudio admits only
//! its own uid's clients (or its cookie's holders). Not root, the server is
//! the caller's own, in its logind runtime dir.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::*;

const NOBODY: u32 = 65534;

/// The sound servers the test runs.
#[derive(Clone, Copy, Debug)]
enum Server {
    PulseAudio,
    /// PipeWire and its PulseAudio protocol server, pipewire-pulse.
    PipeWire,
}

/// A sound server of `uid` serving `runtime/pulse/native` (and PipeWire's
/// `runtime/pipewire-0`); killed on drop, with the runtime dir when the
/// test made it.
struct Pulse {
    children: Vec<Child>,
    /// PipeWire's session manager, WirePlumber, on a D-Bus session bus of
    /// its own (`dbus-run-session`): it links streams to sinks, as on a
    /// desktop. QEMU 7.2's `pa` backend waits forever at exit on a stream
    /// that no one linked.
    session: Option<Child>,
    uid: u32,
    runtime: PathBuf,
    home: tempfile::TempDir,
    made: Vec<PathBuf>,
}

impl Pulse {
    /// `cmd` as the server's user, with its runtime dir and home.
    fn as_user(&self, program: &str) -> Command {
        let mut cmd = if self.uid == nix::unistd::geteuid().as_raw() {
            Command::new(program)
        } else {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.uid),
                "--clear-groups",
                program,
            ]);
            c
        };
        cmd.env("XDG_RUNTIME_DIR", &self.runtime)
            .env("HOME", self.home.path())
            .env_remove("PULSE_SERVER");
        cmd
    }

    fn start(server: Server, uid: u32) -> Self {
        let runtime = PathBuf::from(format!("/run/user/{uid}"));
        // The dirs the test makes (`/run/user` too, on a host without
        // logind), removed again on drop.
        let made: Vec<PathBuf> = [runtime.parent().unwrap(), runtime.as_path()]
            .into_iter()
            .filter(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        let made_runtime = made.contains(&runtime);
        if made_runtime {
            // What logind makes at a user's first login: 0700, theirs.
            std::fs::create_dir_all(&runtime).unwrap();
            std::os::unix::fs::chown(&runtime, Some(uid), Some(uid)).unwrap();
            std::fs::set_permissions(
                &runtime,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .unwrap();
        }
        let home = tempfile::Builder::new()
            .prefix("vmrun-pulse-")
            .tempdir()
            .unwrap();
        std::os::unix::fs::chown(home.path(), Some(uid), Some(uid)).unwrap();
        let mut pulse = Self {
            children: Vec::new(),
            session: None,
            uid,
            runtime,
            home,
            made,
        };
        let socket = pulse.socket();
        assert!(
            !socket.exists(),
            "{} exists: another sound server runs for uid {uid}",
            socket.display()
        );
        let commands: &[&[&str]] = match server {
            // -n: no default.pa (no hardware, no bus); the native protocol
            // on its default socket, the user's runtime dir, with
            // PulseAudio's default authentication (the peer's uid, or the
            // cookie).
            Server::PulseAudio => &[&[
                "pulseaudio",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "-n",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink",
            ]],
            // Debian's default configs.
            Server::PipeWire => &[
                &["pipewire"],
                &["dbus-run-session", "--", "wireplumber"],
                &["pipewire-pulse"],
            ],
        };
        for argv in commands {
            if argv[0] != "pipewire" && argv[0] != "pulseaudio" {
                let core = pulse.runtime.join("pipewire-0");
                wait_for("PipeWire's socket", WAIT, || core.exists().then_some(()));
            }
            let child = pulse
                .as_user(argv[0])
                .args(&argv[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{} ({server:?}'s Debian package): {e}", argv[0]));
            if argv[0] == "dbus-run-session" {
                pulse.session = Some(child);
            } else {
                pulse.children.push(child);
            }
        }
        wait_for("PulseAudio's socket", WAIT, || {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(&socket)
                .is_ok_and(|m| m.file_type().is_socket())
                .then_some(())
        });
        if let Server::PipeWire = server {
            // No sound card here: a sink for WirePlumber to link streams
            // to, as a desktop's card would be.
            pulse.pactl(&["load-module", "module-null-sink"]);
        }
        pulse
    }

    fn socket(&self) -> PathBuf {
        self.runtime.join("pulse/native")
    }

    /// `pactl ARGS` against the server, as its user.
    fn pactl(&self, args: &[&str]) -> String {
        let out = self
            .as_user("pactl")
            .arg("-s")
            .arg(format!("unix:{}", self.socket().display()))
            .args(args)
            .output()
            .expect("pactl (pulseaudio-utils) runs");
        assert!(out.status.success(), "pactl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sink input QEMU `pid` plays into, as pactl prints it, with its
    /// client's block. A `pa` client's sink input carries the process's
    /// properties itself; a native PipeWire stream (QEMU's `pipewire`
    /// audiodev) only the node's, and its client (`Client: N`) the
    /// process's.
    fn stream_of(&self, pid: i32) -> Option<String> {
        let marker = format!("application.process.id = \"{pid}\"");
        let clients = self.pactl(&["list", "clients"]);
        let client = clients.split("\n\n").find(|b| b.contains(&marker));
        let number = client.and_then(|b| {
            let n = b.trim().lines().next()?.trim().strip_prefix("Client #")?;
            Some(format!("Client: {n}"))
        });
        let sinks = self.pactl(&["list", "sink-inputs"]);
        let sink = sinks.split("\n\n").find(|b| {
            b.contains(&marker)
                || number
                    .as_ref()
                    .is_some_and(|n| b.lines().any(|l| l.trim() == n))
        })?;
        Some(format!("{sink}\n{}", client.unwrap_or_default()))
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // WirePlumber leaves when PipeWire is gone, and dbus-run-session
        // then ends its bus (killing dbus-run-session would leave both).
        if let Some(mut session) = self.session.take() {
            let deadline = std::time::Instant::now() + WAIT;
            while session.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = session.kill();
                    let _ = session.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(self.runtime.join("pulse"));
        for leftover in [
            "pipewire-0",
            "pipewire-0.lock",
            "pipewire-0-manager",
            "pipewire-0-manager.lock",
        ] {
            let _ = std::fs::remove_file(self.runtime.join(leftover));
        }
        for dir in self.made.iter().rev() {
            // The runtime dir with what the servers left; its parent only
            // when empty.
            let _ = if *dir == self.runtime {
                std::fs::remove_dir_all(dir)
            } else {
                std::fs::remove_dir(dir)
            };
        }
    }
}

#[test]
fn qemu_plays_into_the_sound_users_pulseaudio_and_pipewire_under_the_vms_name() {
    let root = nix::unistd::geteuid().is_root();
    let uid = if root {
        NOBODY
    } else {
        nix::unistd::geteuid().as_raw()
    };
    assert!(
        root || Path::new(&format!("/run/user/{uid}")).is_dir(),
        "not root, this test needs a logind runtime dir /run/user/{uid} to serve PulseAudio in"
    );
    for (server, backend) in [
        (Server::PulseAudio, "pulseaudio"),
        (Server::PipeWire, "pipewire"),
    ] {
        let pulse = Pulse::start(server, uid);
        for model in ["hda", "usb"] {
            plays_into(&pulse, root, backend, model);
        }
    }
}

/// A VM with a `model` sound card on `backend`: QEMU's stream in `pulse`
/// while it runs, gone after the VM stopped.
fn plays_into(pulse: &Pulse, root: bool, backend: &str, model: &str) {
    let uid = pulse.uid;
    let w = World::new();
    // As root, `auto`: the plan makes QEMU the sound user instead of a
    // per-VM uid.
    let spec = VmSpec {
        user: if root { "auto" } else { "root" },
        ..VmSpec::default()
    };
    let name = w.vm("snd", &spec);
    let config = w.home.join("vms/snd.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    let user = if root { "user = \"nobody\"\n" } else { "" };
    toml.push_str(&format!(
        "\n[audio]\nbackend = \"{backend}\"\nmodel = \"{model}\"\n{user}"
    ));
    std::fs::write(&config, toml).unwrap();

    let dry = w.run(&["start", &name, "--dry-run"]);
    assert_ok(&dry, "vmrun start --dry-run");
    let shown = String::from_utf8_lossy(&dry.stdout);
    // QEMU 8.1 and later speak PipeWire's own protocol, found through the
    // runtime dir; older ones pipewire-pulse's, as PulseAudio's.
    // (The option is shell-quoted in the dry-run: its stream name has a
    // space.)
    let reach = if shown.contains("-audiodev 'pipewire,") {
        format!("PIPEWIRE_RUNTIME_DIR=/run/user/{uid} ")
    } else {
        format!("server=unix:/run/user/{uid}/pulse/native")
    };
    assert!(shown.contains(&reach), "{reach} in {shown}");
    if root {
        assert!(
            shown.contains("# audio: QEMU runs as nobody (not a per-VM uid)"),
            "{shown}"
        );
    }

    w.start_detached(&name);
    let (_, st) = w.status(&name);
    let qemu = st["qemu_pid"].as_i64().expect("QEMU runs") as i32;
    let qemu_uid = proc_id(qemu, "Uid");
    assert_eq!(qemu_uid, uid, "QEMU runs as the sound server's user");
    // hda-duplex and usb-audio open their output stream when the card is
    // realized, before any guest driver plays.
    let stream = wait_for("QEMU's stream in the server", WAIT, || {
        pulse.stream_of(qemu)
    });
    assert!(
        stream.contains("media.name = \"vmrun snd\""),
        "{backend} {model}: {stream}"
    );
    eprintln!("{backend} {model}: QEMU {qemu} (uid {qemu_uid}) plays into the server:\n{stream}");
    assert!(
        stream.contains("application.process.binary = \"qemu-system-x86_64\""),
        "{stream}"
    );

    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop");
    wait_for("QEMU's stream to end", WAIT, || {
        pulse.stream_of(qemu).is_none().then_some(())
    });
}

/// A start with no server running is refused before QEMU, saying what to
/// start.
#[test]
fn a_missing_sound_server_refuses_the_start_and_says_what_to_start() {
    let w = World::new();
    let name = w.vm("nosnd", &VmSpec::default());
    let config = w.home.join("vms/nosnd.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    // A user who has no session, so no server, on any host that runs this.
    toml.push_str("\n[audio]\nbackend = \"pipewire\"\nuser = \"daemon\"\n");
    std::fs::write(&config, toml).unwrap();
    let out = w.run(&["start", &name]);
    let all = text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("is not running"), "{all}");
    assert!(all.contains("systemctl --user start pipewire"), "{all}");
    assert!(w.pid_in(&name, "qemu.pid").is_none());
}
