//! What the command line becomes once hostnames are resolved and the seed is drawn: the same
//! for both runtimes.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};

use grenache_core::api::GrapeConfig;
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
    pub(crate) grape: GrapeConfig,
    pub(crate) seed: [u8; 32],
}

impl Settings {
    /// Resolves the bootstrap nodes and draws the seed from the OS.
    ///
    /// # Errors
    /// A message for the user when the OS has no randomness to give.
    pub(crate) fn from_args(args: &Args) -> Result<Self, String> {
        let mut seed = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|err| format!("cannot draw a random seed from the OS: {err}"))?;
        Ok(Self {
            bind: args.bind,
            dht_port: args.dht_port,
            api_port: args.api_port,
            ws_port: args.ws_port,
            bootstrap: resolve(&args.bootstrap, args.bind),
            grape: args.grape_config(),
            seed,
        })
    }
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
                addrs.extend(found.filter(|addr| addr.is_ipv4() == bind.is_ipv4()));
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
