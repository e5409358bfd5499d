//! `qmp_types::guest_agent` against the real qemu-ga of every QEMU of the
//! matrix (run on the host with everything that would touch it blocked;
//! see qmp-testkit's `agent`).
//!
//! The agent cannot describe itself, so the typed commands come from the
//! project's own description (`schemas/guest-agent.json`). These tests are
//! what keeps that description honest: every command in it is one the
//! real agents have, and every reply the agents send decodes, writes back
//! as the same JSON, and has no member the description lacks.

use qmp_client::{Client, ClientBuilder, Error};
use qmp_proto::schema::{Kind, Schema};
use qmp_testkit::agent::{GuestAgent, BLOCKED};
use qmp_testkit::{per_qemu, QemuVersion};
use qmp_types::guest_agent::*;
use qmp_types::Qmp;
use serde_json::{json, Value};
use std::time::Duration;

fn description() -> Schema {
    let text = include_str!("../schemas/guest-agent.json");
    Schema::from_json(&serde_json::from_str(text).unwrap()).unwrap()
}

async fn agent_client(agent: &GuestAgent) -> Client {
    ClientBuilder::new()
        .guest_agent()
        .timeout(Some(Duration::from_secs(5)))
        .connect(&agent.address())
        .await
        .unwrap()
}

/// The commands the real agent lists in `guest-info`.
async fn supported(client: &Client) -> Vec<String> {
    let info = client.run(GuestInfo::new()).await.unwrap();
    info.supported_commands
        .unwrap()
        .into_iter()
        .map(|c| c.name.unwrap())
        .collect()
}

async fn every_described_command_is_in_the_real_agent(v: QemuVersion) {
    let agent = GuestAgent::start(v);
    let client = agent_client(&agent).await;
    let real = supported(&client).await;
    let description = description();
    let described: Vec<&str> = description.command_names().collect();
    assert!(described.len() >= 29, "{described:?}");
    for name in &described {
        assert!(
            real.iter().any(|r| r == name),
            "{}: the description has {name}, the agent does not",
            v.label()
        );
    }
}

/// Every command of the description that takes no arguments and changes
/// nothing, run typed: the reply decodes to the typed return value,
/// encodes back to the same JSON, and has no member the description lacks
/// (a member a newer agent added would land in `other` and still round
/// trip; this catches the description falling behind). Those the agent
/// refuses on this machine are printed with its reason; at least 10 run.
async fn every_no_argument_query_decodes_round_trips_and_is_fully_described(v: QemuVersion) {
    let agent = GuestAgent::start(v);
    let client = agent_client(&agent).await;
    let description = description();
    let mut ran = Vec::new();
    let mut refused = Vec::new();
    for entry in description.commands() {
        let Kind::Command {
            arg_type, ret_type, ..
        } = &entry.kind
        else {
            unreachable!()
        };
        let name = entry.name.as_str();
        let changes_something = BLOCKED.contains(&name) || name == "guest-fsfreeze-thaw";
        if arg_type != "none" || changes_something {
            continue;
        }
        let reply = match client.execute(name, json!({})).await {
            Ok(reply) => reply,
            Err(Error::Qmp(e)) => {
                refused.push(format!("{name} ({})", e.desc));
                continue;
            }
            Err(e) => panic!("{}: {name}: {e}", v.label()),
        };
        let again = reply_round_trip(name, reply.clone())
            .unwrap_or_else(|| panic!("{name} has no type"))
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", v.label()));
        assert_eq!(again, reply, "{}: {name} does not round-trip", v.label());
        assert_eq!(
            description.unknown_member(ret_type, &reply),
            None,
            "{}: {name}'s reply has a member the description lacks: {reply}",
            v.label()
        );
        ran.push(name.to_owned());
    }
    eprintln!(
        "{}: {} agent queries round-trip: {ran:?}; refused by the agent: {refused:?}",
        v.label(),
        ran.len()
    );
    assert!(ran.len() >= 10, "{}: only {ran:?} ran", v.label());
}

async fn exec_and_files_run_typed(v: QemuVersion) {
    let agent = GuestAgent::start(v);
    let client = agent_client(&agent).await;

    // guest-exec, its output captured (as 7.2 and later all take it).
    let started = client
        .run(
            GuestExec::new("/bin/echo".into())
                .with_arg(vec!["hello".into()])
                .with_capture_output(GuestExecCaptureOutput::Bool(true)),
        )
        .await
        .unwrap();
    let pid = started.pid.expect("guest-exec gives a pid");
    let status = loop {
        let status = client.run(GuestExecStatus::new(pid)).await.unwrap();
        if status.exited == Some(true) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.exitcode, Some(0), "{status:?}");
    // "hello\n", base64.
    assert_eq!(status.out_data.as_deref(), Some("aGVsbG8K"), "{status:?}");

    // A file in the test's directory: write, flush, seek back, read.
    let path = agent.dir().join("typed.txt");
    let handle = client
        .run(GuestFileOpen::new(path.display().to_string()).with_mode("w+".into()))
        .await
        .unwrap();
    let written = client
        .run(GuestFileWrite::new(handle, "aGVsbG8K".into()))
        .await
        .unwrap();
    assert_eq!(written.count, Some(6), "{written:?}");
    client.run(GuestFileFlush::new(handle)).await.unwrap();
    let sought = client
        .run(GuestFileSeek::new(
            handle,
            1,
            GuestFileSeekWhence::Str(GuestFileSeekWhenceStr::Set),
        ))
        .await
        .unwrap();
    assert_eq!(sought.position, Some(1), "{sought:?}");
    let read = client
        .run(GuestFileRead::new(handle).with_count(100))
        .await
        .unwrap();
    // "ello\n", base64.
    assert_eq!(
        (read.count, read.buf_b64.as_deref(), read.eof),
        (Some(5), Some("ZWxsbwo="), Some(true)),
        "{read:?}"
    );
    client.run(GuestFileClose::new(handle)).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
    // The handle is gone: the agent's error comes back as one.
    let e = client.run(GuestFileClose::new(handle)).await.unwrap_err();
    assert!(matches!(e, Error::Qmp(_)), "{e}");

    // Nothing is frozen, so thawing thaws nothing.
    assert_eq!(client.run(GuestFsfreezeThaw::new()).await.unwrap(), 0);
    let status = client.run(GuestFsfreezeStatus::new()).await.unwrap();
    assert!(
        matches!(status, GuestFsfreezeStatusReturn::Thawed),
        "{status:?}"
    );
}

async fn blocked_and_unknown_commands_fail_clearly(v: QemuVersion) {
    let agent = GuestAgent::start(v);
    let client = agent_client(&agent).await;
    // Typed commands the test agent refuses: the agent's own error.
    let refusals = [
        client.run(GuestFsfreezeFreeze::new()).await.map(|_| ()),
        client.run(GuestFstrim::new()).await.map(|_| ()),
        client.run(GuestSetTime::new()).await.map(|_| ()),
    ];
    for r in refusals {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("has been disabled"), "{e}");
    }
    // A command the agent does not list fails before it is sent, naming
    // the agent.
    struct GuestMadeUp;
    impl Qmp for GuestMadeUp {
        fn from_qmp(_: Value) -> Result<Self, qmp_types::TypeError> {
            Ok(GuestMadeUp)
        }
        fn to_qmp(&self) -> Value {
            json!({})
        }
    }
    impl qmp_types::Command for GuestMadeUp {
        const NAME: &'static str = "guest-made-up";
        const ALLOW_OOB: bool = false;
        const SINCE: &'static [&'static str] = &[];
        type Ok = qmp_types::Empty;
    }
    let e = client.run(GuestMadeUp).await.unwrap_err();
    assert!(matches!(e, Error::NotInSchema(_)), "{e}");
    let named = format!("qemu-ga {}.", v.label());
    assert!(
        e.to_string().contains(&named) && e.to_string().contains("guest-made-up"),
        "{e}"
    );
    // Nothing was sent: the connection is in step.
    client.run(GuestPing::new()).await.unwrap();
}

per_qemu!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async every_described_command_is_in_the_real_agent,
    every_no_argument_query_decodes_round_trips_and_is_fully_described,
    exec_and_files_run_typed,
    blocked_and_unknown_commands_fail_clearly,
);
