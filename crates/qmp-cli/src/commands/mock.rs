//! `qmp mock --schema FILE --listen ADDR [--qemu-version X.Y.Z] [--replies FILE]`:
//! a mock QEMU with the command set of a real QEMU's schema dump.

use crate::cli::MockArgs;
use crate::Failure;
use qmp_proto::qemu_json::{Parsed, QObject, Streamer};

/// Reads a JSON file with QEMU's reader (so numbers keep QEMU's kinds).
pub(crate) fn read_json(path: &str) -> Result<QObject, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::Usage(format!("cannot read {path}: {e}")))?;
    let mut streamer = Streamer::new();
    let mut parsed = streamer.feed_collect(&bytes);
    parsed.extend(streamer.feed_collect(b"\n"));
    match parsed.as_slice() {
        [Parsed::Value(v)] => Ok(v.clone()),
        [Parsed::Error(e), ..] => Err(Failure::Usage(format!("{path}: {e}"))),
        _ => Err(Failure::Usage(format!(
            "{path}: expected exactly one JSON value"
        ))),
    }
}

/// Reads a schema dump (`qmp schema` of a real QEMU) for argument checks.
pub(crate) fn read_schema(path: &str) -> Result<qmp_server::schema::Schema, Failure> {
    qmp_server::schema::Schema::from_qobject(&read_json(path)?)
        .map_err(|e| Failure::Usage(format!("{path}: {e}")))
}

pub async fn run(a: &MockArgs) -> Result<(), Failure> {
    let schema = read_json(&a.schema)?;
    let replies = match &a.replies {
        Some(path) => qmp_server::mock::Replies::from_qobject(&read_json(path)?)
            .map_err(|e| Failure::Usage(format!("{path}: {e}")))?,
        None => Default::default(),
    };
    let parts: Vec<u64> = a
        .qemu_version
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    let [major, minor, micro] = parts[..] else {
        return Err(Failure::Usage(format!(
            "--qemu-version must be X.Y.Z, not {}",
            a.qemu_version
        )));
    };
    let server = qmp_server::mock::server(schema, (major, minor, micro, ""), replies)
        .map_err(|e| Failure::Usage(format!("{}: {e}", a.schema)))?;
    super::demo::serve(server, &a.listen, "mock QEMU").await
}
