//! `control.sock` served beside the supervisor's loop, not in it: each
//! client gets its own task, bounded in time (`Limits::deadline` to send
//! its request and again to take the reply), in size (`max_request` bytes
//! read, then the request is refused) and in number (`max_clients` at
//! once; one more is told so and closed at once). The loop only sees a parsed `Request` and
//! answers it through a oneshot, so an idle, slow or endless client costs
//! the loop nothing, and memory stays under `max_clients * max_request`.
//! `close` lets replies the loop already gave reach their clients: a
//! forced stop's answer races the end of QEMU and of the loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::control::{run_status_name, Reply, Request, Status};
use crate::qmp::QmpClient;
use crate::ratelimit::RateLimit;

/// What a client may cost.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// For the client to send its request, and again to take the reply:
    /// `vmrun status` and `stop` need milliseconds.
    pub deadline: Duration,
    /// For the loop to answer: it may be waiting on QEMU (a stop sends a
    /// QMP command first). Below `call`'s 10 s, so the client hears why.
    pub answer_within: Duration,
    /// Longest request read; the longest real one is under 100 bytes.
    pub max_request: usize,
    /// Clients served at once.
    pub max_clients: usize,
}

/// The supervisor's limits.
pub(super) const LIMITS: Limits = Limits {
    deadline: Duration::from_secs(2),
    answer_within: Duration::from_secs(7),
    max_request: 64 * 1024,
    max_clients: 16,
};

/// How long QMP's `query-status` may take inside a status reply: a
/// wedged QEMU leaves `qmp_status` empty rather than the reply late.
const QMP_STATUS_WITHIN: Duration = Duration::from_secs(1);

/// After a failed accept (out of fds...), a pause instead of a spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long `close` waits for answered clients to take their replies.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One request for the loop, and where its answer goes.
pub(super) struct Call {
    pub request: Request,
    pub answer: oneshot::Sender<Answer>,
}

/// The loop's answer to a `Call`.
pub(super) enum Answer {
    Reply(Reply),
    /// The loop's view of the VM; the client's task adds QMP's run state
    /// from this client, so a slow QEMU delays that client only.
    Status(Box<Status>, Option<QmpClient>),
}

#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("request longer than {max} bytes; refused")]
    TooLong { max: usize },
    #[error("unreadable request: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("reading the request: {0}")]
    Io(#[source] std::io::Error),
}

/// The accept task and the calls it passes on. Dropping it closes the
/// socket and ends every client's task; `close` first lets the answered
/// ones write their replies.
pub(super) struct ControlServer {
    calls: mpsc::Receiver<Call>,
    closing: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Starts serving `listener` on the current runtime.
    pub(super) fn start(listener: UnixListener, limits: Limits) -> Self {
        // Each client sends at most one call: `max_clients` never fills it.
        let (tx, calls) = mpsc::channel(limits.max_clients.max(1));
        let (closing, closed) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, limits, tx, closed));
        Self {
            calls,
            closing,
            task,
        }
    }

    /// Stops accepting, answers requests not yet taken with "shutting
    /// down", drops idle clients and waits (up to `CLOSE_GRACE`) for the
    /// replies the loop already gave to be written.
    pub(super) async fn close(mut self) {
        self.calls.close();
        // Dropping a queued call drops its oneshot: its client is told.
        while self.calls.try_recv().is_ok() {}
        let _ = self.closing.send(true);
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut self.task).await;
    }

    /// The next request for the loop.
    pub(super) async fn next(&mut self) -> Call {
        match self.calls.recv().await {
            Some(call) => call,
            // The accept task holds a sender until it is aborted.
            None => std::future::pending().await,
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: UnixListener,
    limits: Limits,
    calls: mpsc::Sender<Call>,
    mut closed: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_clients));
    // Owned here: aborting this task drops the set, which aborts them all.
    let mut clients = JoinSet::new();
    let mut noisy = RateLimit::new(5, 1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = closed.wait_for(|closed| *closed) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if noisy.admit().is_some() {
                    tracing::warn!("control.sock: accept failed: {e}");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        while clients.try_join_next().is_some() {}
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let closed = closed.clone();
                clients.spawn(serve(stream, limits, calls.clone(), closed, slot));
            }
            Err(_) => {
                let message = format!(
                    "the supervisor already serves {} control clients; try again",
                    limits.max_clients
                );
                tell_and_close(stream, &Reply::Error { message });
                if let Some(a) = noisy.admit() {
                    tracing::warn!(
                        "control.sock: {} clients at once; one more refused ({} more since the last such message)",
                        limits.max_clients,
                        a.suppressed
                    );
                }
            }
        }
    }
    drop(listener);
    while clients.join_next().await.is_some() {}
}

/// One client: its request read within `limits.deadline` (or until the
/// server closes), the loop's answer awaited within
/// `limits.answer_within`, the reply written within `limits.deadline`.
async fn serve(
    mut stream: UnixStream,
    limits: Limits,
    calls: mpsc::Sender<Call>,
    mut closed: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let read = tokio::select! {
        read = tokio::time::timeout(
            limits.deadline,
            read_request(&mut stream, limits.max_request),
        ) => read,
        _ = closed.wait_for(|closed| *closed) => return,
    };
    let reply = match read {
        Err(_) => {
            let message = format!("no complete request within {:?}; closed", limits.deadline);
            tell_and_close(stream, &Reply::Error { message });
            return;
        }
        Ok(Err(e)) => Reply::Error {
            message: e.to_string(),
        },
        Ok(Ok(request)) => tokio::time::timeout(limits.answer_within, ask(&calls, request))
            .await
            .unwrap_or_else(|_| Reply::Error {
                message: format!(
                    "the supervisor did not answer within {:?}",
                    limits.answer_within
                ),
            }),
    };
    let line = reply_line(&reply);
    let _ = tokio::time::timeout(limits.deadline, stream.write_all(&line)).await;
}

/// One write that never waits: the reply fits an empty socket buffer, and
/// a client that can't take it is closed all the same. Done on the std
/// socket: tokio's `try_write` refuses until the reactor has seen the
/// socket writable, which a fresh connection has not.
fn tell_and_close(stream: UnixStream, reply: &Reply) {
    if let Ok(mut stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut stream, &reply_line(reply));
    }
}

/// Reads one request line, holding at most `max` bytes (plus one read).
/// The end of the stream also ends a request.
async fn read_request(stream: &mut UnixStream, max: usize) -> Result<Request, RequestError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(RequestError::Io)?;
        if n == 0 {
            break;
        }
        let newline = chunk[..n].iter().position(|&b| b == b'\n');
        buf.extend_from_slice(&chunk[..newline.unwrap_or(n)]);
        if buf.len() > max {
            return Err(RequestError::TooLong { max });
        }
        if newline.is_some() {
            break;
        }
    }
    serde_json::from_slice(&buf).map_err(RequestError::Unreadable)
}

/// Hands `request` to the loop and waits for its answer.
async fn ask(calls: &mpsc::Sender<Call>, request: Request) -> Reply {
    let gone = || Reply::Error {
        message: "the supervisor is shutting down".into(),
    };
    let (answer, answered) = oneshot::channel();
    if calls.send(Call { request, answer }).await.is_err() {
        return gone();
    }
    match answered.await {
        Ok(Answer::Reply(reply)) => reply,
        Ok(Answer::Status(mut status, qmp)) => {
            if let Some(qmp) = qmp {
                let asked = tokio::time::timeout(QMP_STATUS_WITHIN, qmp.query_status()).await;
                status.qmp_status = asked
                    .ok()
                    .and_then(Result::ok)
                    .map(|s| run_status_name(&s.status));
            }
            Reply::Status(status)
        }
        Err(_) => gone(),
    }
}

fn reply_line(reply: &Reply) -> Vec<u8> {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Instant;
    use tokio::io::{AsyncBufReadExt, BufReader};

    const TEST_LIMITS: Limits = Limits {
        deadline: Duration::from_millis(300),
        answer_within: Duration::from_millis(300),
        max_request: 1024,
        max_clients: 4,
    };

    /// A server on a fresh socket, and a loop that answers every request
    /// with "stopping" at once.
    fn server(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("control.sock");
        let mut server = ControlServer::start(UnixListener::bind(&path).unwrap(), TEST_LIMITS);
        tokio::spawn(async move {
            loop {
                let call = server.next().await;
                let step = crate::supervisor::shutdown::Step::Quit;
                let _ = call.answer.send(Answer::Reply(Reply::Stopping { step }));
            }
        });
        path
    }

    async fn reply_to(stream: UnixStream) -> Option<Reply> {
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).ok()
    }

    async fn request(path: &Path) -> Option<Reply> {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(b"{\"op\":\"status\"}\n").await.unwrap();
        reply_to(s).await
    }

    fn is_error(reply: &Option<Reply>, text: &str) -> bool {
        matches!(reply, Some(Reply::Error { message }) if message.contains(text))
    }

    #[tokio::test]
    async fn idle_clients_delay_no_one_and_are_closed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path());
        let mut idle = Vec::new();
        for _ in 0..TEST_LIMITS.max_clients - 1 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        let began = Instant::now();
        let reply = request(&path).await;
        assert!(matches!(reply, Some(Reply::Stopping { .. })), "{reply:?}");
        assert!(
            began.elapsed() < TEST_LIMITS.deadline,
            "{:?}",
            began.elapsed()
        );
        // Each idle client is told and closed once its deadline passed.
        for s in idle {
            let reply = reply_to(s).await;
            assert!(is_error(&reply, "within"), "{reply:?}");
        }
        assert!(began.elapsed() >= TEST_LIMITS.deadline);
    }

    #[tokio::test]
    async fn a_request_past_the_size_cap_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path());
        let s = UnixStream::connect(&path).await.unwrap();
        let (read, mut write) = s.into_split();
        // An endless request: the writer never stops on its own.
        let writer = tokio::spawn(async move {
            let junk = [b'x'; 4096];
            let mut sent = 0usize;
            while write.write_all(&junk).await.is_ok() {
                sent += junk.len();
            }
            sent
        });
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await.unwrap();
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert!(is_error(&Some(reply), "longer than 1024 bytes"), "{line}");
        // Closed after the refusal: the writer fails, having sent little.
        let sent = writer.await.unwrap();
        assert!(sent < 1 << 20, "the server read {sent} bytes");
    }

    #[tokio::test]
    async fn garbage_is_answered_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path());
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"op\":\"reboot-the-host\"}\n")
            .await
            .unwrap();
        assert!(is_error(&reply_to(s).await, "unreadable request"));
    }

    #[tokio::test]
    async fn a_client_past_the_cap_is_refused_at_once_and_served_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path());
        let mut idle = Vec::new();
        for _ in 0..TEST_LIMITS.max_clients {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        // Give the accept task the time to take them all.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let began = Instant::now();
        let refused = request(&path).await;
        assert!(is_error(&refused, "already serves 4"), "{refused:?}");
        assert!(
            began.elapsed() < TEST_LIMITS.deadline,
            "{:?}",
            began.elapsed()
        );
        drop(idle);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let served = request(&path).await;
        assert!(matches!(served, Some(Reply::Stopping { .. })), "{served:?}");
    }

    #[tokio::test]
    async fn a_loop_that_does_not_answer_is_reported_to_the_client_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // Nobody takes the calls: the server is never asked for `next`.
        let _server = ControlServer::start(UnixListener::bind(&path).unwrap(), TEST_LIMITS);
        let began = Instant::now();
        let reply = request(&path).await;
        assert!(is_error(&reply, "did not answer within"), "{reply:?}");
        assert!(began.elapsed() < TEST_LIMITS.answer_within * 3);
    }

    #[tokio::test]
    async fn dropping_the_server_ends_its_clients() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let server = ControlServer::start(
            UnixListener::bind(&path).unwrap(),
            Limits {
                deadline: Duration::from_secs(3600),
                ..TEST_LIMITS
            },
        );
        let client = UnixStream::connect(&path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(server);
        let ended = tokio::time::timeout(Duration::from_secs(5), reply_to(client)).await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
    }

    #[tokio::test]
    async fn a_reply_given_just_before_close_still_reaches_its_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let mut server = ControlServer::start(UnixListener::bind(&path).unwrap(), TEST_LIMITS);
        let idle = UnixStream::connect(&path).await.unwrap();
        let client = tokio::spawn({
            let path = path.clone();
            async move { request(&path).await }
        });
        // As the supervisor's loop: answer a stop, then end at once.
        let call = server.next().await;
        let step = crate::supervisor::shutdown::Step::Quit;
        let _ = call.answer.send(Answer::Reply(Reply::Stopping { step }));
        let began = Instant::now();
        server.close().await;
        assert!(began.elapsed() < CLOSE_GRACE, "{:?}", began.elapsed());
        let reply = client.await.unwrap();
        assert!(matches!(reply, Some(Reply::Stopping { .. })), "{reply:?}");
        // The idle client was closed without waiting for its deadline.
        assert!(reply_to(idle).await.is_none());
        assert!(UnixStream::connect(&path).await.is_err(), "still accepting");
    }
}
