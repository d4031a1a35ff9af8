//! The QMP client against a scripted fake QEMU: everything a newer or odd
//! QEMU may send must be survived, and the session must keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use vmrun::qmp::{self, ErrorClass, QmpClient, QmpError, QmpEvent, QmpEvents, RunStatus};

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 3, "minor": 2, "major": 11}, "package": "fake"}, "capabilities": ["oob"]}}"#;

/// What the fake QEMU does with one command.
enum Act {
    /// Write these lines (events, garbage, replies), in order.
    Lines(Vec<String>),
    /// Close the connection without answering.
    Close,
}

fn ret(id: &Value, v: Value) -> String {
    json!({"return": v, "id": id}).to_string()
}

fn ev(name: &str, data: Value) -> String {
    json!({"event": name, "data": data, "timestamp": {"seconds": 1, "microseconds": 2}}).to_string()
}

fn status(id: &Value) -> String {
    ret(
        id,
        json!({"running": true, "singlestep": false, "status": "running"}),
    )
}

/// Starts a fake QEMU on a socket in `dir`. `script` sees each command after
/// `qmp_capabilities` (which is answered here) and says what to send.
fn serve(
    dir: &tempfile::TempDir,
    mut script: impl FnMut(&str, &Value) -> Act + Send + 'static,
) -> PathBuf {
    let path = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).expect("bind fake QMP socket");
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        let (r, mut w) = sock.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(format!("{GREETING}\r\n").as_bytes())
            .await
            .expect("greet");
        while let Ok(Some(line)) = lines.next_line().await {
            let cmd: Value = serde_json::from_str(&line).expect("client sends JSON");
            let name = cmd["execute"].as_str().expect("execute").to_owned();
            let id = cmd["id"].clone();
            let act = if name == "qmp_capabilities" {
                Act::Lines(vec![ret(&id, json!({}))])
            } else {
                script(&name, &id)
            };
            match act {
                Act::Lines(out) => {
                    for l in out {
                        w.write_all(format!("{l}\r\n").as_bytes())
                            .await
                            .expect("write");
                    }
                }
                Act::Close => return,
            }
        }
    });
    path
}

async fn connect(path: &PathBuf) -> (QmpClient, QmpEvents) {
    QmpClient::connect(path).await.expect("connect to fake QMP")
}

async fn next_event(events: &mut QmpEvents) -> QmpEvent {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("stream still open")
}

#[tokio::test]
async fn greeting_version_is_exposed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = serve(&dir, |_, id| Act::Lines(vec![status(id)]));
    let (qmp, _events) = connect(&path).await;
    assert_eq!(
        (
            qmp.version().major,
            qmp.version().minor,
            qmp.version().micro
        ),
        (11, 2, 3)
    );
    assert_eq!(qmp.version().package, "fake");
    assert_eq!(qmp.capabilities(), ["oob"]);
}

#[tokio::test]
async fn session_survives_everything_it_does_not_know() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The n-th query-status is preceded by the n-th oddity.
    let oddities = vec![
        ev("SOME_FUTURE_EVENT", json!({"x": 1})),
        ev(
            "SHUTDOWN",
            json!({"guest": true, "reason": "some-future-cause"}),
        ),
        "this is } not { json".to_owned(),
        json!({"return": {}, "id": 999_999}).to_string(),
        json!({"error": {"class": "GenericError", "desc": "stale"}, "id": 888_888}).to_string(),
        "[1, 2, 3]".to_owned(),
        json!({"QMP": "a second greeting"}).to_string(),
        String::new(),
    ];
    let count = oddities.len();
    let mut odd = oddities.into_iter();
    let path = serve(&dir, move |name, id| match name {
        "query-status" => {
            let mut out: Vec<String> = odd.next().into_iter().collect();
            out.push(status(id));
            Act::Lines(out)
        }
        "system_powerdown" => Act::Lines(vec![ret(id, json!({})), ev("POWERDOWN", json!({}))]),
        other => panic!("unexpected command {other}"),
    });
    let (qmp, mut events) = connect(&path).await;

    for i in 0..count {
        let st = qmp
            .query_status()
            .await
            .unwrap_or_else(|e| panic!("query-status after oddity {i}: {e}"));
        assert_eq!(st.status, RunStatus::Known(qapi::qmp::RunState::running));
    }

    let first = next_event(&mut events).await;
    assert!(
        matches!(&first, QmpEvent::Unknown { name, data, timestamp: Some(_) }
            if name == "SOME_FUTURE_EVENT" && data["x"] == 1),
        "{first:?}"
    );
    let second = next_event(&mut events).await;
    assert!(
        matches!(&second, QmpEvent::Unknown { name, data, .. }
            if name == "SHUTDOWN" && data["reason"] == "some-future-cause"),
        "{second:?}"
    );

    qmp.system_powerdown()
        .await
        .expect("powerdown after oddities");
    let third = next_event(&mut events).await;
    assert!(
        matches!(third.known(), Some(qapi::qmp::Event::POWERDOWN { .. })),
        "{third:?}"
    );
    assert_eq!(third.name(), "POWERDOWN");
}

#[tokio::test]
async fn command_error_is_typed_with_its_class() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = serve(&dir, |name, id| {
        let class = if name == "device_del" {
            "DeviceNotFound"
        } else {
            "SomeFutureClass"
        };
        Act::Lines(vec![
            json!({"error": {"class": class, "desc": "nope"}, "id": id}).to_string(),
        ])
    });
    let (qmp, _events) = connect(&path).await;

    let err = qmp
        .execute(qapi::qmp::device_del { id: "nic9".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QmpError::Command { command, class: ErrorClass::Known(qapi::ErrorClass::DeviceNotFound), desc }
            if command == "device_del" && desc == "nope"),
        "{err:?}"
    );

    let err = qmp
        .execute_raw("x-future", Some(json!({"a": 1})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QmpError::Command { class: ErrorClass::Other(c), .. } if c == "SomeFutureClass"),
        "{err:?}"
    );
}

#[tokio::test]
async fn disconnect_mid_command_is_disconnected_and_ends_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = serve(&dir, |_, _| Act::Close);
    let (qmp, mut events) = connect(&path).await;

    let err = qmp.query_status().await.unwrap_err();
    assert!(
        matches!(err, QmpError::Disconnected { ref command } if command == "query-status"),
        "{err:?}"
    );

    let later = qmp.stop().await.unwrap_err();
    assert!(matches!(later, QmpError::Disconnected { .. }), "{later:?}");

    let end = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
    assert!(matches!(end, Ok(None)), "event stream must end: {end:?}");
}

#[tokio::test]
async fn unanswered_command_times_out_and_session_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = true;
    let path = serve(&dir, move |_, id| {
        if std::mem::take(&mut first) {
            Act::Lines(vec![]) // never answered: QEMU wedged on this one
        } else {
            Act::Lines(vec![status(id)])
        }
    });
    let (qmp, _events) = connect(&path).await;

    let err = qmp
        .execute_raw_within("query-status", None, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QmpError::Timeout { command, after } if command == "query-status" && *after == Duration::from_millis(50)),
        "{err:?}"
    );
    qmp.query_status().await.expect("next command still works");
}

#[tokio::test]
async fn concurrent_commands_get_their_own_replies_out_of_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut held: Option<Value> = None;
    let path = serve(&dir, move |name, id| match held.take() {
        // Hold the first command, answer both when the second arrives,
        // second first.
        None => {
            held = Some(json!({"id": id, "name": name}));
            Act::Lines(vec![])
        }
        Some(h) => Act::Lines(vec![
            ret(id, json!({"who": name})),
            ret(&h["id"], json!({"who": h["name"]})),
        ]),
    });
    let (qmp, _events) = connect(&path).await;

    let a = qmp.execute_raw("cmd-a", None);
    let b = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        qmp.execute_raw("cmd-b", None).await
    };
    let (a, b) = tokio::join!(a, b);
    assert_eq!(a.expect("a")["who"], "cmd-a");
    assert_eq!(b.expect("b")["who"], "cmd-b");
}

#[tokio::test]
async fn connect_with_retry_waits_for_the_socket_to_appear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qmp.sock");
    let late = tokio::spawn({
        let dir_path = dir.path().to_owned();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Same as `serve`, bound late.
            let listener = UnixListener::bind(dir_path.join("qmp.sock")).expect("bind");
            let (sock, _) = listener.accept().await.expect("accept");
            let (r, mut w) = sock.into_split();
            w.write_all(format!("{GREETING}\n").as_bytes())
                .await
                .expect("greet");
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let cmd: Value = serde_json::from_str(&line).expect("json");
                w.write_all(format!("{}\n", ret(&cmd["id"], json!({}))).as_bytes())
                    .await
                    .expect("reply");
            }
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (qmp, _events) = qmp::connect_with_retry(&path, deadline)
        .await
        .expect("connects once bound");
    assert_eq!(qmp.version().major, 11);
    drop(qmp);
    late.await.expect("server ends when the client hangs up");
}

#[tokio::test]
async fn connect_with_retry_gives_up_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("never.sock");
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    let err = qmp::connect_with_retry(&path, deadline).await.unwrap_err();
    assert!(
        matches!(err, QmpError::ConnectTimeout { last: None, .. }),
        "{err:?}"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn non_qmp_peer_is_a_greeting_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        sock.write_all(b"SSH-2.0-OpenSSH\r\n").await.expect("write");
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let err = QmpClient::connect(&path).await.unwrap_err();
    assert!(matches!(err, QmpError::Greeting { .. }), "{err:?}");
}
