//! A client spread over several drivers (`PeerConfig::shards`): requests and maps spread
//! over them still answer right on every transport, a dead peer is skipped, and a watched
//! name keeps answering from its watched set.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use grenache_core::peer::{RequestOptions, RpcTransport};
use serde_json::{Value, json};

use super::local_config;
use crate::peer::{PeerClient, PeerConfig, PeerError, RpcServer, RpcServerConfig, Watch};
use crate::time::timeout;
use crate::{GrapeServer, Runtime};

/// Drivers of the spread client.
const SHARDS: usize = 3;

/// Far longer than anything here takes: a test that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(30);

fn config<R: Runtime>(grape: &GrapeServer<R>, seed: u8) -> PeerConfig {
    let mut config = PeerConfig::new(format!("http://{}", grape.local_api_addr()));
    config.seed = Some([seed; 32]);
    config
}

fn opts() -> RequestOptions {
    RequestOptions::default().timeout(PATIENCE)
}

/// A server of `transport` announced as `name` that answers `{"tag", "echo"}`.
async fn tagged<R: Runtime>(
    announcer: &PeerClient<R>,
    name: &str,
    transport: RpcTransport,
    tag: &'static str,
) -> RpcServer<R> {
    let config = RpcServerConfig::new(transport).listen_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    RpcServer::start(
        announcer,
        name,
        config,
        move |_key, payload: Value| async move { Ok(json!({ "tag": tag, "echo": payload })) },
    )
    .await
    .expect("start an RPC server")
}

/// `n` requests to `name` at once, each answered or failed, in the order sent.
async fn in_flight<R: Runtime>(
    client: &PeerClient<R>,
    name: &str,
    n: usize,
) -> Vec<Result<Value, PeerError>> {
    let (tx, rx) = async_channel::bounded(n);
    for i in 0..n {
        let (client, name, tx) = (client.clone(), name.to_owned(), tx.clone());
        R::spawn_detached(async move {
            let reply = client.request(&name, json!(i), opts()).await;
            let _ = tx.send((i, reply)).await;
        });
    }
    let mut replies = Vec::new();
    for _ in 0..n {
        let next = timeout::<R, _>(PATIENCE, rx.recv()).await;
        replies.push(next.expect("every request ends").expect("a reply"));
    }
    replies.sort_by_key(|(i, _)| *i);
    replies.into_iter().map(|(_, reply)| reply).collect()
}

/// Sorted, deduplicated tags of `replies`.
fn tags(replies: &[Value]) -> Vec<Value> {
    let mut tags: Vec<Value> = replies.iter().map(|r| r["tag"].clone()).collect();
    tags.sort_by_key(ToString::to_string);
    tags.dedup();
    tags
}

/// See the test of this name in each runtime's crate.
pub async fn requests_and_maps_spread_over_shards_answer_right<R: Runtime>() {
    // Arrange: two servers of `name` on each transport, and a client of three drivers.
    let grape = GrapeServer::<R>::start(local_config(61))
        .await
        .expect("Grape");
    let announcer = PeerClient::<R>::new(config(&grape, 1)).expect("client");
    for (transport, name) in [
        (RpcTransport::Http, "shards_http"),
        (RpcTransport::Ws, "shards_ws"),
        (RpcTransport::Zmq, "shards_zmq"),
    ] {
        let a = tagged(&announcer, name, transport, "a").await;
        let b = tagged(&announcer, name, transport, "b").await;
        let client = PeerClient::<R>::new(config(&grape, 2).transport(transport).shards(SHARDS))
            .expect("client");

        // Act
        let replies = in_flight(&client, name, 60).await;
        let mut maps = Vec::new();
        for i in 0..6 {
            maps.push(client.map(name, json!(i), opts()).await);
        }
        let stats = client.stats().await.expect("stats");

        // Assert
        for (i, reply) in replies.iter().enumerate() {
            let reply = reply.as_ref().expect("a reply");
            assert_eq!(
                reply["echo"],
                json!(i),
                "{transport:?}: reply to its own request"
            );
        }
        let replies: Vec<Value> = replies.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            tags(&replies),
            [json!("a"), json!("b")],
            "{transport:?}: both serve"
        );
        for (i, map) in maps.iter().enumerate() {
            let map = map.as_ref().expect("a map");
            assert_eq!(map.len(), 2, "{transport:?}: a map asks both");
            assert_eq!(tags(map), [json!("a"), json!("b")], "{transport:?}");
            assert!(map.iter().all(|r| r["echo"] == json!(i)), "{transport:?}");
        }
        // Each driver looked the name up itself: one driver would have asked once.
        assert!(
            stats.link.requests >= SHARDS as u64,
            "{transport:?}: requests spread over the drivers: {stats:?}"
        );
        assert_eq!(stats.rpc.attempts, 60 + 6 * 2, "{transport:?}: {stats:?}");
        a.stop().await;
        b.stop().await;
    }
    grape.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn a_dead_peer_is_skipped_by_every_shard<R: Runtime>() {
    // Arrange: a live server of `name`, and an address announced for it where nobody listens.
    let grape = GrapeServer::<R>::start(local_config(62))
        .await
        .expect("Grape");
    let announcer = PeerClient::<R>::new(config(&grape, 1)).expect("client");
    let live = tagged(&announcer, "shards_dead", RpcTransport::Http, "live").await;
    let dead_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    announcer
        .announce("shards_dead", dead_port)
        .await
        .expect("announce the dead port");
    let client = PeerClient::<R>::new(config(&grape, 2).shards(SHARDS)).expect("client");

    // Act: one at a time, so each driver meets the dead peer before its next request.
    let mut replies = Vec::new();
    for i in 0..30 {
        replies.push(client.request("shards_dead", json!(i), opts()).await);
    }
    let stats = client.stats().await.expect("stats");

    // Assert
    for (i, reply) in replies.iter().enumerate() {
        let reply = reply.as_ref().expect("the live peer answers every request");
        assert_eq!(reply["tag"], json!("live"));
        assert_eq!(reply["echo"], json!(i));
    }
    assert!(
        (1..=SHARDS as u64).contains(&stats.rpc.unreached),
        "each driver tries the dead peer once at most: {stats:?}"
    );
    live.stop().await;
    grape.shutdown().await;
}

/// The watch's next set, within [`PATIENCE`].
async fn next_set<R: Runtime>(watch: &mut Watch) -> Vec<String> {
    let set = timeout::<R, _>(PATIENCE, watch.next())
        .await
        .expect("a set in time")
        .expect("the watch runs");
    set.iter().map(|p| p.as_str().to_owned()).collect()
}

/// See the test of this name in each runtime's crate.
pub async fn a_watched_name_is_answered_from_its_set_on_a_spread_client<R: Runtime>() {
    // Arrange: one server; a spread client that never caches a lookup, watching the name.
    let grape = GrapeServer::<R>::start(local_config(63))
        .await
        .expect("Grape");
    let announcer = PeerClient::<R>::new(config(&grape, 1)).expect("client");
    let a = tagged(&announcer, "shards_watched", RpcTransport::Http, "a").await;
    let mut config = config(&grape, 2).shards(SHARDS);
    config.client.link.lookup_cache_ttl = Duration::ZERO;
    let client = PeerClient::<R>::new(config).expect("client");
    let mut watch = client.watch("shards_watched").await.expect("a watch");
    let mut first = next_set::<R>(&mut watch).await;
    while first.is_empty() {
        first = next_set::<R>(&mut watch).await;
    }

    // Act: requests with one server, then with a second one the watch reports.
    let before = in_flight(&client, "shards_watched", 12).await;
    let b = tagged(&announcer, "shards_watched", RpcTransport::Http, "b").await;
    let mut both = next_set::<R>(&mut watch).await;
    while both.len() < 2 {
        both = next_set::<R>(&mut watch).await;
    }
    let after = in_flight(&client, "shards_watched", 12).await;
    let stats = client.stats().await.expect("stats");
    drop(watch);
    let unwatched = client
        .request("shards_watched", json!("unwatched"), opts())
        .await;

    // Assert
    let before: Vec<Value> = before.into_iter().map(|r| r.expect("a reply")).collect();
    let after: Vec<Value> = after.into_iter().map(|r| r.expect("a reply")).collect();
    assert_eq!(tags(&before), [json!("a")]);
    assert_eq!(
        tags(&after),
        [json!("a"), json!("b")],
        "the new server is used"
    );
    assert_eq!(stats.link.requests, 0, "no lookup while watched: {stats:?}");
    assert_eq!(
        stats.link.watch_hits, 24,
        "every request used the set: {stats:?}"
    );
    assert!(unwatched.is_ok(), "a lookup once unwatched: {unwatched:?}");
    a.stop().await;
    b.stop().await;
    grape.shutdown().await;
}
