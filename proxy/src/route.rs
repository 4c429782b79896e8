//! A route: serve and announce NAME on one transport, call TARGET on another.
//!
//! Written `NAME@FROM[:PORT]=TARGET@TO`, FROM and TO each `http`, `ws` or `zmq`: the
//! proxy listens on PORT (any free port if left out) speaking FROM, announces NAME there,
//! and answers each request by calling TARGET, found through the Grape, over TO.

use std::str::FromStr;
use std::time::Duration;

use grenache_core::peer::{Protocol, UnknownProtocol};

/// How a request on a route reaches TARGET.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanOut {
    /// One TARGET peer per request, chosen by the client's peer choice (round robin):
    /// load spreads across TARGET's peers.
    #[default]
    One,
    /// Every TARGET peer (Grenache's `map`); the reply is the array of their results,
    /// in the order the peers were asked. A client's own `map` cannot see past the proxy
    /// (it reaches each proxy once), so fan-out is the route's job.
    Map,
}

/// One RPC route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The service the proxy announces.
    pub name: String,
    /// The transport it serves NAME on.
    pub from: Protocol,
    /// The port it serves on; 0 lets the OS pick one.
    pub port: u16,
    /// The service it calls.
    pub target: String,
    /// The transport it calls TARGET over.
    pub to: Protocol,
    /// One peer per request, or all of them.
    pub fan_out: FanOut,
    /// How long a call to TARGET may take; the proxy's default when `None`.
    pub timeout: Option<Duration>,
}

/// Why a route was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not `NAME@FROM[:PORT]=TARGET@TO`.
    #[error("route {0:?} is not NAME@FROM[:PORT]=TARGET@TO")]
    Shape(String),
    /// FROM or TO is not a transport.
    #[error("route {route:?}: {source}")]
    Transport {
        /// The route as written.
        route: String,
        /// Which name was wrong.
        source: UnknownProtocol,
    },
    /// PORT is not a number from 0 to 65535.
    #[error("route {0:?}: the port must be a number from 0 to 65535")]
    Port(String),
}

impl FromStr for Route {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || RouteError::Shape(s.to_owned());
        let (served, called) = s.split_once('=').ok_or_else(shape)?;
        // Service names may hold '@' (a Grenache name is any string): the transport is
        // what follows the last one.
        let (name, from) = served.rsplit_once('@').ok_or_else(shape)?;
        let (target, to) = called.rsplit_once('@').ok_or_else(shape)?;
        if name.is_empty() || target.is_empty() {
            return Err(shape());
        }
        let (from, port) = match from.split_once(':') {
            Some((from, port)) => {
                let port = port.parse().map_err(|_| RouteError::Port(s.to_owned()))?;
                (from, port)
            }
            None => (from, 0),
        };
        let transport = |name: &str| {
            name.parse().map_err(|source| RouteError::Transport {
                route: s.to_owned(),
                source,
            })
        };
        Ok(Route {
            name: name.to_owned(),
            from: transport(from)?,
            port,
            target: target.to_owned(),
            to: transport(to)?,
            fan_out: FanOut::One,
            timeout: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_reads_name_transports_and_port() {
        let route: Route = "rpc_echo@ws:8080=rpc_echo_zmq@zmq".parse().expect("valid");

        assert_eq!(route.name, "rpc_echo");
        assert_eq!(route.from, Protocol::Ws);
        assert_eq!(route.port, 8080);
        assert_eq!(route.target, "rpc_echo_zmq");
        assert_eq!(route.to, Protocol::Zmq);
        assert_eq!(route.fan_out, FanOut::One);
    }

    #[test]
    fn the_port_is_optional_and_names_may_hold_at_signs() {
        let route: Route = "a@b@http=c@d@zmq".parse().expect("valid");

        assert_eq!((route.name.as_str(), route.port), ("a@b", 0));
        assert_eq!(route.target, "c@d");
    }

    #[test]
    fn malformed_routes_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Route>().expect_err(s);

        assert!(matches!(err("svc@http"), RouteError::Shape(_)));
        assert!(matches!(err("@http=t@ws"), RouteError::Shape(_)));
        assert!(matches!(err("svc@tcp=t@ws"), RouteError::Transport { .. }));
        assert!(matches!(err("svc@http:99999=t@ws"), RouteError::Port(_)));
        assert!(
            err("svc@tcp=t@ws")
                .to_string()
                .contains("expected http, ws or zmq")
        );
    }
}
