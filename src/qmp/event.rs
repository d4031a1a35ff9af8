//! QMP events: typed through `qapi` when its schema (QEMU 9.1) knows them,
//! kept as plain JSON when it does not.
//!
//! QEMU's contract (docs/interop/qmp-spec): clients "MUST ignore" events they
//! do not know, and QEMU adds events and enum values every release. `qapi`'s
//! `Event` enum has no fallback variant and its enums no `#[serde(other)]`,
//! so a failed decode here is expected on newer hosts, never an error.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

/// When QEMU emitted an event (`"timestamp"` of every event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Timestamp {
    pub seconds: u64,
    pub microseconds: u64,
}

/// One event from QEMU.
#[derive(Debug, Clone)]
pub enum QmpEvent {
    /// An event `qapi` decoded, data and timestamp included.
    Known(Box<qapi::qmp::Event>),
    /// An event this build cannot type: a name added after QEMU 9.1, or a
    /// known name whose data holds a value the schema lacks (for example
    /// `SHUTDOWN` with a new `reason`).
    Unknown {
        name: String,
        data: Value,
        timestamp: Option<Timestamp>,
    },
}

impl QmpEvent {
    /// The QMP event name, e.g. `"SHUTDOWN"`.
    pub fn name(&self) -> Cow<'_, str> {
        match self {
            // `Event` is `#[serde(tag = "event")]`: serializing it gives the
            // wire name back without a hand-kept table of ~80 names.
            QmpEvent::Known(ev) => serde_json::to_value(ev)
                .ok()
                .and_then(|v| v.get("event").and_then(Value::as_str).map(str::to_owned))
                .map_or(Cow::Borrowed("?"), Cow::Owned),
            QmpEvent::Unknown { name, .. } => Cow::Borrowed(name),
        }
    }

    /// When QEMU emitted it, if the event carried a readable timestamp.
    pub fn timestamp(&self) -> Option<Timestamp> {
        match self {
            // `qapi::Timestamp` keeps its fields private but serializes them.
            QmpEvent::Known(ev) => serde_json::to_value(ev.timestamp())
                .ok()
                .and_then(|v| Timestamp::deserialize(v).ok()),
            QmpEvent::Unknown { timestamp, .. } => *timestamp,
        }
    }

    /// The typed event, if `qapi` could decode it.
    pub fn known(&self) -> Option<&qapi::qmp::Event> {
        match self {
            QmpEvent::Known(ev) => Some(ev),
            QmpEvent::Unknown { .. } => None,
        }
    }
}

/// What a failed typed decode left behind, for the reader to log.
#[derive(Debug)]
pub(crate) struct Untyped {
    pub event: QmpEvent,
    pub reason: serde_json::Error,
}

/// Decodes a message that has an `"event"` key. Never fails: an event `qapi`
/// rejects comes back as `QmpEvent::Unknown` with the reason.
pub(crate) fn decode(msg: Value) -> Result<QmpEvent, Untyped> {
    match serde_json::from_value::<qapi::qmp::Event>(msg.clone()) {
        Ok(ev) => Ok(QmpEvent::Known(Box::new(ev))),
        Err(reason) => {
            let name = msg
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let timestamp = msg
                .get("timestamp")
                .and_then(|t| Timestamp::deserialize(t).ok());
            let data = msg.get("data").cloned().unwrap_or(Value::Null);
            Err(Untyped {
                event: QmpEvent::Unknown {
                    name,
                    data,
                    timestamp,
                },
                reason,
            })
        }
    }
}

/// Events in flight between the reader and the consumer, bounded in
/// number and in bytes (their size on the wire): a consumer that reads
/// slowly costs a bounded amount of memory, whatever QEMU sends.
pub(crate) fn channel(max_events: usize, max_bytes: usize) -> (EventSender, QmpEvents) {
    let (tx, rx) = mpsc::channel(max_events.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    (
        EventSender {
            tx,
            queued: queued.clone(),
            max_bytes,
        },
        QmpEvents { rx, queued },
    )
}

/// The reader's end of the event queue.
#[derive(Debug)]
pub(crate) struct EventSender {
    tx: mpsc::Sender<(QmpEvent, usize)>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// Why an event was not queued.
#[derive(Debug)]
pub(crate) enum TrySend {
    /// Too many events or bytes waiting: the event is given back.
    Full(QmpEvent),
    /// Nobody reads events any more.
    Closed,
}

impl EventSender {
    /// Queues `ev`, `size` bytes on the wire, without waiting.
    pub(crate) fn try_send(&self, ev: QmpEvent, size: usize) -> Result<(), TrySend> {
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before + size > self.max_bytes {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return Err(TrySend::Full(ev));
        }
        self.tx.try_send((ev, size)).map_err(|e| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full((ev, _)) => TrySend::Full(ev),
                mpsc::error::TrySendError::Closed(_) => TrySend::Closed,
            }
        })
    }
}

/// The event stream of one QMP connection. It ends when the connection does.
#[derive(Debug)]
pub struct QmpEvents {
    rx: mpsc::Receiver<(QmpEvent, usize)>,
    queued: Arc<AtomicUsize>,
}

impl QmpEvents {
    /// The next event, or `None` once QEMU closed the connection and every
    /// event before that was taken.
    pub async fn next(&mut self) -> Option<QmpEvent> {
        let (ev, size) = self.rx.recv().await?;
        self.queued.fetch_sub(size, Ordering::AcqRel);
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TS: &str = r#"{"seconds": 1700000000, "microseconds": 5}"#;

    fn event(name: &str, data: Value) -> Value {
        json!({"event": name, "data": data, "timestamp": serde_json::from_str::<Value>(TS).unwrap()})
    }

    #[test]
    fn decode_known_event_is_typed() {
        let ev = decode(event(
            "SHUTDOWN",
            json!({"guest": true, "reason": "guest-shutdown"}),
        ))
        .expect("typed");
        assert!(matches!(
            ev.known(),
            Some(qapi::qmp::Event::SHUTDOWN { data, .. })
                if data.guest && data.reason == qapi::qmp::ShutdownCause::guest_shutdown
        ));
        assert_eq!(ev.name(), "SHUTDOWN");
    }

    #[test]
    fn decode_event_without_data_is_typed() {
        let msg = json!({"event": "POWERDOWN", "timestamp": {"seconds": 1, "microseconds": 2}});
        let ev = decode(msg).expect("typed");
        assert!(matches!(
            ev.known(),
            Some(qapi::qmp::Event::POWERDOWN { .. })
        ));
        assert_eq!(
            ev.timestamp(),
            Some(Timestamp {
                seconds: 1,
                microseconds: 2
            })
        );
    }

    #[test]
    fn decode_unknown_name_keeps_name_data_and_timestamp() {
        let Err(untyped) = decode(event("SOME_FUTURE_EVENT", json!({"x": 1}))) else {
            panic!("a future event must not decode as known");
        };
        let QmpEvent::Unknown {
            name,
            data,
            timestamp,
        } = untyped.event
        else {
            panic!("expected Unknown");
        };
        assert_eq!(name, "SOME_FUTURE_EVENT");
        assert_eq!(data, json!({"x": 1}));
        assert_eq!(
            timestamp,
            Some(Timestamp {
                seconds: 1_700_000_000,
                microseconds: 5
            })
        );
    }

    #[test]
    fn decode_known_name_with_future_enum_value_is_unknown() {
        let msg = event(
            "SHUTDOWN",
            json!({"guest": false, "reason": "some-future-cause"}),
        );
        let Err(untyped) = decode(msg) else {
            panic!("an unknown ShutdownCause must not decode as known");
        };
        assert_eq!(untyped.event.name(), "SHUTDOWN");
    }

    #[test]
    fn decode_event_without_timestamp_is_unknown_without_timestamp() {
        let Err(untyped) = decode(json!({"event": "POWERDOWN"})) else {
            panic!("qapi requires a timestamp");
        };
        assert!(matches!(
            untyped.event,
            QmpEvent::Unknown {
                timestamp: None,
                ..
            }
        ));
    }

    fn unknown(name: &str) -> QmpEvent {
        QmpEvent::Unknown {
            name: name.into(),
            data: Value::Null,
            timestamp: None,
        }
    }

    #[tokio::test]
    async fn the_queue_holds_a_bounded_number_of_bytes_and_frees_them_when_read() {
        let (tx, mut rx) = channel(100, 1000);
        // An event at an empty queue always fits, whatever its size.
        assert!(tx.try_send(unknown("BIG"), 5000).is_ok());
        assert!(matches!(
            tx.try_send(unknown("NEXT"), 10),
            Err(TrySend::Full(_))
        ));
        assert_eq!(rx.next().await.unwrap().name(), "BIG");
        for i in 0..10 {
            assert!(tx.try_send(unknown(&format!("E{i}")), 100).is_ok(), "{i}");
        }
        assert!(matches!(
            tx.try_send(unknown("OVER"), 1),
            Err(TrySend::Full(_))
        ));
        assert_eq!(rx.next().await.unwrap().name(), "E0");
        assert!(tx.try_send(unknown("FITS"), 100).is_ok());
    }

    #[tokio::test]
    async fn the_queue_holds_a_bounded_number_of_events() {
        let (tx, rx) = channel(2, usize::MAX);
        assert!(tx.try_send(unknown("A"), 1).is_ok());
        assert!(tx.try_send(unknown("B"), 1).is_ok());
        assert!(matches!(
            tx.try_send(unknown("C"), 1),
            Err(TrySend::Full(_))
        ));
        drop(rx);
        assert!(matches!(tx.try_send(unknown("D"), 1), Err(TrySend::Closed)));
    }
}
