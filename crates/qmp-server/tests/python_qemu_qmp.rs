//! A client no one here wrote: QEMU's own Python library `qemu.qmp`
//! (`pip install qemu.qmp`, as .ci/run does) drives our server through
//! negotiation, commands, errors, events and out-of-band execution.

use qmp_server::{QDict, QObject, QmpError, Server};
use std::time::Duration;

const SCRIPT: &str = r#"
import asyncio, sys
from qemu.qmp import QMPClient, ExecuteError

async def main(path):
    qmp = QMPClient('test')
    await qmp.connect(path)
    caps = qmp.greeting.QMP.capabilities
    v = qmp.greeting.QMP.version['qemu']
    print('greeting', v['major'], v['minor'], v['micro'], caps)
    print('echo', await qmp.execute('echo', {'a': [1, 'two'], 'b': None}))
    try:
        await qmp.execute('fail')
    except ExecuteError as e:
        print('error', e.error_class, str(e))
    try:
        await qmp.execute('nope')
    except ExecuteError as e:
        print('error', e.error_class)
    await qmp.execute('emit')
    event = await asyncio.wait_for(qmp.events.get(), 5)
    print('event', event['event'], event['data'])
    slow = asyncio.ensure_future(qmp.execute('sleep'))
    await asyncio.sleep(0.05)
    print('oob', await qmp.execute('ping', oob=True), slow.done())
    await slow
    await qmp.disconnect()
    print('done')

asyncio.run(main(sys.argv[1]))
"#;

#[tokio::test]
async fn python_qemu_qmp_drives_our_server() {
    // `emit` raises an event from inside a handler.
    let server = Server::builder()
        .version(10, 0, 2, "")
        .command("echo", |req| async move {
            Ok(Some(QObject::Dict(req.arguments)))
        })
        .command("fail", |_| async { Err(QmpError::generic("it failed")) })
        .command("sleep", |_| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(None)
        })
        .oob_command("ping", |_| async {
            Ok(Some(QObject::String("pong".into())))
        })
        .command("emit", |req| async move {
            let mut data = QDict::new();
            data.insert("answer", QObject::Int(42));
            req.server().emit("TEST_EVENT", Some(QObject::Dict(data)));
            Ok(None)
        })
        .build();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let listener = server
        .bind(&format!("unix:{}", path.display()).parse().unwrap())
        .await
        .unwrap();
    let s = server.clone();
    tokio::spawn(async move { s.serve(listener).await });
    let address = path.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", SCRIPT, &address])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'qemu'"),
        "this test needs Python's qemu.qmp: pip install qemu.qmp (.ci/run does)"
    );
    assert!(out.status.success(), "qemu.qmp failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "greeting 10 0 2 ['oob']",
            "echo {'a': [1, 'two'], 'b': None}",
            "error GenericError it failed",
            "error CommandNotFound",
            "event TEST_EVENT {'answer': 42}",
            "oob pong False",
            "done",
        ]
    );
}
