//! What both WebSocket servers here (the Grape's old WebSocket API and the RPC server) do
//! the same way: the handshake within a time, then one loop that reads requests while few
//! enough are in flight, writes answers as they come (in any order: clients match them by
//! id), and winds down on idleness, a close, or the server's stop.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::protocol::frame::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use futures_io::AsyncRead as _;
use futures_lite::future::{self, FutureExt as _};
use futures_lite::{AsyncWriteExt as _, StreamExt as _};

use crate::head::{FirstHead, Replay, asks_for_websocket, linger, read_first_head, response};
use crate::net::{WsStream, ws_accept};
use crate::read_burst::ReadBurst;
use crate::runtime::Runtime;
use crate::stop::Stop;
use crate::time::{sleep_until, timeout};
use crate::tls::MaybeTls;
use crate::ws_batch::write_batch;

/// How one connection is bounded and timed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsLimits {
    /// Longest message (and frame) accepted; a longer one ends the connection.
    pub(crate) max_message: usize,
    /// Requests awaiting their answer, at most; past it, reading pauses.
    pub(crate) max_in_flight: usize,
    /// How long the handshake may take.
    pub(crate) handshake_timeout: Duration,
    /// How long a connection with nothing in flight may stay silent.
    pub(crate) idle_timeout: Duration,
    /// How long answers still in flight get after a close or stop.
    pub(crate) drain_timeout: Duration,
}

/// What the connection's owner sends it on its queue.
#[derive(Debug)]
pub(crate) enum Out {
    /// A frame to write; `done` ends one request in flight (a watch's pushes are not done).
    Frame { bytes: Vec<u8>, done: bool },
    /// A request ended with nothing left to write.
    Ended,
    /// The owner cannot take more requests: close with 1013 (try again later).
    Overloaded,
}

/// What became of one incoming message.
pub(crate) enum Taken {
    /// It went off as a request; its answer comes on the queue.
    Dispatched,
    /// It is answered at once with this frame (an unreadable request, say).
    Answer(Vec<u8>),
    /// Nothing to do (Node stays silent where there is no id to answer).
    Ignored,
    /// The owner has stopped: the connection ends.
    Gone,
}

/// Longest handshake request head read; past it the connection ends.
const MAX_HANDSHAKE_HEAD: usize = 64 * 1024;

/// Accepts the handshake within `handshake_timeout`, for messages of at most `max_message`
/// bytes; `None` (logged) if it fails. A plain HTTP request (no `Upgrade: websocket`) is
/// answered 426 Upgrade Required, as Node's `ws` server does, so an HTTP client can tell
/// it met a WebSocket server (`ERR_WRONG_TRANSPORT`) instead of a bare hang-up.
pub(crate) async fn accept<R: Runtime>(
    mut stream: MaybeTls<R>,
    max_message: usize,
    handshake_timeout: Duration,
) -> Option<WsStream<R>> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let handshake = async {
        let first = read_first_head(MAX_HANDSHAKE_HEAD, |cx, buf| {
            Pin::new(&mut stream).poll_read(cx, buf)
        })
        .await;
        match first {
            FirstHead::Complete(head) if asks_for_websocket(&head) => {
                ws_accept::<R>(Replay::new(head, stream), config)
                    .await
                    .map_err(|err| err.to_string())
            }
            FirstHead::Complete(_) => {
                upgrade_required::<R>(stream).await;
                Err("a plain HTTP request: answered 426".to_owned())
            }
            FirstHead::NotHttp => Err("not an HTTP request".to_owned()),
            FirstHead::TooLarge => Err("request head too large".to_owned()),
            FirstHead::Ended => Err("closed before the handshake".to_owned()),
        }
    };
    match timeout::<R, _>(handshake_timeout, handshake).await {
        Some(Ok(ws)) => Some(ws),
        Some(Err(err)) => {
            tracing::debug!(%err, "WebSocket handshake failed");
            None
        }
        None => {
            tracing::debug!("WebSocket handshake timed out");
            None
        }
    }
}

/// Answers a request that asked for no WebSocket with 426, naming the protocol to use.
async fn upgrade_required<R: Runtime>(mut stream: MaybeTls<R>) {
    let answer = response(
        426,
        "Upgrade Required",
        &[("upgrade", "websocket"), ("content-type", "text/plain")],
        b"Upgrade Required",
    );
    if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    linger::<R, _>(|cx, buf| Pin::new(&mut stream).poll_read(cx, buf)).await;
}

/// What woke a connection.
enum Event {
    Incoming(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Out(Out),
    Stop,
    Timeout,
}

/// Serves messages until the connection ends, then closes it. Each text or binary message
/// goes to `take`; answers come back on `out`, whose sender the owner keeps (so the queue
/// never closes while this runs).
pub(crate) async fn serve<R, T, F>(
    mut ws: WsStream<R>,
    limits: &WsLimits,
    stop: &Stop,
    out: &async_channel::Receiver<Out>,
    mut take: T,
) where
    R: Runtime,
    T: FnMut(Vec<u8>) -> F,
    F: Future<Output = Taken>,
{
    let code = serve_messages::<R, T, F>(&mut ws, limits, stop, out, &mut take).await;
    close::<R>(&mut ws, code, limits.drain_timeout).await;
}

/// Starts the closing handshake, giving a stuck client no more than `limit`.
pub(crate) async fn close<R: Runtime>(ws: &mut WsStream<R>, code: CloseCode, limit: Duration) {
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    if let Some(Err(err)) = timeout::<R, _>(limit, ws.close(Some(frame))).await {
        tracing::trace!(%err, "WebSocket close failed");
    }
}

/// The loop; returns how to close the connection.
async fn serve_messages<R, T, F>(
    ws: &mut WsStream<R>,
    limits: &WsLimits,
    stop: &Stop,
    out: &async_channel::Receiver<Out>,
    take: &mut T,
) -> CloseCode
where
    R: Runtime,
    T: FnMut(Vec<u8>) -> F,
    F: Future<Output = Taken>,
{
    let max_in_flight = limits.max_in_flight.max(1);
    let mut in_flight = 0usize;
    let mut reading = true;
    let mut last_active = R::now();
    let mut drain_until = last_active;
    let draining = |now: Instant| now + limits.drain_timeout;
    let mut burst = ReadBurst::new(ReadBurst::SERVER);
    while reading || in_flight > 0 {
        let deadline = match (reading, in_flight) {
            (false, _) => Some(drain_until),
            (true, 0) => Some(last_active + limits.idle_timeout),
            (true, _) => None,
        };
        let event = {
            let incoming = async {
                if reading && in_flight < max_in_flight {
                    Event::Incoming(ws.next().await)
                } else {
                    future::pending().await
                }
            };
            let answer = async {
                match out.recv().await {
                    Ok(answer) => Event::Out(answer),
                    // Unreachable while the owner keeps the sender.
                    Err(_) => future::pending().await,
                }
            };
            let stopped = async {
                if reading {
                    stop.wait().await;
                    Event::Stop
                } else {
                    future::pending().await
                }
            };
            let timer = async {
                sleep_until::<R>(deadline).await;
                Event::Timeout
            };
            // `race` picks a random ready branch, so no input starves another.
            incoming.race(answer).race(stopped).race(timer).await
        };
        // Answers to write at the end of this pass: the first of them.
        let mut answers = None;
        match event {
            Event::Incoming(Some(Ok(message))) => {
                let bytes = match message {
                    Message::Text(text) => Vec::from(text.as_bytes()),
                    Message::Binary(bytes) => Vec::from(bytes),
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Close(_) => {
                        reading = false;
                        drain_until = draining(R::now());
                        continue;
                    }
                };
                last_active = R::now();
                match take(bytes).await {
                    Taken::Dispatched => {
                        in_flight += 1;
                        answers = burst.after_one::<R, _>(|| out.try_recv().ok()).await;
                    }
                    Taken::Answer(frame) => {
                        if !send_frame::<R>(ws, frame).await {
                            break;
                        }
                    }
                    Taken::Ignored => {}
                    Taken::Gone => break,
                }
            }
            Event::Incoming(None) | Event::Stop => {
                reading = false;
                drain_until = draining(R::now());
            }
            Event::Incoming(Some(Err(err))) => {
                tracing::debug!(%err, "WebSocket read failed");
                break;
            }
            Event::Out(first) => answers = Some(first),
            Event::Timeout => break,
        }
        if let Some(first) = answers {
            burst.wrote();
            match write_answers(ws, first, out, &mut in_flight).await {
                Written::Ok => last_active = R::now(),
                Written::Nothing => {}
                Written::Broken => break,
                Written::Overloaded => return CloseCode::Again,
            }
        }
    }
    CloseCode::Normal
}

/// How [`write_answers`] went.
enum Written {
    Ok,
    /// The first item only ended a request: nothing was written.
    Nothing,
    /// The connection broke (logged).
    Broken,
    /// The owner asked to close with 1013, after what was queued before it.
    Overloaded,
}

/// Writes `first` and every answer already waiting, in one write.
async fn write_answers<R: Runtime>(
    ws: &mut WsStream<R>,
    first: Out,
    out: &async_channel::Receiver<Out>,
    in_flight: &mut usize,
) -> Written {
    let first = match answer(first, in_flight) {
        Ok(Some(msg)) => msg,
        Ok(None) => return Written::Nothing,
        Err(Overloaded) => return Written::Overloaded,
    };
    // An `Overloaded` among them closes the connection once they are written.
    let mut overloaded = false;
    let next = || {
        while !overloaded {
            match answer(out.try_recv().ok()?, in_flight) {
                Ok(Some(msg)) => return Some(msg),
                Ok(None) => {}
                Err(Overloaded) => overloaded = true,
            }
        }
        None
    };
    if let Err(err) = write_batch(ws, first, next).await {
        tracing::debug!(%err, "WebSocket write failed");
        return Written::Broken;
    }
    if overloaded {
        Written::Overloaded
    } else {
        Written::Ok
    }
}

/// The owner cannot take more requests ([`Out::Overloaded`]).
struct Overloaded;

/// What one item of the queue asks: a message to write (counting a finished request out
/// of `in_flight`), nothing to write, or to close.
fn answer(out: Out, in_flight: &mut usize) -> Result<Option<Message>, Overloaded> {
    match out {
        Out::Frame { bytes, done } => {
            if done {
                *in_flight = in_flight.saturating_sub(1);
            }
            Ok(Some(frame_message(bytes)))
        }
        Out::Ended => {
            *in_flight = in_flight.saturating_sub(1);
            Ok(None)
        }
        Out::Overloaded => Err(Overloaded),
    }
}

/// Writes a frame as a text message (binary if it is not UTF-8); `false` if the
/// connection broke.
pub(crate) async fn send_frame<R: Runtime>(ws: &mut WsStream<R>, frame: Vec<u8>) -> bool {
    match ws.send(frame_message(frame)).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%err, "WebSocket write failed");
            false
        }
    }
}

/// A frame as a text message (binary if it is not UTF-8).
fn frame_message(frame: Vec<u8>) -> Message {
    match String::from_utf8(frame) {
        Ok(text) => Message::text(text),
        Err(err) => Message::binary(err.into_bytes()),
    }
}
