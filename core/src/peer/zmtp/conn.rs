//! One ZMTP connection: the handshake, then messages, as bytes in and bytes out.

use std::collections::VecDeque;

use rand::RngCore;

use crate::peer::zmtp::curve::{self, Curve, MESSAGE_COMMAND, MESSAGE_MORE};
use crate::peer::zmtp::frame::{
    self, FLAG_COMMAND, FLAG_MORE, GREETING_LEN, MAX_HEADER_LEN, MAX_IDENTITY_LEN,
};
use crate::peer::zmtp::{CurveError, CurvePublicKey, Mechanism, Security, SocketType, ZmtpError};

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
    /// Reading the peer's 64-byte greeting (ours may still be half sent: see
    /// [`Connection::greeting_tail`]).
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

/// A sans-IO ZMTP 3.0 connection with the NULL or CURVE mechanism, from either end of a
/// TCP stream (ZMTP is symmetric: nothing depends on who connected; CURVE's client and
/// server roles are set by [`Security`], not by who dialled).
///
/// Feed it what the socket reads with [`handle_input`](Self::handle_input), then drain
/// [`poll_event`](Self::poll_event) and write out [`take_output`](Self::take_output).
///
/// The greeting goes out in two parts, as RFC 23's version negotiation has it and as
/// libzmq does: the signature and major version are queued at creation (write them out
/// at once), the rest of the greeting and the first command (READY, or CURVE's HELLO)
/// once the peer's signature and major version have arrived. A peer that hangs up on a
/// wrong mechanism (libzmq does, the moment it has read ours) has then always sent its
/// own mechanism first, so a mismatch is reported as one, never as a closed stream.
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
    /// The second part of our greeting and our first command, held until the peer's
    /// signature and major version arrived; `None` once written to `out`.
    greeting_tail: Option<Vec<u8>>,
    /// Messages sent before the handshake ended (CURVE cannot encode them before then).
    held: Vec<Vec<Vec<u8>>>,
    events: VecDeque<ZmtpEvent>,
    /// Our READY metadata (CURVE sends it inside INITIATE or READY, later).
    metadata: Vec<u8>,
    /// The CURVE state; `None` with NULL.
    curve: Option<Box<Curve>>,
    /// The first frame of a message that broke a receive limit (an RPC reply's rid).
    cut_head: Option<Vec<u8>>,
}

impl Connection {
    /// Starts a connection: queues the first part of our greeting (signature and major
    /// version), and holds the rest and our READY command until the peer's first part.
    /// `identity` (≤ 255 bytes, may be empty) goes in READY's "Identity" property when
    /// non-empty (DEALER/ROUTER/REQ/REP may send it; a ROUTER peer addresses us by it).
    /// A longer identity is cut to 255 bytes. It should not start with a zero byte:
    /// libzmq ROUTERs reserve those for identities they make up.
    pub fn new(socket: SocketType, identity: Vec<u8>, limits: Limits) -> Connection {
        Connection::build(socket, identity, limits, None)
    }

    /// Starts a connection with `security`: NULL as [`new`](Self::new), or CURVE (the
    /// client's HELLO, or nothing on a server, follows the rest of its greeting). The random bytes
    /// CURVE needs (transient keys, long nonces, the cookie key) are drawn from `rng` now.
    pub fn secure(
        socket: SocketType,
        identity: Vec<u8>,
        limits: Limits,
        security: &Security,
        rng: &mut impl RngCore,
    ) -> Connection {
        let curve = Curve::new(security, rng).map(Box::new);
        Connection::build(socket, identity, limits, curve)
    }

    fn build(
        socket: SocketType,
        identity: Vec<u8>,
        limits: Limits,
        mut curve: Option<Box<Curve>>,
    ) -> Connection {
        let mut identity = identity;
        if identity.len() > MAX_IDENTITY_LEN {
            tracing::warn!(len = identity.len(), "ZMTP identity over 255 bytes cut");
            identity.truncate(MAX_IDENTITY_LEN);
        }
        let metadata = frame::ready_data(socket, &identity);
        let mut greeting = Vec::with_capacity(GREETING_LEN + 2 + 6 + metadata.len());
        let mut state = State::Greeting;
        match curve.as_mut() {
            None => {
                greeting.extend_from_slice(&frame::greeting());
                frame::encode_command(&mut greeting, b"READY", &metadata);
            }
            Some(curve) => {
                greeting
                    .extend_from_slice(&frame::greeting_for(Mechanism::Curve, curve.is_server()));
                if let Err(err) = curve.start(&mut greeting) {
                    tracing::warn!(%err, "CURVE HELLO could not be made");
                    state = State::Dead;
                }
            }
        }
        let tail = greeting.split_off(frame::GREETING_HEAD_LEN);
        let (out, greeting_tail) = match state {
            State::Dead => (Vec::new(), None),
            _ => (greeting, Some(tail)),
        };
        Connection {
            socket,
            limits,
            state,
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
            greeting_tail,
            held: Vec::new(),
            events: VecDeque::new(),
            metadata,
            curve,
            cut_head: None,
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
        if self.state == State::Ready {
            return self.write_message(frames);
        }
        if self.held.len() >= self.limits.max_queued {
            return Err(ZmtpError::QueueFull);
        }
        self.held.push(frames.iter().map(|f| f.to_vec()).collect());
        Ok(())
    }

    /// Queues a PING (RFC 37) with a TTL in tenths of a second (the peer may close the
    /// connection when it hears nothing from us for that long; 0: no limit). Does nothing
    /// before the handshake ends. See [`Heartbeat`](crate::peer::zmtp::Heartbeat).
    pub fn ping(&mut self, ttl_deciseconds: u16) -> Result<(), ZmtpError> {
        match self.state {
            State::Dead => Err(ZmtpError::Closed),
            State::Ready => {
                let result = self.write_command(b"PING", &ttl_deciseconds.to_be_bytes());
                result.map_err(|err| self.fail(err))
            }
            State::Greeting | State::Handshake => Ok(()),
        }
    }

    /// Writes a message in the connection's mechanism.
    fn write_message<F: AsRef<[u8]>>(&mut self, frames: &[F]) -> Result<(), ZmtpError> {
        let last = frames.len().saturating_sub(1);
        for (i, body) in frames.iter().enumerate() {
            let more = i < last;
            match self.curve.as_mut() {
                None => frame::encode_frame(&mut self.out, body.as_ref(), more),
                Some(curve) => {
                    let flags = if more { MESSAGE_MORE } else { 0 };
                    curve
                        .encode_frame(&mut self.out, flags, body.as_ref())
                        .map_err(|err| self.fail(err))?;
                }
            }
        }
        Ok(())
    }

    /// Writes a command once the handshake is done (inside a MESSAGE under CURVE).
    fn write_command(&mut self, name: &[u8], data: &[u8]) -> Result<(), ZmtpError> {
        match self.curve.as_mut() {
            None => {
                frame::encode_command(&mut self.out, name, data);
                Ok(())
            }
            Some(curve) => {
                let mut body = Vec::with_capacity(1 + name.len() + data.len());
                body.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
                body.extend_from_slice(name);
                body.extend_from_slice(data);
                curve.encode_frame(&mut self.out, MESSAGE_COMMAND, &body)
            }
        }
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

    /// Why a close of the stream by the peer, now, is a failure of the handshake rather
    /// than a plain disconnect: it stopped inside its greeting after a valid signature.
    pub fn close_reason(&self) -> Option<ZmtpError> {
        let signature_done = self.greeting_len > frame::SIGNATURE_END;
        (self.state == State::Greeting && signature_done).then_some(ZmtpError::ClosedInGreeting)
    }

    /// Our security mechanism.
    pub fn mechanism(&self) -> Mechanism {
        if self.curve.is_some() {
            Mechanism::Curve
        } else {
            Mechanism::Null
        }
    }

    /// On a CURVE server, the client's long-term public key once its INITIATE passed
    /// (what an allow-list is checked against).
    pub fn curve_client_key(&self) -> Option<CurvePublicKey> {
        self.curve.as_ref().and_then(|c| c.client_key())
    }

    /// After a receive limit failed the connection ([`ZmtpError::MessageTooLarge`],
    /// [`ZmtpError::TooManyFrames`]): the first frame of the message that broke it, when
    /// it had arrived. For a Grenache reply that is the rid, so the caller can answer that
    /// one request as too large rather than as a lost connection.
    pub fn cut_message_head(&self) -> Option<&[u8]> {
        self.cut_head.as_deref()
    }

    /// Marks the connection dead, tells the peer why when it is waiting for our verdict
    /// on its READY (RFC 23: answer a failed validation with ERROR, then close), and
    /// frees what it held.
    fn fail(&mut self, err: ZmtpError) -> ZmtpError {
        if matches!(
            err,
            ZmtpError::MessageTooLarge { .. } | ZmtpError::TooManyFrames { .. }
        ) && self.state == State::Ready
        {
            self.cut_head = self.message.first().cloned();
        }
        let told = matches!(
            err,
            ZmtpError::PeerError(_) | ZmtpError::Curve(CurveError::Refused(_))
        );
        if self.state == State::Handshake && !told {
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
        self.curve = None;
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
                let ours = self.mechanism();
                let part = self.greeting.get(..self.greeting_len).unwrap_or(&[]);
                let checked = frame::check_greeting(part, ours);
                // The peer's signature and version are good: it may have what it needs to
                // judge our mechanism, even when its own rules ours out (then both sides
                // see the mismatch, and the caller flushes this before closing).
                let head = part.get(..frame::GREETING_HEAD_LEN);
                if head.is_some_and(|head| frame::check_greeting(head, ours).is_ok())
                    && let Some(tail) = self.greeting_tail.take()
                {
                    self.out.extend_from_slice(&tail);
                }
                checked?;
                if self.greeting_len == GREETING_LEN {
                    if let Some(curve) = &self.curve {
                        curve.check_role(frame::greeting_as_server(&self.greeting))?;
                    }
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
        if self.curve.is_some() {
            // Every frame is a command or a MESSAGE box: judged whole here, its contents
            // again once opened.
            if !command && self.state != State::Ready {
                return Err(ZmtpError::BadFrame(
                    "message frame before the handshake ended",
                ));
            }
            let max = self
                .limits
                .max_message_len
                .saturating_add(curve::MESSAGE_OVERHEAD)
                .max(MIN_COMMAND_LEN);
            if announced > max {
                return Err(ZmtpError::MessageTooLarge {
                    len: self.message_len.saturating_add(announced),
                    max: self.limits.max_message_len,
                });
            }
        } else if command {
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
            self.check_data_frame(announced)?;
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

    /// Whether one more message frame of `len` bytes fits the receive limits.
    fn check_data_frame(&self, len: usize) -> Result<(), ZmtpError> {
        if self.message.len() >= self.limits.max_frames {
            return Err(ZmtpError::TooManyFrames {
                max: self.limits.max_frames,
            });
        }
        let max = self.limits.max_message_len;
        if len > max.saturating_sub(self.message_len) {
            return Err(ZmtpError::MessageTooLarge {
                len: self.message_len.saturating_add(len),
                max,
            });
        }
        Ok(())
    }

    fn on_frame(&mut self, body: Body) -> Result<(), ZmtpError> {
        if let Some(curve) = self.curve.as_mut()
            && self.state == State::Ready
        {
            // After the CURVE handshake every frame is a MESSAGE box (libzmq sends them
            // as data frames, RFC 25 as commands: either is read).
            let (flags, data) = curve.decode_message(&body.data)?;
            if flags & MESSAGE_COMMAND != 0 {
                return self.on_command(&data);
            }
            self.check_data_frame(data.len())?;
            self.on_message_frame(data, flags & MESSAGE_MORE != 0);
            return Ok(());
        }
        if body.command {
            return self.on_command(&body.data);
        }
        self.on_message_frame(body.data, body.more);
        Ok(())
    }

    fn on_message_frame(&mut self, data: Vec<u8>, more: bool) {
        // A command may come between two frames of a message (libzmq's heartbeat timer
        // can fire mid-message); it does not disturb the message.
        self.message_len += data.len();
        self.message.push(data);
        if !more {
            let frames = std::mem::take(&mut self.message);
            self.message_len = 0;
            self.deliver(frames);
        }
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
        if self.state == State::Handshake
            && let Some(curve) = self.curve.as_mut()
        {
            if name == b"ERROR" {
                let reason = frame::decode_error_reason(data)?;
                return Err(CurveError::Refused(reason).into());
            }
            return match curve.on_command(name, data, &self.metadata, &mut self.out)? {
                Some(metadata) => self.on_ready(&metadata),
                None => Ok(()),
            };
        }
        match name {
            b"READY" if self.curve.is_none() => self.on_ready(data),
            b"ERROR" => Err(ZmtpError::PeerError(frame::decode_error_reason(data)?)),
            _ if self.state != State::Ready => Err(ZmtpError::BadCommand(
                "command other than READY or ERROR before the handshake ended",
            )),
            b"PING" => {
                let context = frame::ping_context(data)?.to_vec();
                self.write_command(b"PONG", &context)
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
        for message in std::mem::take(&mut self.held) {
            self.write_message(&message)?;
        }
        Ok(())
    }
}
