//! The operator web page, embedded in the binary so it works offline: `web/index.html`,
//! `web/app.css`, `web/app.js`, and the packages pinned in `web/package.json` (copied from
//! `web/node_modules` by build.rs), each with its licence served next to it: hls.js, and the
//! map's base layer, Natural Earth country outlines from world-atlas (1:50m for a country or
//! more, 1:10m, fetched only when a track is that close) decoded by topojson-client.

use std::sync::OnceLock;

use bytes::Bytes;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::{self, Representation, Req};

struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    body: include_bytes!("../web/index.html"),
    content_type: "text/html; charset=utf-8",
};

/// An asset build.rs copied into OUT_DIR from `web/node_modules`.
macro_rules! packaged {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            body: include_bytes!(concat!(env!("OUT_DIR"), "/", $name)),
            content_type: $content_type,
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        body: include_bytes!("../web/app.css"),
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        name: "app.js",
        body: include_bytes!("../web/app.js"),
        content_type: JS,
    },
    packaged!("hls.min.js", JS),
    packaged!("hls.js.LICENSE", TEXT),
    packaged!("topojson-client.min.js", JS),
    packaged!("topojson-client.LICENSE", TEXT),
    packaged!("countries-50m.json", "application/json"),
    packaged!("countries-10m.json", "application/json"),
    packaged!("world-atlas.LICENSE", TEXT),
];

/// The time the binary started, as Last-Modified of embedded assets (they change only with it).
fn started() -> std::time::SystemTime {
    static T: OnceLock<std::time::SystemTime> = OnceLock::new();
    *T.get_or_init(std::time::SystemTime::now)
}

fn serve(a: &Asset, req: &Req, cache: &'static str) -> Response {
    static HASHES: OnceLock<Vec<(&'static str, u64)>> = OnceLock::new();
    let hashes = HASHES.get_or_init(|| {
        std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|a| (a.name, http::content_hash(a.body)))
            .collect()
    });
    let tag = hashes
        .iter()
        .find(|(n, _)| *n == a.name)
        .map_or(0, |(_, h)| *h);
    let rep = Representation::text_hashed(
        req,
        Bytes::from_static(a.body),
        tag,
        a.content_type,
        cache,
        Some(started()),
        true,
    );
    http::respond(req, rep)
}

/// `/`: revalidated every time so a new binary's page shows at once (ETag makes it cheap).
pub fn index(req: &Req) -> Response {
    serve(&INDEX, req, "no-cache")
}

/// `/static/<name>`.
pub fn asset(name: &str, req: &Req) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(a, req, "public, max-age=3600"),
        None => http::error(StatusCode::NOT_FOUND, format!("asset {name} not found")),
    }
}
