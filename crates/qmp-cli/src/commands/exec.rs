//! `qmp exec CMD [key=value ...]`: run one command, print its return value.

use crate::cli::ExecArgs;
use crate::{Context, Failure};
use qmp_proto::args;
use serde_json::{Map, Value};

pub async fn run(ctx: &Context, a: &ExecArgs) -> Result<(), Failure> {
    let mut arguments = match &a.json_args {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(Failure::Usage("--args must be a JSON object".into())),
            Err(e) => return Err(Failure::Usage(format!("--args is not valid JSON: {e}"))),
        },
        None => Map::new(),
    };
    for item in &a.args {
        args::insert_assignment(&mut arguments, item).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let client = ctx.connect().await?;
    if !a.wait {
        let ret = client.execute(&a.command, Value::Object(arguments)).await?;
        ctx.style.print(&ret);
        return Ok(());
    }
    // --wait: follow the job the command starts, subscribed before it is
    // started so that no status change is missed.
    let id = super::job::job_id(&arguments)
        .filter(|_| super::job::STARTS_A_JOB.contains(&a.command.as_str()))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--wait follows the job of {} (with job-id, or device); {} starts none",
                super::job::STARTS_A_JOB.join(", "),
                a.command
            ))
        })?;
    let events = super::job::status_changes(&client, &id);
    client.execute(&a.command, Value::Object(arguments)).await?;
    super::job::follow(ctx, &client, &id, events).await
}
