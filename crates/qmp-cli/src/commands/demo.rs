//! `qmp demo --listen ADDR`: serve the demo machine until `quit`, Ctrl-C
//! or SIGTERM.

use crate::cli::DemoArgs;
use crate::Failure;
use qmp_proto::Address;
use tokio::signal::unix::{signal, SignalKind};

pub async fn run(a: &DemoArgs) -> Result<(), Failure> {
    let address: Address = a
        .listen
        .parse()
        .map_err(|e: qmp_proto::AddressError| Failure::Usage(e.to_string()))?;
    let server = qmp_server::demo::server();
    let listener = server
        .bind(&address)
        .await
        .map_err(|e| Failure::Connection(format!("cannot listen on {address}: {e}")))?;
    eprintln!("qmp: demo machine listening on {address}");
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
