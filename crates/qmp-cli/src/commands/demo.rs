//! `qmp demo --listen ADDR`: serve the demo machine until `quit`, Ctrl-C
//! or SIGTERM.

use crate::cli::DemoArgs;
use crate::Failure;
use qmp_proto::Address;
use tokio::signal::unix::{signal, SignalKind};

pub async fn run(a: &DemoArgs) -> Result<(), Failure> {
    serve(qmp_server::demo::server(), &a.listen, "demo machine").await
}

/// Serves `server` on `listen` until a client quits it, Ctrl-C or SIGTERM.
pub async fn serve(server: qmp_server::Server, listen: &str, what: &str) -> Result<(), Failure> {
    let address: Address = listen
        .parse()
        .map_err(|e: qmp_proto::AddressError| Failure::Usage(e.to_string()))?;
    let listener = server
        .bind(&address)
        .await
        .map_err(|e| Failure::Connection(format!("cannot listen on {address}: {e}")))?;
    eprintln!("qmp: {what} listening on {address}");
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Failure::Connection(e.to_string()))?;
    let stopper = server.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stopper.shutdown();
    });
    server.serve(listener).await;
    Ok(())
}
