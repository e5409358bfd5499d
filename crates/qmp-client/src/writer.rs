//! The writer task: the one owner of the socket's write half.
//!
//! Callers encode their request themselves and queue the bytes; the writer
//! takes everything queued at that moment and writes it with one syscall,
//! so 64 concurrent callers cost a handful of writes, not 64. A request
//! carrying file descriptors is written on its own with SCM_RIGHTS.

use crate::error::Disconnect;
use crate::router::Shared;
use crate::transport::WriteHalf;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Stop batching past this many bytes and write.
const MAX_BATCH: usize = 1 << 20;

pub(crate) enum Outgoing {
    Frame(Vec<u8>),
    FrameWithFds(Vec<u8>, Vec<OwnedFd>),
    /// Write what is queued, then half-close the socket.
    Shutdown(oneshot::Sender<()>),
}

pub(crate) async fn run(mut io: WriteHalf, mut rx: mpsc::UnboundedReceiver<Outgoing>, shared: Arc<Shared>) {
    let mut batch: Vec<u8> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut item = Some(first);
        while let Some(current) = item.take() {
            let result = match current {
                Outgoing::Frame(frame) => {
                    if batch.is_empty() {
                        batch = frame;
                    } else {
                        batch.extend_from_slice(&frame);
                    }
                    Ok(())
                }
                Outgoing::FrameWithFds(frame, fds) => match flush(&mut io, &mut batch).await {
                    Ok(()) => io.write_with_fds(&frame, &fds).await,
                    Err(e) => Err(e),
                },
                Outgoing::Shutdown(done) => {
                    let r = match flush(&mut io, &mut batch).await {
                        Ok(()) => io.shutdown().await,
                        Err(e) => Err(e),
                    };
                    let _ = done.send(());
                    if let Err(e) = r {
                        shared.close(Disconnect::Io(Arc::new(e)));
                    }
                    return;
                }
            };
            if let Err(e) = result {
                shared.close(Disconnect::Io(Arc::new(e)));
                return;
            }
            if batch.len() < MAX_BATCH {
                item = rx.try_recv().ok();
            }
        }
        if let Err(e) = flush(&mut io, &mut batch).await {
            shared.close(Disconnect::Io(Arc::new(e)));
            return;
        }
    }
}

async fn flush(io: &mut WriteHalf, batch: &mut Vec<u8>) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let r = io.write_all(batch).await;
    batch.clear();
    r
}
