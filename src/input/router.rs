//! Router mode's device side: the real keyboard and mouse, read as async
//! evdev streams in the supervisor's loop, and the per-VM uinput proxies
//! QEMU reads. `focus.rs` decides; this file opens, grabs, writes and
//! reopens.
//!
//! Cleanup is the kernel's: EVIOCGRAB ends when the grabbing fd closes
//! (`evdev_release` -> `evdev_ungrab`) and a uinput device is destroyed
//! when its fd closes, so any end of the supervisor (return, panic,
//! SIGKILL) gives the host its devices back and removes the proxies.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use evdev::{Device, EventStream, EventType, InputEvent, SynchronizationCode};

use super::focus::{Action, Focus, Side, Source, Switch};
use super::hotkey::Hotkey;
use super::proxy::Proxy;
use super::switch_user::{self, Caller, RunAs};
use super::watch::Watch;
use super::InputError;
use crate::config::Input;

/// What woke the router.
#[derive(Debug)]
pub(crate) enum Wake {
    /// A source's batch is complete (its SYN_REPORT arrived).
    Batch(Source),
    /// Reading a source failed: unplugged (ENODEV) or worse.
    Lost(Source, std::io::Error),
    /// Something changed where a configured path lives.
    Changed,
}

struct Slot {
    stream: EventStream,
    /// The events of the batch being read; kept here, not in the future,
    /// so a `select!` that drops the read loses nothing.
    batch: Vec<InputEvent>,
}

pub(crate) struct Router {
    paths: [Option<PathBuf>; 2],
    slots: [Option<Slot>; 2],
    proxies: [Option<Proxy>; 2],
    focus: Focus,
    on_switch: Vec<String>,
    /// Who runs `on_switch`; `None`: vmrun's own user.
    on_switch_as: Option<RunAs>,
    watch: Watch,
    active: bool,
}

impl Router {
    /// Creates the proxies (each with its source's capabilities) and
    /// their links; the sources are only opened for that, not grabbed.
    pub(crate) fn new(vm: &str, input: &Input, links: [PathBuf; 2]) -> Result<Self, InputError> {
        let hotkey = Hotkey::of(&input.toggle).map_err(InputError::Hotkey)?;
        let on_switch_as = switch_user::resolve(input, &Caller::from_process())?;
        let paths = [input.keyboard.clone(), input.mouse.clone()];
        let mut proxies = [None, None];
        for s in Source::ALL {
            if let Some(path) = &paths[s as usize] {
                let dev = open(path)?;
                if s == Source::Keyboard {
                    // Before any grab: a hotkey this keyboard can't press
                    // would leave both devices with the guest for good.
                    super::reach::unreachable(&hotkey, path, &input.toggle.to_string(), |k| {
                        dev.supported_keys().is_some_and(|keys| keys.contains(k))
                    })?;
                }
                let proxy = Proxy::create(s, vm, &dev, &links[s as usize])?;
                tracing::info!(
                    "input: {} {} -> proxy {} ({})",
                    s.name(),
                    path.display(),
                    proxy.node.display(),
                    links[s as usize].display()
                );
                proxies[s as usize] = Some(proxy);
            }
        }
        let watch = Watch::new(paths.iter().flatten().cloned().collect())
            .map_err(|e| InputError::Watch { error: e })?;
        Ok(Self {
            paths,
            slots: [None, None],
            proxies,
            focus: Focus::new(hotkey),
            on_switch: input.on_switch.clone(),
            on_switch_as,
            watch,
            active: false,
        })
    }

    /// Starts routing: called once QEMU holds the proxies, so no event
    /// reaches a proxy the host could still read.
    pub(crate) fn activate(&mut self) {
        self.active = true;
        self.reopen();
        tracing::info!("input: the guest has the keyboard and mouse");
    }

    pub(crate) fn side(&self) -> Side {
        self.focus.side()
    }

    /// Waits for the next thing to do; never returns before `activate`.
    pub(crate) async fn next(&mut self) -> Wake {
        if !self.active {
            return std::future::pending().await;
        }
        let missing = Source::ALL
            .iter()
            .any(|s| self.paths[*s as usize].is_some() && self.slots[*s as usize].is_none());
        let [kbd, mouse] = &mut self.slots;
        tokio::select! {
            r = read_batch(kbd) => wake(Source::Keyboard, r),
            r = read_batch(mouse) => wake(Source::Mouse, r),
            _ = self.watch.changed(), if missing => Wake::Changed,
        }
    }

    pub(crate) fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::Batch(s) => {
                let batch = match &mut self.slots[s as usize] {
                    Some(slot) => std::mem::take(&mut slot.batch),
                    None => return,
                };
                let actions = self.focus.on_batch(s, &batch);
                self.apply(actions);
            }
            Wake::Lost(s, e) => {
                tracing::warn!(
                    "input: lost the {} ({e}); it is reopened when it comes back",
                    s.name()
                );
                // No reopen here: a node that just failed is gone or
                // broken; the watch (its queue kept since `new`) says when
                // the path changes.
                self.slots[s as usize] = None;
                let actions = self.focus.detached(s);
                self.apply(actions);
            }
            Wake::Changed => self.reopen(),
        }
    }

    /// `vmrun input NAME host|guest|toggle`.
    pub(crate) fn switch(&mut self, to: Switch) -> Side {
        let actions = self.focus.switch(to);
        self.apply(actions);
        self.focus.side()
    }

    /// Opens every configured source that is not open and exists.
    fn reopen(&mut self) {
        for s in Source::ALL {
            let Some(path) = &self.paths[s as usize] else {
                continue;
            };
            if self.slots[s as usize].is_some() {
                continue;
            }
            let opened = open(path).and_then(|dev| {
                let held: Vec<u16> = dev
                    .get_key_state()
                    .map(|keys| keys.iter().map(|k| k.code()).collect())
                    .unwrap_or_default();
                let stream = dev.into_event_stream().map_err(|e| InputError::Open {
                    path: path.clone(),
                    error: e,
                })?;
                Ok((held, stream))
            });
            match opened {
                Ok((held, stream)) => {
                    tracing::info!("input: {} open ({})", s.name(), describe(path));
                    self.slots[s as usize] = Some(Slot {
                        stream,
                        batch: Vec::new(),
                    });
                    let actions = self.focus.attached(s, held);
                    self.apply(actions);
                }
                Err(e) => tracing::debug!("input: {e}"),
            }
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Forward(s, events) => {
                    if let Some(p) = &mut self.proxies[s as usize] {
                        if let Err(e) = p.emit(&events) {
                            tracing::warn!("input: writing to the {} proxy: {e}", s.name());
                        }
                    }
                }
                Action::Grab(s) => {
                    let res = match &mut self.slots[s as usize] {
                        Some(slot) => slot.stream.device_mut().grab(),
                        None => Err(std::io::ErrorKind::NotFound.into()),
                    };
                    if let Err(e) = res {
                        tracing::warn!("input: cannot grab the {}: {e}", s.name());
                        self.focus.grab_failed(s);
                    }
                }
                Action::Ungrab(s) => {
                    if let Some(slot) = &mut self.slots[s as usize] {
                        let _ = slot.stream.device_mut().ungrab();
                    }
                }
                Action::Switched(side) => {
                    tracing::info!("input: switched to the {}", side.name());
                    run_on_switch(&self.on_switch, self.on_switch_as.as_ref(), side);
                }
            }
        }
    }
}

fn open(path: &std::path::Path) -> Result<Device, InputError> {
    Device::open(path).map_err(|e| InputError::Open {
        path: path.to_path_buf(),
        error: e,
    })
}

fn describe(path: &std::path::Path) -> String {
    match (std::fs::canonicalize(path), std::fs::metadata(path)) {
        (Ok(node), Ok(m)) => format!(
            "{} -> {}, rdev {:#x}",
            path.display(),
            node.display(),
            m.rdev()
        ),
        _ => path.display().to_string(),
    }
}

fn wake(s: Source, r: std::io::Result<()>) -> Wake {
    match r {
        Ok(()) => Wake::Batch(s),
        Err(e) => Wake::Lost(s, e),
    }
}

/// Reads up to the next SYN_REPORT; pending forever for a missing source.
async fn read_batch(slot: &mut Option<Slot>) -> std::io::Result<()> {
    let Some(slot) = slot else {
        return std::future::pending().await;
    };
    loop {
        let ev = slot.stream.next_event().await?;
        if ev.event_type() == EventType::SYNCHRONIZATION
            && ev.code() == SynchronizationCode::SYN_REPORT.0
        {
            return Ok(());
        }
        slot.batch.push(ev);
    }
}

/// Runs the `on_switch` command with the new side appended, as `run_as`
/// (the desktop user, not root), in the background: a slow `ddcutil` must
/// not hold up the input.
fn run_on_switch(cmd: &[String], run_as: Option<&RunAs>, side: Side) {
    let Some((program, args)) = cmd.split_first() else {
        return;
    };
    let command = match run_as {
        Some(user) => user.command(program),
        None => Ok(tokio::process::Command::new(program)),
    };
    let spawned = command.and_then(|mut c| {
        c.args(args)
            .arg(side.name())
            .stdin(std::process::Stdio::null())
            .spawn()
    });
    match spawned {
        Ok(mut child) => {
            let program = program.clone();
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(st) if st.success() => {}
                    Ok(st) => tracing::warn!("input: on_switch `{program}` ended with {st}"),
                    Err(e) => tracing::warn!("input: on_switch `{program}`: {e}"),
                }
            });
        }
        Err(e) => tracing::warn!("input: cannot run on_switch `{program}`: {e}"),
    }
}
