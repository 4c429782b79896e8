//! Counters of the Grape API and their Prometheus text rendering (format 0.0.4).

use std::fmt::Write as _;
use std::time::Duration;

use super::request::CommandKind;

/// Upper bounds of the lookup latency histogram, in seconds: a cache hit lands in the
/// first bucket, a traversal on a LAN in the middle ones, a lossy network in the last.
const LATENCY_BUCKETS: [f64; 10] = [0.0001, 0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// How an API request ended, for the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestOutcome {
    /// A result was sent.
    Ok,
    /// The request was malformed or failed validation.
    Invalid,
    /// The DHT could not do it (no nodes, all failed, remote refusal).
    Failed,
    /// A lone Grape stored the announce or put on itself only (answering Node's
    /// `"No nodes to query"`): not a failure, but nothing reached the DHT.
    Local,
    /// Refused because too many requests were in flight.
    Busy,
    /// Our own request bound ran out.
    Timeout,
    /// Refused because its client went over its requests per second.
    Limited,
}

impl RequestOutcome {
    const ALL: [RequestOutcome; 7] = [
        RequestOutcome::Ok,
        RequestOutcome::Invalid,
        RequestOutcome::Failed,
        RequestOutcome::Local,
        RequestOutcome::Busy,
        RequestOutcome::Timeout,
        RequestOutcome::Limited,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Invalid => "invalid",
            RequestOutcome::Failed => "failed",
            RequestOutcome::Local => "local",
            RequestOutcome::Busy => "busy",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Limited => "limited",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Commands plus one slot for requests that named none or could not be read.
const COMMAND_SLOTS: usize = 6;

fn command_index(kind: Option<CommandKind>) -> usize {
    match kind {
        Some(CommandKind::Announce) => 0,
        Some(CommandKind::Lookup) => 1,
        Some(CommandKind::Put) => 2,
        Some(CommandKind::Get) => 3,
        Some(CommandKind::Unannounce) => 4,
        None => 5,
    }
}

fn command_label(slot: usize) -> &'static str {
    CommandKind::ALL
        .get(slot)
        .map_or("unknown", CommandKind::as_str)
}

/// Counters of the Grape API since start.
#[derive(Clone, Debug, Default)]
pub(crate) struct ApiMetrics {
    requests: [[u64; RequestOutcome::ALL.len()]; COMMAND_SLOTS],
    lookup_buckets: [u64; LATENCY_BUCKETS.len()],
    lookup_count: u64,
    lookup_sum: Duration,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    pub(crate) coalesced: u64,
    pub(crate) traversals: u64,
    pub(crate) ws_messages: u64,
    pub(crate) replies_dropped: u64,
}

impl ApiMetrics {
    /// Counts one answered request.
    pub(crate) fn request(&mut self, kind: Option<CommandKind>, outcome: RequestOutcome) {
        if let Some(slot) = self
            .requests
            .get_mut(command_index(kind))
            .and_then(|row| row.get_mut(outcome.index()))
        {
            *slot += 1;
        }
    }

    /// Records how long a lookup took from request to reply.
    pub(crate) fn lookup_latency(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, le) in self.lookup_buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if secs <= le {
                *bucket += 1;
            }
        }
        self.lookup_count += 1;
        self.lookup_sum = self.lookup_sum.saturating_add(took);
    }

    /// Counts `n` lookups answered from a cache: each a request answered, a hit and a
    /// lookup of no duration (the first bucket), as one hit at a time would.
    pub(crate) fn cached_lookups(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(slot) = self
            .requests
            .get_mut(command_index(Some(CommandKind::Lookup)))
            .and_then(|row| row.get_mut(RequestOutcome::Ok.index()))
        {
            *slot += n;
        }
        for bucket in &mut self.lookup_buckets {
            *bucket += n;
        }
        self.lookup_count += n;
        self.cache_hits += n;
    }

    /// Requests answered per command label (every outcome), for the dashboard's rates.
    pub(crate) fn requests_by_command(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.requests
            .iter()
            .enumerate()
            .map(|(slot, row)| (command_label(slot), row.iter().sum()))
    }

    /// The lookup latency histogram: `(upper bound in seconds, cumulative count)` per
    /// bucket, then the count and sum of every lookup.
    pub(crate) fn lookup_histogram(
        &self,
    ) -> (impl Iterator<Item = (f64, u64)> + '_, u64, Duration) {
        let buckets = LATENCY_BUCKETS
            .into_iter()
            .zip(self.lookup_buckets.iter().copied());
        (buckets, self.lookup_count, self.lookup_sum)
    }

    /// Requests counted for `kind` with `outcome`.
    #[cfg(test)]
    pub(crate) fn count(&self, kind: Option<CommandKind>, outcome: RequestOutcome) -> u64 {
        self.requests
            .get(command_index(kind))
            .and_then(|row| row.get(outcome.index()))
            .copied()
            .unwrap_or(0)
    }

    /// Appends the API metrics in Prometheus text format; `inflight` and `cached` are gauges
    /// the caller owns.
    pub(crate) fn render(&self, out: &mut String, inflight: usize, cached: usize) {
        header(
            out,
            "grape_api_requests_total",
            "counter",
            "Grape API requests answered, by command and outcome.",
        );
        for (slot, row) in self.requests.iter().enumerate() {
            for outcome in RequestOutcome::ALL {
                let n = row.get(outcome.index()).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "grape_api_requests_total{{command=\"{}\",outcome=\"{}\"}} {n}",
                    command_label(slot),
                    outcome.as_str()
                );
            }
        }
        header(
            out,
            "grape_api_lookup_duration_seconds",
            "histogram",
            "Time from a lookup request to its reply.",
        );
        for (n, le) in self.lookup_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "grape_api_lookup_duration_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "grape_api_lookup_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.lookup_count
        );
        let _ = writeln!(
            out,
            "grape_api_lookup_duration_seconds_sum {}",
            self.lookup_sum.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "grape_api_lookup_duration_seconds_count {}",
            self.lookup_count
        );
        counter(
            out,
            "grape_api_lookup_cache_hits_total",
            "Lookups answered from the lookup cache.",
            self.cache_hits,
        );
        counter(
            out,
            "grape_api_lookup_cache_misses_total",
            "Lookups that needed a traversal (started or joined).",
            self.cache_misses,
        );
        counter(
            out,
            "grape_api_lookup_coalesced_total",
            "Lookups that joined a traversal already under way for the same name.",
            self.coalesced,
        );
        counter(
            out,
            "grape_api_lookup_traversals_total",
            "DHT traversals started for lookups.",
            self.traversals,
        );
        counter(
            out,
            "grape_api_ws_messages_total",
            "WebSocket API messages received.",
            self.ws_messages,
        );
        counter(
            out,
            "grape_api_replies_dropped_total",
            "Replies dropped because the adapter did not poll them (a bug in the adapter).",
            self.replies_dropped,
        );
        gauge(
            out,
            "grape_api_inflight_requests",
            "Requests waiting on the DHT.",
            inflight as u64,
        );
        gauge(
            out,
            "grape_api_lookup_cache_entries",
            "Names held in the lookup cache.",
            cached as u64,
        );
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one unlabelled counter.
pub(crate) fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Writes one unlabelled gauge.
pub(crate) fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_command_and_outcome() {
        let mut m = ApiMetrics::default();

        m.request(Some(CommandKind::Lookup), RequestOutcome::Ok);
        m.request(Some(CommandKind::Lookup), RequestOutcome::Ok);
        m.request(None, RequestOutcome::Invalid);

        let mut out = String::new();
        m.render(&mut out, 0, 0);
        assert!(out.contains("grape_api_requests_total{command=\"lookup\",outcome=\"ok\"} 2\n"));
        assert!(
            out.contains("grape_api_requests_total{command=\"unknown\",outcome=\"invalid\"} 1\n")
        );
        assert!(out.contains("grape_api_requests_total{command=\"put\",outcome=\"ok\"} 0\n"));
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let mut m = ApiMetrics::default();

        m.lookup_latency(Duration::ZERO);
        m.lookup_latency(Duration::from_millis(50));
        m.lookup_latency(Duration::from_secs(60));

        let mut out = String::new();
        m.render(&mut out, 3, 1);
        assert!(out.contains("grape_api_lookup_duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(out.contains("grape_api_lookup_duration_seconds_bucket{le=\"0.1\"} 2\n"));
        assert!(out.contains("grape_api_lookup_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(out.contains("grape_api_lookup_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("grape_api_lookup_duration_seconds_count 3\n"));
        assert!(out.contains("grape_api_inflight_requests 3\n"));
    }

    #[test]
    fn every_sample_line_follows_its_type_line() {
        let mut out = String::new();
        ApiMetrics::default().render(&mut out, 0, 0);

        let mut declared = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or("").to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert!(
                    declared.iter().any(|d| name.starts_with(d.as_str())),
                    "{line}"
                );
            }
        }
    }
}
