//! `qmp replay FILE --listen ADDR [--match strict|by-command] [--realtime]
//! [--schema FILE] [--allow-unused]`: plays a transcript back until every
//! client that came has gone (or SIGTERM), then prints the summary; the
//! exit status is 1 if anything mismatched or, unless `--allow-unused`,
//! was left unused.

use crate::cli::ReplayArgs;
use crate::Failure;
use qmp_replay::replay::{MatchMode, Replay};

pub async fn run(a: &ReplayArgs) -> Result<(), Failure> {
    let mode = match a.match_mode.as_str() {
        "strict" => MatchMode::Strict,
        "by-command" => MatchMode::ByCommand,
        other => {
            return Err(Failure::Usage(format!(
                "--match must be strict or by-command, not {other}"
            )))
        }
    };
    let mut replay = Replay::load(a.file.as_ref())
        .map_err(|e| Failure::Usage(format!("{}: {e}", a.file)))?
        .mode(mode)
        .realtime(a.realtime)
        .exit_when_idle(true);
    if let Some(path) = &a.schema {
        replay = replay.schema(super::mock::read_schema(path)?);
    }
    let address = a
        .listen
        .parse()
        .map_err(|e: qmp_proto::AddressError| Failure::Usage(e.to_string()))?;
    let mut server = replay
        .listen(&address)
        .await
        .map_err(|e| Failure::Connection(format!("cannot listen on {}: {e}", a.listen)))?;
    eprintln!("qmp: replaying {} on {}", a.file, a.listen);
    let stopped = super::proxy::on_terminate()?;
    tokio::select! {
        _ = server.idle() => {}
        _ = stopped => {}
    }
    let report = server.finish().await;
    eprint!("{report}");
    if report.is_clean(a.allow_unused) {
        Ok(())
    } else {
        Err(Failure::Quiet(1))
    }
}
