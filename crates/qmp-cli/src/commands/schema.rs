//! `qmp schema`: the server's `query-qmp-schema` reply, as JSON.

use crate::{Failure, Session};
use serde_json::Value;

pub async fn run(session: &Session) -> Result<(), Failure> {
    let client = session.connect().await?;
    let schema = client.execute("query-qmp-schema", Value::Null).await?;
    session.style.print(&schema);
    Ok(())
}
