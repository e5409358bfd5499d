//! Types generated from one QEMU's dump alone (checked-in fixtures, see
//! `generated_is_current`) read another QEMU's replies and events: 7.2's
//! types on 11.1, 11.1's on 7.2. What one side lacks (members, enum values,
//! union branches, whole commands) is kept, and written back unchanged.

#[allow(clippy::all, dead_code, unused_variables, unused_mut, missing_docs)]
mod from_7_2 {
    include!("fixtures/from_7_2.rs");
}
#[allow(clippy::all, dead_code, unused_variables, unused_mut, missing_docs)]
mod from_11_1 {
    include!("fixtures/from_11_1.rs");
}

mod common;

use common::RoundTrip;
use qmp_client::{Client, EventFilter};
use qmp_testkit::{Qemu, QemuVersion};
use serde_json::json;
use std::time::Duration;

/// Every no-argument query of `qemu` that the other side's types have:
/// decoded by them and encoded back, it is the same JSON. Returns how
/// many were checked.
async fn queries(qemu: &Qemu, round_trip: RoundTrip, what: &str) -> usize {
    let client = Client::connect(&qemu.address()).await.unwrap();
    let mut checked = 0;
    for name in common::no_argument_queries(&client).await {
        let Ok(reply) = client.execute(&name, json!({})).await else {
            continue;
        };
        // false: the other side has no such command
        if common::round_trips(round_trip, &name, &reply, what) {
            checked += 1;
        }
    }
    checked
}

/// Provokes events on a qemu-system (STOP, RESUME, DEVICE_DELETED,
/// JOB_STATUS_CHANGE, BLOCK_JOB_COMPLETED, SHUTDOWN) and checks each
/// with the other side's types.
async fn events(v: QemuVersion, round_trip: RoundTrip, what: &str) {
    let qemu = Qemu::system_with(v, &["-device", "qemu-xhci,id=xhci"]);
    let client = Client::connect(&qemu.address()).await.unwrap();
    let mut all = client.events(EventFilter::all());
    for (command, arguments) in [
        ("cont", json!({})),
        ("stop", json!({})),
        ("device_add", json!({"driver": "usb-kbd", "id": "kbd0"})),
        ("device_del", json!({"id": "kbd0"})),
        (
            "blockdev-add",
            json!({"driver": "null-co", "node-name": "a", "size": 1048576}),
        ),
        (
            "blockdev-add",
            json!({"driver": "null-co", "node-name": "b", "size": 1048576}),
        ),
        (
            "blockdev-backup",
            json!({"job-id": "j", "device": "a", "target": "b", "sync": "full"}),
        ),
    ] {
        client.execute(command, arguments).await.unwrap();
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ![
        "STOP",
        "RESUME",
        "DEVICE_DELETED",
        "BLOCK_JOB_COMPLETED",
        "JOB_STATUS_CHANGE",
    ]
    .iter()
    .all(|n| seen.contains(&n.to_string()))
    {
        let e = tokio::time::timeout_at(deadline, all.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: events so far {seen:?}"))
            .unwrap()
            .unwrap();
        let data = e.data.clone().unwrap_or(json!({}));
        common::round_trips(round_trip, &e.name, &data, what);
        seen.push(e.name.clone());
    }
    let _ = client.execute("quit", json!({})).await;
    loop {
        let e = tokio::time::timeout_at(deadline, all.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: no SHUTDOWN"))
            .unwrap()
            .unwrap();
        let data = e.data.clone().unwrap_or(json!({}));
        common::round_trips(round_trip, &e.name, &data, what);
        if e.name == "SHUTDOWN" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_from_7_2_alone_read_what_11_1_says() {
    let what = "7.2's types on 11.1";
    let n = queries(
        &Qemu::system(QemuVersion::V11_1),
        from_7_2::reply_round_trip,
        what,
    )
    .await;
    assert!(n >= 40, "{what}: only {n} queries checked");
    events(QemuVersion::V11_1, from_7_2::event_round_trip, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_from_11_1_alone_read_what_7_2_says() {
    let what = "11.1's types on 7.2";
    let n = queries(
        &Qemu::system(QemuVersion::V7_2),
        from_11_1::reply_round_trip,
        what,
    )
    .await;
    assert!(n >= 40, "{what}: only {n} queries checked");
    events(QemuVersion::V7_2, from_11_1::event_round_trip, what).await;
}
