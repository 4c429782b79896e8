//! HTTP request streams (grenache-nodejs-http's `_gr` format) end to end on loopback:
//! metadata, limits, Node's exact refusal of a bad `_gr`, and backpressure both ways.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{StreamExt as _, stream};
use grenache_core::peer::{RequestOptions, RpcError, RpcTransport, StreamOptions};
use serde_json::{Value, json};

use super::{connect, local_config, read_response};
use crate::peer::{
    BodyError, PeerClient, PeerConfig, PeerError, RequestBody, RequestContext, RpcServer,
    RpcServerConfig, StreamRequest,
};
use crate::time::{sleep, timeout};
use crate::{GrapeServer, Runtime};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Far longer than anything here takes: a test that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Bytes a stalled stream may have in flight between its producer and its handler:
/// the kernel's socket buffers (a few MiB on loopback, more with autotuning) and hyper's
/// read buffer. Far below what the tests send, so a stream that buffered everything fails.
const IN_FLIGHT_BOUND: u64 = 48 << 20;

/// What the tests send to a stalled handler: several times the bound.
const FLOOD: u64 = 160 << 20;

/// The chunk size the producers use.
const CHUNK: usize = 64 * 1024;

fn client<R: Runtime>(grape: &GrapeServer<R>) -> PeerClient<R> {
    let mut config = PeerConfig::new(format!("http://{}", grape.local_api_addr()));
    config.seed = Some([5; 32]);
    PeerClient::new(config).expect("a valid Grape URL")
}

/// Ordinary requests echo their payload.
async fn echo(_key: String, payload: Value, _context: RequestContext) -> Result<Value, String> {
    Ok(payload)
}

/// Reads the whole stream and answers with its metadata and length.
async fn describe(request: StreamRequest, body: RequestBody) -> Result<Value, String> {
    let head = request.head;
    match body.to_vec().await {
        Ok(bytes) => Ok(json!({
            "rid": head.rid,
            "key": head.key,
            "action": head.action,
            "args": head.args,
            "len": bytes.len(),
            "text": String::from_utf8_lossy(&bytes[..bytes.len().min(16)]),
        })),
        Err(err) => Err(err.to_string()),
    }
}

fn stream_config(max_stream_len: usize) -> RpcServerConfig {
    let mut config = RpcServerConfig::new(RpcTransport::Http).listen_on(LOCALHOST, 0);
    config.max_stream_len = max_stream_len;
    config
}

/// A chunked request with `headers`, its body in one chunk, `Connection: close`.
fn chunked_request(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: test\r\n{headers}Transfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    request
}

async fn raw<R: Runtime>(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = connect::<R>(addr).await;
    R::write_all(&mut stream, request).await.expect("write");
    read_response::<R>(&mut stream).await
}

/// See the test of this name in each runtime's crate.
pub async fn request_streams_carry_their_metadata_and_limits<R: Runtime>() {
    // Arrange: a server taking streams of at most 1 MiB, announced on a Grape.
    let grape = GrapeServer::<R>::start(local_config(51))
        .await
        .expect("Grape");
    let client = client::<R>(&grape);
    let server = RpcServer::<R>::listen_with_streams(stream_config(1 << 20), echo, describe)
        .await
        .expect("listen");
    server.announce(&client, "st_svc").await.expect("announce");
    let addr = SocketAddr::new(LOCALHOST, server.port());
    let chunks = || {
        let parts: Vec<Bytes> = ["hello ", "stream ", "world"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        stream::iter(parts)
    };

    // Act
    let opts = StreamOptions::default()
        .action("upload")
        .args(json!({"name": "a.txt"}))
        .timeout(PATIENCE);
    let sent = client.request_stream("st_svc", opts, chunks()).await;
    let plain = client
        .request_stream("st_svc", StreamOptions::default(), chunks())
        .await;
    // One and a half times the limit: the server reads the rest before its 413.
    let huge = stream::iter((0..24).map(|_| Bytes::from(vec![b'x'; 64 * 1024])));
    let too_large = client
        .request_stream("st_svc", StreamOptions::default(), huge)
        .await;
    let bad_gr = raw::<R>(addr, &chunked_request("_gr: not json\r\n", b"x")).await;
    let bad_shape = raw::<R>(addr, &chunked_request("_gr: [1]\r\n", b"x")).await;
    let no_gr = raw::<R>(addr, &chunked_request("", b"x")).await;
    let request = client
        .request(
            "st_svc",
            json!({"still": "served"}),
            RequestOptions::default(),
        )
        .await;

    // Assert
    let sent = sent.expect("the stream's reply");
    assert_eq!(sent["key"], "st_svc");
    assert_eq!(sent["action"], "upload");
    assert_eq!(sent["args"], json!({"name": "a.txt"}));
    assert_eq!(sent["len"], 18);
    assert_eq!(sent["text"], "hello stream wor");
    assert_eq!(sent["rid"].as_str().map(str::len), Some(36));
    let plain = plain.expect("the stream's reply");
    assert_eq!(
        (plain["action"].clone(), plain["args"].clone()),
        (Value::Null, json!({}))
    );
    let Err(PeerError::Rpc(RpcError::Request(body))) = &too_large else {
        panic!("expected a 413, got {too_large:?}");
    };
    assert!(body.contains("ERR_STREAM_TOO_LARGE"), "{body}");
    let node = b"[null, \"ERR_HEADER_PARSE_GR\", null]".to_vec();
    assert_eq!(bad_gr, (500, node.clone()));
    assert_eq!(bad_shape, (500, node.clone()));
    assert_eq!(no_gr, (500, node));
    assert_eq!(request, Ok(json!({"still": "served"})));
    server.stop().await;
    grape.shutdown().await;
}

/// Waits until `counter` has moved and then stops moving (the same value for a while), or
/// `done` is set; returns its value then. Not a timing assertion: a producer that never stalls runs to
/// its end, and the caller's bound on the value fails.
async fn stalled<R: Runtime>(counter: &AtomicU64, done: &AtomicBool) -> u64 {
    let mut last = u64::MAX;
    let mut still = 0;
    for _ in 0..2000 {
        sleep::<R>(Duration::from_millis(50)).await;
        let now = counter.load(Ordering::SeqCst);
        if done.load(Ordering::SeqCst) {
            return now;
        }
        if now == last && now > 0 {
            still += 1;
            if still >= 10 {
                return now;
            }
        } else {
            (last, still) = (now, 0);
        }
    }
    counter.load(Ordering::SeqCst)
}

/// A stream handler that reads one chunk, waits for `gate`, then reads the rest and
/// answers with the total; `consumed` counts what it has read.
fn slow_handler(
    gate: async_channel::Receiver<()>,
    consumed: Arc<AtomicU64>,
) -> impl Fn(
    StreamRequest,
    RequestBody,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, String>> + Send>>
+ Send
+ Sync
+ 'static {
    move |_request, mut body| {
        let gate = gate.clone();
        let consumed = Arc::clone(&consumed);
        Box::pin(async move {
            let mut first = true;
            while let Some(chunk) = body.chunk().await {
                let chunk = chunk.map_err(|e: BodyError| e.to_string())?;
                consumed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                if std::mem::take(&mut first) {
                    let _ = gate.recv().await;
                }
            }
            Ok(json!(body.read_len()))
        })
    }
}

/// A server of [`slow_handler`]s, with no stream limit and time enough.
async fn slow_server<R: Runtime>(
    gate: async_channel::Receiver<()>,
    consumed: Arc<AtomicU64>,
) -> RpcServer<R> {
    let mut config = stream_config(usize::MAX);
    config.handler_timeout = PATIENCE;
    RpcServer::<R>::listen_with_streams(config, echo, slow_handler(gate, consumed))
        .await
        .expect("listen")
}

/// See the test of this name in each runtime's crate.
pub async fn a_slow_stream_handler_holds_a_raw_sender_back<R: Runtime>() {
    // Arrange: a handler that stops after its first chunk, and a raw client that writes a
    // chunked body as fast as the socket takes it, counting what it wrote.
    let (open_gate, gate) = async_channel::bounded(1);
    let consumed = Arc::new(AtomicU64::new(0));
    let server = slow_server::<R>(gate, Arc::clone(&consumed)).await;
    let addr = SocketAddr::new(LOCALHOST, server.port());
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, done) = (Arc::clone(&written), Arc::clone(&done));
        R::spawn(async move {
            let mut stream = connect::<R>(addr).await;
            let head = "POST / HTTP/1.1\r\nHost: test\r\n_gr: [\"r1\",\"svc\"]\r\n\
                        Transfer-Encoding: chunked\r\n\r\n";
            let mut ok = R::write_all(&mut stream, head.as_bytes()).await.is_ok();
            let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
            chunk.extend(std::iter::repeat_n(b'x', CHUNK));
            chunk.extend_from_slice(b"\r\n");
            let mut sent = 0u64;
            while ok && sent < FLOOD {
                ok = R::write_all(&mut stream, &chunk).await.is_ok();
                sent += CHUNK as u64;
                written.store(sent, Ordering::SeqCst);
            }
            if ok && R::write_all(&mut stream, b"0\r\n\r\n").await.is_ok() {
                let (status, body) = read_response::<R>(&mut stream).await;
                let want = format!(r#"["r1",null,{FLOOD}]"#).into_bytes();
                assert_eq!((status, body), (200, want));
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    // Act and assert: while the handler waited, the writer could only fill the buffers
    // between; then everything went through.
    held_back::<R>(&written, &done, &consumed, &open_gate, writer).await;
    server.stop().await;
}

/// Waits for the producer counting into `produced` to stall, checks it got at most
/// [`IN_FLIGHT_BOUND`] ahead of the handler (`consumed`), opens the handler's gate, and
/// checks the whole stream went through (`sender` set `done`).
async fn held_back<R: Runtime>(
    produced: &AtomicU64,
    done: &AtomicBool,
    consumed: &AtomicU64,
    open_gate: &async_channel::Sender<()>,
    sender: R::Task,
) {
    let stuck_at = stalled::<R>(produced, done).await;
    let read_then = consumed.load(Ordering::SeqCst);
    let _ = open_gate.send(()).await;
    let finished = timeout::<R, _>(PATIENCE, sender).await;

    assert!(
        stuck_at < FLOOD,
        "the producer never stalled: the body was taken far ahead of the handler"
    );
    let in_flight = stuck_at.saturating_sub(read_then);
    assert!(
        in_flight <= IN_FLIGHT_BOUND,
        "{in_flight} bytes in flight to a waiting handler"
    );
    assert!(
        finished.is_some(),
        "the stream did not finish once the handler read on"
    );
    assert!(
        done.load(Ordering::SeqCst),
        "the sender saw the wrong reply"
    );
    assert_eq!(consumed.load(Ordering::SeqCst), FLOOD);
}

/// See the test of this name in each runtime's crate.
pub async fn our_stream_client_is_held_back_by_a_slow_server<R: Runtime>() {
    // Arrange: the same slow handler, announced; a body producer that counts what hyper
    // has pulled from it.
    let grape = GrapeServer::<R>::start(local_config(52))
        .await
        .expect("Grape");
    let client = client::<R>(&grape);
    let (open_gate, gate) = async_channel::bounded(1);
    let consumed = Arc::new(AtomicU64::new(0));
    let server = slow_server::<R>(gate, Arc::clone(&consumed)).await;
    server.announce(&client, "st_slow").await.expect("announce");
    let pulled = Arc::new(AtomicU64::new(0));
    let body = {
        let pulled = Arc::clone(&pulled);
        stream::iter(0..FLOOD / CHUNK as u64).map(move |_| {
            pulled.fetch_add(CHUNK as u64, Ordering::SeqCst);
            Bytes::from(vec![b'y'; CHUNK])
        })
    };
    let done = Arc::new(AtomicBool::new(false));
    let sending = {
        let done = Arc::clone(&done);
        let opts = StreamOptions::default().timeout(PATIENCE);
        R::spawn(async move {
            let reply = client.request_stream("st_slow", opts, body).await;
            assert_eq!(reply, Ok(json!(FLOOD)));
            done.store(true, Ordering::SeqCst);
        })
    };

    // Act and assert
    held_back::<R>(&pulled, &done, &consumed, &open_gate, sending).await;
    server.stop().await;
    grape.shutdown().await;
}
