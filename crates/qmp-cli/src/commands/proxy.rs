//! `qmp proxy --upstream ADDR --listen ADDR[,policy=NAME] ...`: share one
//! QEMU monitor between many clients until Ctrl-C or SIGTERM, or until
//! QEMU goes away (unless `--reconnect`).

use crate::cli::{ProxyArgs, RecordArgs};
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
        .client_buffer(a.client_buffer)
        .client_input_budget(a.client_input_budget);
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
        builder = builder.audit(path).audit_strict(a.audit_strict);
    }
    if let Some(path) = &a.record {
        builder = builder.record(path);
    }
    serve(builder).await
}

/// `qmp record`: a proxy with one listener and a transcript.
pub async fn record(a: &RecordArgs) -> Result<(), Failure> {
    run(&ProxyArgs {
        upstream: a.upstream.clone(),
        listen: vec![a.listen.clone()],
        policy: None,
        audit: None,
        audit_strict: false,
        reconnect: false,
        client_buffer: qmp_proxy::proxy::DEFAULT_CLIENT_BUFFER,
        client_input_budget: qmp_proxy::proxy::DEFAULT_CLIENT_INPUT_BUDGET,
        record: Some(a.out.clone()),
        unused: Default::default(),
    })
    .await
}

/// Binds and serves until Ctrl-C, SIGTERM or QEMU's end.
async fn serve(builder: qmp_proxy::ProxyBuilder) -> Result<(), Failure> {
    let proxy = builder.bind().await.map_err(|e| match e {
        qmp_proxy::ProxyError::Policy(e) => Failure::Usage(e.to_string()),
        other => Failure::Connection(other.to_string()),
    })?;
    let handle = proxy.handle();
    let stopped = on_terminate()?;
    tokio::spawn(async move {
        stopped.await;
        handle.shutdown();
    });
    proxy
        .run()
        .await
        .map_err(|e| Failure::Connection(e.to_string()))
}

/// Resolves on Ctrl-C or SIGTERM.
pub fn on_terminate() -> Result<impl std::future::Future<Output = ()>, Failure> {
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Failure::Connection(e.to_string()))?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}
