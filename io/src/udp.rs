//! The DHT socket, bound the same way on both runtimes.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel buffer asked for each way on the DHT socket. A lookup sends to several nodes at
/// once and their answers arrive together; at 64 concurrent API lookups the default
/// 208 KiB receive buffer overflowed a few hundred times a second on loopback, and each
/// dropped answer costs its lookup a resend timeout. The kernel caps the size at
/// `net.core.rmem_max` / `wmem_max` without failing, so this is a wish, not a demand.
const SOCKET_BUFFER: usize = 2 * 1024 * 1024;

/// A non-blocking UDP socket bound to `addr`, with the larger buffers.
pub(crate) fn bind_dht(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (which, result) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(err) = result {
            tracing::debug!(%err, which, "DHT socket buffer left at its default");
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_non_blocking_with_at_least_the_default_buffer() {
        let socket = bind_dht(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        assert_ne!(socket.local_addr().expect("addr").port(), 0);
        // Both runtimes need a non-blocking socket; a blocking one would hang the driver.
        let mut buf = [0u8; 16];
        let err = socket.recv_from(&mut buf).expect_err("nothing was sent");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        let asked = Socket::from(socket).recv_buffer_size().expect("size");
        assert!(
            asked >= 200 * 1024,
            "receive buffer {asked} below the default"
        );
    }
}
