//! The traffic log, in a test binary of its own: tracing caches whether a
//! log line is wanted per call site across threads, so a subscriber set for
//! one test among many running at once could miss lines.
//!
//! The subscriber is global and set once per process (`cargo test` runs
//! the three versions in one process, nextest each in its own), and the
//! versions take turns, each reading only what was logged in its turn.

use qmp_client::Client;
use qmp_testkit::{per_qemu, Qemu, QemuVersion};
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log every test of this process writes to.
fn log() -> &'static Buf {
    static LOG: OnceLock<Buf> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("qmp::wire=debug")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
}

async fn traffic_is_logged_at_debug_level(v: QemuVersion) {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = TURN.lock().await;
    let buf = log();
    buf.0.lock().unwrap().clear();
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    client
        .execute("qom-list", json!({"path": "/"}))
        .await
        .unwrap();
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("<- {\"QMP\""), "{log}");
    assert!(
        log.contains(r#"-> {"execute":"qom-list","arguments":{"path":"/"},"id":2}"#),
        "{log}"
    );
    assert!(log.contains(r#"<- {"return": [{"name": "type""#), "{log}");
}
per_qemu!(#[tokio::test] async traffic_is_logged_at_debug_level);
