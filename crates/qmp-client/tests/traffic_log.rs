//! The traffic log, in a test binary of its own: tracing caches whether a
//! log line is wanted per call site across threads, so a subscriber set for
//! one test among many running at once could miss lines.

use qmp_client::Client;
use qmp_testkit::{per_qemu, Qemu, QemuVersion};
use serde_json::json;
use std::sync::{Arc, Mutex};

async fn traffic_is_logged_at_debug_level(v: QemuVersion) {
    use std::io::Write;
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
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("qmp::wire=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
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
