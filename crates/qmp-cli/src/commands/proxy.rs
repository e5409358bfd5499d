//! `qmp proxy --upstream ADDR --listen ADDR[,policy=NAME] ...`: share one
//! QEMU monitor between many clients until Ctrl-C or SIGTERM, or until
//! QEMU goes away (unless `--reconnect`).

use crate::cli::ProxyArgs;
use crate::Failure;
use qmp_proto::Address;
use qmp_proxy::{ListenSpec, PolicyFile, Proxy};
use tokio::signal::unix::{signal, SignalKind};

pub async fn run(a: &ProxyArgs) -> Result<(), Failure> {
    let upstream: Address = a
        .upstream
        .parse()
        .map_err(|e: qmp_proto::AddressError| Failure::Usage(format!("--upstream: {e}")))?;
    let mut builder = Proxy::builder(upstream)
        .reconnect(a.reconnect)
        .client_buffer(a.client_buffer);
    for listen in &a.listen {
        let spec: ListenSpec = listen
            .parse()
            .map_err(|e| Failure::Usage(format!("--listen {listen}: {e}")))?;
        builder = builder.listen(spec);
    }
    if let Some(path) = &a.policy {
        let file = PolicyFile::load(path.as_ref()).map_err(|e| Failure::Usage(e.to_string()))?;
        builder = builder.policies(file);
    }
    if let Some(path) = &a.audit {
        builder = builder.audit(path);
    }
    let proxy = builder.bind().await.map_err(|e| match e {
        qmp_proxy::ProxyError::Policy(e) => Failure::Usage(e.to_string()),
        other => Failure::Connection(other.to_string()),
    })?;
    let handle = proxy.handle();
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Failure::Connection(e.to_string()))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        handle.shutdown();
    });
    proxy
        .run()
        .await
        .map_err(|e| Failure::Connection(e.to_string()))
}
