//! TCP transport. Nagle is turned off: QMP is request/response with small
//! messages, and delaying them only adds latency.

use super::Stream;
use std::io;
use tokio::net::{TcpListener, TcpStream};

pub(super) async fn connect(host: &str, port: u16) -> io::Result<Stream> {
    let s = TcpStream::connect((host, port)).await?;
    s.set_nodelay(true)?;
    Ok(Stream::Tcp(s))
}

pub(super) async fn bind(host: &str, port: u16) -> io::Result<(TcpListener, u16)> {
    let l = TcpListener::bind((host, port)).await?;
    let port = l.local_addr()?.port();
    Ok((l, port))
}
