//! The dashboard: which `GET` paths are ours, the page itself, and the errors for the rest.
//!
//! The page is one file, `index.html`, with its CSS and script inline, compiled into the
//! binary: it works offline and behind any firewall, and it only ever reads `/status`.
//! Commands are still served whatever the method (Node Grape semantics), so only paths
//! that name no command are ours to route; nothing routed here changes state.

use serde_json::json;

use super::request::CommandKind;
use super::{CONTENT_TYPE_JSON, Reply, RequestId};

/// The page served at `/` and `/ui`.
pub(crate) const PAGE: &str = include_str!("index.html");

/// `Content-Type` of the page.
pub const CONTENT_TYPE_HTML: &str = "text/html; charset=utf-8";

/// Longest request target (path and query) a `GET` may have. Our pages take no query
/// worth more than a few bytes and a `/watch` query is under 400; longer is a client bug or
/// a probe, answered 414 before anything else reads it.
pub const MAX_GET_TARGET: usize = 2048;

/// Where a `GET` or `HEAD` that names no command goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The dashboard page.
    Page,
    /// Its JSON snapshot.
    Status,
    /// `/health`.
    Health,
    /// `/metrics`.
    Metrics,
    /// An HTTP `/watch`.
    Watch,
    /// A path that is none of these: 404.
    NotFound,
    /// A target over [`MAX_GET_TARGET`]: 414.
    TooLong,
}

/// Routes a `GET` or `HEAD` request target; `None` for a command path, served as a
/// command whatever the method.
pub(crate) fn route(target: &str) -> Option<Route> {
    if target.len() > MAX_GET_TARGET {
        return Some(Route::TooLong);
    }
    Some(match target.split('?').next().unwrap_or_default() {
        "/" | "/ui" | "/ui/" => Route::Page,
        "/status" => Route::Status,
        "/health" => Route::Health,
        "/metrics" => Route::Metrics,
        "/watch" => Route::Watch,
        _ if CommandKind::from_path(target).is_some() => return None,
        _ => Route::NotFound,
    })
}

/// The page as a reply.
pub(crate) fn page(req: RequestId) -> Reply {
    Reply {
        req,
        status: 200,
        content_type: CONTENT_TYPE_HTML,
        body: PAGE.as_bytes().to_vec(),
        more: false,
    }
}

/// The JSON error for a `GET` we do not serve: 404 for an unknown path, 414 for a target
/// too long to read.
pub(crate) fn refusal(req: RequestId, route: Route) -> Reply {
    let (status, error, message) = match route {
        Route::TooLong => (
            414,
            "ERR_GRAPE_URI_TOO_LONG",
            format!("request target over {MAX_GET_TARGET} bytes"),
        ),
        _ => (
            404,
            "ERR_GRAPE_NOT_FOUND",
            "no such page: the dashboard is at / (or /ui), its data at /status, and \
             /health and /metrics are there too; commands are POSTed"
                .to_owned(),
        ),
    };
    Reply {
        req,
        status,
        content_type: CONTENT_TYPE_JSON,
        body: json!({ "error": error, "message": message })
            .to_string()
            .into_bytes(),
        more: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_what_they_name() {
        for (target, want) in [
            ("/", Some(Route::Page)),
            ("/ui", Some(Route::Page)),
            ("/ui?x=1", Some(Route::Page)),
            ("/status", Some(Route::Status)),
            ("/health", Some(Route::Health)),
            ("/metrics?", Some(Route::Metrics)),
            ("/watch?name=a", Some(Route::Watch)),
            ("/lookup", None),
            ("/nope", Some(Route::NotFound)),
            ("/status/x", Some(Route::NotFound)),
            ("", Some(Route::NotFound)),
        ] {
            assert_eq!(route(target), want, "{target:?}");
        }
        let long = format!("/status?{}", "a".repeat(MAX_GET_TARGET));
        assert_eq!(route(&long), Some(Route::TooLong));
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.contains("/status"));
        // No CDN, no remote fonts or scripts: the page must work offline.
        for remote in ["http://", "https://", "//cdn"] {
            assert!(!PAGE.contains(remote), "the page loads {remote}");
        }
    }
}
