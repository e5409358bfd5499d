//! The typed layer against every QEMU of the matrix, both binaries.

mod common;

use qmp_client::{Client, Error};
use qmp_testkit::{Qemu, QemuVersion};
use qmp_types::{reply_round_trip, Command};
use serde_json::json;

/// Every `query-*` and `x-query-*` command that takes no required
/// arguments, run on a real QEMU: its reply decodes to the typed return
/// value, and encodes back to the same JSON (member order aside). Left
/// out: queries with required arguments (`query-rocker` and the like,
/// which need a name to ask about), and those QEMU refuses on this
/// machine (no balloon, SEV, SGX, USB, ... : printed with QEMU's reason);
/// the test fails if fewer than `least` queries ran. None of them
/// changes anything.
async fn sweep(v: QemuVersion, qemu: &Qemu, least: usize) -> Vec<String> {
    let client = Client::connect(&qemu.address()).await.unwrap();
    let mut ran = Vec::new();
    let mut refused = Vec::new();
    for name in common::no_argument_queries(&client).await {
        let name = name.as_str();
        let reply = match client.execute(name, json!({})).await {
            Ok(reply) => reply,
            Err(Error::Qmp(e)) => {
                refused.push(format!("{name} ({})", e.desc));
                continue;
            }
            Err(e) => panic!("{v:?}: {name}: {e}"),
        };
        assert!(
            common::round_trips(reply_round_trip, name, &reply, &v.label()),
            "{}: {name} has no type",
            v.label()
        );
        ran.push(name.to_owned());
    }
    assert!(
        ran.len() >= least,
        "{}: only {} queries ran: {ran:?}",
        v.label(),
        ran.len()
    );
    eprintln!(
        "{}: {} queries round-trip; refused by QEMU: {refused:?}",
        v.label(),
        ran.len()
    );
    ran
}

async fn every_query_decodes_and_round_trips(v: QemuVersion) {
    sweep(v, &Qemu::system(v), 50).await;
    sweep(v, &Qemu::storage_daemon(v), 10).await;
}

async fn typed_commands_run_and_unknown_ones_are_refused_before_sending(v: QemuVersion) {
    use qmp_types::{QueryStatus, QueryVersion, Stop};
    let qemu = Qemu::system(v);
    let client = Client::connect(&qemu.address()).await.unwrap();
    let version = client.run(QueryVersion::new()).await.unwrap();
    let qemu_version = version.qemu.expect("qemu");
    assert_eq!(
        (qemu_version.major, qemu_version.minor),
        (
            Some(v.major_minor().0 as i64),
            Some(v.major_minor().1 as i64)
        )
    );
    client.run(qmp_types::Cont::new()).await.unwrap();
    client.run(Stop::new()).await.unwrap();
    let status = client.run(QueryStatus::new()).await.unwrap();
    assert_eq!(status.status.as_ref().map(|s| s.as_str()), Some("paused"));
    assert_eq!(status.running, Some(false));
    assert_eq!(<Stop as Command>::NAME, "stop");
    // A member this QEMU lacks (`flat` is new in 11.1): refused here,
    // naming both; on 11.1 it runs.
    let flat = client
        .run(qmp_types::QueryBlock::new().with_flat(true))
        .await;
    match v {
        QemuVersion::V11_1 => {
            flat.unwrap();
        }
        _ => {
            let e = flat.map(|_| ()).unwrap_err();
            assert!(matches!(e, Error::NotInSchema(_)), "{e:?}");
            let text = e.to_string();
            let qemu = format!("QEMU {}", v.label());
            assert!(
                text.contains("'flat'") && text.contains("query-block") && text.contains(&qemu),
                "{text}"
            );
        }
    }
    // A command this QEMU lacks (qemu-storage-daemon has no `stop`).
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let e = client.run(Stop::new()).await.unwrap_err();
    assert!(e.to_string().contains("has no command 'stop'"), "{e}");
    // Nothing was sent: the connection is in step.
    client.run(QueryVersion::new()).await.unwrap();
}

qmp_testkit::per_qemu!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async every_query_decodes_and_round_trips,
    typed_commands_run_and_unknown_ones_are_refused_before_sending,
);
