//! `qmp events [--name NAME ...] [--count N]`: print events as JSON lines
//! (as QEMU writes them: timestamp, event, data) until the count is
//! reached, the timeout passes or the server goes away.

use crate::cli::EventsArgs;
use crate::{Failure, Session};
use qmp_client::EventFilter;
use std::time::Duration;

pub async fn run(session: &Session, a: &EventsArgs) -> Result<(), Failure> {
    let client = session.connect().await?;
    let mut events = client.events(EventFilter::names(a.names.iter().cloned()));
    let mut printed = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(session.timeout);
    while a.count.is_none_or(|n| printed < n) {
        let next = if session.timeout_given {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        } else {
            events.next().await
        };
        match next {
            Some(Ok(event)) => {
                if !session.style.print(&event.to_value()) {
                    break;
                }
                printed += 1;
            }
            Some(Err(lagged)) => eprintln!("qmp: warning: {lagged}"),
            None => match client.disconnected().await {
                qmp_client::Disconnect::Eof => break,
                other => return Err(Failure::Connection(format!("disconnected: {other}"))),
            },
        }
    }
    Ok(())
}
