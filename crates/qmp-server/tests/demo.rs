//! The demo machine, driven by our client.

use qmp_client::{Client, EventFilter, EventStream};
use serde_json::{json, Value};
use std::time::Duration;

async fn start() -> (Client, tempfile::TempDir, tokio::task::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.sock");
    let server = qmp_server::demo::server();
    let listener = server
        .bind(&format!("unix:{}", path.display()).parse().unwrap())
        .await
        .unwrap();
    let task = tokio::spawn(async move { server.serve(listener).await });
    let client = Client::connect(&path.display().to_string()).await.unwrap();
    (client, dir, task)
}

/// The names of the events buffered right now.
fn drained(events: &mut EventStream) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(Ok(e)) = events.try_next() {
        names.push(e.name.clone());
    }
    names
}

async fn status(c: &Client) -> String {
    c.execute("query-status", Value::Null).await.unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn run_state_and_its_events() {
    let (c, _dir, _task) = start().await;
    let mut events = c.events(EventFilter::all());
    let step = |cmd: &'static str| {
        let c = c.clone();
        async move { c.execute(cmd, Value::Null).await }
    };
    assert_eq!(status(&c).await, "prelaunch");
    step("stop").await.unwrap();
    assert_eq!(status(&c).await, "paused");
    step("cont").await.unwrap();
    assert_eq!(status(&c).await, "running");
    step("cont").await.unwrap();
    step("stop").await.unwrap();
    step("system_reset").await.unwrap();
    step("cont").await.unwrap();
    step("system_powerdown").await.unwrap();
    assert_eq!(status(&c).await, "shutdown");
    let err = step("cont").await.unwrap_err();
    assert_eq!(
        err.qmp().unwrap().desc,
        "Resetting the Virtual Machine is required"
    );
    step("system_reset").await.unwrap();
    assert_eq!(status(&c).await, "paused");
    // events arrive before the replies that caused them, so all are here
    assert_eq!(
        drained(&mut events),
        [
            "RESUME",
            "STOP",
            "RESUME",
            "STOP",
            "RESET",
            "RESUME",
            "POWERDOWN",
            "SHUTDOWN",
            "RESET"
        ]
    );
    let running = c.execute("query-status", Value::Null).await.unwrap();
    assert_eq!(running, json!({"running": false, "status": "paused"}));
    assert_eq!(
        c.execute("query-uuid", Value::Null).await.unwrap()["UUID"],
        qmp_server::demo::DEMO_UUID
    );
    assert_eq!(
        c.execute("query-name", Value::Null).await.unwrap(),
        json!({"name": "demo"})
    );
}

#[tokio::test]
async fn qom_tree() {
    let (c, _dir, _task) = start().await;
    let root = c.execute("qom-list", json!({"path": "/"})).await.unwrap();
    assert!(root
        .as_array()
        .unwrap()
        .contains(&json!({"name": "machine", "type": "child<demo-machine>"})));
    assert_eq!(
        c.execute("qom-get", json!({"path": "/machine", "property": "type"}))
            .await
            .unwrap(),
        json!("demo-machine")
    );
    assert_eq!(
        c.execute(
            "qom-get",
            json!({"path": "/machine", "property": "memory-size"})
        )
        .await
        .unwrap(),
        json!(134217728)
    );
    c.execute(
        "qom-set",
        json!({"path": "/machine", "property": "name", "value": "renamed"}),
    )
    .await
    .unwrap();
    assert_eq!(
        c.execute("qom-get", json!({"path": "/machine/", "property": "name"}))
            .await
            .unwrap(),
        json!("renamed")
    );
    let err = c
        .execute(
            "qom-set",
            json!({"path": "/machine", "property": "type", "value": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().desc, "Property 'type' is not writable");
    let err = c
        .execute("qom-list", json!({"path": "/nope"}))
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().class, "DeviceNotFound");
    let err = c
        .execute("qom-get", json!({"path": "/machine", "property": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().desc, "Property 'nope' not found");
}

#[tokio::test]
async fn quit_sends_shutdown_replies_and_stops_the_server() {
    let (c, _dir, task) = start().await;
    let mut events = c.events(EventFilter::name("SHUTDOWN"));
    c.execute("quit", Value::Null).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        e.data,
        Some(json!({"guest": false, "reason": "host-qmp-quit"}))
    );
    tokio::time::timeout(Duration::from_secs(5), c.disconnected())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

// Multi-threaded, so the handler and the connection run on different
// threads and an unordered server would lose the race now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_client_before_the_reply_of_the_command_that_caused_them() {
    let (c, _dir, _task) = start().await;
    c.execute("cont", Value::Null).await.unwrap();
    let mut events = c.events(EventFilter::names(["STOP", "RESUME"]));
    for _ in 0..100 {
        c.execute("stop", Value::Null).await.unwrap();
        assert_eq!(
            drained(&mut events),
            ["STOP"],
            "P4: STOP before the stop reply"
        );
        c.execute("cont", Value::Null).await.unwrap();
        assert_eq!(drained(&mut events), ["RESUME"]);
    }
}
