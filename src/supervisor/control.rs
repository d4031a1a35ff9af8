//! The supervisor's control socket (`control.sock` in the run dir): one JSON
//! request per connection, one JSON reply. `vmrun status` and `vmrun stop`
//! use it; QMP stays free for QEMU's own clients. The wire, the client's
//! `call` and the loop's `on_control` live here; `control_server` serves
//! the socket.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::control_server::{Answer, Call};
use super::event_loop::Vm;
use super::shutdown::Step;
use super::state::VmState;
use crate::input::router::Router;
use crate::input::{Side, Switch};
use crate::qmp::RunStatus;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum Request {
    Status,
    /// Shut the guest down; `force` skips straight to the next escalation
    /// step, `timeout_ms` replaces the config's `[shutdown] timeout`.
    Stop {
        timeout_ms: Option<u64>,
        force: bool,
    },
    /// Router mode: move the input (`to`), or just say where it is.
    Input {
        to: Option<Switch>,
    },
}

/// What `vmrun status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Status {
    pub name: String,
    pub state: VmState,
    pub supervisor_pid: u32,
    pub qemu_pid: Option<u32>,
    /// Seconds since QEMU started.
    pub uptime_s: u64,
    /// QMP `query-status`'s `status` (`running`, `paused`, `prelaunch`...).
    pub qmp_status: Option<String>,
    /// The escalation step a stop has reached.
    pub stopping: Option<Step>,
    pub devices: Vec<String>,
    pub qmp_socket: String,
    pub console_socket: String,
    /// Router mode: the side that has the keyboard and mouse.
    #[serde(default)]
    pub input_focus: Option<Side>,
    /// `[cpu] isolate` / `emulator_pin` / `governor` in force.
    #[serde(default)]
    pub isolation: Option<super::isolation::Isolation>,
    /// `[looking_glass]`: the client's command line, as the dry-run shows it.
    #[serde(default)]
    pub looking_glass_client: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Reply {
    Status(Box<Status>),
    Stopping { step: Step },
    Input { focus: Side },
    Error { message: String },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("the supervisor's control socket {path} did not answer: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the supervisor answered something unexpected: {0}")]
    Protocol(String),
}

impl ControlError {
    /// Nothing listens on the socket yet: its file is missing, or bound
    /// but not yet listening (ECONNREFUSED on a unix socket).
    pub(crate) fn not_listening(&self) -> bool {
        matches!(self, Self::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused))
    }
}

/// Sends `request` to the supervisor at `socket` and returns its reply.
pub(crate) async fn call(socket: &Path, request: &Request) -> Result<Reply, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.display().to_string(),
        source,
    };
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await.map_err(io)?;
        let mut line =
            serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).await.map_err(io)?;
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .await
            .map_err(io)?;
        serde_json::from_str(&reply).map_err(|e| ControlError::Protocol(format!("{e}: {reply:?}")))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(io(std::io::ErrorKind::TimedOut.into())))
}

impl Vm<'_> {
    /// Answers one request a client's task passed on (`control_server`).
    /// A client that left meanwhile is no concern of the loop's.
    pub(super) async fn on_control(&mut self, call: Call) {
        let answer = match call.request {
            Request::Status => Answer::Status(Box::new(self.status()), self.qmp.clone()),
            Request::Stop { timeout_ms, force } => {
                // A guest that never ran has nothing to shut down cleanly.
                let timeout = match self.state {
                    VmState::Starting => Some(Duration::ZERO),
                    _ => timeout_ms.map(Duration::from_millis),
                };
                self.request_stop(timeout, force).await;
                Answer::Reply(Reply::Stopping {
                    step: self
                        .stopping
                        .as_ref()
                        .map_or(Step::Powerdown, |(e, _)| e.step()),
                })
            }
            // The router takes the devices only once the guest runs.
            Request::Input { to: Some(_) } if self.state == VmState::Starting => {
                Answer::Reply(Reply::Error {
                    message: "the VM is still starting; switch the input once it runs".into(),
                })
            }
            Request::Input { to } => Answer::Reply(match self.router.as_mut() {
                Some(r) => Reply::Input {
                    focus: match to {
                        Some(to) => r.switch(to),
                        None => r.side(),
                    },
                },
                None => Reply::Error {
                    message: "this VM has no [input] in router mode".into(),
                },
            }),
        };
        let _ = call.answer.send(answer);
    }

    /// The loop's view of the VM; `qmp_status` is for the client's task
    /// to fill in.
    fn status(&self) -> Status {
        let paths = &self.plan.paths;
        Status {
            name: self.plan.vm.name.to_string(),
            state: self.state,
            supervisor_pid: std::process::id(),
            qemu_pid: self.qemu_pid,
            uptime_s: self.started.elapsed().as_secs(),
            qmp_status: None,
            stopping: self.stopping.as_ref().map(|(e, _)| e.step()),
            devices: self
                .plan
                .hostdevs
                .iter()
                .map(|h| h.address.to_string())
                .collect(),
            qmp_socket: paths.qmp_ctl_socket.display().to_string(),
            console_socket: paths.console_socket.display().to_string(),
            input_focus: self.router.as_ref().map(Router::side),
            isolation: super::isolation::in_force(self.plan),
            looking_glass_client: self.plan.looking_glass_client(),
        }
    }
}

/// QMP's wire name of a run state (`running`, `paused`, ...).
pub(super) fn run_status_name(status: &RunStatus) -> String {
    match status {
        RunStatus::Known(state) => serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{state:?}")),
        RunStatus::Other(name) => name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_now(socket: &Path) -> Result<Reply, ControlError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(call(socket, &Request::Status))
    }

    #[test]
    fn a_socket_that_is_missing_or_not_listening_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("control.sock");
        assert!(call_now(&missing).unwrap_err().not_listening());
        // A listener that was dropped leaves its file behind: connect(2) to
        // it is refused, as between a supervisor's bind(2) and listen(2).
        drop(std::os::unix::net::UnixListener::bind(&missing).unwrap());
        assert!(call_now(&missing).unwrap_err().not_listening());
        assert!(!ControlError::Protocol("x".into()).not_listening());
    }

    #[test]
    fn run_status_names_are_qmp_wire_names() {
        let known = RunStatus::Known(qapi::qmp::RunState::inmigrate);
        assert_eq!(run_status_name(&known), "inmigrate");
        let newer = RunStatus::Other("some-new-state".into());
        assert_eq!(run_status_name(&newer), "some-new-state");
    }

    #[test]
    fn requests_have_a_stable_wire_form() {
        let stop = Request::Stop {
            timeout_ms: Some(5000),
            force: false,
        };
        assert_eq!(
            serde_json::to_string(&stop).unwrap(),
            r#"{"op":"stop","timeout_ms":5000,"force":false}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        let input = Request::Input {
            to: Some(Switch::Toggle),
        };
        assert_eq!(
            serde_json::to_string(&input).unwrap(),
            r#"{"op":"input","to":"toggle"}"#
        );
    }
}
