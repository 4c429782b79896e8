//! The command line: the Node Grape's flags, long and short forms alike, plus our own.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use grenache_core::api::{self, ApiLimits, GrapeConfig};
use grenache_core::dht::defence::{self, Ban, Defences, Limit};
use grenache_io::RuntimeKind;

/// A Grenache Grape: a BitTorrent mainline DHT node with the Grape HTTP API.
///
/// Flags follow the Node.js Grape (`grape --dp 20001 --aph 30001 --bn '127.0.0.1:20002'`).
/// Unlike it, every flag has a default, so `grape` alone starts a lone, working Grape.
/// Logging goes to stderr; set its level with RUST_LOG (default `info`).
#[derive(Debug, Parser)]
#[command(name = "grape", version)]
pub(crate) struct Args {
    /// UDP port of the DHT node.
    #[arg(long = "dp", visible_alias = "dht_port", default_value_t = 20001)]
    pub(crate) dht_port: u16,

    /// TCP port of the HTTP API.
    #[arg(
        long = "aph",
        visible_alias = "api_port",
        alias = "api_port_http",
        default_value_t = 30001
    )]
    pub(crate) api_port: u16,

    /// TCP port of the WebSocket API (`[rid, type, data]` messages); off unless given.
    #[arg(long = "apw", visible_alias = "api_ws_port")]
    pub(crate) ws_port: Option<u16>,

    /// DHT nodes to join through: comma-separated host:port, may be empty. Hostnames are
    /// resolved once, at start.
    #[arg(
        long = "bn",
        visible_alias = "bootstrap",
        default_value = "",
        value_parser = parse_bootstrap
    )]
    pub(crate) bootstrap: Bootstrap,

    /// Address to listen on, for the DHT and the APIs alike.
    #[arg(
        short = 'b',
        long = "bind",
        visible_alias = "b",
        default_value = "0.0.0.0"
    )]
    pub(crate) bind: IpAddr,

    /// DHT lookup concurrency: queries in flight per traversal [default: the core's].
    #[arg(long = "dc", visible_alias = "dht_concurrency")]
    pub(crate) dht_concurrency: Option<usize>,

    /// Most distinct service names (info-hashes) stored; past it the stalest is evicted and
    /// counted [default: 1000000]. (In the Node Grape this bounds bittorrent-dht's lookup
    /// tables, and its peer store silently keeps only about 20,000 names.)
    #[arg(long = "dht_maxTables")]
    pub(crate) dht_max_tables: Option<usize>,

    /// Most BEP-44 values stored [default: the core's, 5000].
    #[arg(long = "dht_maxValues")]
    pub(crate) dht_max_values: Option<usize>,

    /// Lifetime of an announced peer, in milliseconds [default: the core's, 120000].
    #[arg(long = "dpa", visible_alias = "dht_peer_maxAge")]
    pub(crate) dht_peer_max_age: Option<u64>,

    /// How long a lookup's answer is reused for the same name, in milliseconds; 0 turns the
    /// cache off [default: the core's, 500].
    #[arg(long = "cache_maxAge")]
    pub(crate) cache_max_age: Option<u64>,

    /// Interval of routing-table upkeep (pinging quiet nodes, dropping dead ones), in
    /// milliseconds [default: the core's, 60000].
    #[arg(long = "dnl", visible_alias = "dht_nodeLiveness")]
    pub(crate) dht_node_liveness: Option<u64>,

    /// Largest HTTP API body, in bytes (bigger gets 413), and largest WebSocket message.
    #[arg(long = "check_maxPayloadSize", default_value_t = 8192)]
    pub(crate) max_payload: usize,

    /// File that keeps the node id and routing table across restarts: loaded at start (a
    /// restarted Grape keeps its id and rejoins without --bn), saved every 5 minutes and on
    /// SIGINT/SIGTERM. A missing or damaged file is a warning and a fresh start.
    #[arg(long = "state", value_name = "FILE")]
    pub(crate) state: Option<PathBuf>,

    /// Async runtime to run on: smol or tokio.
    #[arg(long, value_name = "RUNTIME", default_value_t = DEFAULT_RUNTIME)]
    pub(crate) runtime: RuntimeKind,

    /// Read and send DHT datagrams one per system call, not in batches (recvmmsg, GSO):
    /// the baseline that shows what batching buys in a benchmark.
    #[arg(long = "no-udp-batch")]
    pub(crate) no_udp_batch: bool,

    #[command(flatten)]
    pub(crate) defences: DefenceArgs,
}

/// The defences' flags (docs/operators.md, "Defences"); 0 turns one off.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Defences")]
pub(crate) struct DefenceArgs {
    /// DHT datagrams per second one source IP (an IPv6 /64) may send; past it they are
    /// dropped and counted (0: no limit).
    #[arg(long = "dht-rate-limit", value_name = "N", default_value_t = defence::DEFAULT_RATE)]
    pub(crate) rate_limit: u32,

    /// Seconds a source that keeps going over the rate limit is ignored (0: never banned).
    #[arg(long = "dht-ban", value_name = "SECS", default_value_t = defence::DEFAULT_BAN_FOR.as_secs())]
    pub(crate) ban_secs: u64,

    /// Bytes per second of DHT answers to all queriers together; past it queries go
    /// unanswered and are counted (0: no budget).
    #[arg(long = "dht-reply-budget", value_name = "BYTES", default_value_t = defence::DEFAULT_REPLY_BUDGET)]
    pub(crate) reply_budget: u32,

    /// Bytes per second of DHT answers to one source IP: no one can turn the Grape into a
    /// reflection amplifier (0: no budget).
    #[arg(
        long = "dht-reply-budget-per-source",
        value_name = "BYTES",
        default_value_t = defence::DEFAULT_REPLY_BUDGET_PER_SOURCE
    )]
    pub(crate) reply_budget_per_source: u32,

    /// Nodes of one public /24 (IPv4) or /64 (IPv6) each routing-table bucket may hold
    /// (1: libtorrent's rule; 0: no limit). Private and loopback addresses are exempt.
    #[arg(long = "dht-nodes-per-subnet", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub(crate) nodes_per_subnet: u8,

    /// Announced peers one source IP may hold here; past it its own stalest announce is
    /// evicted and counted (0: no cap).
    #[arg(long = "dht-max-announces-per-source", value_name = "N", default_value_t = defence::DEFAULT_MAX_PEERS_PER_SOURCE)]
    pub(crate) max_announces_per_source: usize,

    /// BEP-44 items one source IP may hold here; past it its own stalest item is evicted
    /// and counted (0: no cap).
    #[arg(long = "dht-max-items-per-source", value_name = "N", default_value_t = defence::DEFAULT_MAX_ITEMS_PER_SOURCE)]
    pub(crate) max_items_per_source: usize,

    /// Apply the limits to loopback senders too (by default they are exempt: they are on
    /// this box already).
    #[arg(long = "limit-loopback")]
    pub(crate) limit_loopback: bool,

    /// API connections (HTTP and WebSocket together) one client IP (an IPv6 /64) may hold
    /// open; past it a new one is closed unread and counted (0: no cap).
    #[arg(
        long = "api-connections-per-client",
        value_name = "N",
        default_value_t = api::DEFAULT_CONNECTIONS_PER_CLIENT
    )]
    pub(crate) api_connections_per_client: usize,

    /// API requests per second one client IP (an IPv6 /64) may make; past it they are
    /// answered 429 ERR_GRAPE_RATE_LIMIT and counted (0: no limit).
    #[arg(long = "api-rate-limit", value_name = "N", default_value_t = api::DEFAULT_REQUESTS_PER_SECOND)]
    pub(crate) api_rate_limit: u32,

    /// Apply the API limits to loopback clients too (by default they are exempt: a Grape's
    /// clients are on its own host). Apart from --limit-loopback, which is the DHT port's.
    #[arg(long = "api-limit-loopback")]
    pub(crate) api_limit_loopback: bool,
}

impl DefenceArgs {
    /// The core's defences these flags ask for.
    pub(crate) fn defences(&self) -> Defences {
        let mut d = Defences::default();
        d.rate_limit = Limit::from_flag(self.rate_limit);
        d.ban = (self.ban_secs > 0).then(|| Ban {
            duration: Duration::from_secs(self.ban_secs),
            ..Ban::default()
        });
        d.reply_budget = Limit::from_flag(self.reply_budget);
        d.reply_budget_per_source = Limit::from_flag(self.reply_budget_per_source);
        d.one_per_subnet = self.nodes_per_subnet > 0;
        d.max_peers_per_source =
            (self.max_announces_per_source > 0).then_some(self.max_announces_per_source);
        d.max_items_per_source =
            (self.max_items_per_source > 0).then_some(self.max_items_per_source);
        d.exempt_loopback = !self.limit_loopback;
        d
    }

    /// The API's per-client limits these flags ask for.
    pub(crate) fn api_limits(&self) -> ApiLimits {
        let mut l = ApiLimits::default();
        l.connections_per_client =
            (self.api_connections_per_client > 0).then_some(self.api_connections_per_client);
        l.requests_per_second = Limit::from_flag(self.api_rate_limit);
        l.exempt_loopback = !self.api_limit_loopback;
        l
    }
}

/// tokio when it is built in, else smol. tokio's edge-triggered reactor serves an HTTP
/// request in 2 system calls where async-io's one-shot one takes about 11, so the tokio
/// build answers the Grape API about a third faster (docs/benchmarks.md); on the DHT port
/// and in memory the two are level.
pub(crate) const DEFAULT_RUNTIME: RuntimeKind = if cfg!(feature = "tokio") {
    RuntimeKind::Tokio
} else {
    RuntimeKind::Smol
};

/// Whether this build has `runtime` (each needs its Cargo feature).
pub(crate) fn is_built_in(runtime: RuntimeKind) -> bool {
    match runtime {
        RuntimeKind::Smol => cfg!(feature = "smol"),
        RuntimeKind::Tokio => cfg!(feature = "tokio"),
    }
}

/// The `--bn` list, parsed but not yet resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bootstrap(pub(crate) Vec<(String, u16)>);

/// Splits `host:port,host:port` (IPv6 hosts in brackets); empty items are skipped, as the
/// Node Grape does.
fn parse_bootstrap(list: &str) -> Result<Bootstrap, String> {
    let mut nodes = Vec::new();
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let Some((host, port)) = item.rsplit_once(':') else {
            return Err(format!("`{item}` has no port (expected host:port)"));
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(format!("`{item}` has no host (expected host:port)"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("`{item}` has no valid port (1 to 65535)"))?;
        nodes.push((host.to_owned(), port));
    }
    Ok(Bootstrap(nodes))
}

impl Args {
    /// The core's settings: its defaults, overridden by the flags that were given.
    pub(crate) fn grape_config(&self) -> GrapeConfig {
        let mut config = GrapeConfig::default();
        if let Some(alpha) = self.dht_concurrency {
            config.node.alpha = alpha.max(1);
        }
        if let Some(max) = self.dht_max_tables {
            config.node.max_peer_keys = max;
        }
        if let Some(max) = self.dht_max_values {
            config.node.max_items = max;
        }
        if let Some(ms) = self.dht_peer_max_age {
            config.node.peer_max_age = Duration::from_millis(ms);
        }
        if let Some(ms) = self.dht_node_liveness {
            // Zero would make upkeep run on every wake-up.
            config.node.maintenance_interval = Duration::from_millis(ms.max(1000));
        }
        if let Some(ms) = self.cache_max_age {
            config.lookup_cache = Duration::from_millis(ms);
        }
        config.max_payload = self.max_payload;
        config.node.defences = self.defences.defences();
        config.api_limits = self.defences.api_limits();
        config
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("grape").chain(args.iter().copied()))
    }

    #[test]
    fn no_flags_gives_the_default_ports() {
        // Arrange, Act
        let args = parse(&[]).expect("parses");

        // Assert
        assert_eq!(args.dht_port, 20001);
        assert_eq!(args.api_port, 30001);
        assert_eq!(args.ws_port, None);
        assert_eq!(args.bootstrap, Bootstrap::default());
        assert_eq!(args.bind, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(args.max_payload, 8192);
        assert_eq!(args.runtime, DEFAULT_RUNTIME);
        assert_eq!(args.state, None);
    }

    #[test]
    fn node_grape_command_line_parses() {
        // Arrange
        let line = [
            "--dp",
            "20002",
            "--aph",
            "40001",
            "--bn",
            "127.0.0.1:20001,localhost:20003",
        ];

        // Act
        let args = parse(&line).expect("parses");

        // Assert
        assert_eq!(args.dht_port, 20002);
        assert_eq!(args.api_port, 40001);
        assert_eq!(
            args.bootstrap.0,
            [
                ("127.0.0.1".to_owned(), 20001),
                ("localhost".to_owned(), 20003)
            ]
        );
    }

    #[test]
    fn long_aliases_match_the_short_forms() {
        // Arrange
        let line = [
            "--dht_port=1",
            "--api_port=2",
            "--bootstrap=",
            "--b=127.0.0.1",
            "--dht_concurrency=4",
            "--dht_peer_maxAge=1000",
            "--dht_nodeLiveness=5",
            "--api_ws_port=3",
        ];

        // Act
        let args = parse(&line).expect("parses");

        // Assert
        assert_eq!(
            (args.dht_port, args.api_port, args.ws_port),
            (1, 2, Some(3))
        );
        assert_eq!(args.bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(args.dht_concurrency, Some(4));
        assert_eq!(args.dht_peer_max_age, Some(1000));
        assert!(args.bootstrap.0.is_empty());
    }

    #[test]
    fn short_bind_and_old_http_port_alias_parse() {
        // Arrange, Act
        let args = parse(&["-b", "127.0.0.1", "--api_port_http", "5"]).expect("parses");

        // Assert
        assert_eq!(args.bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(args.api_port, 5);
    }

    #[test]
    fn bootstrap_list_skips_empty_items_and_unwraps_ipv6() {
        // Arrange, Act
        let nodes = parse_bootstrap(" ,[::1]:20001,, a.example:7 ,").expect("parses");

        // Assert
        assert_eq!(
            nodes.0,
            [("::1".to_owned(), 20001), ("a.example".to_owned(), 7)]
        );
    }

    #[test]
    fn bootstrap_item_without_a_valid_port_is_refused() {
        // Arrange, Act, Assert
        assert!(parse_bootstrap("127.0.0.1").is_err());
        assert!(parse_bootstrap("127.0.0.1:0").is_err());
        assert!(parse_bootstrap("127.0.0.1:70000").is_err());
        assert!(parse_bootstrap(":20001").is_err());
        assert!(parse(&["--bn", "nohost"]).is_err());
    }

    #[test]
    fn flags_override_the_core_defaults() {
        // Arrange
        let args = parse(&[
            "--dc",
            "7",
            "--dht_maxTables",
            "10",
            "--dht_maxValues",
            "11",
            "--dpa",
            "1500",
            "--check_maxPayloadSize",
            "100",
            "--cache_maxAge",
            "0",
            "--dnl",
            "300000",
        ])
        .expect("parses");

        // Act
        let config = args.grape_config();

        // Assert
        assert_eq!(config.node.alpha, 7);
        assert_eq!(config.node.max_peer_keys, 10);
        assert_eq!(config.node.max_items, 11);
        assert_eq!(config.node.peer_max_age, Duration::from_millis(1500));
        assert_eq!(config.max_payload, 100);
        assert_eq!(config.lookup_cache, Duration::ZERO);
        assert_eq!(config.node.maintenance_interval, Duration::from_secs(300));
    }

    #[test]
    fn defences_are_on_by_default_and_each_flag_turns_one_off() {
        // Arrange
        let defaults = parse(&[]).expect("parses").grape_config().node.defences;
        let off = parse(&[
            "--dht-rate-limit",
            "0",
            "--dht-ban",
            "0",
            "--dht-reply-budget",
            "0",
            "--dht-reply-budget-per-source=0",
            "--dht-nodes-per-subnet",
            "0",
            "--dht-max-announces-per-source=0",
            "--dht-max-items-per-source=0",
            "--limit-loopback",
        ])
        .expect("parses");

        // Act
        let off = off.grape_config().node.defences;

        // Assert
        assert_eq!(defaults, Defences::default());
        assert_eq!((off.rate_limit, off.ban), (None, None));
        assert_eq!(
            (off.reply_budget, off.reply_budget_per_source),
            (None, None)
        );
        assert!(!off.one_per_subnet);
        assert_eq!(
            (off.max_peers_per_source, off.max_items_per_source),
            (None, None)
        );
        assert!(!off.exempt_loopback);
        assert!(parse(&["--dht-nodes-per-subnet", "2"]).is_err());
    }

    #[test]
    fn api_limits_are_on_by_default_and_each_flag_turns_one_off() {
        // Arrange
        let defaults = parse(&[]).expect("parses").grape_config().api_limits;
        let off = parse(&[
            "--api-connections-per-client=0",
            "--api-rate-limit",
            "0",
            "--api-limit-loopback",
        ])
        .expect("parses");
        let set = parse(&["--api-connections-per-client=3", "--api-rate-limit=7"]).expect("parses");

        // Act
        let off = off.grape_config().api_limits;
        let set = set.grape_config().api_limits;

        // Assert
        assert_eq!(defaults, ApiLimits::default());
        assert_eq!(
            (off.connections_per_client, off.requests_per_second),
            (None, None)
        );
        assert!(!off.exempt_loopback);
        assert!(
            defaults.exempt_loopback,
            "apart from the DHT's --limit-loopback"
        );
        assert_eq!(set.connections_per_client, Some(3));
        assert_eq!(set.requests_per_second, Some(Limit::per_second(7)));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Args::command().debug_assert();
    }
}
