//! `/metrics` in the Prometheus text format: what hlsd asked of the object store (requests by
//! kind, cache hits, bytes, errors), so an operator can hold the store's bill and the cache's
//! effect against the request budget in docs/storage.md. Counts only, no stream names: open
//! like ingestd's, for scrapers.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{get_or_head, request, with_state};
use crate::http::{self, Representation, Req};
use crate::server::AppState;

const TEXT: &str = "text/plain; version=0.0.4";

pub(super) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(get_or_head())
        .and(with_state(state))
        .and(request())
        .map(|st: Arc<AppState>, req: Req| {
            let rep =
                Representation::text(&req, Bytes::from(render(&st)), TEXT, "no-store", None, true);
            http::respond(&req, rep)
        })
}

fn render(st: &AppState) -> String {
    let mut o = String::new();
    let Some(s) = st.media.store_stats() else {
        let _ = writeln!(
            o,
            "# HELP hlsd_store_enabled 1 when live media is read from an object store.\n# TYPE hlsd_store_enabled gauge\nhlsd_store_enabled 0"
        );
        return o;
    };
    let _ = writeln!(
        o,
        "# HELP hlsd_store_enabled 1 when live media is read from an object store.\n# TYPE hlsd_store_enabled gauge\nhlsd_store_enabled 1"
    );
    let _ = writeln!(
        o,
        "# HELP hlsd_store_gets_total GET requests sent to the object store.\n# TYPE hlsd_store_gets_total counter"
    );
    for (kind, v) in [("playlist", &s.playlist_gets), ("segment", &s.segment_gets)] {
        let _ = writeln!(
            o,
            "hlsd_store_gets_total{{kind=\"{kind}\"}} {}",
            v.load(Relaxed)
        );
    }
    for (name, help, v) in [
        (
            "hlsd_store_cache_hits_total",
            "Reads answered from the cache or joined to a request in flight.",
            &s.cache_hits,
        ),
        (
            "hlsd_store_bytes_read_total",
            "Bytes read from the object store.",
            &s.bytes_read,
        ),
        (
            "hlsd_store_errors_total",
            "Object store reads that failed (not counting missing objects).",
            &s.errors,
        ),
    ] {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Relaxed)
        );
    }
    o
}
