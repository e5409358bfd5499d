//! `qmp job wait ID` and `qmp CMD ... --wait`: follow a block job to its
//! end. On a terminal a progress bar on stderr, from the job's own
//! progress; the final state as JSON on stdout when piped. The exit status
//! is the job's: 0 when it concluded without error, 1 with its error.

use crate::{Context, Failure};
use qmp_client::{Client, EventFilter, EventStream};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// The commands that start a job, for `--wait`.
pub const STARTS_A_JOB: &[&str] = &[
    "blockdev-create",
    "blockdev-backup",
    "blockdev-mirror",
    "block-stream",
    "block-commit",
    "drive-backup",
    "drive-mirror",
];

/// The id of the job a command's arguments start: `job-id`, which the
/// block jobs default to their `device`.
pub fn job_id(arguments: &serde_json::Map<String, Value>) -> Option<String> {
    arguments
        .get("job-id")
        .or_else(|| arguments.get("device"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The job's entry in `query-jobs`, if it is there.
async fn entry(client: &Client, id: &str) -> Result<Option<Value>, Failure> {
    let jobs = client.execute("query-jobs", json!({})).await?;
    Ok(jobs
        .as_array()
        .and_then(|l| l.iter().find(|j| j["id"] == id))
        .cloned())
}

/// A progress bar: `[########------------]  40%  running`.
fn bar(job: &Value) -> String {
    let done = job["current-progress"].as_f64().unwrap_or(0.0);
    let total = job["total-progress"].as_f64().unwrap_or(0.0);
    let share = if total > 0.0 {
        (done / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = (share * 30.0).round() as usize;
    format!(
        "\r[{}{}] {:>3}%  {:<10}",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        (share * 100.0).round() as u32,
        job["status"].as_str().unwrap_or("?")
    )
}

/// Follows job `id` until it concludes (or is dismissed), with `events`
/// subscribed before the job could have started.
pub async fn follow(
    ctx: &Context,
    client: &Client,
    id: &str,
    mut events: EventStream,
) -> Result<(), Failure> {
    let terminal = std::io::stderr().is_terminal();
    let deadline = tokio::time::Instant::now() + ctx.limit();
    let mut last = entry(client, id)
        .await?
        .ok_or_else(|| Failure::Usage(format!("there is no job '{id}'")))?;
    loop {
        let status = last["status"].as_str().unwrap_or_default().to_owned();
        if terminal {
            eprint!("{}", bar(&last));
            let _ = std::io::stderr().flush();
        }
        if matches!(status.as_str(), "concluded" | "null") {
            break;
        }
        // The next status change, or a moment later for the progress.
        let tick = tokio::time::sleep(Duration::from_millis(if terminal { 200 } else { 1000 }));
        tokio::select! {
            e = events.next() => {
                if e.is_none() {
                    return Err(Failure::Connection(format!(
                        "the connection ended before job '{id}' did ({})",
                        client.disconnected().await
                    )));
                }
            }
            _ = tick => {}
            _ = tokio::time::sleep_until(deadline), if ctx.timeout_given => {
                if terminal {
                    eprintln!();
                }
                return Err(Failure::Connection(format!(
                    "job '{id}' did not end within {} s (it is {status})",
                    ctx.timeout
                )));
            }
        }
        match entry(client, id).await? {
            Some(job) => last = job,
            // dismissed (auto-dismiss): it ended; its last state stands
            None => {
                last["status"] = json!("null");
            }
        }
    }
    if terminal {
        eprintln!();
    }
    if !ctx.style.human {
        ctx.style.print(&last);
    }
    match last["error"].as_str() {
        Some(error) => Err(Failure::Qmp(qmp_client::QmpError::generic(format!(
            "job '{id}' failed: {error}"
        )))),
        None => {
            if ctx.style.human {
                println!("job '{id}' concluded");
            }
            Ok(())
        }
    }
}

/// The status changes of job `id`, subscribed before it may change.
pub fn status_changes(client: &Client, id: &str) -> EventStream {
    client.events(EventFilter::name("JOB_STATUS_CHANGE").data_eq("/id", id))
}

/// `qmp job wait ID`.
pub async fn wait(ctx: &Context, id: &str) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let events = status_changes(&client, id);
    follow(ctx, &client, id, events).await
}
