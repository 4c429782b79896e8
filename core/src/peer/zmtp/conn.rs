//! One ZMTP connection: the handshake, then messages, as bytes in and bytes out.

use std::collections::VecDeque;

use crate::peer::zmtp::frame::{
    self, FLAG_COMMAND, FLAG_MORE, GREETING_LEN, MAX_HEADER_LEN, MAX_IDENTITY_LEN,
};
use crate::peer::zmtp::{SocketType, ZmtpError};

/// Commands may be this long even when `max_message_len` is smaller, so a READY with a
/// 255-byte identity and some metadata always fits.
const MIN_COMMAND_LEN: usize = 1024;

/// What one connection accepts and holds. Exceeding a receive limit is fatal (the peer is
/// broken or hostile); exceeding a send limit refuses that one `send`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Sum of the frame bodies of one multipart message, in and out. Commands may be as
    /// long, or 1 KiB if that is more. Default 1 MiB.
    pub max_message_len: usize,
    /// Frames in one message, in and out. Default 64.
    pub max_frames: usize,
    /// Messages `send` holds until the handshake ends. Default 1024.
    pub max_queued: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_len: 1 << 20,
            max_frames: 64,
            max_queued: 1024,
        }
    }
}

/// What a connection reports, from [`Connection::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZmtpEvent {
    /// Handshake done (both greetings and READYs exchanged, socket types compatible).
    Ready {
        /// The peer's socket type.
        peer: SocketType,
        /// The peer's `Identity` property; empty when it sent none (or an empty one).
        identity: Vec<u8>,
    },
    /// A complete multipart message (at least one frame; frames may be empty).
    Message(Vec<Vec<u8>>),
    /// On a PUB/XPUB connection: the peer subscribed to this prefix (empty = everything).
    Subscribe(Vec<u8>),
    /// On a PUB/XPUB connection: the peer cancelled this prefix.
    Cancel(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the peer's 64-byte greeting.
    Greeting,
    /// Greeting accepted; waiting for the peer's READY.
    Handshake,
    /// READY exchanged: messages flow.
    Ready,
    /// A fatal error happened.
    Dead,
}

/// A frame whose header has been read and whose body is arriving.
#[derive(Debug)]
struct Body {
    command: bool,
    more: bool,
    len: usize,
    data: Vec<u8>,
}

/// A sans-IO ZMTP 3.0 connection with the NULL mechanism, from either end of a TCP stream
/// (ZMTP is symmetric: nothing depends on who connected).
///
/// Feed it what the socket reads with [`handle_input`](Self::handle_input), then drain
/// [`poll_event`](Self::poll_event) and write out [`take_output`](Self::take_output).
/// Our greeting and READY are queued at creation, so write them out at once: the peer
/// (libzmq) waits for our greeting before it finishes its own.
#[derive(Debug)]
pub struct Connection {
    socket: SocketType,
    limits: Limits,
    state: State,
    greeting: [u8; GREETING_LEN],
    greeting_len: usize,
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    body: Option<Body>,
    /// Frames of the message being received, and the sum of their lengths.
    message: Vec<Vec<u8>>,
    message_len: usize,
    peer: Option<SocketType>,
    peer_identity: Vec<u8>,
    out: Vec<u8>,
    /// Messages sent before the handshake ended, already encoded, and how many.
    held: Vec<u8>,
    held_count: usize,
    events: VecDeque<ZmtpEvent>,
}

impl Connection {
    /// Starts a connection: queues our 64-byte greeting and our READY command at once.
    /// `identity` (≤ 255 bytes, may be empty) goes in READY's "Identity" property when
    /// non-empty (DEALER/ROUTER/REQ/REP may send it; a ROUTER peer addresses us by it).
    /// A longer identity is cut to 255 bytes. It should not start with a zero byte:
    /// libzmq ROUTERs reserve those for identities they make up.
    pub fn new(socket: SocketType, identity: Vec<u8>, limits: Limits) -> Connection {
        let mut identity = identity;
        if identity.len() > MAX_IDENTITY_LEN {
            tracing::warn!(len = identity.len(), "ZMTP identity over 255 bytes cut");
            identity.truncate(MAX_IDENTITY_LEN);
        }
        let ready = frame::ready_data(socket, &identity);
        let mut out = Vec::with_capacity(GREETING_LEN + 2 + 6 + ready.len());
        out.extend_from_slice(&frame::greeting());
        frame::encode_command(&mut out, b"READY", &ready);
        Connection {
            socket,
            limits,
            state: State::Greeting,
            greeting: [0; GREETING_LEN],
            greeting_len: 0,
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            body: None,
            message: Vec::new(),
            message_len: 0,
            peer: None,
            peer_identity: Vec::new(),
            out,
            held: Vec::new(),
            held_count: 0,
            events: VecDeque::new(),
        }
    }

    /// Feeds bytes read from the TCP stream, in any chunking (1 byte at a time works).
    ///
    /// An Err is fatal: the connection is dead, every later call returns `Err(Closed)` or
    /// does nothing, and the caller should flush [`take_output`](Self::take_output) (we
    /// may have queued an ERROR command) and close. Events decoded before the failure
    /// are still delivered by [`poll_event`](Self::poll_event).
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), ZmtpError> {
        if self.state == State::Dead {
            return Err(ZmtpError::Closed);
        }
        self.consume(bytes).map_err(|err| self.fail(err))
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ZmtpEvent> {
        self.events.pop_front()
    }

    /// Queues one multipart message (≥ 1 frame). Before Ready it is held (at most
    /// `max_queued` messages, else `Err(QueueFull)`) and written right after our READY
    /// once the peer's READY arrived. A message over `max_message_len` / `max_frames` is
    /// refused and nothing is queued; such refusals are not fatal.
    pub fn send(&mut self, frames: &[&[u8]]) -> Result<(), ZmtpError> {
        if self.state == State::Dead {
            return Err(ZmtpError::Closed);
        }
        if frames.is_empty() {
            return Err(ZmtpError::EmptyMessage);
        }
        if frames.len() > self.limits.max_frames {
            return Err(ZmtpError::TooManyFrames {
                max: self.limits.max_frames,
            });
        }
        let len = frames
            .iter()
            .fold(0usize, |sum, f| sum.saturating_add(f.len()));
        if len > self.limits.max_message_len {
            return Err(ZmtpError::MessageTooLarge {
                len,
                max: self.limits.max_message_len,
            });
        }
        let out = if self.state == State::Ready {
            &mut self.out
        } else {
            if self.held_count >= self.limits.max_queued {
                return Err(ZmtpError::QueueFull);
            }
            self.held_count += 1;
            &mut self.held
        };
        let last = frames.len() - 1;
        for (i, body) in frames.iter().enumerate() {
            frame::encode_frame(out, body, i < last);
        }
        Ok(())
    }

    /// SUB/XSUB only: subscribe to a prefix (empty = all). Sent in the ZMTP 3.0 form, a
    /// one-frame message `0x01 ++ prefix`, which every libzmq 4 publisher understands.
    /// Queued like [`send`](Self::send) before the handshake ends.
    pub fn subscribe(&mut self, prefix: &[u8]) -> Result<(), ZmtpError> {
        self.send_subscription(1, prefix)
    }

    /// SUB/XSUB only: cancel a prefix subscribed before, as a message `0x00 ++ prefix`.
    pub fn unsubscribe(&mut self, prefix: &[u8]) -> Result<(), ZmtpError> {
        self.send_subscription(0, prefix)
    }

    fn send_subscription(&mut self, kind: u8, prefix: &[u8]) -> Result<(), ZmtpError> {
        if self.state == State::Dead {
            return Err(ZmtpError::Closed);
        }
        if !self.socket.is_subscriber() {
            return Err(ZmtpError::NotSubscriber(self.socket));
        }
        let mut body = Vec::with_capacity(1 + prefix.len());
        body.push(kind);
        body.extend_from_slice(prefix);
        self.send(&[&body])
    }

    /// Everything to write to the socket since the last call (empty when nothing).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes waiting in [`take_output`](Self::take_output), so adapters can apply
    /// back-pressure (stop calling `send` while it is large).
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Whether the handshake is done and the connection has not failed.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Our socket type.
    pub fn socket_type(&self) -> SocketType {
        self.socket
    }

    /// The peer's socket type, once its READY has been accepted.
    pub fn peer_socket_type(&self) -> Option<SocketType> {
        self.peer
    }

    /// The peer's identity once its READY has been accepted (empty when it sent none),
    /// `None` before.
    pub fn peer_identity(&self) -> Option<&[u8]> {
        self.peer.map(|_| self.peer_identity.as_slice())
    }

    /// Marks the connection dead, tells the peer why when it is waiting for our verdict
    /// on its READY (RFC 23: answer a failed validation with ERROR, then close), and
    /// frees what it held.
    fn fail(&mut self, err: ZmtpError) -> ZmtpError {
        if self.state == State::Handshake && !matches!(err, ZmtpError::PeerError(_)) {
            frame::encode_command(
                &mut self.out,
                b"ERROR",
                &frame::error_data(&err.to_string()),
            );
        }
        tracing::debug!(%err, socket = %self.socket, "ZMTP connection failed");
        self.state = State::Dead;
        self.body = None;
        self.message = Vec::new();
        self.held = Vec::new();
        self.held_count = 0;
        err
    }

    /// The input loop: greeting bytes, then frame headers and bodies. Each byte is copied
    /// at most once (into the greeting, a header or the frame body being built).
    fn consume(&mut self, mut input: &[u8]) -> Result<(), ZmtpError> {
        while !input.is_empty() {
            if self.state == State::Greeting {
                let have = self.greeting_len;
                let take = (GREETING_LEN - have).min(input.len());
                let (now, rest) = input.split_at(take);
                if let Some(dst) = self.greeting.get_mut(have..have + take) {
                    dst.copy_from_slice(now);
                }
                self.greeting_len += take;
                input = rest;
                frame::check_greeting(self.greeting.get(..self.greeting_len).unwrap_or(&[]))?;
                if self.greeting_len == GREETING_LEN {
                    self.state = State::Handshake;
                }
            } else if let Some(body) = &mut self.body {
                let take = (body.len - body.data.len()).min(input.len());
                let (now, rest) = input.split_at(take);
                body.data.extend_from_slice(now);
                input = rest;
                if body.data.len() == body.len
                    && let Some(body) = self.body.take()
                {
                    self.on_frame(body)?;
                }
            } else {
                // Header bytes one by one: at most 9 per frame, and the size can be
                // judged the moment it is complete, before any body byte is buffered.
                let Some((&byte, rest)) = input.split_first() else {
                    break;
                };
                input = rest;
                if let Some(slot) = self.header.get_mut(self.header_len) {
                    *slot = byte;
                }
                self.header_len += 1;
                let header = self.header.get(..self.header_len).unwrap_or(&[]);
                if let Some((flags, size)) = frame::decode_header(header)? {
                    self.header_len = 0;
                    self.start_frame(flags, size, input.len())?;
                }
            }
        }
        Ok(())
    }

    /// Checks a complete frame header against the state and the limits, then waits for
    /// the body (or handles an empty one at once). Nothing is allocated before this.
    fn start_frame(&mut self, flags: u8, size: u64, available: usize) -> Result<(), ZmtpError> {
        let command = flags & FLAG_COMMAND != 0;
        let more = flags & FLAG_MORE != 0;
        let announced = usize::try_from(size).unwrap_or(usize::MAX);
        if command {
            let max = self.limits.max_message_len.max(MIN_COMMAND_LEN);
            if announced > max {
                return Err(ZmtpError::MessageTooLarge {
                    len: announced,
                    max,
                });
            }
        } else {
            if self.state != State::Ready {
                return Err(ZmtpError::BadFrame(
                    "message frame before the handshake ended",
                ));
            }
            if self.message.len() >= self.limits.max_frames {
                return Err(ZmtpError::TooManyFrames {
                    max: self.limits.max_frames,
                });
            }
            let max = self.limits.max_message_len;
            if announced > max.saturating_sub(self.message_len) {
                return Err(ZmtpError::MessageTooLarge {
                    len: self.message_len.saturating_add(announced),
                    max,
                });
            }
        }
        let body = Body {
            command,
            more,
            len: announced,
            // What this read holds of it at most: a peer announcing a big frame and
            // sending nothing costs nothing.
            data: Vec::with_capacity(announced.min(available)),
        };
        if announced == 0 {
            self.on_frame(body)
        } else {
            self.body = Some(body);
            Ok(())
        }
    }

    fn on_frame(&mut self, body: Body) -> Result<(), ZmtpError> {
        if body.command {
            return self.on_command(&body.data);
        }
        // A command may come between two frames of a message (libzmq's heartbeat timer
        // can fire mid-message); it does not disturb the message.
        self.message_len += body.data.len();
        self.message.push(body.data);
        if !body.more {
            let frames = std::mem::take(&mut self.message);
            self.message_len = 0;
            self.deliver(frames);
        }
        Ok(())
    }

    /// Hands a complete message up, or reads it as a subscription on a publisher.
    fn deliver(&mut self, mut frames: Vec<Vec<u8>>) {
        if !self.socket.is_publisher() {
            self.events.push_back(ZmtpEvent::Message(frames));
            return;
        }
        // ZMTP 3.0 subscriptions: one frame, 0x01 (subscribe) or 0x00 (cancel) + prefix.
        if let [only] = frames.as_mut_slice()
            && let Some(&kind @ (0 | 1)) = only.first()
        {
            let mut prefix = std::mem::take(only);
            prefix.remove(0);
            self.events.push_back(if kind == 1 {
                ZmtpEvent::Subscribe(prefix)
            } else {
                ZmtpEvent::Cancel(prefix)
            });
        } else if self.socket == SocketType::XPub {
            // libzmq passes an XPUB the other messages its subscribers send.
            self.events.push_back(ZmtpEvent::Message(frames));
        } else {
            tracing::trace!(frames = frames.len(), "PUB dropped a message from its peer");
        }
    }

    fn on_command(&mut self, body: &[u8]) -> Result<(), ZmtpError> {
        let (name, data) = frame::split_command(body)?;
        match name {
            b"READY" => self.on_ready(data),
            b"ERROR" => Err(ZmtpError::PeerError(frame::decode_error_reason(data)?)),
            _ if self.state != State::Ready => Err(ZmtpError::BadCommand(
                "command other than READY or ERROR before the handshake ended",
            )),
            b"PING" => {
                let context = frame::ping_context(data)?;
                frame::encode_command(&mut self.out, b"PONG", context);
                Ok(())
            }
            b"SUBSCRIBE" | b"CANCEL" if self.socket.is_publisher() => {
                let prefix = data.to_vec();
                self.events.push_back(if name == b"SUBSCRIBE" {
                    ZmtpEvent::Subscribe(prefix)
                } else {
                    ZmtpEvent::Cancel(prefix)
                });
                Ok(())
            }
            // PONG (we send no PINGs) and commands of later versions.
            _ => {
                tracing::trace!(name = %String::from_utf8_lossy(name), "ZMTP command ignored");
                Ok(())
            }
        }
    }

    fn on_ready(&mut self, data: &[u8]) -> Result<(), ZmtpError> {
        if self.state != State::Handshake {
            return Err(ZmtpError::BadCommand("second READY"));
        }
        let properties = frame::decode_properties(data)?;
        let property = |wanted: &str| {
            properties
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(wanted.as_bytes()))
                .map(|&(_, value)| value)
        };
        let socket_type =
            property("Socket-Type").ok_or(ZmtpError::BadCommand("READY without Socket-Type"))?;
        let peer = SocketType::parse(socket_type).ok_or_else(|| {
            ZmtpError::UnknownSocketType(String::from_utf8_lossy(socket_type).into_owned())
        })?;
        if !self.socket.compatible_with(peer) {
            return Err(ZmtpError::IncompatibleSocket {
                ours: self.socket,
                peer,
            });
        }
        let identity = property("Identity").unwrap_or_default();
        if identity.len() > MAX_IDENTITY_LEN {
            return Err(ZmtpError::BadCommand("Identity over 255 bytes"));
        }
        let identity = identity.to_vec();
        tracing::debug!(ours = %self.socket, %peer, "ZMTP handshake done");
        self.state = State::Ready;
        self.peer = Some(peer);
        self.peer_identity.clone_from(&identity);
        self.events.push_back(ZmtpEvent::Ready { peer, identity });
        self.out.append(&mut self.held);
        self.held_count = 0;
        Ok(())
    }
}
