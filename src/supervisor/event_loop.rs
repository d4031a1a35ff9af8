//! The loop of a running VM: one `tokio::select!` over QEMU's exit, QMP
//! events, signals, the control socket, the stop schedule and the input
//! devices, until QEMU is reaped.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::control_server::ControlServer;
use super::outcome::{self, Seen};
use super::pin;
use super::shutdown::Escalation;
use super::state::VmState;
use super::{Outcome, Signals, QMP_CONNECT_TIMEOUT};
use crate::input::readd::Readd;
use crate::input::router::{Router, Wake as RouterWake};
use crate::plan::Plan;
use crate::qmp::{self, QmpClient, QmpEvent, QmpEvents};
use crate::ratelimit::{clip, RateLimit};

/// The supervisor's view of one VM, from QEMU's spawn to its reaping.
pub(super) struct Vm<'a> {
    pub(super) plan: &'a Plan,
    pub(super) state: VmState,
    pub(super) started: Instant,
    pub(super) qemu_pid: Option<u32>,
    pub(super) qmp: Option<QmpClient>,
    pub(super) stopping: Option<(Escalation, Instant)>,
    /// Whether the guest ever ran: a stop begun while starting (QMP never
    /// answered) is a failed start, not a forced stop.
    pub(super) ran: bool,
    /// QEMU's SHUTDOWN event, if one came: `Some(true)` when the guest
    /// powered off, `Some(false)` for a host-side quit or signal.
    pub(super) shutdown_by_guest: Option<bool>,
    pub(super) router: Option<Router>,
    pub(super) readd: Option<Readd>,
    /// Bounds what QMP events write to the log.
    pub(super) event_log: RateLimit,
}

/// QMP events logged at once, then each second.
pub(super) const EVENT_LOG_BURST: u32 = 50;
pub(super) const EVENT_LOG_PER_SECOND: u32 = 5;

/// What a QMP event changes in the supervisor's view of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// SHUTDOWN: QEMU exits next; `by_guest` when the guest powered off.
    ShuttingDown {
        by_guest: bool,
    },
    Paused,
    Resumed,
}

impl Vm<'_> {
    pub(super) fn set_state(&mut self, next: VmState) {
        if self.state != next && self.state.can_become(next) {
            tracing::debug!("state {:?} -> {:?}", self.state, next);
            self.state = next;
            self.ran |= next == VmState::Running;
        }
    }

    /// QMP, vCPU pinning, `cont`. A QEMU that dies meanwhile is left for
    /// the loop to reap and report.
    /// `control.sock` is answered meanwhile (state `starting`): with VFIO
    /// the handshake can take a minute.
    pub(super) async fn start(
        &mut self,
        child: &mut tokio::process::Child,
        qmp_stream: std::os::unix::net::UnixStream,
        signals: &mut Signals,
        control: &mut ControlServer,
    ) -> Option<QmpEvents> {
        let deadline = tokio::time::Instant::now() + QMP_CONNECT_TIMEOUT;
        let plan: &Plan = self.plan;
        let socket = &plan.paths.qmp_socket;
        let handshake = async move {
            let stream = tokio::net::UnixStream::from_std(qmp_stream).map_err(|source| {
                qmp::QmpError::Connect {
                    path: socket.clone(),
                    source,
                }
            })?;
            QmpClient::handshake(stream, socket, deadline).await
        };
        tokio::pin!(handshake);
        let (client, events) = loop {
            tokio::select! {
                res = &mut handshake => match res {
                    Ok(pair) => break pair,
                    Err(e) => {
                        tracing::error!("QMP: {e}");
                        self.begin_stop(Some(Duration::ZERO)).await;
                        return None;
                    }
                },
                _ = child.wait() => return None,
                sig = signals.recv() => {
                    tracing::info!("{sig} before QEMU answered: stopping it");
                    self.begin_stop(Some(Duration::ZERO)).await;
                    return None;
                }
                call = control.next() => {
                    self.on_control(call).await;
                    // A stop asked for before QEMU answered: as for a signal.
                    if self.stopping.is_some() {
                        return None;
                    }
                }
            }
        };
        self.qmp = Some(client.clone());
        match super::spice_share::share_with_client(self.plan) {
            Ok(Some(uid)) => tracing::info!(
                "SPICE socket {} handed to uid {uid}, the Looking Glass client's",
                self.plan.paths.spice_socket.display()
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("the Looking Glass client cannot reach SPICE: {e}"),
        }
        if let Err(e) = pin::pin_vcpus(&client, &self.plan.vm.cpu.pin).await {
            tracing::warn!("vCPU pinning failed, the guest runs unpinned: {e}");
        }
        let emulator = self.plan.isolation.as_ref().map(|i| &i.emulator_cpus);
        if let (Some(cpus), Some(pid)) = (emulator, self.qemu_pid) {
            if let Err(e) = pin::pin_emulator(&client, pid, cpus).await {
                tracing::warn!("QEMU's own threads stay unpinned: {e}");
            }
        }
        match client.cont().await {
            Ok(()) => self.set_state(VmState::Running),
            Err(e) => {
                // A QEMU left paused would hold a detached start forever.
                tracing::error!("QMP cont: {e}");
                self.begin_stop(Some(Duration::ZERO)).await;
            }
        }
        Some(events)
    }

    pub(super) async fn run_loop(
        &mut self,
        child: &mut tokio::process::Child,
        events: &mut Option<QmpEvents>,
        mut signals: Signals,
        control: &mut ControlServer,
    ) -> std::io::Result<ExitStatus> {
        // USB plugs; a tick that finds no new node looked at sysfs only.
        let usb_replugs = super::usb_replug::watches(self.plan);
        let mut usb_watch = super::usb_replug::UsbWatch::default();
        let mut usb_look = tokio::time::interval(super::usb_replug::PERIOD);
        usb_look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let tick_at = self
                .stopping
                .as_ref()
                .map(|(e, at)| *at + e.next_deadline());
            tokio::select! {
                status = child.wait() => return status,
                ev = next_event(events) => match ev {
                    Some(ev) => self.on_event(&ev),
                    None => *events = None,
                },
                sig = signals.recv() => {
                    tracing::info!("{sig}: stopping the VM");
                    self.request_stop(None, self.stopping.is_some()).await;
                }
                call = control.next() => self.on_control(call).await,
                _ = sleep_until(tick_at), if tick_at.is_some() => self.tick().await,
                wake = router_next(&mut self.router) => {
                    if let Some(r) = self.router.as_mut() {
                        r.handle(wake);
                    }
                }
                () = readd_next(&mut self.readd) => self.readd_devices().await,
                _ = usb_look.tick(), if usb_replugs => usb_watch.look(self.plan, self.qmp.as_ref()).await,
            }
        }
    }

    /// QEMU sends SHUTDOWN before it exits, but `select!` may see the exit
    /// first: the events still in flight say whether the guest powered off.
    /// The stream ends with QEMU's socket; the bound is for a QEMU whose
    /// children keep the socket open.
    pub(super) async fn drain_events(&mut self, events: &mut Option<QmpEvents>) {
        let Some(stream) = events.as_mut() else {
            return;
        };
        let drain = async {
            while let Some(ev) = stream.next().await {
                self.on_event(&ev);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }

    fn on_event(&mut self, ev: &QmpEvent) {
        // Events are QEMU's and the guest's to send (a guest resetting in
        // a loop, a QEMU inventing names): the log takes a bounded share.
        // Only events the log level shows count against it.
        if logged_at_info(ev) || tracing::enabled!(tracing::Level::DEBUG) {
            if let Some(admitted) = self.event_log.admit() {
                if admitted.suppressed > 0 {
                    tracing::info!(
                        "{} QMP events not logged (more than {EVENT_LOG_PER_SECOND} a second)",
                        admitted.suppressed
                    );
                }
                log_event(ev);
            }
        }
        match effect(ev) {
            Some(Effect::ShuttingDown { by_guest }) => {
                self.shutdown_by_guest = Some(by_guest);
                self.set_state(VmState::ShuttingDown);
            }
            Some(Effect::Paused) => self.set_state(VmState::Paused),
            Some(Effect::Resumed) => self.set_state(VmState::Running),
            None => {}
        }
    }

    /// QEMU mode: a device node came back; its dead input-linux object is
    /// replaced by a new one on the same path.
    async fn readd_devices(&mut self) {
        let (Some(readd), Some(qmp)) = (self.readd.as_mut(), &self.qmp) else {
            return;
        };
        for obj in readd.replugged() {
            let del = qmp
                .execute_raw("object-del", Some(serde_json::json!({ "id": obj.id })))
                .await;
            let add = qmp.execute_raw("object-add", Some(obj.qmp_args())).await;
            match (del, add) {
                (_, Ok(_)) => tracing::info!(
                    "input: {} is back; QEMU object {} re-added",
                    obj.evdev.display(),
                    obj.id
                ),
                (del, Err(e)) => tracing::warn!(
                    "input: re-adding {} failed: {e} (object-del: {del:?})",
                    obj.id
                ),
            }
        }
    }

    /// How the VM ended, once QEMU is reaped with `status`; the state
    /// becomes final.
    pub(super) fn outcome(&mut self, status: std::io::Result<ExitStatus>) -> Outcome {
        let seen = Seen {
            ran: self.ran,
            shutdown_by_guest: self.shutdown_by_guest,
            stop_step: self.stopping.as_ref().map(|(e, _)| e.step()),
        };
        let outcome = outcome::how_it_ended(&seen, &status, &self.plan.paths.log);
        self.set_state(outcome.final_state());
        outcome
    }
}

/// What `ev` changes, if anything.
fn effect(ev: &QmpEvent) -> Option<Effect> {
    use qapi::qmp::Event;
    match ev.known() {
        Some(Event::SHUTDOWN { data, .. }) => Some(Effect::ShuttingDown {
            by_guest: data.guest,
        }),
        Some(Event::STOP { .. }) => Some(Effect::Paused),
        Some(Event::RESUME { .. }) => Some(Effect::Resumed),
        _ => None,
    }
}

/// Whether `log_event` logs `ev` at info (the others are debug).
fn logged_at_info(ev: &QmpEvent) -> bool {
    use qapi::qmp::Event;
    matches!(
        ev.known(),
        Some(Event::SHUTDOWN { .. } | Event::RESET { .. })
    )
}

fn log_event(ev: &QmpEvent) {
    use qapi::qmp::Event;
    match ev.known() {
        Some(Event::SHUTDOWN { data, .. }) => tracing::info!(
            "QEMU shutdown: guest={} reason={:?}",
            data.guest,
            data.reason
        ),
        Some(Event::RESET { data, .. }) => {
            tracing::info!("guest reset (guest={}): the VM keeps running", data.guest);
        }
        Some(Event::POWERDOWN { .. }) => tracing::debug!("ACPI powerdown delivered"),
        // The name is QEMU's choice, up to a QMP line long.
        _ => tracing::debug!("QMP event {}", clip(&ev.name(), 64)),
    }
}

async fn next_event(events: &mut Option<QmpEvents>) -> Option<QmpEvent> {
    match events.as_mut() {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

async fn router_next(router: &mut Option<Router>) -> RouterWake {
    match router.as_mut() {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

async fn readd_next(readd: &mut Option<Readd>) {
    match readd.as_mut() {
        Some(r) => r.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(wire: serde_json::Value) -> QmpEvent {
        let mut msg = wire;
        msg["timestamp"] = json!({ "seconds": 1, "microseconds": 0 });
        QmpEvent::Known(Box::new(serde_json::from_value(msg).unwrap()))
    }

    #[test]
    fn a_shutdown_says_whether_the_guest_asked_for_it() {
        // A guest poweroff, then a host `quit`.
        for (guest, reason) in [(true, "guest-shutdown"), (false, "host-qmp-quit")] {
            let ev = event(json!({
                "event": "SHUTDOWN",
                "data": { "guest": guest, "reason": reason }
            }));
            let want = Effect::ShuttingDown { by_guest: guest };
            assert_eq!(effect(&ev), Some(want), "{reason}");
        }
    }

    #[test]
    fn stop_and_resume_pause_and_resume_the_vm() {
        assert_eq!(
            effect(&event(json!({ "event": "STOP" }))),
            Some(Effect::Paused)
        );
        assert_eq!(
            effect(&event(json!({ "event": "RESUME" }))),
            Some(Effect::Resumed)
        );
    }

    #[test]
    fn reset_powerdown_and_other_events_change_nothing() {
        let reset = event(json!({
            "event": "RESET",
            "data": { "guest": true, "reason": "guest-reset" }
        }));
        assert_eq!(effect(&reset), None);
        assert_eq!(effect(&event(json!({ "event": "POWERDOWN" }))), None);
        let unknown = QmpEvent::Unknown {
            name: "SOMETHING_NEWER".into(),
            data: json!({}),
            timestamp: None,
        };
        assert_eq!(effect(&unknown), None);
    }
}
