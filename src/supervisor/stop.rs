//! Carrying out the stop schedule (`shutdown.rs` decides the steps): ACPI
//! powerdown and `quit` over QMP, then signals to QEMU's process group.

use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::event_loop::Vm;
use super::shutdown::{Action, Escalation, Step};
use super::state::VmState;

impl Vm<'_> {
    /// Starts the stop schedule, or escalates one that runs (`force`).
    pub(super) async fn request_stop(&mut self, timeout: Option<Duration>, force: bool) {
        match self.stopping.as_mut() {
            Some((escalation, at)) if force => {
                let action = escalation.escalate();
                *at = Instant::now();
                self.act(action).await;
            }
            Some(_) => {}
            // A forced stop skips the powerdown: its first step is quit.
            None if force => self.begin_stop(Some(Duration::ZERO)).await,
            None => self.begin_stop(timeout).await,
        }
    }

    pub(super) async fn begin_stop(&mut self, timeout: Option<Duration>) {
        let timeout = timeout.unwrap_or(self.plan.vm.shutdown_timeout.get());
        let (escalation, first) = Escalation::begin(timeout);
        self.stopping = Some((escalation, Instant::now()));
        self.set_state(VmState::ShuttingDown);
        self.act(first).await;
    }

    pub(super) async fn tick(&mut self) {
        let Some((escalation, at)) = self.stopping.as_mut() else {
            return;
        };
        let now = Instant::now();
        let action = escalation.tick(now - *at);
        *at = now;
        self.act(action).await;
    }

    async fn act(&mut self, action: Action) {
        let Action::Send(step) = action else {
            return;
        };
        let name = self.plan.vm.name.as_str();
        match step {
            Step::Powerdown => {
                tracing::info!("{name}: ACPI powerdown sent to the guest");
                if let Some(q) = &self.qmp {
                    if let Err(e) = q.system_powerdown().await {
                        tracing::warn!("system_powerdown: {e}");
                    }
                }
            }
            Step::Quit => {
                tracing::warn!("{name}: the guest did not power off in time; QMP quit");
                match &self.qmp {
                    Some(q) => {
                        if let Err(e) = q.quit().await {
                            tracing::warn!("quit: {e}");
                        }
                    }
                    None => self.signal(Signal::SIGTERM),
                }
            }
            Step::Sigterm => {
                tracing::warn!("{name}: QEMU still running after quit; SIGTERM");
                self.signal(Signal::SIGTERM);
            }
            Step::Sigkill => {
                tracing::warn!("{name}: QEMU still running after SIGTERM; SIGKILL");
                self.signal(Signal::SIGKILL);
            }
        }
    }

    /// Signals QEMU's whole process group (it may have helper children).
    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.qemu_pid {
            let _ = killpg(Pid::from_raw(pid as i32), sig);
        }
    }
}
