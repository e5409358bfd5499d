//! `qmp schema`: the server's `query-qmp-schema` reply, as JSON; and
//! `qmp dump`: what `qmp mock` needs to pass for that QEMU.

use crate::{Context, Failure};
use serde_json::Value;

pub async fn run(ctx: &Context) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let schema = client.execute("query-qmp-schema", Value::Null).await?;
    ctx.style.print(&schema);
    Ok(())
}

/// `qmp dump`: one object with the QEMU's `version` (query-version),
/// `commands` (query-commands, in QEMU's own order) and `schema`
/// (query-qmp-schema), which `qmp mock --schema` reads whole.
pub async fn dump(ctx: &Context) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let version = client.execute("query-version", Value::Null).await?;
    let commands = client.execute("query-commands", Value::Null).await?;
    let schema = client.execute("query-qmp-schema", Value::Null).await?;
    ctx.style.print(&serde_json::json!({
        "version": version,
        "commands": commands,
        "schema": schema,
    }));
    Ok(())
}
