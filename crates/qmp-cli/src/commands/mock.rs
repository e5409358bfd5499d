//! `qmp mock --schema DUMP --listen ADDR [--version X.Y.Z] [--package TEXT]
//! [--replies FILE]`: a mock QEMU from a real QEMU's dump (`qmp dump`) or schema.

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
pub(crate) fn read_schema(path: &str) -> Result<qmp_proto::schema::Schema, Failure> {
    qmp_proto::schema::Schema::from_json(&read_json(path)?.to_value())
        .map_err(|e| Failure::Usage(format!("{path}: {e}")))
}

pub async fn run(a: &MockArgs) -> Result<(), Failure> {
    let dump = qmp_server::mock::Dump::from_qobject(read_json(&a.schema)?)
        .map_err(|e| Failure::Usage(format!("{}: {e}", a.schema)))?;
    let replies = match &a.replies {
        Some(path) => qmp_server::mock::Replies::from_qobject(&read_json(path)?)
            .map_err(|e| Failure::Usage(format!("{path}: {e}")))?,
        None => Default::default(),
    };
    let dumped = dump.version.clone();
    let (major, minor, micro) = match (&a.qemu_version, &dumped) {
        (Some(text), _) => {
            let parts: Result<Vec<u64>, _> = text.split('.').map(str::parse).collect();
            match parts.as_deref() {
                Ok(&[major, minor, micro]) => (major, minor, micro),
                _ => {
                    return Err(Failure::Usage(format!(
                        "--version must be X.Y.Z, not {text}"
                    )))
                }
            }
        }
        (None, Some(v)) => (v.qemu.major, v.qemu.minor, v.qemu.micro),
        (None, None) => (10, 0, 0),
    };
    let package = match (&a.package, &dumped) {
        (Some(p), _) => p.clone(),
        (None, Some(v)) => v.package.clone(),
        (None, None) => String::new(),
    };
    let server = qmp_server::mock::server(
        dump,
        &qmp_proto::Version::new(major, minor, micro, package),
        replies,
    )
    .map_err(|e| Failure::Usage(format!("{}: {e}", a.schema)))?;
    super::demo::serve(server, &a.listen, "mock QEMU").await
}
