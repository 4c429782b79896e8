// Request streams between Rust and Node peers (see stream_interop.rs). Node's side is
// `node/stream-serve.js` (a server with a 'stream' handler) and `node/stream-call.js` (a
// client's `stream`); both send and sum the body of `node/stream-common.js`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rt::peer::{
    PeerClient, PeerConfig, RequestBody, RequestContext, RpcServer, RpcServerConfig,
    RpcTransport, StreamOptions, StreamRequest,
};
use serde_json::{Value, json};

use crate::common::{Checks, Ctx, Proc, free_port, last_json, wait_script_ready};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// What `node/stream-common.js` sends: 1 MiB, byte i being i % 251, in 64 KiB chunks.
const SIZE: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;

fn body_chunks() -> Vec<Vec<u8>> {
    (0..SIZE)
        .step_by(CHUNK)
        .map(|at| (at..(at + CHUNK).min(SIZE)).map(|i| (i % 251) as u8).collect())
        .collect()
}

/// `node/stream-common.js`'s digest: the length, and sum = sum * 31 + byte (mod 2^32).
#[derive(Default)]
struct Digest {
    len: usize,
    sum: u32,
}

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.sum = self.sum.wrapping_mul(31).wrapping_add(u32::from(*b));
        }
        self.len += bytes.len();
    }
}

fn expected() -> Digest {
    let mut digest = Digest::default();
    for chunk in body_chunks() {
        digest.add(&chunk);
    }
    digest
}

/// Our streaming handler: sums the body as it comes and answers with what it saw.
async fn sum_stream(request: StreamRequest, mut body: RequestBody) -> Result<Value, String> {
    let mut digest = Digest::default();
    while let Some(chunk) = body.chunk().await {
        digest.add(&chunk.map_err(|e| e.to_string())?);
    }
    let head = request.head;
    Ok(json!({
        "from": "rust", "rid": head.rid, "key": head.key, "action": head.action,
        "args": head.args, "len": digest.len, "sum": digest.sum,
    }))
}

async fn no_requests(_key: String, _payload: Value, _ctx: RequestContext) -> Result<Value, String> {
    Err("ERR_STREAMS_ONLY".into())
}

/// Status and body of a chunked request with a `_gr` Node cannot parse, read to the
/// server's close (de-chunked if the answer is chunked).
fn bad_gr_answer(addr: SocketAddr) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: test\r\n_gr: not json\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        )
        .expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().expect("a status code");
    let mut body = raw[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut plain = Vec::new();
        let mut rest = body.as_slice();
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&rest[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .expect("a chunk size");
            if size == 0 {
                break;
            }
            let start = line_end + 2;
            plain.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
        body = plain;
    }
    (status, body)
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn node_and_rust_peers_exchange_request_streams() {
    let node = crate::common::node_env();
    let ctx = Ctx::new(&format!("stream_interop_{RT}"));
    let runtime = Runtime::new();
    let prefix = ctx.name.clone();
    let grape = runtime.block_on(local_grape(26));
    let url = format!("http://{}", grape.local_api_addr());
    let node_port = free_port();
    let serve = Proc::spawn(
        &ctx,
        "stream-serve",
        node.command(
            "stream-serve.js",
            &[url.clone(), prefix.clone(), node_port.to_string()],
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let client = PeerClient::new(PeerConfig::new(url.clone())).expect("client");
    let server = runtime.block_on(async {
        let config = RpcServerConfig::new(RpcTransport::Http).listen_on(LOCALHOST, 0);
        let server = RpcServer::listen_with_streams(config, no_requests, sum_stream)
            .await
            .expect("our stream server");
        server
            .announce(&client, &format!("{prefix}:rust_stream"))
            .await
            .expect("announce");
        server
    });
    let mut call = Proc::spawn(
        &ctx,
        "stream-call",
        node.command("stream-call.js", &[url.clone(), prefix.clone()]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_script_ready(&serve, Duration::from_secs(15));
    let want = expected();

    let mut checks = Checks::new(&ctx);
    checks.run("Rust client streams to the Node server", || {
        let opts = StreamOptions::default()
            .action("upload")
            .args(json!({"name": "a.txt"}))
            .timeout(Duration::from_secs(10));
        let body = smol::stream::iter(body_chunks());
        let name = format!("{prefix}:node_stream");
        let reply = runtime.block_on(client.request_stream(&name, opts, body));
        let reply = reply.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(reply["from"], json!("node"), "{reply}");
        assert_eq!(reply["key"], json!(name));
        assert_eq!(reply["rid"].as_str().map(str::len), Some(36), "{reply}");
        assert_eq!(reply["action"], json!("upload"));
        assert_eq!(reply["args"], json!({"name": "a.txt"}));
        assert_eq!((reply["len"].clone(), reply["sum"].clone()), (json!(want.len), json!(want.sum)));
    });
    let report = last_json(&mut call, Duration::from_secs(25));
    checks.run("Node client streams to the Rust server", || {
        assert_eq!(report["ok"], json!(true), "{report}");
        assert_eq!(report["err"], Value::Null, "{report}");
        let data = &report["data"];
        assert_eq!(data["from"], json!("rust"), "{report}");
        assert_eq!(data["rid"], report["rid"], "the reply names the _gr rid");
        assert_eq!(data["key"], json!(format!("{prefix}:rust_stream")));
        assert_eq!(data["action"], json!("upload"));
        assert_eq!(data["args"], json!({"name": "a.txt"}));
        assert_eq!((data["len"].clone(), data["sum"].clone()), (json!(want.len), json!(want.sum)));
    });
    checks.run("a bad _gr gets Node's answer from both servers", || {
        let theirs = bad_gr_answer(SocketAddr::new(LOCALHOST, node_port));
        let ours = bad_gr_answer(SocketAddr::new(LOCALHOST, server.port()));
        assert_eq!(theirs.0, 500);
        assert_eq!(
            String::from_utf8_lossy(&theirs.1),
            r#"[null, "ERR_HEADER_PARSE_GR", null]"#
        );
        assert_eq!(
            (ours.0, String::from_utf8_lossy(&ours.1)),
            (theirs.0, String::from_utf8_lossy(&theirs.1))
        );
    });
    drop(call);
    drop(serve);
    runtime.block_on(async {
        server.stop().await;
        grape.shutdown().await;
    });
    checks.finish();
}
