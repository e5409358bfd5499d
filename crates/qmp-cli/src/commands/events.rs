//! `qmp events [--name NAME ...] [--data KEY=VALUE ...] [--count N]`:
//! print events until the count is reached, the timeout passes or the
//! server goes away. On a terminal each is one line for people (local
//! time, name, data); otherwise a JSON line as QEMU writes it.

use crate::cli::EventsArgs;
use crate::output::clock;
use crate::{Context, Failure};
use qmp_client::{Event, EventFilter};
use std::io::Write;

/// The filter of `--name` and `--data`: `KEY=VALUE` compares the value at
/// KEY (dots for nested keys) with VALUE, read as JSON when it parses.
fn filter(a: &EventsArgs) -> Result<EventFilter, Failure> {
    let mut f = EventFilter::names(a.names.iter().cloned());
    for item in &a.data {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            Failure::Usage(format!(
                "--data {item}: expected KEY=VALUE, such as id=job0"
            ))
        })?;
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        let pointer: String = key.split('.').map(|k| format!("/{k}")).collect();
        f = f.data_eq(&pointer, value);
    }
    Ok(f)
}

/// One event as a line for people: `12:03:04.123 NAME {"data":...}`.
fn human(ctx: &Context, e: &Event) -> String {
    let when = clock(e.timestamp.seconds, e.timestamp.microseconds);
    let name = ctx.style.highlight(&e.name);
    match &e.data {
        Some(data) => format!("{when} {name} {data}"),
        None => format!("{when} {name}"),
    }
}

pub async fn run(ctx: &Context, a: &EventsArgs) -> Result<(), Failure> {
    let filter = filter(a)?;
    let client = ctx.connect().await?;
    let mut events = client.events(filter);
    let mut printed = 0u64;
    let deadline = tokio::time::Instant::now() + ctx.limit();
    // Why the events stopped before --count was reached, if they did.
    let mut cut_short = None;
    while a.count.is_none_or(|n| printed < n) {
        let next = if ctx.timeout_given {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(next) => next,
                Err(_) => {
                    cut_short = Some(format!("no more events within {} s", ctx.timeout));
                    break;
                }
            }
        } else {
            events.next().await
        };
        match next {
            Some(Ok(event)) => {
                let shown = if ctx.style.human {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", human(ctx, &event))
                        .and_then(|_| out.flush())
                        .is_ok()
                } else {
                    ctx.style.print(&event.to_value())
                };
                if !shown {
                    // stdout was closed (`| head`): done, not failed
                    return Ok(());
                }
                printed += 1;
            }
            Some(Err(lagged)) => eprintln!("qmp: warning: {lagged}"),
            None => {
                cut_short = Some(match client.disconnected().await {
                    qmp_client::Disconnect::Eof => "the server closed the connection".to_owned(),
                    other => format!("disconnected: {other}"),
                });
                break;
            }
        }
    }
    // A script asked for events and the stream ended first: say why, and
    // fail, so it can tell.
    match (cut_short, a.count) {
        (None, _) => Ok(()),
        (Some(why), Some(n)) => Err(Failure::Connection(format!(
            "{why}: {printed} of {n} events"
        ))),
        (Some(why), None) => Err(Failure::Connection(format!("{why} ({printed} events)"))),
    }
}
