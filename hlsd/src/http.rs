//! HTTP semantics for what hlsd serves (RFC 9110/9111): conditional requests (ETag with
//! If-None-Match, Last-Modified with If-Modified-Since), single byte ranges (206/416, If-Range),
//! HEAD, gzip content coding for text, and JSON errors. Bodies are either in memory (playlists,
//! embedded assets) or a file streamed in fixed-size chunks read off the runtime's threads.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// Chunk size for streamed file bodies: large enough that one blocking-pool hop per chunk is
/// cheap at GB/s, small enough that a thousand concurrent viewers stay within a few hundred MB.
pub const FILE_CHUNK: usize = 256 * 1024;

/// What the handlers know about the request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
}

impl Req {
    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// True when the client accepts gzip (`gzip` or `*` with a non-zero q-value).
    pub fn accepts_gzip(&self) -> bool {
        let Some(ae) = self.header(header::ACCEPT_ENCODING) else {
            return false;
        };
        ae.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
    }
}

/// Parses a raw query string into decoded key/value pairs (last one wins).
pub fn parse_query(raw: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Where a representation's bytes come from.
#[derive(Debug)]
pub enum Source {
    Mem(Bytes),
    File { file: Arc<File>, len: u64 },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Mem(b) => b.len() as u64,
            Source::File { len, .. } => *len,
        }
    }
}

/// One representation of a resource, with the metadata its headers need.
#[derive(Debug)]
pub struct Representation {
    pub source: Source,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    /// Quoted strong entity tag.
    pub etag: String,
    pub last_modified: Option<SystemTime>,
    pub gzip: bool,
    /// The resource has a gzip variant, so caches must key on Accept-Encoding.
    pub vary_encoding: bool,
}

impl Representation {
    /// An in-memory body; gzip-encodes it when the client accepts that and `compressible`.
    pub fn text(
        req: &Req,
        body: Bytes,
        content_type: &'static str,
        cache_control: &'static str,
        last_modified: Option<SystemTime>,
        compressible: bool,
    ) -> Self {
        let tag = content_hash(&body);
        Self::text_hashed(
            req,
            body,
            tag,
            content_type,
            cache_control,
            last_modified,
            compressible,
        )
    }

    /// As [`Representation::text`] with the body's [`content_hash`] already known (embedded
    /// assets hash once, not per request).
    pub fn text_hashed(
        req: &Req,
        body: Bytes,
        tag: u64,
        content_type: &'static str,
        cache_control: &'static str,
        last_modified: Option<SystemTime>,
        compressible: bool,
    ) -> Self {
        if compressible && req.accepts_gzip() && body.len() > 64 {
            if let Some(gz) = gzip_cached(tag, &body) {
                return Self {
                    source: Source::Mem(gz),
                    content_type,
                    cache_control,
                    etag: format!("\"{tag:016x}-gz\""),
                    last_modified,
                    gzip: true,
                    vary_encoding: true,
                };
            }
        }
        Self {
            source: Source::Mem(body),
            content_type,
            cache_control,
            etag: format!("\"{tag:016x}\""),
            last_modified,
            gzip: false,
            vary_encoding: compressible,
        }
    }
}

/// Gzip of `body`, from a small cache keyed by its hash and length: every viewer of a live
/// stream asks for the same playlist version, so it is compressed once, not per request
/// (compressing per request capped gzip playlists at a fifth of the identity rate).
fn gzip_cached(hash: u64, body: &[u8]) -> Option<Bytes> {
    const MAX_ENTRIES: usize = 1024;
    static CACHE: OnceLock<Mutex<HashMap<(u64, usize), Bytes>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (hash, body.len());
    if let Some(gz) = cache.lock().ok()?.get(&key) {
        return Some(gz.clone());
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3 + 32),
        flate2::Compression::fast(),
    );
    enc.write_all(body).ok()?;
    let gz = Bytes::from(enc.finish().ok()?);
    let mut map = cache.lock().ok()?;
    // Old playlist versions are never asked for again; dropping all at the bound is enough.
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, gz.clone());
    Some(gz)
}

/// A 64-bit SipHash of the body, for ETags of generated text.
pub fn content_hash(body: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// Strong ETag of a file from its identity and version: inode, size and mtime in ns.
pub fn file_etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "\"{:x}-{:x}-{:x}{:08x}\"",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

fn etag_matches(list: &str, etag: &str) -> bool {
    // If-None-Match uses weak comparison: ignore W/ on either side.
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = strip(etag);
    list.split(',').any(|t| t.trim() == "*" || strip(t) == ours)
}

enum RangeSpec {
    None,
    Satisfiable(u64, u64),
    Unsatisfiable,
}

/// Single `bytes=` range; anything we don't serve as one range (several ranges, other units,
/// bad syntax) is ignored, which RFC 9110 allows: the client gets the whole representation.
fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::None;
    };
    if spec.contains(',') {
        return RangeSpec::None;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::None;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    if a.is_empty() {
        let Some(n) = num(b) else {
            return RangeSpec::None;
        };
        if n == 0 || len == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Satisfiable(len.saturating_sub(n), len - 1);
    }
    let Some(start) = num(a) else {
        return RangeSpec::None;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(e) if e >= start => e,
            _ => return RangeSpec::None,
        }
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Satisfiable(start, end.min(len - 1))
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Answers `req` with `rep`: 304, 206, 416 or 200, HEAD without a body.
pub fn respond(req: &Req, rep: Representation) -> Response {
    let len = rep.source.len();
    let mut headers = HeaderMap::new();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(&mut headers, header::ETAG, &rep.etag);
    set(&mut headers, header::CACHE_CONTROL, rep.cache_control);
    if let Some(lm) = rep.last_modified {
        set(&mut headers, header::LAST_MODIFIED, &http_date(lm));
    }
    if rep.vary_encoding {
        set(&mut headers, header::VARY, "Accept-Encoding");
    }

    let not_modified = match req.header(header::IF_NONE_MATCH) {
        Some(inm) => etag_matches(inm, &rep.etag),
        None => match (
            req.header(header::IF_MODIFIED_SINCE)
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            rep.last_modified,
        ) {
            // HTTP dates have 1 s resolution: compare at that resolution.
            (Some(ims), Some(lm)) => secs(lm) <= secs(ims),
            _ => false,
        },
    };
    if not_modified {
        return build(StatusCode::NOT_MODIFIED, headers, None);
    }

    set(&mut headers, header::CONTENT_TYPE, rep.content_type);
    set(&mut headers, header::ACCEPT_RANGES, "bytes");
    if rep.gzip {
        set(&mut headers, header::CONTENT_ENCODING, "gzip");
    }

    let if_range_ok = match req.header(header::IF_RANGE) {
        None => true,
        Some(v) if v.trim().starts_with('"') => v.trim() == rep.etag,
        Some(v) => match (httpdate::parse_http_date(v).ok(), rep.last_modified) {
            (Some(d), Some(lm)) => secs(d) == secs(lm),
            _ => false,
        },
    };
    let range = match req.header(header::RANGE) {
        Some(r) if if_range_ok => parse_range(r, len),
        _ => RangeSpec::None,
    };
    let (status, start, end) = match range {
        RangeSpec::None => (StatusCode::OK, 0, len.saturating_sub(1)),
        RangeSpec::Satisfiable(s, e) => {
            set(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes {s}-{e}/{len}"),
            );
            (StatusCode::PARTIAL_CONTENT, s, e)
        }
        RangeSpec::Unsatisfiable => {
            set(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes */{len}"),
            );
            set(&mut headers, header::CONTENT_TYPE, "application/json");
            let body = Bytes::from(format!(
                "{{\"error\":\"range not satisfiable\",\"status\":416,\"length\":{len}}}"
            ));
            set(
                &mut headers,
                header::CONTENT_LENGTH,
                &body.len().to_string(),
            );
            headers.remove(header::CONTENT_ENCODING);
            return build(
                StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                (!req.is_head()).then_some(Body::Mem(body)),
            );
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    set(&mut headers, header::CONTENT_LENGTH, &count.to_string());
    if req.is_head() || count == 0 {
        return build(status, headers, None);
    }
    let body = match rep.source {
        Source::Mem(b) => Body::Mem(b.slice(start as usize..=end as usize)),
        Source::File { file, .. } => Body::File { file, start, count },
    };
    build(status, headers, Some(body))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

enum Body {
    Mem(Bytes),
    File {
        file: Arc<File>,
        start: u64,
        count: u64,
    },
}

fn build(status: StatusCode, headers: HeaderMap, body: Option<Body>) -> Response {
    let mut resp = match body {
        None => Response::new(Bytes::new().into()),
        Some(Body::Mem(b)) => Response::new(b.into()),
        Some(Body::File { file, start, count }) => {
            use warp::Reply as _;
            warp::reply::stream(file_stream(file, start, count)).into_response()
        }
    };
    *resp.status_mut() = status;
    // Keep the Content-Length we computed: a streamed body has no size hint of its own.
    resp.headers_mut().extend(headers);
    resp
}

/// `count` bytes of `file` from `start`, in [`FILE_CHUNK`] pieces read with `pread` on the
/// blocking pool, so a slow client holds one chunk of memory, not the file.
fn file_stream(
    file: Arc<File>,
    start: u64,
    count: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync {
    futures_util::stream::try_unfold((file, start, count), |(file, pos, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = left.min(FILE_CHUNK as u64) as usize;
        let f = file.clone();
        let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
            let mut buf = BytesMut::zeroed(want);
            f.read_exact_at(&mut buf, pos)?;
            Ok(buf.freeze())
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Some((chunk, (file, pos + want as u64, left - want as u64))))
    })
}

/// A JSON error body `{"error": msg, "status": code}`.
pub fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    json(
        status,
        &serde_json::json!({ "error": msg.to_string(), "status": status.as_u16() }),
    )
}

/// A JSON body, never cached (API answers change as devices move).
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    let body =
        serde_json::to_vec(value).unwrap_or_else(|_| b"{\"error\":\"serialization\"}".to_vec());
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// CORS for every answer: media and API are public to any origin (tokens guard media when set).
pub fn add_cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified, Content-Encoding",
        ),
    );
    resp
}

/// Answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) or a plain OPTIONS.
pub fn preflight(req: &Req) -> Response {
    let mut resp = Response::new(Bytes::new().into());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
    );
    let allow_headers = req
        .headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_static("Range, If-None-Match, If-Modified-Since, Content-Type")
        });
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(matches!(
            parse_range("bytes=0-9", 100),
            RangeSpec::Satisfiable(0, 9)
        ));
        assert!(matches!(
            parse_range("bytes=90-", 100),
            RangeSpec::Satisfiable(90, 99)
        ));
        assert!(matches!(
            parse_range("bytes=-10", 100),
            RangeSpec::Satisfiable(90, 99)
        ));
        assert!(matches!(
            parse_range("bytes=-1000", 100),
            RangeSpec::Satisfiable(0, 99)
        ));
        assert!(matches!(
            parse_range("bytes=50-1000", 100),
            RangeSpec::Satisfiable(50, 99)
        ));
        assert!(matches!(
            parse_range("bytes=100-", 100),
            RangeSpec::Unsatisfiable
        ));
        assert!(matches!(
            parse_range("bytes=-0", 100),
            RangeSpec::Unsatisfiable
        ));
        assert!(matches!(parse_range("bytes=5-1", 100), RangeSpec::None));
        assert!(matches!(parse_range("bytes=0-1,5-6", 100), RangeSpec::None));
        assert!(matches!(parse_range("items=0-1", 100), RangeSpec::None));
        assert!(matches!(parse_range("bytes=+1-2", 100), RangeSpec::None));
    }

    #[test]
    fn gzip_negotiation() {
        let req = |ae: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(ae).unwrap());
            Req {
                method: Method::GET,
                headers,
                query: HashMap::new(),
            }
        };
        assert!(req("gzip, deflate, br").accepts_gzip());
        assert!(req("br;q=1.0, GZIP;q=0.5").accepts_gzip());
        assert!(!req("gzip;q=0").accepts_gzip());
        assert!(!req("br").accepts_gzip());
        assert!(req("*").accepts_gzip());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("from=2026-11-25T09%3A00%3A00Z&limit=5&flag&token=a-b_c");
        assert_eq!(q["from"], "2026-11-25T09:00:00Z");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["flag"], "");
        assert_eq!(q["token"], "a-b_c");
    }
}
