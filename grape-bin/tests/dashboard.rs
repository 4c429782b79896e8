//! The dashboard in a real browser: our Grape (with a neighbour) serves the page, headless
//! Chromium driven through chromedriver (WebDriver, the `fantoccini` crate) opens it, and
//! what the page shows must match `/status` and the API. A screenshot lands in
//! `target/tmp/dashboard-<runtime>.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install chromium
//! chromium-driver`); without them the test fails and says so. `GRENACHE_SKIP_INTEROP=1`
//! reports it as ignored instead, like the other tests that need outside tools.

use crate::common;

use common::{
    Ctx, Grape, GrapeOpts, Kind, Proc, Rt, free_port, heavy_test_lock, http, peer, start_grapes,
    terminate_all, wait_until,
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

both_runtimes!(
    #[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
    page_shows_what_the_api_says,
);

/// Where Debian puts the browser and its driver; PATH is searched too.
const CHROMIUM: [&str; 2] = ["/usr/bin/chromium", "chromium"];
const CHROMEDRIVER: [&str; 2] = ["/usr/bin/chromedriver", "chromedriver"];

/// The first of `candidates` that runs `--version`.
fn find_tool(candidates: &[&str]) -> Option<String> {
    candidates.iter().find_map(|c| {
        let out = Command::new(c).arg("--version").output().ok()?;
        out.status.success().then(|| (*c).to_string())
    })
}

/// The browser and its driver, or a failure that says how to install them.
fn browser_tools() -> (String, String) {
    let chromium = find_tool(&CHROMIUM);
    let driver = find_tool(&CHROMEDRIVER);
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => {
            let missing: Vec<&str> = [(c.is_none(), "chromium"), (d.is_none(), "chromedriver")]
                .into_iter()
                .filter_map(|(gone, name)| gone.then_some(name))
                .collect();
            panic!(
                "the dashboard test drives headless Chromium, but {} not found (looked in /usr/bin \
                 and on PATH). Install them with `apt-get install chromium chromium-driver` \
                 (.ci/run does), or set GRENACHE_SKIP_INTEROP=1 to report this test as ignored",
                missing.join(" and ")
            )
        }
    }
}

/// Starts chromedriver on a free loopback port and waits until it accepts connections.
fn start_chromedriver(ctx: &Ctx, driver: &str) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new(driver);
    cmd.arg(format!("--port={port}"));
    let mut proc = Proc::spawn(ctx, "chromedriver", cmd).unwrap_or_else(|e| panic!("{e}"));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_until("chromedriver to listen", Duration::from_secs(20), || {
        if let Some(status) = proc.exited() {
            panic!("chromedriver exited with {status}:\n{}", proc.dump());
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .map(drop)
            .map_err(|e| e.to_string())
    });
    (proc, port)
}

/// A WebDriver session on headless Chromium, with its profile in the test's folder.
async fn open_browser(ctx: &Ctx, chromium: &str, port: u16) -> Client {
    let profile = ctx.dir.join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1400,1100",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("WebDriver session on chromedriver :{port}: {e}"))
}

/// `GET path` on a Grape's API, parsed as JSON.
fn get_json(g: &Grape, path: &str) -> Value {
    let resp = http::get(g.api, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.text());
    resp.json().unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The text of the element `css`, or of the attribute `attr` if given; `None` if absent.
async fn read(client: &Client, css: &str, attr: Option<&str>) -> Option<String> {
    let el = client.find(Locator::Css(css)).await.ok()?;
    match attr {
        Some(a) => el.attr(a).await.ok().flatten(),
        None => el.text().await.ok(),
    }
}

/// How many times the page has read `/status` so far.
async fn polls(client: &Client) -> u32 {
    let polls = read(client, "body", Some("data-polls")).await;
    polls.and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// A CSS attribute selector's quoted value (names here are plain, but quote them anyway).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn screenshot_path(rt: Rt) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{}.png", rt.as_str()))
}

fn page_shows_what_the_api_says(rt: Rt) {
    let (chromium, driver) = browser_tools();
    let _heavy = heavy_test_lock();
    let ctx = Ctx::new(&format!("dashboard_{}", rt.as_str()));
    let mut grapes = start_grapes(
        &ctx,
        &[Kind::Ours(rt), Kind::Ours(rt)],
        GrapeOpts {
            ws: true,
            ..GrapeOpts::default()
        },
    );
    let (a, b) = (&grapes[0], &grapes[1]);

    // Services announced through `a`; `a` looks one up that `b` announced.
    let names = [
        format!("dash-{}:api", rt.as_str()),
        format!("dash-{}:db", rt.as_str()),
    ];
    let ports = [free_port(), free_port()];
    for (name, port) in names.iter().zip(ports) {
        a.announce(name, port).unwrap_or_else(|e| panic!("{e}"));
    }
    let remote = format!("dash-{}:remote", rt.as_str());
    let remote_port = free_port();
    b.announce(&remote, remote_port)
        .unwrap_or_else(|e| panic!("{e}"));
    let peers = a.wait_lookup(&remote, &[peer(remote_port)], Duration::from_secs(5));
    a.lookup(&names[0]).unwrap_or_else(|e| panic!("{e}"));

    let (mut chromedriver, port) = start_chromedriver(&ctx, &driver);
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the WebDriver client");
    let shot = screenshot_path(rt);
    runtime.block_on(async {
        let client = open_browser(&ctx, &chromium, port).await;
        let url = format!("http://{}/", a.api);
        client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));

        // Filled once the row of the looked-up name is there and two polls drew the charts.
        let row = format!("#lookups tr[data-name={}]", quoted(&remote));
        let mut filled = false;
        for _ in 0..100 {
            if polls(&client).await >= 2 && read(&client, &row, Some("data-name")).await.is_some() {
                filled = true;
                break;
            }
            ::tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Traffic between two polls, so the charts draw rates rather than flat lines.
        let polls_now = polls(&client).await;
        for i in 0..20 {
            let _ = a.lookup(&names[i % 2]);
            let _ = a.lookup(&format!("dash-{}:missing-{}", rt.as_str(), i % 4));
        }
        for _ in 0..60 {
            if polls(&client).await >= polls_now + 2 {
                break;
            }
            ::tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let png = client.screenshot().await.expect("screenshot");
        std::fs::write(&shot, &png).expect("write the screenshot");
        eprintln!("[{}] screenshot: {}", ctx.name, shot.display());
        assert!(
            filled,
            "the page did not fill within 10 s (screenshot: {})",
            shot.display()
        );

        let status = get_json(a, "/status");
        let id = read(&client, "#grape-id", None).await;
        assert_eq!(
            id.as_deref(),
            status["id"].as_str(),
            "the page shows another id"
        );
        let health = get_json(a, "/health");
        assert_eq!(
            status["id"], health["id"],
            "/status and /health disagree on the id"
        );

        let size = read(&client, "#routing-size", None).await;
        assert_eq!(
            size,
            Some(status["routing"]["nodes"].to_string()),
            "routing table size"
        );
        assert_eq!(size.as_deref(), Some("1"), "the neighbour is the one node");
        let neighbour = format!(".node[data-addr={}]", quoted(&b.dht.to_string()));
        let state = read(&client, &neighbour, Some("data-state")).await;
        assert!(
            state.is_some(),
            "the routing table does not draw the neighbour {}",
            b.dht
        );

        for (name, port) in names.iter().zip(ports) {
            let css = format!("#services tr[data-name={}]", quoted(name));
            let shown = read(&client, &css, Some("data-port")).await;
            assert_eq!(shown, Some(port.to_string()), "service {name}");
        }
        let shown_peers = read(&client, &row, Some("data-peers")).await;
        assert_eq!(shown_peers, Some(peers.join(",")), "peers of {remote}");
        let api_peers = a.lookup(&remote).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(api_peers, peers, "the API's lookup changed meanwhile");

        let requests = read(&client, "#chart-requests", Some("data-series")).await;
        assert!(
            requests.is_some_and(|s| s.contains("lookup") && s.contains("announce")),
            "the requests chart has no announce and lookup lines"
        );
        let unknown = http::get(a.api, "/no-such-page").expect("GET /no-such-page");
        assert_eq!(unknown.status, 404);

        client.close().await.expect("end the WebDriver session");
    });
    let png = std::fs::read(&shot).expect("read the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");

    chromedriver.terminate();
    terminate_all(grapes.iter_mut().map(|g| &mut g.proc));
}
