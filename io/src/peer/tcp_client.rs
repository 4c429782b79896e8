//! One TCP connection the core asked for ([`Io::TcpConnect`]): a ZeroMQ peer or
//! publisher. The core speaks ZMTP; this only connects, reports what it reads, and writes
//! what the driver queues (writes queued before the connection opened go out once it has).
//!
//! [`Io::TcpConnect`]: grenache_core::peer::Io::TcpConnect

use std::pin::{Pin, pin};
use std::time::Duration;

use futures_lite::{FutureExt as _, StreamExt as _};
use grenache_core::peer::{ConnId, PeerAddr};

use super::driver::IoEvent;
use crate::net::connect;
use crate::runtime::Runtime;
use crate::time::timeout;

/// Bytes read at once.
const READ_BUF: usize = 64 * 1024;

/// Most bytes gathered into one write: writes queued while the last was going out leave
/// together, up to this.
const MAX_GATHERED: usize = 64 * 1024;

/// How a connection ended.
enum Ended {
    /// The driver dropped it (or is gone): no report.
    ByDriver,
    /// The peer closed it, or it broke: report it.
    Lost,
}

/// What woke the connection.
enum Wake {
    Incoming(std::io::Result<usize>),
    Outgoing(Option<Vec<u8>>),
}

/// Opens the connection and serves it until it ends; reports `TcpClosed` unless the
/// driver ended it.
pub(crate) async fn run<R: Runtime>(
    conn: ConnId,
    addr: PeerAddr,
    outgoing: async_channel::Receiver<Vec<u8>>,
    io: async_channel::Sender<IoEvent>,
    connect_timeout: Duration,
) {
    let stream = match timeout::<R, _>(connect_timeout, open::<R>(&addr)).await {
        Some(Ok(stream)) => Some(stream),
        Some(Err(err)) => {
            tracing::debug!(%conn, %addr, %err, "TCP connect failed");
            None
        }
        None => {
            tracing::debug!(%conn, %addr, "TCP connect timed out");
            None
        }
    };
    let ended = match stream {
        Some(stream) if io.send(IoEvent::TcpOpen(conn)).await.is_ok() => {
            serve::<R>(conn, stream, pin!(outgoing), &io).await
        }
        Some(_) => Ended::ByDriver,
        None => Ended::Lost,
    };
    if matches!(ended, Ended::Lost) {
        let _ = io.send(IoEvent::TcpClosed(conn)).await;
    }
}

async fn open<R: Runtime>(addr: &PeerAddr) -> std::io::Result<R::TcpStream> {
    // PeerAddr has checked the shape: `host:port`, IPv6 hosts in brackets.
    let (host, port) = addr
        .as_str()
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| std::io::Error::other("not host:port"))?;
    connect::<R>(host, port).await
}

async fn serve<R: Runtime>(
    conn: ConnId,
    mut stream: R::TcpStream,
    // Polled as a stream, which keeps its listener while a read wakes the loop.
    mut outgoing: Pin<&mut async_channel::Receiver<Vec<u8>>>,
    io: &async_channel::Sender<IoEvent>,
) -> Ended {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let wake = {
            let read = async { Wake::Incoming(R::read(&mut stream, &mut buf).await) };
            let write = async { Wake::Outgoing(outgoing.next().await) };
            read.race(write).await
        };
        match wake {
            Wake::Incoming(Ok(0)) => return Ended::Lost,
            Wake::Incoming(Ok(n)) => {
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                if io.send(IoEvent::TcpData(conn, bytes)).await.is_err() {
                    return Ended::ByDriver;
                }
            }
            Wake::Incoming(Err(err)) => {
                tracing::debug!(%conn, %err, "TCP read failed");
                return Ended::Lost;
            }
            Wake::Outgoing(Some(bytes)) => {
                let bytes = gather(bytes, &outgoing, MAX_GATHERED);
                if let Err(err) = R::write_all(&mut stream, &bytes).await {
                    tracing::debug!(%conn, %err, "TCP write failed");
                    return Ended::Lost;
                }
            }
            // Dropping the stream closes it.
            Wake::Outgoing(None) => return Ended::ByDriver,
        }
    }
}

/// `first` and the writes queued behind it, up to `max` bytes (more when `first` alone is
/// longer), as one buffer. Under load the driver queues many requests (or replies) while one
/// write is in the kernel; each write on loopback also costs the reader's side of the TCP
/// stack and a wake-up, so one write for all of them saves most of that. ZMTP frames are a
/// byte stream: where one write ends does not matter to the reader.
fn gather(mut first: Vec<u8>, queued: &async_channel::Receiver<Vec<u8>>, max: usize) -> Vec<u8> {
    while first.len() < max {
        // A message is never split, so a large one may carry the buffer past `max`.
        match queued.try_recv() {
            Ok(more) => first.extend_from_slice(&more),
            Err(_) => break,
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_writes_leave_together_in_order_up_to_the_bound() {
        let (tx, rx) = async_channel::unbounded();
        for chunk in [&b"bb"[..], b"cc", b"dd", b"ee"] {
            tx.try_send(chunk.to_vec()).expect("queued");
        }

        let first = gather(b"aa".to_vec(), &rx, 6);
        let second = gather(b"x".to_vec(), &rx, 6);
        let alone = gather(b"yyyyyyy".to_vec(), &rx, 6);

        assert_eq!(
            first, b"aabbcc",
            "whole messages, in queue order, stopping at the bound"
        );
        assert_eq!(second, b"xddee", "the rest, and no wait for more");
        assert_eq!(alone, b"yyyyyyy", "nothing queued: the write as it came");
    }
}
