//! QMP events: typed through `qapi` when its schema (QEMU 9.1) knows them,
//! kept as plain JSON when it does not.
//!
//! QEMU's contract (docs/interop/qmp-spec): clients "MUST ignore" events they
//! do not know, and QEMU adds events and enum values every release. `qapi`'s
//! `Event` enum has no fallback variant and its enums no `#[serde(other)]`,
//! so a failed decode here is expected on newer hosts, never an error.

use std::borrow::Cow;

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

/// The event stream of one QMP connection. It ends when the connection does.
#[derive(Debug)]
pub struct QmpEvents {
    pub(crate) rx: mpsc::Receiver<QmpEvent>,
}

impl QmpEvents {
    /// The next event, or `None` once QEMU closed the connection and every
    /// event before that was taken.
    pub async fn next(&mut self) -> Option<QmpEvent> {
        self.rx.recv().await
    }

    /// The inner receiver, for callers that want `tokio::select!` on it.
    pub fn into_inner(self) -> mpsc::Receiver<QmpEvent> {
        self.rx
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
}
