//! What the command line becomes once hostnames are resolved and the seed is drawn: the same
//! for both runtimes.

use std::fs::File;
use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};

use grenache_core::api::GrapeConfig;
use grenache_core::dht::krpc::NodeInfo;
use grenache_core::dht::state::{MAX_FILE_LEN, Snapshot};
use rand::TryRngCore as _;
use rand::rngs::OsRng;

use crate::cli::{Args, Bootstrap};

/// A runtime-neutral server configuration; each runtime module turns it into its adapter's
/// `ServerConfig`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) bind: IpAddr,
    pub(crate) dht_port: u16,
    pub(crate) api_port: u16,
    pub(crate) ws_port: Option<u16>,
    pub(crate) bootstrap: Vec<SocketAddr>,
    /// Nodes from the state file, to rejoin through.
    pub(crate) known_nodes: Vec<NodeInfo>,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) grape: GrapeConfig,
    pub(crate) seed: [u8; 32],
    /// Batched reads and sends on the DHT socket (off: `--no-udp-batch`).
    pub(crate) udp_batching: bool,
}

impl Settings {
    /// Resolves the bootstrap nodes, loads the state file and draws the seed from the OS.
    ///
    /// # Errors
    /// A message for the user when the OS has no randomness to give.
    pub(crate) fn from_args(args: &Args) -> Result<Self, String> {
        let mut seed = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|err| format!("cannot draw a random seed from the OS: {err}"))?;
        let mut grape = args.grape_config();
        let mut known_nodes = Vec::new();
        if let Some(mut snapshot) = args.state.as_deref().and_then(load_state) {
            snapshot.retain(|addr| reachable(addr, args.bind));
            grape.node.id = Some(snapshot.id());
            known_nodes = snapshot.nodes().to_vec();
        }
        Ok(Self {
            bind: args.bind,
            dht_port: args.dht_port,
            api_port: args.api_port,
            ws_port: args.ws_port,
            bootstrap: resolve(&args.bootstrap, args.bind),
            known_nodes,
            state_file: args.state.clone(),
            grape,
            seed,
            udp_batching: !args.no_udp_batch,
        })
    }
}

/// Reads the state file (`--state`). Whatever is wrong with it (missing, unreadable,
/// truncated, damaged, another format) is one warning and `None`: the Grape starts afresh
/// and overwrites the file at its first save.
fn load_state(path: &Path) -> Option<Snapshot> {
    let read = File::open(path).and_then(|file| {
        let mut bytes = Vec::new();
        // One byte past the limit is enough for the decoder to call the file too large.
        file.take(MAX_FILE_LEN as u64 + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    let problem = match read.map(|bytes| Snapshot::decode(&bytes)) {
        Ok(Ok(snapshot)) => {
            tracing::info!(
                path = %path.display(),
                id = %snapshot.id(),
                nodes = snapshot.nodes().len(),
                "state loaded: keeping the node id, rejoining through the saved nodes"
            );
            return Some(snapshot);
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => "no such file".to_owned(),
        Err(err) => err.to_string(),
        Ok(Err(err)) => err.to_string(),
    };
    tracing::warn!(
        path = %path.display(),
        problem,
        "state file (--state) not loaded; starting with a new node id"
    );
    None
}

/// Whether the DHT socket bound to `bind` can reach `addr`: the same address family.
fn reachable(addr: &SocketAddr, bind: IpAddr) -> bool {
    addr.is_ipv4() == bind.is_ipv4()
}

/// Resolves every bootstrap node to the addresses the DHT socket can reach (those of the bind
/// address's family). A name that does not resolve is logged and skipped, not fatal: a Grape
/// alone still works, and other nodes may bootstrap from it.
fn resolve(nodes: &Bootstrap, bind: IpAddr) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for (host, port) in &nodes.0 {
        match (host.as_str(), *port).to_socket_addrs() {
            Ok(found) => {
                let before = addrs.len();
                addrs.extend(found.filter(|addr| reachable(addr, bind)));
                if addrs.len() == before {
                    tracing::warn!(%host, port, "bootstrap node (--bn) has no address of the bind address's family; skipped");
                }
            }
            Err(err) => {
                tracing::warn!(%host, port, %err, "cannot resolve bootstrap node (--bn); skipped");
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_keeps_the_bind_family_and_dedupes() {
        // Arrange
        let nodes = Bootstrap(vec![
            ("127.0.0.1".to_owned(), 20001),
            ("::1".to_owned(), 20002),
            ("127.0.0.1".to_owned(), 20001),
        ]);

        // Act
        let v4 = resolve(&nodes, IpAddr::from([0, 0, 0, 0]));

        // Assert
        assert_eq!(v4, [SocketAddr::from(([127, 0, 0, 1], 20001))]);
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("grape-{name}-{}.state", std::process::id()));
        std::fs::write(&path, bytes).expect("write a temp file");
        path
    }

    #[test]
    fn state_file_gives_the_id_and_the_nodes_of_the_bind_family() {
        // Arrange
        let v4 = NodeInfo {
            id: grenache_core::NodeId([1; 20]),
            addr: SocketAddr::from(([127, 0, 0, 1], 20001)),
        };
        let v6 = NodeInfo {
            id: grenache_core::NodeId([2; 20]),
            addr: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 20002)),
        };
        let id = grenache_core::NodeId([9; 20]);
        let path = temp_file("good", &Snapshot::new(id, [v4, v6]).encode());
        let path_arg = path.to_string_lossy().into_owned();
        let args =
            crate::cli::tests::parse(&["-b", "127.0.0.1", "--state", &path_arg]).expect("parses");

        // Act
        let settings = Settings::from_args(&args);
        let _ = std::fs::remove_file(&path);

        // Assert
        let settings = settings.expect("settings");
        assert_eq!(settings.grape.node.id, Some(id));
        assert_eq!(settings.known_nodes, [v4]);
        assert_eq!(settings.state_file, Some(path));
    }

    #[test]
    fn damaged_or_missing_state_file_is_a_fresh_start() {
        // Arrange
        let mut good = Snapshot::new(grenache_core::NodeId([9; 20]), []).encode();
        let last = good.len() - 1;
        good[last] ^= 1;
        let damaged = temp_file("damaged", &good);
        let missing = damaged.with_extension("missing");

        // Act
        let loaded = [load_state(&damaged), load_state(&missing)];
        let _ = std::fs::remove_file(&damaged);

        // Assert
        assert_eq!(loaded, [None, None]);
    }

    #[test]
    fn resolve_skips_names_that_do_not_resolve() {
        // Arrange: `.invalid` never resolves (RFC 6761).
        let nodes = Bootstrap(vec![
            ("no-such-host.invalid".to_owned(), 1),
            ("127.0.0.1".to_owned(), 2),
        ]);

        // Act
        let addrs = resolve(&nodes, IpAddr::from([0, 0, 0, 0]));

        // Assert
        assert_eq!(addrs, [SocketAddr::from(([127, 0, 0, 1], 2))]);
    }
}
