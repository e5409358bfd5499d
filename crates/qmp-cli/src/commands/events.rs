//! `qmp events [--name NAME ...] [--count N]`: print events as JSON lines
//! (as QEMU writes them: timestamp, event, data) until the count is
//! reached, the timeout passes or the server goes away.

use crate::cli::EventsArgs;
use crate::{Context, Failure};
use qmp_client::EventFilter;

pub async fn run(ctx: &Context, a: &EventsArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let mut events = client.events(EventFilter::names(a.names.iter().cloned()));
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
                if !ctx.style.print(&event.to_value()) {
                    break;
                }
                printed += 1;
            }
            Some(Err(lagged)) => eprintln!("qmp: warning: {lagged}"),
            None => match client.disconnected().await {
                qmp_client::Disconnect::Eof => {
                    cut_short = Some("the server closed the connection".into());
                    break;
                }
                other => return Err(Failure::Connection(format!("disconnected: {other}"))),
            },
        }
    }
    match (a.count, cut_short) {
        // A script asked for N events and did not get them: say so, and
        // fail (a count that was never given ends at EOF or the timeout).
        (Some(n), Some(why)) if printed < n => Err(Failure::Connection(format!(
            "{why}: {printed} of {n} events"
        ))),
        _ => Ok(()),
    }
}
