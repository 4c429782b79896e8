//! The DHT socket: bound the same way on both runtimes, read and written in batches.
//!
//! Under load, most of a Grape's time on the DHT port went into system calls: one
//! `recvfrom` and one `sendto` per query, where a bare echo server pays the same two and
//! nothing else. quinn-udp reads up to [`BATCH`] datagrams per call (`recvmmsg`, plus GRO
//! where the kernel coalesces one sender's datagrams) and sends a run of equal-sized
//! datagrams to one address as one call (GSO). The runtime only says when the socket is
//! ready ([`Runtime::udp_ready`]); the calls themselves are made here, once.
//!
//! Batching can be turned off ([`ServerConfig::udp_batching`](crate::ServerConfig)) to
//! measure what it buys: the same code then reads and sends one datagram per call.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use grenache_core::dht::Transmit;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use crate::runtime::{Interest, Runtime};

/// Kernel buffer asked for each way on the DHT socket. A lookup sends to several nodes at
/// once and their answers arrive together; at 64 concurrent API lookups the default
/// 208 KiB receive buffer overflowed a few hundred times a second on loopback, and each
/// dropped answer costs its lookup a resend timeout. The kernel caps the size at
/// `net.core.rmem_max` / `wmem_max` without failing, so this is a wish, not a demand.
const SOCKET_BUFFER: usize = 2 * 1024 * 1024;

/// Datagrams one read can take: quinn-udp's `recvmmsg` batch (1 where the OS has none).
const BATCH: usize = quinn_udp::BATCH_SIZE;

/// One read slot. Any UDP payload fits, and so does a GRO batch (the kernel caps a
/// coalesced one at 64 KiB), so nothing is ever cut. The slots are allocated zeroed,
/// which the OS maps lazily: an idle Grape touches the first page of the first slot.
const SLOT: usize = 64 * 1024;

/// Largest datagram sent as part of a GSO run. The kernel refuses (`EINVAL`) a segment
/// larger than the route's MTU, and quinn-udp then turns GSO off for good; 1200 bytes
/// fit any path IPv6 allows, and most DHT answers are shorter.
const GSO_MAX_SEGMENT: usize = 1200;

/// Most datagrams in one GSO send: the kernel's `UDP_MAX_SEGMENTS`.
const GSO_MAX_SEGMENTS: usize = 64;

/// A non-blocking UDP socket bound to `addr`, with the larger buffers.
pub(crate) fn bind_dht(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
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

/// The DHT socket with what batched reads and sends need.
pub(crate) struct DhtSocket<R: Runtime> {
    socket: R::UdpSocket,
    /// What quinn-udp learned about the OS (GSO support, ...).
    state: UdpSocketState,
    batching: bool,
    /// [`BATCH`] read slots of [`SLOT`] bytes, back to back (one without batching).
    slots: Vec<u8>,
    meta: [RecvMeta; BATCH],
    /// A GSO run's datagrams, copied back to back.
    run: Vec<u8>,
}

impl<R: Runtime> DhtSocket<R> {
    /// Takes over a socket from [`bind_dht`]. quinn-udp sets its options on it: it asks
    /// for GRO and for the packet info and ECN bits of what arrives, and it sets the
    /// don't-fragment bit, so a datagram longer than the interface's MTU is refused
    /// (`EMSGSIZE`, counted as a send error) rather than fragmented.
    ///
    /// # Errors
    /// When the OS refuses the options or the runtime cannot register the socket.
    pub(crate) fn new(socket: std::net::UdpSocket, batching: bool) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let slots = if batching { BATCH } else { 1 };
        Ok(Self {
            socket: R::udp(socket)?,
            state,
            batching,
            slots: vec![0; slots * SLOT],
            meta: [RecvMeta::default(); BATCH],
            run: Vec::new(),
        })
    }

    /// Waits until a datagram may be waiting.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        R::udp_ready(&self.socket, Interest::Read).await
    }

    /// Reads what is queued, one call's worth, and hands each datagram to `each` with its
    /// sender. Returns how many datagrams that was.
    ///
    /// # Errors
    /// `WouldBlock` when nothing is queued; any other error of the read.
    pub(crate) fn recv(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let Self {
            socket,
            state,
            slots,
            meta,
            ..
        } = self;
        let count = (slots.len() / SLOT).clamp(1, BATCH);
        let filled = {
            let mut chunks = slots.chunks_mut(SLOT);
            let mut bufs: [IoSliceMut<'_>; BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let bufs = bufs.get_mut(..count).unwrap_or_default();
            let meta = meta.get_mut(..count).unwrap_or_default();
            R::udp_try_io(socket, Interest::Read, |sock| {
                state.recv(UdpSockRef::from(&*sock), bufs, meta)
            })?
        };
        let mut datagrams = 0;
        for (meta, slot) in meta.iter().zip(slots.chunks(SLOT)).take(filled) {
            for datagram in split_gro(slot, meta.len, meta.stride) {
                each(meta.addr, datagram);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }

    /// Sends every datagram of `out` and empties it; `failed` hears of each one the OS
    /// refused, and the rest still go.
    ///
    /// With batching, datagrams are grouped by address first (UDP promises no order
    /// between addresses; each address's own order is kept) so that a run of equal-sized
    /// ones to one address leaves as a single GSO send.
    pub(crate) async fn send_all(
        &mut self,
        out: &mut Vec<Transmit>,
        mut failed: impl FnMut(&io::Error, SocketAddr),
    ) {
        let max_segments = if self.batching {
            // A stable sort: each address's datagrams stay in order.
            out.sort_by_key(|t| t.to);
            self.state.max_gso_segments().min(GSO_MAX_SEGMENTS)
        } else {
            1
        };
        let mut rest = out.as_slice();
        while !rest.is_empty() {
            let (run, tail) = rest.split_at(gso_run(rest, max_segments));
            rest = tail;
            let Err(err) = self.send_run(run).await else {
                continue;
            };
            if let [one] = run {
                failed(&err, one.to);
                continue;
            }
            // GSO refused (some drivers cannot): one by one, as without batching.
            for one in run {
                if let Err(err) = self.send_run(std::slice::from_ref(one)).await {
                    failed(&err, one.to);
                }
            }
        }
        out.clear();
    }

    /// Sends one run from [`gso_run`] in one call, waiting while the socket has no room.
    async fn send_run(&mut self, run: &[Transmit]) -> io::Result<()> {
        let (to, contents, segment_size) = match run {
            [] => return Ok(()),
            [one] => (one.to, one.payload.as_slice(), None),
            [first, ..] => {
                self.run.clear();
                for t in run {
                    self.run.extend_from_slice(&t.payload);
                }
                (first.to, self.run.as_slice(), Some(first.payload.len()))
            }
        };
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        loop {
            match R::udp_try_io(&self.socket, Interest::Write, |sock| {
                self.state.try_send(UdpSockRef::from(&*sock), &transmit)
            }) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    R::udp_ready(&self.socket, Interest::Write).await?;
                }
                done => return done,
            }
        }
    }
}

/// The datagrams in one read slot: `len` bytes, which GRO may have made of several
/// datagrams of `stride` bytes each (the last may be shorter). An empty datagram is
/// still one datagram.
fn split_gro(slot: &[u8], len: usize, stride: usize) -> impl Iterator<Item = &[u8]> {
    let data = slot.get(..len).unwrap_or(slot);
    let stride = if stride == 0 { data.len() } else { stride };
    let whole = (data.is_empty() || stride >= data.len()).then_some(data);
    let parts = whole.is_none().then(|| data.chunks(stride.max(1)));
    whole.into_iter().chain(parts.into_iter().flatten())
}

/// How many datagrams at the head of `out` can leave as one GSO send: one address, one
/// size (the last may be shorter), within the kernel's limits. At least one, unless `out`
/// is empty.
fn gso_run(out: &[Transmit], max_segments: usize) -> usize {
    let Some((first, rest)) = out.split_first() else {
        return 0;
    };
    let size = first.payload.len();
    if size == 0 || size > GSO_MAX_SEGMENT {
        return 1;
    }
    let mut n = 1;
    for t in rest {
        let len = t.payload.len();
        if n >= max_segments || t.to != first.to || len == 0 || len > size {
            break;
        }
        n += 1;
        if len < size {
            break;
        }
    }
    n
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

    fn transmit(port: u16, len: usize) -> Transmit {
        Transmit {
            to: SocketAddr::from(([127, 0, 0, 1], port)),
            payload: vec![7; len],
        }
    }

    #[test]
    fn a_gso_run_is_one_address_and_one_size_with_a_shorter_tail() {
        let out = [
            transmit(1, 100),
            transmit(1, 100),
            transmit(1, 90),
            transmit(1, 100),
        ];
        assert_eq!(gso_run(&out, 64), 3, "the shorter one ends the run");
        assert_eq!(gso_run(&out, 2), 2, "capped by the segment limit");
        assert_eq!(gso_run(&out, 1), 1, "no GSO");
        assert_eq!(gso_run(&out, 0), 1, "a limit of 0 still sends");
        assert_eq!(gso_run(&[], 64), 0);
        let mixed = [transmit(1, 100), transmit(2, 100), transmit(1, 100)];
        assert_eq!(gso_run(&mixed, 64), 1, "another address ends the run");
        let longer = [transmit(1, 90), transmit(1, 100)];
        assert_eq!(gso_run(&longer, 64), 1, "a longer one cannot follow");
        let big = [transmit(1, 1300), transmit(1, 1300)];
        assert_eq!(gso_run(&big, 64), 1, "too big for every path's MTU");
        let empty = [transmit(1, 0), transmit(1, 0)];
        assert_eq!(gso_run(&empty, 64), 1, "no segment size of 0");
    }

    #[test]
    fn splits_a_gro_slot_into_its_datagrams() {
        let slot: Vec<u8> = (0..=9).collect();
        let parts = |len, stride| split_gro(&slot, len, stride).collect::<Vec<_>>();
        assert_eq!(parts(10, 4), [&slot[0..4], &slot[4..8], &slot[8..10]]);
        assert_eq!(parts(10, 10), [&slot[..]]);
        assert_eq!(parts(6, 0), [&slot[..6]], "no stride: one datagram");
        assert_eq!(parts(0, 4), [&slot[..0]], "an empty datagram is one");
        assert_eq!(parts(99, 20), [&slot[..]], "a length past the slot is cut");
    }
}
