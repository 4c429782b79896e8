// Watches through a PeerClient, written once against `rt` and the helpers of `rust.rs`
// (`grape`, `grape_with`, `config`, `client`, `echo_server`, `opts`) and of the including
// runtime file (`Runtime`, `within`). Each test runs its Grape in-process on 127.0.0.1.

/// The watch's next set, within 10 s.
async fn next_set(watch: &mut rt::peer::Watch) -> Vec<String> {
    let set = within(Duration::from_secs(10), watch.next())
        .await
        .unwrap_or_else(|| panic!("{RT}: no set for {} within 10 s", watch.name()))
        .unwrap_or_else(|| panic!("{RT}: watch of {} ended: {:?}", watch.name(), watch.error()));
    set.iter().map(|p| p.as_str().to_owned()).collect()
}

/// Sets from the watch until one satisfies `done`, within 10 s.
async fn set_until(watch: &mut rt::peer::Watch, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    loop {
        let set = next_set(watch).await;
        if done(&set) {
            return set;
        }
    }
}

#[test]
fn a_watch_sees_an_announce_and_an_unannounce() {
    let runtime = Runtime::new();
    runtime.block_on(async {
        let grape = grape(20, None).await;
        let announcing = client(&grape, RpcTransport::Http);
        let watching = client(&grape, RpcTransport::Http);
        let port = 4711;
        let me = format!("127.0.0.1:{port}");

        let mut watch = watching.watch("watched").await.expect("a watch");
        let before = next_set(&mut watch).await;
        announcing.announce("watched", port).await.expect("announce");
        let announced = next_set(&mut watch).await;
        announcing.unannounce("watched", port).await.expect("unannounce");
        let unannounced = next_set(&mut watch).await;
        let stats = watching.stats().await.expect("stats");

        assert_eq!(before, Vec::<String>::new(), "{RT}: nobody serves it yet");
        assert_eq!(announced, vec![me], "{RT}");
        assert_eq!(unannounced, Vec::<String>::new(), "{RT}");
        assert_eq!(stats.link.requests, 0, "{RT}: no lookup, only watch polls");
        assert!(stats.link.watch_polls >= 3, "{RT}: {stats:?}");
        drop(watch);
        grape.shutdown().await;
    });
}

#[test]
fn a_stopped_server_leaves_the_watched_set_and_requests_follow_with_no_lookup() {
    let runtime = Runtime::new();
    runtime.block_on(async {
        let grape = grape(21, None).await;
        let announcing = client(&grape, RpcTransport::Http);
        // No cache: any lookup would be a request to the Grape, and counted.
        let mut watching = config(&grape, RpcTransport::Http);
        watching.client.link.lookup_cache_ttl = Duration::ZERO;
        let watching = rt::peer::PeerClient::new(watching).expect("client");
        let a = echo_server(&announcing, "pair", RpcTransport::Http, "a").await;
        let b = echo_server(&announcing, "pair", RpcTransport::Http, "b").await;
        let b_addr = format!("127.0.0.1:{}", b.port());

        let mut watch = watching.watch("pair").await.expect("a watch");
        let both = set_until(&mut watch, |set| set.len() == 2).await;
        let mut before = Vec::new();
        for i in 0..4 {
            before.push(watching.request("pair", json!(i), opts(5000)).await);
        }
        // `stop` returns once the Grape took the unannounce; the watch reports it.
        a.stop().await;
        let left = set_until(&mut watch, |set| set.len() == 1).await;
        let mut after = Vec::new();
        for i in 0..6 {
            after.push(watching.request("pair", json!(i), opts(5000)).await);
        }
        let stats = watching.stats().await.expect("stats");

        assert_eq!(both.len(), 2, "{RT}");
        let mut tags: Vec<Value> = before
            .iter()
            .map(|r| r.as_ref().expect("a reply before the stop")["tag"].clone())
            .collect();
        tags.sort_by_key(ToString::to_string);
        tags.dedup();
        assert_eq!(tags, vec![json!("a"), json!("b")], "{RT}: both served");
        assert_eq!(left, vec![b_addr], "{RT}");
        for reply in &after {
            assert_eq!(
                reply.as_ref().map(|r| r["tag"].clone()),
                Ok(json!("b")),
                "{RT}: every request after the stop goes to b"
            );
        }
        assert_eq!(stats.link.requests, 0, "{RT}: no lookup went to the Grape");
        assert_eq!(stats.link.watch_hits, 10, "{RT}: {stats:?}");
        assert_eq!(stats.rpc.unreached, 0, "{RT}: no request went to the stopped server");
        drop(watch);
        b.stop().await;
        grape.shutdown().await;
    });
}

#[test]
fn a_watch_over_a_websocket_grape() {
    let runtime = Runtime::new();
    runtime.block_on(async {
        let grape = grape_with(22, |config| config.ws_port = Some(0)).await;
        let ws = grape.local_ws_addr().expect("a WebSocket API");
        let announcing = client(&grape, RpcTransport::Http);
        let mut watching = rt::peer::PeerConfig::new(format!("ws://{ws}"));
        watching.seed = Some([8; 32]);
        let watching = rt::peer::PeerClient::new(watching).expect("client");

        let mut watch = watching.watch("over-ws").await.expect("a watch");
        let mut again = watching.watch("over-ws").await.expect("a second watch");
        let before = next_set(&mut watch).await;
        announcing.announce("over-ws", 4712).await.expect("announce");
        let announced = next_set(&mut watch).await;
        let shared = set_until(&mut again, |set| !set.is_empty()).await;
        let looked_up = watching.lookup("over-ws").await.expect("a lookup");
        let stats = watching.stats().await.expect("stats");

        assert_eq!(before, Vec::<String>::new(), "{RT}");
        assert_eq!(announced, vec!["127.0.0.1:4712".to_owned()], "{RT}");
        assert_eq!(shared, announced, "{RT}");
        assert_eq!(looked_up.len(), 1, "{RT}");
        assert_eq!(stats.link.watch_hits, 1, "{RT}: the lookup used the watched set");
        assert_eq!(stats.link.watch_polls, 1, "{RT}: one Grape watch for both");
        drop((watch, again));
        grape.shutdown().await;
    });
}

#[test]
fn watches_past_a_bound_get_clear_errors() {
    let runtime = Runtime::new();
    runtime.block_on(async {
        let grape = grape_with(23, |config| config.grape.max_watches = 1).await;
        let mut one_name = config(&grape, RpcTransport::Http);
        one_name.client.link.max_watches = 1;
        let first = rt::peer::PeerClient::new(one_name).expect("client");
        let second = client(&grape, RpcTransport::Http);

        let mut held = first.watch("bounded-a").await.expect("a watch");
        let _ = next_set(&mut held).await;
        let over_link = first.watch("bounded-b").await;
        let mut over_grape = second.watch("bounded-c").await.expect("taken by the Link");
        let ended = within(Duration::from_secs(10), over_grape.next()).await;

        assert_eq!(
            over_link.map(|w| w.name().to_owned()),
            Err(PeerError::Refused(CommandError::TooManyWatches)),
            "{RT}"
        );
        assert_eq!(ended, Some(None), "{RT}: the Grape's refusal ends the watch");
        assert_eq!(
            over_grape.error().map(ToString::to_string),
            Some("ERR_GRAPE_WATCH_LIMIT".to_owned()),
            "{RT}"
        );
        assert!(
            second.lookup("bounded-a").await.is_err(),
            "{RT}: an ended watch leaves lookups to the Grape (nobody serves it)"
        );
        drop(held);
        grape.shutdown().await;
    });
}

#[test]
fn a_watch_follows_its_grape_through_a_restart() {
    let runtime = Runtime::new();
    runtime.block_on(async {
        let first = grape(24, None).await;
        let api = first.local_api_addr();
        let mut watching = config(&first, RpcTransport::Http);
        // Retry soon after a failed poll, to keep the test short.
        watching.client.link.announce_retry = Duration::from_millis(400);
        let watching = rt::peer::PeerClient::new(watching).expect("client");
        let mut watch = watching.watch("restarting").await.expect("a watch");
        let before = next_set(&mut watch).await;

        first.shutdown().await;
        let second = grape_with(25, |config| config.api_port = api.port()).await;
        let announcing = client(&second, RpcTransport::Http);
        announcing.announce("restarting", 4713).await.expect("announce");
        let after = set_until(&mut watch, |set| !set.is_empty()).await;
        let stats = watching.stats().await.expect("stats");

        assert_eq!(before, Vec::<String>::new(), "{RT}");
        assert_eq!(after, vec!["127.0.0.1:4713".to_owned()], "{RT}");
        assert!(stats.link.watch_retries >= 1, "{RT}: {stats:?}");
        drop(watch);
        second.shutdown().await;
    });
}
