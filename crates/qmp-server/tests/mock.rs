//! `qmp mock`'s replies file, with a small hand-written schema.

use qmp_client::{Client, EventFilter};
use qmp_proto::qemu_json::{Parsed, QObject, Streamer};
use qmp_server::mock::{self, Replies};
use serde_json::{json, Value};

fn parse(text: &str) -> QObject {
    // an array or object is complete at its closing bracket
    match Streamer::new().feed_collect(text.as_bytes()).remove(0) {
        Parsed::Value(v) => v,
        Parsed::Error(e) => panic!("{e}"),
    }
}

const SCHEMA: &str = r#"[
  {"name": "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "1"},
  {"name": "stop", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
  {"name": "blockdev-del", "meta-type": "command", "arg-type": "2", "ret-type": "0"},
  {"name": "query-qmp-schema", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
  {"name": "query-yank", "meta-type": "command", "arg-type": "0", "ret-type": "0", "allow-oob": true},
  {"name": "0", "meta-type": "object", "members": []},
  {"name": "1", "meta-type": "object", "members": [{"name": "status", "type": "str"}]},
  {"name": "2", "meta-type": "object", "members": [{"name": "node-name", "type": "str"}]},
  {"name": "str", "meta-type": "builtin", "json-type": "string"}
]"#;

const REPLIES: &str = r#"[
  {"command": "query-status", "return": {"status": "running", "running": true}},
  {"command": "blockdev-del", "arguments": {"node-name": "busy"},
   "error": {"class": "GenericError", "desc": "Node busy is in use"}},
  {"command": "stop", "events": [{"event": "STOP"}, {"event": "X", "data": {"n": 1}}]}
]"#;

#[tokio::test]
async fn replies_file_rules() {
    let replies = Replies::from_qobject(&parse(REPLIES)).unwrap();
    let server = mock::server(
        mock::Dump::from_qobject(parse(SCHEMA)).unwrap(),
        &qmp_proto::Version::new(9, 1, 0, ""),
        replies,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mock.sock");
    let listener = server
        .bind(&format!("unix:{}", path.display()).parse().unwrap())
        .await
        .unwrap();
    tokio::spawn(async move { server.serve(listener).await });
    let c = Client::connect(&path.display().to_string()).await.unwrap();
    assert_eq!(c.greeting().unwrap().version.qemu.to_string(), "9.1.0");
    assert_eq!(
        c.execute("query-status", Value::Null).await.unwrap(),
        json!({"status": "running", "running": true})
    );
    let err = c
        .execute("blockdev-del", json!({"node-name": "busy"}))
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().desc, "Node busy is in use");
    // no rule matches: empty success
    assert_eq!(
        c.execute("blockdev-del", json!({"node-name": "free"}))
            .await
            .unwrap(),
        json!({})
    );
    // arguments are still checked first
    let err = c.execute("blockdev-del", json!({})).await.unwrap_err();
    assert_eq!(err.qmp().unwrap().desc, "Parameter 'node-name' is missing");
    // events come before the reply
    let mut events = c.events(EventFilter::all());
    c.execute("stop", Value::Null).await.unwrap();
    let names: Vec<String> = std::iter::from_fn(|| events.try_next())
        .map(|e| e.unwrap().name.clone())
        .collect();
    assert_eq!(names, ["STOP", "X"]);
    // commands outside the schema do not exist; schema and oob come from the dump
    assert_eq!(
        c.execute("quit", Value::Null)
            .await
            .unwrap_err()
            .qmp()
            .unwrap()
            .class,
        "CommandNotFound"
    );
    assert_eq!(
        c.execute("query-qmp-schema", Value::Null)
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        9
    );
    c.call(qmp_client::Call::new("query-yank").out_of_band())
        .await
        .unwrap();
}

#[test]
fn bad_replies_files_are_clear_errors() {
    assert!(Replies::from_qobject(&parse("{}"))
        .unwrap_err()
        .to_string()
        .contains("array"));
    assert!(Replies::from_qobject(&parse("[{\"return\": 1}]"))
        .unwrap_err()
        .to_string()
        .contains("\"command\""));
    assert!(Replies::from_qobject(&parse(
        "[{\"command\": \"x\", \"return\": 1, \"error\": {}}]"
    ))
    .unwrap_err()
    .to_string()
    .contains("both"));
    // what used to pass silently
    let err = |text: &str| Replies::from_qobject(&parse(text)).unwrap_err().to_string();
    assert_eq!(
        err(r#"[{"command": "stop", "events": "STOP"}]"#),
        "rule 0: \"events\" must be an array of events"
    );
    assert_eq!(
        err(r#"[{"command": "x", "error": {"desc": 5}}]"#),
        "rule 0: \"error\".\"desc\" must be a string"
    );
    assert_eq!(
        err(r#"[{"command": "x", "retrun": {}}]"#),
        "rule 0: unknown member \"retrun\" (a rule has command, arguments, return or error, events)"
    );
}
