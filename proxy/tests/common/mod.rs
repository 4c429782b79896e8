//! What the proxy's end-to-end tests share: a loopback Grape, clients, tagged echo
//! servers, and a raw HTTP/1.1 exchange.

#![allow(dead_code)] // each test file uses its own share

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use grenache_smol::peer::{PeerClient, PeerConfig, RpcServer, RpcServerConfig, RpcTransport};
use grenache_smol::{GrapeServer, ServerConfig};
use serde_json::{Value, json};

pub(crate) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub(crate) async fn grape(seed: u8) -> GrapeServer {
    let mut config = ServerConfig::new([seed; 32]);
    config.bind = LOCALHOST;
    config.dht_port = 0;
    config.api_port = 0;
    GrapeServer::start(config).await.expect("start a Grape")
}

pub(crate) fn url(grape: &GrapeServer) -> String {
    format!("http://{}", grape.local_api_addr())
}

pub(crate) fn client(grape: &GrapeServer, transport: RpcTransport) -> PeerClient {
    let mut config = PeerConfig::new(url(grape)).transport(transport);
    config.seed = Some([5; 32]);
    PeerClient::new(config).expect("a valid Grape URL")
}

/// A server answering `{"tag", "got"}`, or the error in `{"fail": msg}`.
pub(crate) async fn server(
    client: &PeerClient,
    name: &str,
    transport: RpcTransport,
    tag: &str,
) -> RpcServer {
    let tag = tag.to_owned();
    let handler = move |_key: String, payload: Value| {
        let tag = tag.clone();
        async move {
            match payload.get("fail").and_then(Value::as_str) {
                Some(msg) => Err(msg.to_owned()),
                None => Ok(json!({ "tag": tag, "got": payload })),
            }
        }
    };
    let config = RpcServerConfig::new(transport).listen_on(LOCALHOST, 0);
    RpcServer::start(client, name, config, handler)
        .await
        .expect("start a server")
}

/// Sends `head` (request line and headers, without the blank line; `Host` and
/// `Connection: close` are added) and `body` over a fresh connection; returns the status
/// (0 when there was no reply) and the body text.
pub(crate) async fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let text = raw_exchange(addr, head, body).await;
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// As [`raw_http`], but the whole reply as text: status line, headers and body.
pub(crate) async fn raw_exchange(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = smol::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    // A server may answer an oversized body before reading it and close: ignore the rest.
    let _ = stream.write_all(body).await;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply).into_owned()
}
