//! QMP client: `qapi`'s typed commands and events over our own line
//! transport, which survives anything QEMU sends that it does not know.
//!
//! One connection = one `QmpClient` (cheap to clone, usable concurrently
//! through `&self`) plus one `QmpEvents` stream. The end of the VM is the
//! QEMU child's exit status, not anything seen here.

mod commands;
mod error;
mod event;
mod transport;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use commands::{PciFunction, RunStatus, UsbHost, VcpuThread, VmStatus};
pub use error::{ErrorClass, QmpError};
pub use event::{QmpEvent, QmpEvents, Timestamp};

use transport::{Dispatch, Reply};

/// How long a command may take unless the caller says otherwise. QEMU
/// answers the commands vmrun uses in well under a millisecond; 10 s only
/// trips on a wedged QEMU (e.g. a main loop stuck in a VFIO reset).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest pause between two connection attempts in `connect_with_retry`.
const RETRY_MAX: Duration = Duration::from_millis(5);

/// QEMU's version from the greeting (`{"QMP": {"version": {"qemu": ..}}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVersion {
    pub major: u64,
    pub minor: u64,
    pub micro: u64,
    /// Distro build string, e.g. `"Debian 1:7.2+dfsg-7+deb12u18"`.
    pub package: String,
}

/// The greeting, read with our own struct: only the version is needed and
/// nothing else in it may fail the connection.
#[derive(Deserialize)]
struct Greeting {
    #[serde(rename = "QMP")]
    qmp: GreetingBody,
}

#[derive(Deserialize)]
struct GreetingBody {
    version: GreetingVersion,
    #[serde(default)]
    capabilities: Vec<Value>,
}

#[derive(Deserialize)]
struct GreetingVersion {
    qemu: Triple,
    #[serde(default)]
    package: String,
}

#[derive(Deserialize)]
struct Triple {
    major: u64,
    minor: u64,
    micro: u64,
}

type WriteRequest = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

/// A negotiated QMP connection. Clones share it; dropping the last clone
/// closes the connection and ends its `QmpEvents` stream.
#[derive(Debug, Clone)]
pub struct QmpClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    version: QemuVersion,
    capabilities: Vec<String>,
    writer: mpsc::Sender<WriteRequest>,
    dispatch: Arc<Dispatch>,
    next_id: AtomicU64,
    default_timeout: Duration,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without a client nobody can send commands; stop reading so a
        // peer that never closes does not keep a task alive forever.
        self.reader.abort();
    }
}

impl QmpClient {
    /// Connects to a listening QMP socket, reads the greeting and leaves
    /// capabilities negotiation mode. Must run inside a tokio runtime: the
    /// reader and writer are spawned tasks.
    pub async fn connect(path: impl AsRef<Path>) -> Result<(QmpClient, QmpEvents), QmpError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Self::handshake(stream, path, Instant::now() + DEFAULT_TIMEOUT).await
    }

    /// Greeting and negotiation on a stream already connected to `path`
    /// (e.g. queued on a listening socket QEMU was handed), both bounded by
    /// `deadline`.
    pub async fn handshake(
        stream: UnixStream,
        path: &Path,
        deadline: Instant,
    ) -> Result<(QmpClient, QmpEvents), QmpError> {
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);
        let greeting = tokio::time::timeout_at(deadline, read_greeting(&mut read, path))
            .await
            .map_err(|_| QmpError::Greeting {
                path: path.to_owned(),
                reason: "no greeting before the deadline".into(),
            })??;

        let dispatch = Arc::new(Dispatch::default());
        let (ev_tx, events) = event::channel(transport::EVENT_QUEUE, transport::EVENT_QUEUE_BYTES);
        let reader = tokio::spawn(transport::run_reader(read, dispatch.clone(), ev_tx));
        let (w_tx, w_rx) = mpsc::channel(64);
        tokio::spawn(transport::run_writer(write, w_rx));

        let g = greeting.qmp;
        let client = QmpClient {
            inner: Arc::new(Inner {
                version: QemuVersion {
                    major: g.version.qemu.major,
                    minor: g.version.qemu.minor,
                    micro: g.version.qemu.micro,
                    package: g.version.package,
                },
                capabilities: g
                    .capabilities
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect(),
                writer: w_tx,
                dispatch,
                next_id: AtomicU64::new(0),
                default_timeout: DEFAULT_TIMEOUT,
                reader,
            }),
        };
        // "qmp_capabilities ... must be issued before any other command"
        // (qmp-spec). Enabling nothing keeps OOB off: one reply per command,
        // in order, is all vmrun needs.
        client
            .execute_within(
                qapi::qmp::qmp_capabilities { enable: None },
                deadline.saturating_duration_since(Instant::now()),
            )
            .await?;
        Ok((client, events))
    }

    /// QEMU's version, from the greeting.
    pub fn version(&self) -> &QemuVersion {
        &self.inner.version
    }

    /// Capabilities QEMU offered in the greeting (e.g. `"oob"`); none are enabled.
    pub fn capabilities(&self) -> &[String] {
        &self.inner.capabilities
    }

    /// Runs a typed `qapi` command with the default timeout.
    pub async fn execute<C: qapi::Command>(&self, cmd: C) -> Result<C::Ok, QmpError> {
        self.execute_within(cmd, self.inner.default_timeout).await
    }

    /// Runs a typed `qapi` command, giving up after `timeout`.
    pub async fn execute_within<C: qapi::Command>(
        &self,
        cmd: C,
        timeout: Duration,
    ) -> Result<C::Ok, QmpError> {
        let id = self.next_id();
        let line =
            serde_json::to_vec(&qapi::Execute::<C, u64>::new(cmd, Some(id))).map_err(|source| {
                QmpError::Encode {
                    command: C::NAME.to_owned(),
                    source,
                }
            })?;
        let value = self.round_trip(C::NAME, id, line, timeout).await?;
        serde_json::from_value(value).map_err(|source| QmpError::Decode {
            command: C::NAME.to_owned(),
            source,
        })
    }

    /// Runs any command by name with JSON arguments (`vmrun qmp NAME CMD
    /// [JSON]`), returning QEMU's `"return"` value untouched.
    pub async fn execute_raw(&self, name: &str, args: Option<Value>) -> Result<Value, QmpError> {
        self.execute_raw_within(name, args, self.inner.default_timeout)
            .await
    }

    /// `execute_raw` with an explicit timeout.
    pub async fn execute_raw_within(
        &self,
        name: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id();
        let mut msg = serde_json::Map::new();
        msg.insert("execute".into(), Value::String(name.to_owned()));
        if let Some(args) = args {
            msg.insert("arguments".into(), args);
        }
        msg.insert("id".into(), Value::from(id));
        let line = serde_json::to_vec(&msg).map_err(|source| QmpError::Encode {
            command: name.to_owned(),
            source,
        })?;
        self.round_trip(name, id, line, timeout).await
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn round_trip(
        &self,
        command: &str,
        id: u64,
        mut line: Vec<u8>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        line.push(b'\n');
        let dispatch = &self.inner.dispatch;
        let disconnected = || QmpError::Disconnected {
            command: command.to_owned(),
        };
        // Registered before sending: QEMU may answer before `send` returns.
        let rx = dispatch.register(id).ok_or_else(disconnected)?;
        let _forget = ForgetOnDrop { dispatch, id };
        let exchange = async {
            let (done_tx, done_rx) = oneshot::channel();
            self.inner
                .writer
                .send((line, done_tx))
                .await
                .map_err(|_| disconnected())?;
            match done_rx.await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(QmpError::Send {
                        command: command.to_owned(),
                        source,
                    })
                }
                Err(_) => return Err(disconnected()),
            }
            let reply: Reply = rx.await.map_err(|_| disconnected())?;
            reply.map_err(|f| QmpError::Command {
                command: command.to_owned(),
                class: f.class,
                desc: f.desc,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| QmpError::Timeout {
                command: command.to_owned(),
                after: timeout,
            })?
    }
}

/// Removes a waiter whose caller stopped waiting, so timed-out or cancelled
/// commands do not accumulate in the map.
struct ForgetOnDrop<'a> {
    dispatch: &'a Dispatch,
    id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.dispatch.forget(self.id);
    }
}

async fn read_greeting(
    read: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    path: &Path,
) -> Result<Greeting, QmpError> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let bad = |reason: String| QmpError::Greeting {
        path: path.to_owned(),
        reason,
    };
    let mut line = Vec::new();
    // The greeting is a few hundred bytes; a peer sending more without a
    // newline gets a bounded read, not our memory.
    let n = read
        .take(transport::MAX_LINE)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| bad(format!("read failed: {e}")))?;
    if n == 0 {
        return Err(bad("closed before the greeting".into()));
    }
    serde_json::from_slice(&line).map_err(|e| {
        let text = String::from_utf8_lossy(&line);
        bad(format!(
            "unexpected greeting {:?}: {e}",
            crate::ratelimit::clip(&text, 200)
        ))
    })
}

/// Connects to the QMP socket of a QEMU that was just spawned. QEMU creates
/// the socket shortly after start, so a missing socket (`ENOENT`) or one not
/// yet listening (`ECONNREFUSED`) is retried every 1-5 ms until `deadline`;
/// other errors fail at once. The deadline also bounds the handshake.
pub async fn connect_with_retry(
    path: impl AsRef<Path>,
    deadline: Instant,
) -> Result<(QmpClient, QmpEvents), QmpError> {
    let path = path.as_ref();
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    let stream = loop {
        match UnixStream::connect(path).await {
            Ok(s) => break s,
            Err(e) if retryable(&e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(timeout_error(path, start, e));
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
            Err(source) => {
                return Err(QmpError::Connect {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    };
    QmpClient::handshake(stream, path, deadline).await
}

fn retryable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

fn timeout_error(path: &Path, start: Instant, last: std::io::Error) -> QmpError {
    let never_appeared = last.kind() == std::io::ErrorKind::NotFound;
    QmpError::ConnectTimeout {
        path: PathBuf::from(path),
        waited: start.elapsed(),
        last: (!never_appeared).then_some(last),
    }
}
