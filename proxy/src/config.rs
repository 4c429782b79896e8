//! The proxy's settings: from flags, from a TOML file, or both (a flag wins over the file;
//! routes from both are served).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use grenache_io::{CorsOrigin, WebServerConfig};
use serde::Deserialize;

use crate::route::{FanOut, Route, RouteError};

/// The Grape a proxy uses when told nothing (Node's default).
pub const DEFAULT_GRAPE: &str = "http://127.0.0.1:30001";
/// How long a call to TARGET may take when the route does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lookup of TARGET is reused. Shorter than a Node client's 10 s: a proxy
/// fronts many callers, so a target restarted on a new port should be found soon.
pub const DEFAULT_LOOKUP_CACHE: Duration = Duration::from_secs(2);

/// Everything a proxy needs to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The Grape's HTTP API (lookups and announces).
    pub grape: String,
    /// Where the routes listen.
    pub bind: IpAddr,
    /// A route's call timeout unless it sets its own.
    pub timeout: Duration,
    /// How long a lookup of a TARGET is reused.
    pub lookup_cache: Duration,
    /// Driver tasks of each outgoing client: a proxy's calls spread over that many cores.
    /// `None`: one per thread ([`Settings::shards`]); more than the threads buys nothing.
    pub client_shards: Option<usize>,
    /// HTTP connections of each outgoing client to one TARGET peer at once; more calls wait
    /// for one. `None`: the peer client's default (64). A proxy gathers many callers'
    /// requests onto few peers, so one with more calls in flight than this needs more.
    pub connections_per_peer: Option<usize>,
    /// How long each connection, on both sides, keeps its thread polling after a wake-up
    /// instead of sleeping (the peers' `busy_poll`; docs/design.md, "Busy polling"): lower
    /// latency at few calls in flight on cores the proxy does not share, for up to this
    /// much CPU per wake-up. `None` (the default): off.
    pub busy_poll: Option<Duration>,
    /// Tokio worker threads (the `grenache-proxy` binary's runtime). Default 1: every task on
    /// one thread, which costs up to half the CPU per request of two (no hand-off between
    /// tasks wakes another thread, and each wake finds more replies to write at once); more
    /// lets a proxy with more traffic than one core serves use more cores.
    pub threads: usize,
    /// The RPC routes.
    pub rpc: Vec<Route>,
    /// The PUB/SUB routes (FROM and TO each `ws` or `zmq`).
    pub pubsub: Vec<Route>,
    /// The port of the plain HTTP gateway, if one is served.
    pub gateway: Option<u16>,
    /// How the gateway bounds its callers.
    pub gateway_limits: GatewayLimits,
}

/// How the gateway bounds its callers: what reaches it from curl and browsers is
/// untrusted, so its bodies and connections are capped as the Grape API's are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayLimits {
    /// A longer request body is refused with 413 before it is read. Default 1 MiB.
    pub max_body: usize,
    /// Open connections at most; more wait to be accepted. Default 1024.
    pub max_connections: usize,
    /// The origin browsers may call from (CORS). Default none: same origin only.
    pub cors: Option<CorsOrigin>,
    /// An event stream quiet this long gets a comment line, so that intermediaries that
    /// close idle responses keep it open. Default 15 s.
    pub keep_alive: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        let web = WebServerConfig::new();
        GatewayLimits {
            max_body: web.max_body,
            max_connections: web.max_connections,
            cors: None,
            keep_alive: Duration::from_secs(15),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grape: DEFAULT_GRAPE.to_owned(),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            timeout: DEFAULT_TIMEOUT,
            lookup_cache: DEFAULT_LOOKUP_CACHE,
            client_shards: None,
            connections_per_peer: None,
            busy_poll: None,
            threads: 1,
            rpc: Vec::new(),
            pubsub: Vec::new(),
            gateway: None,
            gateway_limits: GatewayLimits::default(),
        }
    }
}

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    grape: Option<String>,
    bind: Option<IpAddr>,
    timeout_ms: Option<u64>,
    lookup_cache_ms: Option<u64>,
    client_shards: Option<usize>,
    connections_per_peer: Option<usize>,
    busy_poll_us: Option<u64>,
    threads: Option<usize>,
    gateway: Option<u16>,
    gateway_max_body: Option<usize>,
    gateway_max_connections: Option<usize>,
    gateway_cors: Option<String>,
    gateway_keep_alive_ms: Option<u64>,
    #[serde(default)]
    rpc: Vec<FileRoute>,
    #[serde(default)]
    pubsub: Vec<FilePubSub>,
}

/// One `[[pubsub]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePubSub {
    route: String,
}

/// One `[[rpc]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    route: String,
    timeout_ms: Option<u64>,
    #[serde(default)]
    map: bool,
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not the TOML this expects.
    #[error("{path}: {source}")]
    Toml {
        /// The file.
        path: String,
        /// What is wrong, and where.
        source: toml::de::Error,
    },
    /// The file's `gateway_cors` is not an origin.
    #[error("{path}: gateway_cors: {reason}")]
    Cors {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A route in the file is malformed.
    #[error("{path}: {source}")]
    Route {
        /// The file.
        path: String,
        /// What is wrong.
        source: RouteError,
    },
}

impl Settings {
    /// Driver tasks of each outgoing client: as set, else one per thread.
    pub fn shards(&self) -> usize {
        self.client_shards.unwrap_or(self.threads).max(1)
    }

    /// Adds what the TOML file at `path` sets: its values where `self` has defaults, and
    /// its routes after those already there.
    ///
    /// # Errors
    /// When the file cannot be read or holds something unexpected.
    pub fn read_file(mut self, path: &Path) -> Result<Settings, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|source| ConfigError::Toml {
            path: name.clone(),
            source,
        })?;
        let defaults = Settings::default();
        if let Some(grape) = file.grape.filter(|_| self.grape == defaults.grape) {
            self.grape = grape;
        }
        if let Some(bind) = file.bind.filter(|_| self.bind == defaults.bind) {
            self.bind = bind;
        }
        if let Some(ms) = file.timeout_ms.filter(|_| self.timeout == defaults.timeout) {
            self.timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = file
            .lookup_cache_ms
            .filter(|_| self.lookup_cache == defaults.lookup_cache)
        {
            self.lookup_cache = Duration::from_millis(ms);
        }
        if let Some(n) = file.threads.filter(|_| self.threads == defaults.threads) {
            self.threads = n.max(1);
        }
        if let Some(n) = file.client_shards.filter(|_| self.client_shards.is_none()) {
            self.client_shards = Some(n.max(1));
        }
        if let Some(n) = (file.connections_per_peer).filter(|_| self.connections_per_peer.is_none())
        {
            self.connections_per_peer = Some(n.max(1));
        }
        if let Some(us) = file.busy_poll_us.filter(|_| self.busy_poll.is_none()) {
            self.busy_poll = busy_poll_window(us);
        }
        if self.gateway.is_none() {
            self.gateway = file.gateway;
        }
        let limits = &mut self.gateway_limits;
        let default_limits = &defaults.gateway_limits;
        if let Some(n) = file
            .gateway_max_body
            .filter(|_| limits.max_body == default_limits.max_body)
        {
            limits.max_body = n;
        }
        if let Some(n) = (file.gateway_max_connections)
            .filter(|_| limits.max_connections == default_limits.max_connections)
        {
            limits.max_connections = n;
        }
        if let Some(ms) =
            (file.gateway_keep_alive_ms).filter(|_| limits.keep_alive == default_limits.keep_alive)
        {
            limits.keep_alive = Duration::from_millis(ms);
        }
        if let Some(origin) = file.gateway_cors.filter(|_| limits.cors.is_none()) {
            let origin = origin.parse().map_err(|reason| ConfigError::Cors {
                path: name.clone(),
                reason,
            })?;
            limits.cors = Some(origin);
        }
        for entry in file.rpc {
            let mut route: Route = entry.route.parse().map_err(|source| ConfigError::Route {
                path: name.clone(),
                source,
            })?;
            route.timeout = entry.timeout_ms.map(Duration::from_millis);
            if entry.map {
                route.fan_out = FanOut::Map;
            }
            self.rpc.push(route);
        }
        for entry in file.pubsub {
            let route = entry.route.parse().map_err(|source| ConfigError::Route {
                path: name.clone(),
                source,
            })?;
            self.pubsub.push(route);
        }
        Ok(self)
    }
}

/// A busy-poll window from microseconds; 0 is off.
pub fn busy_poll_window(us: u64) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(us))
}

#[cfg(test)]
mod tests {
    use super::*;
    use grenache_core::peer::Protocol;

    fn file_with(text: &str) -> (std::path::PathBuf, Result<Settings, ConfigError>) {
        let path = std::env::temp_dir().join(format!(
            "grenache-proxy-config-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).expect("write the test file");
        let read = Settings::default().read_file(&path);
        std::fs::remove_file(&path).expect("remove the test file");
        (path, read)
    }

    #[test]
    fn a_file_sets_the_grape_and_routes() {
        let (_, read) = file_with(
            r#"
grape = "http://10.0.0.1:30001"
timeout_ms = 2500
client_shards = 7
connections_per_peer = 64
busy_poll_us = 50
gateway = 8088

[[rpc]]
route = "echo@ws=echo_zmq@zmq"

[[rpc]]
route = "all@http:9000=workers@http"
map = true
timeout_ms = 800

[[pubsub]]
route = "ticks@zmq=ticks_ws@ws"
"#,
        );

        let settings = read.expect("valid");
        assert_eq!(settings.grape, "http://10.0.0.1:30001");
        assert_eq!(settings.timeout, Duration::from_millis(2500));
        assert_eq!(settings.gateway, Some(8088));
        assert_eq!(settings.shards(), 7);
        assert_eq!(settings.connections_per_peer, Some(64));
        assert_eq!(settings.busy_poll, Some(Duration::from_micros(50)));
        assert_eq!(settings.rpc.len(), 2);
        assert_eq!(settings.rpc[0].to, Protocol::Zmq);
        assert_eq!(settings.rpc[1].fan_out, FanOut::Map);
        assert_eq!(settings.rpc[1].timeout, Some(Duration::from_millis(800)));
        assert_eq!(settings.pubsub.len(), 1);
        assert_eq!(settings.pubsub[0].from, Protocol::Zmq);
    }

    #[test]
    fn a_file_sets_the_gateway_limits_and_refuses_a_bad_origin() {
        let (_, read) = file_with(
            "gateway = 8088\ngateway_max_body = 4096\ngateway_max_connections = 16\n\
             gateway_cors = \"*\"\ngateway_keep_alive_ms = 500\n",
        );
        let (_, bad) = file_with("gateway_cors = \"ftp://example.com\"\n");

        let limits = read.expect("valid").gateway_limits;
        assert_eq!((limits.max_body, limits.max_connections), (4096, 16));
        assert_eq!(limits.cors, Some("*".parse().expect("an origin")));
        assert_eq!(limits.keep_alive, Duration::from_millis(500));
        let bad = bad.expect_err("not an origin").to_string();
        assert!(
            bad.contains("gateway_cors") && bad.contains("scheme://host"),
            "{bad}"
        );
    }

    #[test]
    fn a_bad_file_names_itself_and_the_fault() {
        let (path, unknown) = file_with("[[rpc]]\nroute = \"a@http=b@ws\"\nbogus = 1\n");
        let (_, bad_route) = file_with("[[rpc]]\nroute = \"a@smtp=b@ws\"\n");

        let unknown = unknown.expect_err("unknown key").to_string();
        assert!(unknown.contains(&path.display().to_string()), "{unknown}");
        assert!(unknown.contains("bogus"), "{unknown}");
        assert!(matches!(bad_route, Err(ConfigError::Route { .. })));
    }

    #[test]
    fn client_shards_follow_the_threads_unless_set() {
        let (_, default) = file_with("grape = \"http://10.0.0.1:30001\"\n");
        let (_, following) = file_with("threads = 3\n");
        let (_, both) = file_with("threads = 3\nclient_shards = 2\n");

        let default = default.expect("valid");
        assert_eq!((default.threads, default.shards()), (1, 1));
        let following = following.expect("valid");
        assert_eq!((following.threads, following.shards()), (3, 3));
        let both = both.expect("valid");
        assert_eq!((both.threads, both.shards()), (3, 2));
    }

    #[test]
    fn a_files_client_shards_stand_beside_threads_from_a_flag() {
        let path = std::env::temp_dir().join(format!(
            "grenache-proxy-config-{}-shards-beside-threads.toml",
            std::process::id()
        ));
        std::fs::write(&path, "client_shards = 2\n").expect("write the test file");
        let flags = Settings {
            threads: 3,
            ..Settings::default()
        };
        let read = flags.read_file(&path);
        std::fs::remove_file(&path).expect("remove the test file");

        let read = read.expect("valid");
        assert_eq!((read.threads, read.shards()), (3, 2));
    }
}
