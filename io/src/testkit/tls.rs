//! TLS and mutual TLS, end to end over loopback: our clients and servers with each other,
//! and every way a handshake can go wrong, on the side that sees it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use futures_rustls::rustls;
use grenache_core::peer::{HttpResponse, TransportError};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};

use super::http_client::small_post;
use super::pki::{Issued, TestCa, Validity};
use super::{connect, local_config};
use crate::peer::http_client::{HttpPool, exchange};
use crate::peer::{
    ClientTls, PeerClient, PeerConfig, Publisher, PublisherConfig, RequestContext, RequestOptions,
    RpcServer, RpcServerConfig, RpcTransport, ServerTls, TlsFailure, TlsStats, WsMessage,
};
use crate::time::{sleep, timeout};
use crate::tls::TlsClient;
use crate::{GrapeServer, Runtime};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Answers with what the server knows of the caller.
async fn whoami(_key: String, _payload: Value, context: RequestContext) -> Result<Value, String> {
    Ok(match context.peer {
        Some(peer) => json!({"subject": peer.subject, "fp": peer.sha256.to_string()}),
        None => json!({"subject": null}),
    })
}

async fn tls_server<R: Runtime>(transport: RpcTransport, tls: Option<ServerTls>) -> RpcServer<R> {
    let mut config = RpcServerConfig::new(transport).listen_on(LOCALHOST, 0);
    config.tls = tls;
    config.read_timeout = Duration::from_millis(500);
    RpcServer::<R>::listen_with_context(config, whoami)
        .await
        .expect("listen")
}

/// One POST through the HTTP client's pool, TLS when `tls` is given.
async fn post<R: Runtime>(
    port: u16,
    tls: Option<&ClientTls>,
) -> Result<HttpResponse, TransportError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let tls = tls.map(|t| Arc::new(TlsClient::new(t.clone())));
    let pool = HttpPool::new(1, 1, Duration::from_secs(4)).with_tls(tls);
    let request = small_post::<R>(format!("{scheme}://127.0.0.1:{port}/"));
    exchange::<R>(&pool, request, 64 * 1024)
        .await
        .expect("answered within the deadline")
}

/// The server's TLS counters once they reach `want`, or what they were after 5 s.
async fn settled<R: Runtime>(
    stats: impl Fn() -> TlsStats,
    want: impl Fn(&TlsStats) -> bool,
) -> TlsStats {
    for _ in 0..100 {
        if want(&stats()) {
            break;
        }
        sleep::<R>(Duration::from_millis(50)).await;
    }
    stats()
}

/// See the test of this name in each runtime's crate.
pub async fn tls_rpc_and_pubsub_carry_the_client_identity<R: Runtime>() {
    // Arrange: a Grape, HTTPS and WSS servers and a WSS publisher asking for client
    // certificates, and clients that show alice's.
    let ca = TestCa::new("grenache test CA");
    let server_leaf = ca.issue("server");
    let alice = ca.issue("alice");
    let grape = GrapeServer::<R>::start(local_config(30))
        .await
        .expect("grape");
    let url = format!("http://{}", grape.local_api_addr());
    let http = tls_server::<R>(RpcTransport::Http, Some(ca.server(&server_leaf))).await;
    let ws = tls_server::<R>(RpcTransport::Ws, Some(ca.server(&server_leaf))).await;
    let publisher = Publisher::<R>::listen(
        PublisherConfig::new()
            .listen_on(LOCALHOST, 0)
            .tls(ca.server(&server_leaf)),
    )
    .await
    .expect("publisher");
    let http_client =
        PeerClient::<R>::new(PeerConfig::new(url.clone()).tls(ca.client(Some(&alice))))
            .expect("client");
    let ws_client = PeerClient::<R>::new(
        PeerConfig::new(url)
            .transport(RpcTransport::Ws)
            .tls(ca.client(Some(&alice))),
    )
    .expect("client");
    http.announce(&http_client, "tls_http")
        .await
        .expect("announce");
    ws.announce(&http_client, "tls_ws").await.expect("announce");
    publisher
        .announce(&http_client, "tls_pub")
        .await
        .expect("announce");
    let opts = RequestOptions::default().timeout(Duration::from_secs(5));

    // Act
    let over_https = http_client
        .request("tls_http", json!(1), opts.clone())
        .await;
    let over_wss = ws_client.request("tls_ws", json!(2), opts.clone()).await;
    // A client without a certificate: the WSS server refuses it after its handshake.
    let anonymous = PeerClient::<R>::new(
        PeerConfig::new(format!("http://{}", grape.local_api_addr()))
            .transport(RpcTransport::Ws)
            .tls(ca.client(None)),
    )
    .expect("client");
    let refused = anonymous
        .request("tls_ws", json!(3), opts.attempts(1))
        .await;
    let mut sub = http_client.subscribe("tls_pub").await.expect("subscribe");
    let message = timeout::<R, _>(Duration::from_secs(10), async {
        loop {
            publisher.publish_text("over wss").expect("publish");
            if let Some(Some(msg)) =
                timeout::<R, _>(Duration::from_millis(100), sub.next_message()).await
            {
                break msg;
            }
        }
    })
    .await;

    // Assert
    for reply in [over_https, over_wss] {
        let reply = reply.expect("reply");
        let subject = reply["subject"].as_str().unwrap_or_default();
        assert!(subject.contains("CN=alice"), "{reply}");
        assert_eq!(reply["fp"], json!(alice.fingerprint.to_string()));
    }
    assert_eq!(message, Some(WsMessage::Text("over wss".into())));
    assert!(refused.is_err(), "{refused:?}");
    let anonymous_stats = anonymous.tls_stats();
    assert!(
        anonymous_stats.failed(TlsFailure::Refused) >= 1,
        "{anonymous_stats:?}"
    );
    assert!(ws.stats().tls.failed(TlsFailure::NoCertificate) >= 1);
    assert!(http.stats().tls.established >= 1);
    assert!(ws.stats().tls.established >= 1);
    assert!(publisher.tls_stats().established >= 1);
    assert_eq!(http_client.tls_stats().failed_total(), 0);
    drop(sub);
    http.stop().await;
    ws.stop().await;
    publisher.stop().await;
    grape.shutdown().await;
}

/// Opens a TLS connection as `tls` (the handshake the client sees may succeed: in TLS 1.3
/// the server judges a client's certificate after that), sends a request and reads until
/// the server closes. Returns whether an HTTP answer came.
async fn attempt<R: Runtime>(addr: SocketAddr, tls: ClientTls) -> bool {
    let client = TlsClient::new(tls);
    let stream = connect::<R>(addr).await;
    let Ok(mut stream) = client.connect::<R>("127.0.0.1", stream).await else {
        return false;
    };
    let request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 15\r\n\r\n[\"rid\",\"svc\",1]";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        timeout::<R, _>(Duration::from_secs(5), stream.read(&mut buf)).await,
        Some(Ok(n)) if buf.get(..n).is_some_and(|b| b.starts_with(b"HTTP/1.1 200"))
    )
}

/// Sends `bytes` raw, then closes (or, if `hold`, waits for the server to close).
async fn raw<R: Runtime>(addr: SocketAddr, bytes: &[u8], hold: bool) {
    let mut stream = connect::<R>(addr).await;
    R::write_all(&mut stream, bytes).await.expect("write");
    if hold {
        let mut buf = [0u8; 256];
        let _ = timeout::<R, _>(Duration::from_secs(5), async {
            while let Ok(n) = R::read(&mut stream, &mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// The first flight of a TLS client: its ClientHello, as it goes on the wire.
fn client_hello(tls: &ClientTls) -> Vec<u8> {
    let name = ServerName::try_from("127.0.0.1").expect("IP name");
    let mut conn =
        rustls::ClientConnection::new(Arc::clone(&tls.config), name).expect("client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("hello");
    hello
}

/// See the test of this name in each runtime's crate.
pub async fn tls_bad_clients_are_refused_counted_and_the_rest_served<R: Runtime>() {
    // Arrange: a mutual-TLS server that allows alice and mallory, and whose hook then
    // refuses mallory.
    let ca = TestCa::new("grenache test CA");
    let other_ca = TestCa::new("a stranger's CA");
    let server_leaf = ca.issue("server");
    let alice = ca.issue("alice");
    let bob = ca.issue("bob");
    let mallory = ca.issue("mallory");
    let sans = ["127.0.0.1"];
    let expired = ca.issue_for("old", &sans, Validity::Expired);
    let early = ca.issue_for("early", &sans, Validity::NotYet);
    let stranger = other_ca.issue("stranger");
    let tls = ca
        .server(&server_leaf)
        .allow_fingerprints([alice.fingerprint, mallory.fingerprint])
        .verify_client(|peer| !peer.subject.contains("CN=mallory"));
    let server = tls_server::<R>(RpcTransport::Http, Some(tls)).await;
    let addr = SocketAddr::new(LOCALHOST, server.port());
    let as_client = |leaf: Option<&Issued>, ca: &TestCa| ca.client(leaf);
    let hello = client_hello(&ca.client(Some(&alice)));
    // Cut after every byte count short of the whole ClientHello.
    let cuts: Vec<usize> = (0..hello.len()).collect();

    // Act
    let refused = [
        attempt::<R>(addr, {
            // The stranger trusts our CA (so it talks), but its own CA signed its certificate.
            let own = stranger.clone();
            ClientTls::from_pem(
                ca.pem().as_bytes(),
                Some((own.cert_pem.as_bytes(), own.key_pem.as_bytes())),
            )
            .expect("tls")
        })
        .await,
        attempt::<R>(addr, as_client(Some(&expired), &ca)).await,
        attempt::<R>(addr, as_client(Some(&early), &ca)).await,
        attempt::<R>(addr, as_client(None, &ca)).await,
        attempt::<R>(addr, as_client(Some(&bob), &ca)).await,
        attempt::<R>(addr, as_client(Some(&mallory), &ca)).await,
    ];
    raw::<R>(
        addr,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n[]",
        true,
    )
    .await;
    for &cut in &cuts {
        raw::<R>(addr, hello.get(..cut).unwrap_or_default(), false).await;
    }
    raw::<R>(addr, hello.get(..3).unwrap_or_default(), true).await; // then silence
    // Through the HTTP client: TLS 1.3 lets a client finish its handshake before the
    // server judges its certificate, so the refusal comes as an alert on the first read.
    let anonymous = Arc::new(TlsClient::new(as_client(None, &ca)));
    let pool = HttpPool::new(1, 1, Duration::from_secs(4)).with_tls(Some(Arc::clone(&anonymous)));
    let url = format!("https://127.0.0.1:{}/", server.port());
    let anonymous_post = exchange::<R>(&pool, small_post::<R>(url), 1024).await;
    let served = attempt::<R>(addr, as_client(Some(&alice), &ca)).await;
    let reply = post::<R>(server.port(), Some(&ca.client(Some(&alice)))).await;

    // Assert
    assert_eq!(refused, [false; 6]);
    // The request fails (with the TLS code when hyper passes the cause on), and the
    // client counts the refusal at most once, as a refusal. On a loaded machine the server's
    // close can reach the client before its alert is read (a reset, not an alert): then
    // there is nothing to count, which is why this is not `== 1`.
    assert!(matches!(anonymous_post, Some(Err(_))), "{anonymous_post:?}");
    let anonymous_stats =
        settled::<R>(|| anonymous.stats(), |s| s.failed(TlsFailure::Refused) == 1).await;
    let refused = anonymous_stats.failed(TlsFailure::Refused);
    assert!(refused <= 1, "{anonymous_stats:?}");
    assert_eq!(
        anonymous_stats.failed_total(),
        refused,
        "{anonymous_stats:?}"
    );
    assert!(served, "alice is served after all that");
    let body = reply.expect("alice's request").body;
    assert!(String::from_utf8_lossy(&body).contains("CN=alice"));
    let want = [
        (TlsFailure::UnknownCa, 1),
        (TlsFailure::Expired, 1),
        (TlsFailure::NotYetValid, 1),
        (TlsFailure::NoCertificate, 2),
        (TlsFailure::NotAllowed, 2),
        (TlsFailure::NotTls, 1),
        (TlsFailure::Cut, cuts.len() as u64),
        (TlsFailure::Timeout, 1),
    ];
    let stats = settled::<R>(
        || server.stats().tls,
        |s| want.iter().all(|(r, n)| s.failed(*r) == *n),
    )
    .await;
    for (reason, n) in want {
        assert_eq!(stats.failed(reason), n, "{reason}: {stats:?}");
    }
    assert_eq!(
        stats.failed_total(),
        want.iter().map(|(_, n)| n).sum::<u64>()
    );
    assert_eq!(stats.established, 2);
    server.stop().await;
}

/// See the test of this name in each runtime's crate.
pub async fn tls_clients_refuse_servers_they_cannot_verify<R: Runtime>() {
    // Arrange: servers whose certificates our client must refuse, and a plaintext one.
    let ca = TestCa::new("grenache test CA");
    let other_ca = TestCa::new("a stranger's CA");
    let sans = ["127.0.0.1"];
    let cases = [
        (other_ca.issue("stranger"), TlsFailure::UnknownCa),
        (
            ca.issue_for("old", &sans, Validity::Expired),
            TlsFailure::Expired,
        ),
        (
            ca.issue_for("early", &sans, Validity::NotYet),
            TlsFailure::NotYetValid,
        ),
        (
            ca.issue_for("elsewhere", &["10.9.8.7"], Validity::Now),
            TlsFailure::WrongName,
        ),
    ];
    let plain = tls_server::<R>(RpcTransport::Http, None).await;
    let client_tls = ca.client(None);

    // Act and assert
    for (leaf, failure) in cases {
        let tls = ServerTls::from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), None)
            .expect("server TLS");
        let server = tls_server::<R>(RpcTransport::Http, Some(tls)).await;
        let client = TlsClient::new(client_tls.clone());
        let stream = connect::<R>(SocketAddr::new(LOCALHOST, server.port())).await;

        let got = client.connect::<R>("127.0.0.1", stream).await.err();
        let err = post::<R>(server.port(), Some(&client_tls)).await.err();

        assert_eq!(got, Some(failure));
        assert_eq!(client.stats().failed(failure), 1);
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(failure.code()), "{failure}: {err}");
        // The server sees the client's alert, or the connection close if the client hung
        // up before the alert went out; either way both handshakes are counted.
        let seen = |s: &TlsStats| s.failed(TlsFailure::Refused) + s.failed(TlsFailure::Cut);
        let stats = settled::<R>(|| server.stats().tls, |s| seen(s) == 2).await;
        assert_eq!((seen(&stats), stats.failed_total()), (2, 2), "{stats:?}");
        server.stop().await;
    }
    let to_plain = post::<R>(plain.port(), Some(&client_tls)).await.err();
    let unconfigured = {
        let pool = HttpPool::new(1, 1, Duration::from_secs(4));
        let request = small_post::<R>(format!("https://127.0.0.1:{}/", plain.port()));
        exchange::<R>(&pool, request, 1024).await
    };
    let plain_still_serves = post::<R>(plain.port(), None).await;
    let to_plain = to_plain.map(|e| e.to_string()).unwrap_or_default();
    assert!(to_plain.contains(TlsFailure::NotTls.code()), "{to_plain}");
    assert!(
        matches!(&unconfigured, Some(Err(e)) if e.to_string().contains("ERR_TLS_NOT_CONFIGURED")),
        "{unconfigured:?}"
    );
    assert_eq!(plain_still_serves.expect("plain request").status, 200);
    plain.stop().await;
}
