//! `GET /metrics` on the gateway: the proxy's counters as Prometheus text, so a proxy is
//! watched the way a Grape is. The gateway is the proxy's only plain HTTP listener, so the
//! page lives there; a proxy without `--gateway` has its counters in its stop log only.

use std::fmt::Write as _;
use std::sync::Arc;

use grenache_io::peer::StatsReader;

use crate::gateway::GatewayStats;
use crate::pubsub::RelayCounters;
use crate::route::Route;
use crate::rpc::{RouteCounters, describe};

/// Where each counter is read: handles shared with the routes, relays and gateway.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources {
    pub(crate) routes: Vec<(Route, Arc<RouteCounters>, StatsReader)>,
    pub(crate) relays: Vec<(Route, Arc<RelayCounters>)>,
}

impl Sources {
    /// The page: one family per counter, a `route` label per route.
    pub(crate) fn render(&self, gateway: GatewayStats) -> String {
        let mut out = String::with_capacity(4096);
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|(route, counters, server)| (describe(route), counters.snapshot(server.read())))
            .collect();
        let route_families: [Family<crate::RouteStats>; 6] = [
            ("requests", "Requests a route took.", |s| s.requests),
            ("replies", "Answered with the target's result.", |s| {
                s.replies
            }),
            (
                "target_errors",
                "Answered with the target's own error, unchanged.",
                |s| s.target_errors,
            ),
            (
                "proxy_errors",
                "Answered with an ERR_PROXY error of the proxy's own.",
                |s| s.proxy_errors,
            ),
            (
                "bad_frames",
                "ZeroMQ messages from callers that were not a request.",
                |s| s.bad_frames,
            ),
            (
                "dropped_connections",
                "Callers' ZeroMQ connections dropped for breaking the protocol.",
                |s| s.dropped_connections,
            ),
        ];
        labelled(&mut out, "route", &routes, &route_families);
        let relays: Vec<_> = self
            .relays
            .iter()
            .map(|(route, counters)| (describe(route), counters.snapshot()))
            .collect();
        let relay_families: [Family<crate::RelayStats>; 3] = [
            (
                "relayed",
                "Messages from the target published on the route's name.",
                |s| s.relayed,
            ),
            (
                "subscribed",
                "Times the proxy subscribed to the target.",
                |s| s.subscribed,
            ),
            (
                "unsubscribed",
                "Times it dropped the subscription (nobody listened).",
                |s| s.unsubscribed,
            ),
        ];
        labelled(&mut out, "pubsub", &relays, &relay_families);
        let g = gateway;
        for (name, help, value) in [
            (
                "requests",
                "Gateway calls made (well-formed requests).",
                g.requests,
            ),
            ("replies", "Gateway calls answered 200.", g.replies),
            (
                "target_errors",
                "Gateway calls answered with the service's error.",
                g.target_errors,
            ),
            (
                "call_errors",
                "Gateway calls that failed on the proxy's side.",
                g.call_errors,
            ),
            (
                "bad_requests",
                "Gateway requests refused before any call.",
                g.bad_requests,
            ),
            ("streams", "Event streams opened.", g.streams),
            ("streams_ended", "Event streams ended.", g.streams_ended),
        ] {
            let name = format!("grenache_proxy_gateway_{name}_total");
            family(&mut out, &name, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// A counter family: its name's middle, its help, and how to read it from a snapshot.
type Family<S> = (&'static str, &'static str, fn(&S) -> u64);

/// `grenache_proxy_{kind}_{name}_total`, one sample per route.
fn labelled<S>(out: &mut String, kind: &str, rows: &[(String, S)], families: &[Family<S>]) {
    for (name, help, value) in families {
        let name = format!("grenache_proxy_{kind}_{name}_total");
        family(out, &name, help);
        for (route, stats) in rows {
            sample(out, &name, route, value(stats));
        }
    }
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
}

fn sample(out: &mut String, name: &str, route: &str, value: u64) {
    let _ = writeln!(out, "{name}{{route=\"{}\"}} {value}", escape(route));
}

/// A label value as Prometheus' text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_value_cannot_break_out_of_its_quotes() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn an_idle_proxy_renders_every_gateway_family() {
        let text = Sources::default().render(GatewayStats {
            requests: 3,
            ..GatewayStats::default()
        });

        assert!(text.contains("# TYPE grenache_proxy_gateway_requests_total counter\n"));
        assert!(text.contains("\ngrenache_proxy_gateway_requests_total 3\n"));
        assert!(text.contains("# TYPE grenache_proxy_route_requests_total counter\n"));
    }
}
