//! Typed arguments serialize to what QEMU accepts: real state-changing
//! commands (blockdev-add with nested options, object-add, device_add,
//! transaction, jobs) through `Client::run` against every QEMU, and the
//! events they provoke decode to their types (typed subscriptions, and a
//! round trip of every event received).

mod common;

use qmp_client::{Client, EventFilter};
use qmp_testkit::{Qemu, QemuVersion};
use qmp_types::*;
use serde_json::json;
use std::time::Duration;

/// Every event received so far decodes by its type and encodes back to
/// the same data.
fn all_round_trip(events: &mut qmp_client::EventStream, v: QemuVersion) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(Ok(e)) = events.try_next() {
        let data = e.data.clone().unwrap_or(json!({}));
        // The enum of all events has each one under its own arm.
        let any = AnyEvent::decode(&e.name, data.clone());
        assert!(
            !matches!(any, AnyEvent::Unknown { .. }),
            "{}: {any:?}",
            v.label()
        );
        assert!(
            common::round_trips(event_round_trip, &e.name, &data, &v.label()),
            "{}: no type for event {}",
            v.label(),
            e.name
        );
        names.push(e.name.clone());
    }
    names
}

async fn next<E: qmp_types::Event>(s: &mut qmp_client::TypedEvents<E>) -> E {
    tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("event in time")
        .expect("connection open")
        .expect("decodes")
}

async fn block_layer_commands(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let mut all = client.events(EventFilter::all());
    let mut job_changes = client.events_of::<JobStatusChange>();
    let mut completed = client.events_of::<BlockJobCompleted>();
    let image = qsd.dir().join("disk.raw");

    // 1. blockdev-create, a job: JOB_STATUS_CHANGE to concluded.
    let options = BlockdevCreateOptions::new(BlockdevCreateOptionsBranch::File(
        BlockdevCreateOptionsFile::new(image.display().to_string(), 1 << 20),
    ));
    client
        .run(BlockdevCreate::new("create0".into(), options))
        .await
        .unwrap();
    loop {
        let change = next(&mut job_changes).await;
        assert_eq!(change.id.as_deref(), Some("create0"));
        if change.status.as_ref().map(|s| s.as_str()) == Some("concluded") {
            break;
        }
    }
    // 2. job-dismiss
    client.run(JobDismiss::new("create0".into())).await.unwrap();
    // 3. blockdev-add with nested options: raw over a file node given inline.
    let file = BlockdevAdd::new(BlockdevAddBranch::File(BlockdevAddFile::new(
        image.display().to_string(),
    )));
    let raw = BlockdevAdd::new(BlockdevAddBranch::Raw(BlockdevAddRaw::new(
        BlockdevAddBlkdebugImage::Object(Box::new(file)),
    )))
    .with_node_name("disk0".into());
    client.run(raw).await.unwrap();
    // 4, 5. two null-co nodes for a backup job.
    for name in ["n0", "n1"] {
        let null = BlockdevAdd::new(BlockdevAddBranch::NullCo(
            BlockdevAddNullCo::new().with_size(1 << 20),
        ))
        .with_node_name(name.into());
        client.run(null).await.unwrap();
    }
    // 6. block-dirty-bitmap-add
    client
        .run(BlockDirtyBitmapAdd::new("disk0".into(), "b0".into()))
        .await
        .unwrap();
    // 7. transaction of two bitmap additions.
    let actions = ["b1", "b2"]
        .map(|b| {
            TransactionActions::new(TransactionActionsBranch::BlockDirtyBitmapAdd(
                TransactionActionsBlockDirtyBitmapAdd::new(BlockDirtyBitmapAdd::new(
                    "disk0".into(),
                    b.into(),
                )),
            ))
        })
        .to_vec();
    client.run(Transaction::new(actions)).await.unwrap();
    let nodes = client.run(QueryNamedBlockNodes::new()).await.unwrap();
    let disk = nodes
        .iter()
        .find(|n| n.node_name.as_deref() == Some("disk0"))
        .expect("disk0");
    assert_eq!(
        disk.dirty_bitmaps.as_ref().map(Vec::len),
        Some(3),
        "{}",
        v.label()
    );
    // 8. blockdev-backup, a block job: BLOCK_JOB_COMPLETED.
    client
        .run(
            BlockdevBackup::new("n0".into(), BlockdevBackupSync::Full, "n1".into())
                .with_job_id("backup0".into()),
        )
        .await
        .unwrap();
    let done = next(&mut completed).await;
    assert_eq!(done.device.as_deref(), Some("backup0"));
    // 9. object-add of an iothread, 10. object-del.
    client
        .run(ObjectAdd::new(
            "io0".into(),
            ObjectAddBranch::Iothread(ObjectAddIothread::new()),
        ))
        .await
        .unwrap();
    client.run(ObjectDel::new("io0".into())).await.unwrap();
    // 11. blockdev-del
    client.run(BlockdevDel::new("n1".into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = all_round_trip(&mut all, v);
    for name in ["JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED"] {
        assert!(
            seen.iter().any(|s| s == name),
            "{}: no {name} in {seen:?}",
            v.label()
        );
    }
}

async fn machine_commands(v: QemuVersion) {
    let qemu = Qemu::system_with(v, &["-device", "qemu-xhci,id=xhci"]);
    let client = Client::connect(&qemu.address()).await.unwrap();
    let mut all = client.events(EventFilter::all());
    let mut stops = client.events_of::<StopEvent>();
    let mut resumes = client.events_of::<Resume>();
    let mut deleted = client.events_of::<DeviceDeleted>();
    // cont, stop: RESUME, STOP; the STOP read through the
    // `futures::Stream` interface of the typed subscription.
    client.run(Cont::new()).await.unwrap();
    next(&mut resumes).await;
    client.run(Stop::new()).await.unwrap();
    let stop = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stops), cx)
    });
    tokio::time::timeout(Duration::from_secs(20), stop)
        .await
        .expect("STOP in time")
        .expect("connection open")
        .expect("decodes");
    // device_add with a driver's own property (in `other`), device_del:
    // DEVICE_DELETED.
    let mut add = DeviceAdd::new("usb-kbd".into()).with_id("kbd0".into());
    add.other.insert("port".into(), json!("1"));
    client.run(add).await.unwrap();
    client.run(DeviceDel::new("kbd0".into())).await.unwrap();
    let gone = next(&mut deleted).await;
    assert_eq!(gone.device.as_deref(), Some("kbd0"));
    // human-monitor-command, typed: a string comes back.
    let out = client
        .run(HumanMonitorCommand::new("info status".into()))
        .await
        .unwrap();
    assert!(out.contains("paused"), "{out}");
    // quit: SHUTDOWN.
    let mut shutdowns = client.events_of::<Shutdown>();
    let _ = client.run(Quit::new()).await;
    let down = next(&mut shutdowns).await;
    assert_eq!(down.guest, Some(false));
    let seen = all_round_trip(&mut all, v);
    for name in ["RESUME", "STOP", "DEVICE_DELETED", "SHUTDOWN"] {
        assert!(
            seen.iter().any(|s| s == name),
            "{}: no {name} in {seen:?}",
            v.label()
        );
    }
}

qmp_testkit::per_qemu!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async block_layer_commands,
    machine_commands,
);

/// The blocking client runs typed commands and reads typed events too.
#[test]
fn the_blocking_client_runs_typed_commands_and_reads_typed_events() {
    let qemu = Qemu::system(QemuVersion::V10_0);
    let client = qmp_client::blocking::Client::connect(&qemu.address()).unwrap();
    let mut stops = client.events_of::<StopEvent>();
    client.run(Cont::new()).unwrap();
    client.run(Stop::new()).unwrap();
    assert!(stops.next_timeout(Duration::from_secs(20)).unwrap().is_ok());
    let status = client.run(QueryStatus::new()).unwrap();
    assert_eq!(status.running, Some(false));
}
