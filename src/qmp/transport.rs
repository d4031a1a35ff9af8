//! The QMP wire: one JSON object per line each way (docs/interop/qmp-spec:
//! "All interactions transmitted by the Server and the Client are JSON
//! objects ... terminated by CRLF or LF").
//!
//! Owned here instead of using `qapi`'s transport because that one decodes
//! every line into a closed enum and ends the whole session on the first
//! event it does not know (qapi-rs#23). The rule here: nothing QEMU sends can
//! end the session except the end of the connection itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::error::ErrorClass;
use super::event::{self, EventSender, QmpEvent, TrySend};
use crate::ratelimit::{clip, RateLimit};

/// Longest line accepted; a longer one is read in bounded pieces and
/// skipped, so a line costs at most this much memory (plus its JSON
/// tree). Measured on QEMU 7.2: `query-qmp-schema`, the largest reply
/// (`vmrun qmp` may ask for it), is 207,000 bytes; `query-pci`, the largest
/// vmrun asks for itself, is about 460 bytes a PCI function (34,820 for
/// 76 behind switches), so 1 MiB fits some 2,000 functions.
pub(crate) const MAX_LINE: u64 = 1 << 20;

/// Events queued for a consumer that is not reading, and the bytes (on
/// the wire) they may hold. Past either they are dropped: a full queue must
/// never stall the reader, or command replies would stop being routed too.
/// An event arriving at an empty queue always fits.
pub(crate) const EVENT_QUEUE: usize = 1024;
pub(crate) const EVENT_QUEUE_BYTES: usize = 1 << 20;

/// Distinct names of untyped events warned about once each; past this
/// they are logged like repeats. Bounded: a QEMU can make up names.
const UNTYPED_NAMES_WARNED: usize = 32;

/// Warnings about what QEMU sends (strays, long lines, drops): a burst,
/// then one a second; the rest counted.
const NOISE_BURST: u32 = 20;
const NOISE_PER_SECOND: u32 = 1;

/// How much of a stray line or an event name goes into the log.
const LOGGED_TEXT: usize = 200;

/// A command's outcome as QEMU sent it, before typing.
pub(crate) type Reply = Result<Value, Failure>;

/// The `"error"` member of a reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub class: ErrorClass,
    pub desc: String,
}

/// Waiters for replies, keyed by the numeric `id` sent with each command.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once the reader stopped; later commands fail at once instead of
    /// waiting for a reply that cannot come.
    closed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Dispatch {
    pending: Mutex<Pending>,
}

impl Dispatch {
    /// Registers a waiter for `id`; `None` if the connection is gone.
    pub(super) fn register(&self, id: u64) -> Option<oneshot::Receiver<Reply>> {
        let mut p = self.lock();
        if p.closed {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        p.waiters.insert(id, tx);
        Some(rx)
    }

    /// Forgets a waiter whose caller gave up (timeout or cancellation).
    pub(super) fn forget(&self, id: u64) {
        self.lock().waiters.remove(&id);
    }

    /// Whether someone waited for `id`. The waiter may have timed out a
    /// moment ago; that is fine.
    fn deliver(&self, id: u64, reply: Reply) -> bool {
        match self.lock().waiters.remove(&id) {
            Some(tx) => {
                drop(tx.send(reply));
                true
            }
            None => false,
        }
    }

    /// Dropping every sender wakes each waiter with a closed channel, which
    /// the client reports as `Disconnected`.
    fn close(&self) {
        let mut p = self.lock();
        p.closed = true;
        p.waiters.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock leaves the map consistent (each
        // operation is a single insert/remove), so poisoning is ignored.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one line from QEMU turned out to be.
#[derive(Debug)]
pub(crate) enum Incoming {
    Event(QmpEvent),
    /// An event `qapi` could not type; carries the reason for the log.
    Untyped(QmpEvent, String),
    Reply(u64, Reply),
    /// Anything else: not JSON, not an object, a reply without our id.
    Stray(String),
}

/// Sorts one line. Pure, so every odd input is unit-tested below.
pub(crate) fn classify(line: &[u8]) -> Incoming {
    let msg: Value = match serde_json::from_slice(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Incoming::Stray("not a JSON object".into()),
        Err(e) => return Incoming::Stray(format!("not JSON: {e}")),
    };
    if msg.get("event").is_some() {
        return match event::decode(msg) {
            Ok(ev) => Incoming::Event(ev),
            Err(u) => Incoming::Untyped(u.event, u.reason.to_string()),
        };
    }
    let reply = if let Some(ret) = msg.get("return") {
        Ok(ret.clone())
    } else if let Some(err) = msg.get("error") {
        Err(failure(err))
    } else {
        return Incoming::Stray("neither an event nor a reply".into());
    };
    match msg.get("id").and_then(Value::as_u64) {
        Some(id) => Incoming::Reply(id, reply),
        None => Incoming::Stray("reply without a numeric id".into()),
    }
}

/// Reads `{"class": "...", "desc": "..."}` leniently: a malformed error is
/// still an error for the waiter, never a reason to drop the line.
fn failure(err: &Value) -> Failure {
    let class = err.get("class").and_then(Value::as_str).unwrap_or("?");
    let desc = match err.get("desc").and_then(Value::as_str) {
        Some(d) => d.to_owned(),
        None => err.to_string(),
    };
    Failure {
        class: ErrorClass::from_wire(class),
        desc,
    }
}

enum Line {
    Data,
    TooLong,
    Eof,
}

async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: u64,
) -> std::io::Result<Line> {
    buf.clear();
    let n = (&mut *reader).take(max).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') || (n as u64) < max {
        return Ok(Line::Data);
    }
    // Skip the rest of the oversized line in bounded pieces.
    loop {
        buf.clear();
        let n = (&mut *reader).take(max).read_until(b'\n', buf).await?;
        if n == 0 || buf.last() == Some(&b'\n') {
            return Ok(Line::TooLong);
        }
    }
}

/// The reader's log: every warning about what QEMU sent goes through one
/// rate limit, and untyped event names are remembered up to a fixed count.
struct Noise {
    limit: RateLimit,
    untyped_warned: Vec<String>,
}

impl Noise {
    fn new() -> Self {
        Self {
            limit: RateLimit::new(NOISE_BURST, NOISE_PER_SECOND),
            untyped_warned: Vec::new(),
        }
    }

    /// Whether to log one more warning; says what was held back first.
    fn admit(&mut self) -> bool {
        let Some(admitted) = self.limit.admit() else {
            return false;
        };
        if admitted.suppressed > 0 {
            tracing::warn!(
                "{} QMP warnings not logged (more than {NOISE_PER_SECOND} a second)",
                admitted.suppressed
            );
        }
        true
    }

    /// Loud once per name, quiet after: a newer QEMU may emit an unknown
    /// event often, and it is not an error.
    fn untyped(&mut self, name: &str, reason: &str) {
        let name = clip(name, LOGGED_TEXT);
        let first = !self.untyped_warned.iter().any(|n| *n == name)
            && self.untyped_warned.len() < UNTYPED_NAMES_WARNED;
        if !self.admit() {
            return;
        }
        if first {
            self.untyped_warned.push(name.to_string());
            // serde's reason quotes the name and lists every known event.
            let reason = clip(reason, LOGGED_TEXT);
            tracing::warn!(event = %name, %reason, "QMP event not in the qapi 0.15 schema; passed on untyped");
        } else {
            tracing::debug!(event = %name, "untyped QMP event");
        }
    }
}

/// Reads until EOF or an IO error, routing replies and events. Returns only
/// when the connection is over; then every pending command is woken with
/// `Disconnected` and the event stream ends.
pub(crate) async fn run_reader<R: AsyncBufRead + Unpin>(
    mut reader: R,
    dispatch: Arc<Dispatch>,
    events: EventSender,
) {
    let mut buf = Vec::new();
    let mut noise = Noise::new();
    loop {
        match read_line(&mut reader, &mut buf, MAX_LINE).await {
            Ok(Line::Data) => {}
            Ok(Line::TooLong) => {
                if noise.admit() {
                    tracing::warn!(max = MAX_LINE, "QMP line too long; skipped");
                }
                continue;
            }
            Ok(Line::Eof) => {
                tracing::debug!("QMP connection closed by QEMU");
                break;
            }
            // A QEMU that exits (after `quit`, or killed) with our reply
            // unread resets the socket instead of closing it: an end, as EOF.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                tracing::debug!("QMP connection reset by QEMU");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "QMP read failed; connection considered closed");
                break;
            }
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        match classify(line) {
            Incoming::Reply(id, reply) => {
                if !dispatch.deliver(id, reply) && noise.admit() {
                    tracing::warn!(id, "QMP reply for an id nobody waits for; dropped");
                }
            }
            Incoming::Event(ev) => forward(&events, ev, line.len(), &mut noise),
            Incoming::Untyped(ev, reason) => {
                noise.untyped(&ev.name(), &reason);
                forward(&events, ev, line.len(), &mut noise);
            }
            Incoming::Stray(why) => {
                if noise.admit() {
                    let text = String::from_utf8_lossy(line);
                    let line = clip(&text, LOGGED_TEXT);
                    tracing::warn!(%line, why = %clip(&why, LOGGED_TEXT), "unexpected QMP line; skipped");
                }
            }
        }
    }
    dispatch.close();
}

fn forward(events: &EventSender, ev: QmpEvent, size: usize, noise: &mut Noise) {
    match events.try_send(ev, size) {
        Ok(()) => {}
        Err(TrySend::Full(ev)) => {
            if noise.admit() {
                let name = ev.name();
                tracing::warn!(event = %clip(&name, LOGGED_TEXT), "QMP event queue full; event dropped");
            }
        }
        // Nobody listens for events; replies still matter.
        Err(TrySend::Closed) => {}
    }
}

/// Writes queued lines in order. A task owns the socket's write half so
/// that a caller timing out mid-write can never leave half a command on the
/// wire. Ends when every client handle is gone; dropping the write half then
/// shuts it down, and QEMU answers by closing the connection.
pub(crate) async fn run_writer<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: W,
    mut lines: mpsc::Receiver<(Vec<u8>, oneshot::Sender<std::io::Result<()>>)>,
) {
    while let Some((line, done)) = lines.recv().await {
        let res = async {
            writer.write_all(&line).await?;
            writer.flush().await
        }
        .await;
        let failed = res.is_err();
        drop(done.send(res));
        if failed {
            // The socket is broken; the reader will see EOF and wake everyone.
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_return_with_id_is_reply() {
        let got = classify(br#"{"return": {"running": true}, "id": 7}"#);
        assert!(
            matches!(got, Incoming::Reply(7, Ok(ref v)) if v["running"] == true),
            "{got:?}"
        );
    }

    #[test]
    fn classify_error_with_id_is_typed_failure() {
        let got =
            classify(br#"{"error": {"class": "DeviceNotFound", "desc": "no nic9"}, "id": 3}"#);
        let Incoming::Reply(3, Err(f)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(f.class, ErrorClass::Known(qapi::ErrorClass::DeviceNotFound));
        assert_eq!(f.desc, "no nic9");
    }

    #[test]
    fn classify_malformed_error_still_fails_the_waiter() {
        let got = classify(br#"{"error": "boom", "id": 3}"#);
        assert!(matches!(got, Incoming::Reply(3, Err(_))), "{got:?}");
    }

    #[test]
    fn classify_reply_without_id_is_stray() {
        assert!(matches!(classify(br#"{"return": {}}"#), Incoming::Stray(_)));
    }

    #[test]
    fn classify_reply_with_string_id_is_stray() {
        assert!(matches!(
            classify(br#"{"return": {}, "id": "x"}"#),
            Incoming::Stray(_)
        ));
    }

    #[test]
    fn classify_garbage_is_stray() {
        assert!(matches!(classify(b"}{ not json"), Incoming::Stray(_)));
        assert!(matches!(classify(b"[1, 2]"), Incoming::Stray(_)));
        assert!(matches!(classify(b"\xff\xfe"), Incoming::Stray(_)));
    }

    #[test]
    fn classify_unknown_event_is_untyped() {
        let got = classify(
            br#"{"event": "SOME_FUTURE_EVENT", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}"#,
        );
        assert!(matches!(got, Incoming::Untyped(ref ev, _) if ev.name() == "SOME_FUTURE_EVENT"));
    }

    #[test]
    fn classify_known_event_is_event() {
        let got =
            classify(br#"{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}}"#);
        assert!(matches!(got, Incoming::Event(_)), "{got:?}");
    }

    /// What `read_line` makes of `input` up to EOF: each line read, `None`
    /// for a line skipped as longer than `max`.
    async fn lines(input: &[u8], max: u64) -> Vec<Option<String>> {
        let mut r = tokio::io::BufReader::new(input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_line(&mut r, &mut buf, max).await.unwrap() {
                Line::Data => out.push(Some(String::from_utf8_lossy(&buf).into_owned())),
                Line::TooLong => out.push(None),
                Line::Eof => return out,
            }
        }
    }

    #[tokio::test]
    async fn read_line_returns_each_line_and_an_unterminated_last_one() {
        let got = lines(b"{\"a\":1}\n{\"b\":2}", 64).await;
        assert_eq!(got, [Some("{\"a\":1}\n".into()), Some("{\"b\":2}".into())]);
    }

    #[tokio::test]
    async fn read_line_skips_oversized_line_then_reads_the_next() {
        let got = lines(b"0123456789abcdefghij\n{}\n", 8).await;
        assert_eq!(got, [None, Some("{}\n".into())]);
    }

    #[tokio::test]
    async fn dispatch_close_wakes_waiters_and_refuses_new_ones() {
        let d = Dispatch::default();
        let rx = d.register(1).expect("open");
        d.close();
        assert!(rx.await.is_err());
        assert!(d.register(2).is_none());
    }

    #[test]
    fn invented_event_names_are_remembered_up_to_a_fixed_count() {
        let mut noise = Noise::new();
        for i in 0..100_000 {
            noise.untyped(&format!("INVENTED_{i}"), "unknown variant");
        }
        // The log took a burst of them, the rest counted.
        assert!(noise.limit.take_suppressed() >= 100_000 - 2 * u64::from(NOISE_BURST));
        // Even with every one of them logged, the names kept stay few.
        noise.limit = RateLimit::new(u32::MAX, 1);
        for i in 0..100_000 {
            noise.untyped(&format!("MORE_{i}"), "unknown variant");
        }
        assert_eq!(noise.untyped_warned.len(), UNTYPED_NAMES_WARNED);
    }

    #[test]
    fn a_long_invented_name_is_remembered_clipped() {
        let mut noise = Noise::new();
        noise.untyped(&"N".repeat(1 << 20), "unknown variant");
        assert!(noise.untyped_warned[0].len() < LOGGED_TEXT + 64);
    }

    #[tokio::test]
    async fn a_flood_of_invented_events_fills_a_bounded_queue_and_replies_still_arrive() {
        let mut wire = Vec::new();
        for i in 0..100_000 {
            wire.extend_from_slice(
                format!(
                    r#"{{"event": "INVENTED_{i}", "data": {{}}, "timestamp": {{"seconds": 1, "microseconds": 0}}}}"#
                )
                .as_bytes(),
            );
            wire.push(b'\n');
        }
        wire.extend_from_slice(b"{\"return\": {}, \"id\": 7}\n");
        let dispatch = Arc::new(Dispatch::default());
        let reply = dispatch.register(7).unwrap();
        // Nobody reads the events while the reader runs.
        let (tx, mut events) = event::channel(EVENT_QUEUE, EVENT_QUEUE_BYTES);
        run_reader(tokio::io::BufReader::new(&wire[..]), dispatch, tx).await;
        assert!(matches!(reply.await, Ok(Ok(_))));
        let mut queued = 0;
        while events.next().await.is_some() {
            queued += 1;
        }
        assert!(
            queued > 0 && queued <= EVENT_QUEUE,
            "{queued} events queued"
        );
    }
}
