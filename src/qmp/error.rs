//! Every way a QMP exchange can fail, one variant each, so the supervisor can
//! match on what happened instead of parsing messages.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The `class` of a QMP error reply. QEMU may add classes after the schema
/// `qapi` was generated from (9.1), so an unknown one is kept as text rather
/// than turned into a decode failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    Known(qapi::ErrorClass),
    Other(String),
}

impl ErrorClass {
    /// Maps the wire string (`"GenericError"`, `"DeviceNotFound"`, ...).
    pub fn from_wire(class: &str) -> Self {
        serde_json::from_value(serde_json::Value::String(class.to_owned()))
            .map(ErrorClass::Known)
            .unwrap_or_else(|_| ErrorClass::Other(class.to_owned()))
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorClass::Known(c) => write!(f, "{c:?}"),
            ErrorClass::Other(c) => f.write_str(c),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to the QMP socket {}", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the QMP socket {} did not accept a connection within {waited:?}; is QEMU running with -qmp unix:PATH,server=on?", .path.display())]
    ConnectTimeout {
        path: PathBuf,
        waited: Duration,
        /// The last refusal seen (absent when the socket never appeared).
        #[source]
        last: Option<io::Error>,
    },

    #[error("{} does not speak QMP: {reason}", .path.display())]
    Greeting { path: PathBuf, reason: String },

    #[error("cannot send QMP command {command}")]
    Send {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("cannot encode the arguments of QMP command {command}")]
    Encode {
        command: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: ErrorClass,
        desc: String,
    },

    #[error("the reply to QMP command {command} does not match the expected type")]
    Decode {
        command: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("QMP command {command} got no reply within {after:?}")]
    Timeout { command: String, after: Duration },

    #[error("the QMP connection closed before {command} got its reply (did QEMU exit?)")]
    Disconnected { command: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_wire_known_class_is_typed() {
        assert_eq!(
            ErrorClass::from_wire("DeviceNotFound"),
            ErrorClass::Known(qapi::ErrorClass::DeviceNotFound)
        );
    }

    #[test]
    fn from_wire_future_class_is_kept_as_text() {
        assert_eq!(
            ErrorClass::from_wire("SomeFutureClass"),
            ErrorClass::Other("SomeFutureClass".into())
        );
    }
}
