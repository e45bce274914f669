//! Low-Latency HLS as ingestd serves it: the parts of every stream this
//! node ingests stay in its memory ([`streamcore::ll`]), and its HTTP port
//! answers `GET /ll/<stream>/<file>`:
//!
//! - `ll.m3u8`, with the blocking reload of RFC 8216bis 6.2.5.2
//!   (`_HLS_msn`, `_HLS_part`) and delta updates (`_HLS_skip=YES|v2`);
//! - `ll-init-<g>.mp4`, `ll-<msn>.<part>.m4s` (a request for the hinted part
//!   is held until it exists) and `ll-<msn>.m4s`.
//!
//! Every request marks the stream's rendition wanted: with `--low-latency on` a stream makes
//! parts only while someone asks (from its next segment; a first playlist request is held until
//! the first segment is complete, which players need), so thousands of unwatched dashcams cost no muxing and no memory.
//! A held request is a future waiting on the stream's `Notify`, woken by
//! the media worker after every change: no thread and no buffer per viewer,
//! and the bytes are shared `Bytes`, never copied per request. Requests are
//! held at most three target durations (then 503), and answered at once
//! when the stream ends. hlsd forwards its `/live/<stream>/ll.m3u8` here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use streamcore::ll::{parse_file_name, Fetch, LlFile, LlPlaylist, LlStore, Readiness};
use tokio::sync::Notify;
use warp::http::header::HeaderValue;
use warp::http::StatusCode;
use warp::reply::Response;

/// One stream's low-latency rendition and its change notification.
struct Entry {
    store: Arc<LlStore>,
    notify: Arc<Notify>,
}

/// Outcomes of requests, for `/metrics`.
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    too_far: AtomicU64,
    timeout: AtomicU64,
    missing: AtomicU64,
    bad: AtomicU64,
    held: AtomicI64,
}

/// The streams whose parts this node holds, shared by the media workers
/// (which register streams as they open them) and the HTTP handlers.
#[derive(Default)]
pub struct LlRegistry {
    streams: RwLock<HashMap<String, Arc<Entry>>>,
    counters: Counters,
}

/// Keeps a stream registered while it lives; dropping it unregisters the
/// stream (unless a newer store of the same name replaced it).
pub struct LlRegistration {
    registry: Arc<LlRegistry>,
    name: String,
    store: Arc<LlStore>,
}

impl Drop for LlRegistration {
    fn drop(&mut self) {
        let mut map = self.registry.streams.write().expect("ll registry poisoned");
        if map
            .get(&self.name)
            .is_some_and(|e| Arc::ptr_eq(&e.store, &self.store))
        {
            if let Some(e) = map.remove(&self.name) {
                // Requests held on it answer now (ended or gone).
                e.notify.notify_waiters();
            }
        }
    }
}

impl LlRegistry {
    /// Serves `store` as stream `name` until the registration is dropped.
    pub fn register(self: &Arc<Self>, name: &str, store: Arc<LlStore>) -> LlRegistration {
        let notify = Arc::new(Notify::new());
        let n = notify.clone();
        store.set_listener(Box::new(move || n.notify_waiters()));
        let old = self.streams.write().expect("ll registry poisoned").insert(
            name.to_string(),
            Arc::new(Entry {
                store: store.clone(),
                notify,
            }),
        );
        if let Some(old) = old {
            old.notify.notify_waiters();
        }
        LlRegistration {
            registry: self.clone(),
            name: name.to_string(),
            store,
        }
    }

    fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.streams
            .read()
            .expect("ll registry poisoned")
            .get(name)
            .cloned()
    }

    /// Prometheus text of the rendition's gauges and counters.
    pub fn render_metrics(&self) -> String {
        let (streams, bytes) = {
            let map = self.streams.read().expect("ll registry poisoned");
            let bytes: usize = map
                .values()
                .map(|e| e.store.read(LlPlaylist::bytes_held))
                .sum();
            (map.len(), bytes)
        };
        let c = &self.counters;
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP ingestd_ll_streams Streams with a low-latency rendition (ll.m3u8) in memory.\n# TYPE ingestd_ll_streams gauge\n");
        out.push_str(&format!("ingestd_ll_streams {streams}\n"));
        out.push_str("# HELP ingestd_ll_bytes_held Bytes of low-latency parts and init segments held in memory.\n# TYPE ingestd_ll_bytes_held gauge\n");
        out.push_str(&format!("ingestd_ll_bytes_held {bytes}\n"));
        out.push_str("# HELP ingestd_ll_blocked_requests Low-latency requests held waiting for a playlist update or a part.\n# TYPE ingestd_ll_blocked_requests gauge\n");
        out.push_str(&format!(
            "ingestd_ll_blocked_requests {}\n",
            c.held.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP ingestd_ll_requests_total Low-latency requests by outcome (too_far: 400 for a request beyond what the specification allows; timeout: 503 after three target durations; missing: 404).\n# TYPE ingestd_ll_requests_total counter\n");
        for (result, v) in [
            ("ok", &c.ok),
            ("too_far", &c.too_far),
            ("timeout", &c.timeout),
            ("missing", &c.missing),
            ("bad_request", &c.bad),
        ] {
            out.push_str(&format!(
                "ingestd_ll_requests_total{{result=\"{result}\"}} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// The blocking-reload directives of a playlist request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    msn: Option<u64>,
    part: Option<u32>,
    skip: bool,
}

fn parse_directives(query: &str) -> Result<Directives, String> {
    let mut d = Directives::default();
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("query: {e}"))?;
    for (k, v) in pairs {
        match &*k {
            "_HLS_msn" => {
                d.msn = Some(
                    v.parse()
                        .map_err(|_| format!("_HLS_msn={v:?} is not a number"))?,
                )
            }
            "_HLS_part" => {
                d.part = Some(
                    v.parse()
                        .map_err(|_| format!("_HLS_part={v:?} is not a number"))?,
                )
            }
            "_HLS_skip" => match v.as_str() {
                "YES" | "v2" => d.skip = true,
                _ => return Err(format!("_HLS_skip={v:?}: expected YES or v2")),
            },
            // Anything else (a token a proxy left on) is not ours to judge.
            _ => {}
        }
    }
    if d.part.is_some() && d.msn.is_none() {
        return Err("_HLS_part without _HLS_msn".into());
    }
    Ok(d)
}

const MPEGURL: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";

/// An answer before it becomes an HTTP response (tests read it as is).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    /// The store's own `Bytes` for media: shared, not copied.
    body: Bytes,
}

impl Answer {
    fn into_response(self) -> Response {
        let mut r = Response::new(self.body.into());
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static(self.content_type));
        h.insert("cache-control", HeaderValue::from_static(self.cache));
        r
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    body: Bytes,
) -> Answer {
    Answer {
        status,
        content_type,
        cache,
        body,
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Answer {
    reply(
        status,
        "text/plain; charset=utf-8",
        "no-store",
        Bytes::from(msg.into() + "\n"),
    )
}

/// One request counted in `ingestd_ll_blocked_requests` while it lives.
struct HeldGuard<'a>(&'a AtomicI64);

impl<'a> HeldGuard<'a> {
    fn new(gauge: &'a AtomicI64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        HeldGuard(gauge)
    }
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one look at the store gives a request.
enum Step {
    Answer(Answer),
    Wait,
}

impl LlRegistry {
    /// Answers `GET /ll/<stream>/<file>?<query>`.
    pub async fn serve(self: Arc<Self>, stream: String, file: String, query: String) -> Response {
        self.answer(&stream, &file, &query).await.into_response()
    }

    async fn answer(&self, stream: &str, file: &str, query: &str) -> Answer {
        let c = &self.counters;
        if !streamcore::layout::valid_stream_name(stream) {
            c.missing.fetch_add(1, Ordering::Relaxed);
            return text(StatusCode::NOT_FOUND, "no such stream");
        }
        let Some(kind) = parse_file_name(file) else {
            c.missing.fetch_add(1, Ordering::Relaxed);
            return text(StatusCode::NOT_FOUND, format!("no file {file}"));
        };
        let directives = match kind {
            LlFile::Playlist => match parse_directives(query) {
                Ok(d) => d,
                Err(e) => {
                    c.bad.fetch_add(1, Ordering::Relaxed);
                    return text(StatusCode::BAD_REQUEST, e);
                }
            },
            _ => Directives::default(),
        };
        let Some(mut entry) = self.get(stream) else {
            c.missing.fetch_add(1, Ordering::Relaxed);
            return text(
                StatusCode::NOT_FOUND,
                format!("stream {stream} has no low-latency rendition on this node"),
            );
        };
        entry.store.mark_wanted();
        let deadline = tokio::time::Instant::now() + entry.store.read(LlPlaylist::hold_limit);
        // Counts the request as held from its first wait until it ends, answered or dropped
        // (a client that hangs up drops this future mid-wait).
        let mut held: Option<HeldGuard> = None;
        let response = loop {
            let notify = entry.notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change between the look and
            // the wait is not missed.
            notified.as_mut().enable();
            match entry.store.read(|p| step(p, kind, &directives)) {
                Step::Answer(r) => break r,
                Step::Wait => {}
            }
            held.get_or_insert_with(|| HeldGuard::new(&c.held));
            let timed_out = tokio::time::timeout_at(deadline, notified).await.is_err();
            if timed_out {
                c.timeout.fetch_add(1, Ordering::Relaxed);
                break text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not available within three target durations",
                );
            }
            // The stream may have been reopened (a new store) or dropped.
            match self.get(stream) {
                Some(e) => {
                    e.store.mark_wanted();
                    entry = e;
                }
                // Closed (idle, upload complete): its last state answers
                // if it can (an ended playlist, a part made just before).
                None => match entry.store.read(|p| step(p, kind, &directives)) {
                    Step::Answer(r) => break r,
                    Step::Wait => {
                        break text(StatusCode::NOT_FOUND, format!("stream {stream} ended"))
                    }
                },
            }
        };
        drop(held);
        match response.status {
            StatusCode::OK => c.ok.fetch_add(1, Ordering::Relaxed),
            StatusCode::BAD_REQUEST => c.too_far.fetch_add(1, Ordering::Relaxed),
            StatusCode::NOT_FOUND => c.missing.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        response
    }
}

fn step(p: &LlPlaylist, kind: LlFile, d: &Directives) -> Step {
    let media = |b: Bytes, cache: &'static str| Step::Answer(reply(StatusCode::OK, MP4, cache, b));
    match kind {
        LlFile::Playlist => {
            let ready = match d.msn {
                Some(msn) => p.playlist_ready(msn, d.part),
                // A stream that makes parts on demand starts at its next segment, and a
                // playlist without a complete segment is refused by players: the first
                // request waits for one.
                None if !p.has_segment() && !p.is_ended() => Readiness::Pending,
                None => Readiness::Ready,
            };
            match ready {
                Readiness::Ready => Step::Answer(reply(
                    StatusCode::OK,
                    MPEGURL,
                    "no-cache",
                    Bytes::from(p.render(d.skip)),
                )),
                Readiness::Pending => Step::Wait,
                Readiness::TooFar => Step::Answer(text(
                    StatusCode::BAD_REQUEST,
                    "_HLS_msn/_HLS_part further ahead than the playlist allows",
                )),
            }
        }
        LlFile::Init(g) => match p.init(g) {
            Some(b) => media(b, "public, max-age=3600"),
            None => Step::Answer(text(StatusCode::NOT_FOUND, "no such init segment")),
        },
        LlFile::Part { msn, part } => match p.part(msn, part) {
            Fetch::Ready(b) => media(b, "public, max-age=60"),
            Fetch::Pending => Step::Wait,
            Fetch::Missing => Step::Answer(text(StatusCode::NOT_FOUND, "no such part")),
        },
        LlFile::Segment(msn) => match p.segment(msn) {
            Some(b) => media(b, "public, max-age=60"),
            None => Step::Answer(text(StatusCode::NOT_FOUND, "no such segment")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives() {
        assert_eq!(parse_directives("").unwrap(), Directives::default());
        assert_eq!(
            parse_directives("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&token=x").unwrap(),
            Directives {
                msn: Some(12),
                part: Some(3),
                skip: true
            }
        );
        assert!(parse_directives("_HLS_part=3").is_err());
        assert!(parse_directives("_HLS_msn=a").is_err());
        assert!(parse_directives("_HLS_msn=-1").is_err());
        assert!(parse_directives("_HLS_skip=NO").is_err());
        assert!(parse_directives("_HLS_skip=v2").unwrap().skip);
    }

    use streamcore::ll::{LlPart, LowLatencyConfig};
    use streamcore::Dur90k;

    /// Segment 0 (five 200 ms parts) complete, segment 1 with one part: the hint is `ll-1.1.m4s`.
    fn store() -> Arc<LlStore> {
        let store = LlStore::new(LlPlaylist::new(LowLatencyConfig::default(), 2));
        store.update(|p| {
            p.add_init(Bytes::from_static(b"init"));
            p.begin_segment(0, 1_700_000_000_000, false);
            for i in 0..5 {
                p.push_part(part(i == 0));
            }
            p.end_segment(None);
            p.begin_segment(1, 1_700_000_001_000, false);
            p.push_part(part(true));
        });
        store
    }

    fn part(independent: bool) -> LlPart {
        LlPart {
            duration: Dur90k::from_millis(200),
            independent,
            bytes: Bytes::from(vec![7u8; 1000]),
        }
    }

    fn registry() -> Arc<LlRegistry> {
        Arc::new(LlRegistry::default())
    }

    fn body(a: &Answer) -> &str {
        std::str::from_utf8(&a.body).unwrap()
    }

    /// Waits (a bounded while) until `n` requests are held.
    async fn until_held(reg: &LlRegistry, n: i64) {
        for _ in 0..2000 {
            if reg.counters.held.load(Ordering::Relaxed) == n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!(
            "{} held, not {n}",
            reg.counters.held.load(Ordering::Relaxed)
        );
    }

    fn spawn(
        reg: &Arc<LlRegistry>,
        file: &'static str,
        query: &'static str,
    ) -> tokio::task::JoinHandle<Answer> {
        let reg = reg.clone();
        tokio::spawn(async move { reg.answer("cam", file, query).await })
    }

    #[tokio::test]
    async fn answered_at_once() {
        let reg = registry();
        let store = store();
        let _r = reg.register("cam", store.clone());
        let a = reg.answer("cam", "ll.m3u8", "").await;
        assert_eq!(
            (a.status, a.content_type, a.cache),
            (StatusCode::OK, MPEGURL, "no-cache")
        );
        assert!(body(&a).contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ll-1.1.m4s\""));
        let a = reg.answer("cam", "ll-init-0.mp4", "").await;
        assert_eq!(
            (a.status, a.content_type, a.cache, &a.body[..]),
            (StatusCode::OK, MP4, "public, max-age=3600", &b"init"[..])
        );
        let a = reg.answer("cam", "ll-0.3.m4s", "").await;
        assert_eq!((a.status, a.cache), (StatusCode::OK, "public, max-age=60"));
        // The store's bytes, not a copy.
        let held = store.read(|p| match p.part(0, 3) {
            Fetch::Ready(b) => b,
            _ => unreachable!(),
        });
        assert_eq!(a.body.as_ptr(), held.as_ptr());
        let a = reg.answer("cam", "ll-0.m4s", "").await;
        assert_eq!((a.status, a.body.len()), (StatusCode::OK, 5000));

        for (stream, file, query, want) in [
            ("cam", "ll.m3u8", "_HLS_msn=4", StatusCode::BAD_REQUEST), // last + 3
            (
                "cam",
                "ll.m3u8",
                "_HLS_msn=1&_HLS_part=40",
                StatusCode::BAD_REQUEST,
            ),
            ("cam", "ll.m3u8", "_HLS_part=1", StatusCode::BAD_REQUEST),
            ("cam", "ll.m3u8", "_HLS_msn=one", StatusCode::BAD_REQUEST),
            ("cam", "ll-0.9.m4s", "", StatusCode::NOT_FOUND),
            ("cam", "ll-1.m4s", "", StatusCode::NOT_FOUND), // still open
            ("cam", "ll-init-1.mp4", "", StatusCode::NOT_FOUND),
            ("cam", "index.m3u8", "", StatusCode::NOT_FOUND),
            ("cam", "ll-01.m4s", "", StatusCode::NOT_FOUND),
            ("other", "ll.m3u8", "", StatusCode::NOT_FOUND),
            ("c.m", "ll.m3u8", "", StatusCode::NOT_FOUND),
        ] {
            let a = reg.answer(stream, file, query).await;
            assert_eq!(a.status, want, "{stream}/{file}?{query}: {}", body(&a));
        }
        let m = reg.render_metrics();
        for line in [
            "ingestd_ll_streams 1\n",
            "ingestd_ll_bytes_held 6004\n",
            "ingestd_ll_blocked_requests 0\n",
            "ingestd_ll_requests_total{result=\"ok\"} 4\n",
            "ingestd_ll_requests_total{result=\"too_far\"} 2\n",
            "ingestd_ll_requests_total{result=\"missing\"} 7\n",
            "ingestd_ll_requests_total{result=\"bad_request\"} 2\n",
        ] {
            assert!(m.contains(line), "{line} in {m}");
        }
    }

    /// A thousand viewers held on one stream: futures on one `Notify`, all answered by the
    /// change that makes the part, with the part's shared bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_until_the_part_exists() {
        let reg = registry();
        let store = store();
        let _r = reg.register("cam", store.clone());
        let playlists: Vec<_> = (0..1000)
            .map(|_| spawn(&reg, "ll.m3u8", "_HLS_msn=1&_HLS_part=1"))
            .collect();
        let hinted = spawn(&reg, "ll-1.1.m4s", "");
        until_held(&reg, 1001).await;
        assert!(reg
            .render_metrics()
            .contains("ingestd_ll_blocked_requests 1001\n"));
        store.update(|p| p.push_part(part(false)));
        for h in playlists {
            let a = h.await.unwrap();
            assert_eq!(a.status, StatusCode::OK);
            assert!(body(&a).contains("URI=\"ll-1.1.m4s\""), "{}", body(&a));
        }
        let a = hinted.await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        let made = store.read(|p| match p.part(1, 1) {
            Fetch::Ready(b) => b,
            _ => unreachable!(),
        });
        assert_eq!(a.body.as_ptr(), made.as_ptr());
        until_held(&reg, 0).await;
        assert!(reg
            .render_metrics()
            .contains("ingestd_ll_requests_total{result=\"ok\"} 1001\n"));
    }

    #[tokio::test]
    async fn ended_while_held() {
        let reg = registry();
        let store = store();
        let _r = reg.register("cam", store.clone());
        let playlist = spawn(&reg, "ll.m3u8", "_HLS_msn=1&_HLS_part=1");
        let hinted = spawn(&reg, "ll-1.1.m4s", "");
        until_held(&reg, 2).await;
        store.update(|p| p.end());
        let a = playlist.await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert!(body(&a).ends_with("#EXT-X-ENDLIST\n"), "{}", body(&a));
        // The hinted part will never be made.
        assert_eq!(hinted.await.unwrap().status, StatusCode::NOT_FOUND);
    }

    /// A stream dropped from memory (idle close, upload complete) answers its held requests
    /// at once, not after the hold limit.
    #[tokio::test]
    async fn closed_while_held() {
        let reg = registry();
        let store = store();
        let r = reg.register("cam", store.clone());
        let playlist = spawn(&reg, "ll.m3u8", "_HLS_msn=1&_HLS_part=1");
        until_held(&reg, 1).await;
        drop(r);
        drop(store);
        let a = tokio::time::timeout(std::time::Duration::from_secs(2), playlist)
            .await
            .expect("answered at once")
            .unwrap();
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert_eq!(
            reg.answer("cam", "ll.m3u8", "").await.status,
            StatusCode::NOT_FOUND
        );
        assert!(reg.render_metrics().contains("ingestd_ll_streams 0\n"));
    }

    /// A reopened stream (its codec changed) replaces the store; the old registration's drop
    /// leaves the new one, and held requests move to it.
    #[tokio::test]
    async fn reopened_while_held() {
        let reg = registry();
        let old = reg.register("cam", store());
        let playlist = spawn(&reg, "ll.m3u8", "_HLS_msn=1&_HLS_part=1");
        until_held(&reg, 1).await;
        let new = store();
        new.update(|p| p.push_part(part(false)));
        let _r = reg.register("cam", new);
        drop(old);
        let a = playlist.await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", body(&a));
        assert!(body(&a).contains("URI=\"ll-1.1.m4s\""));
        assert!(reg.render_metrics().contains("ingestd_ll_streams 1\n"));
    }

    /// A viewer that hangs up while held is no longer counted as held.
    #[tokio::test]
    async fn hung_up_while_held() {
        let reg = registry();
        let _r = reg.register("cam", store());
        let h = spawn(&reg, "ll.m3u8", "_HLS_msn=2");
        until_held(&reg, 1).await;
        h.abort();
        assert!(h.await.unwrap_err().is_cancelled());
        assert_eq!(reg.counters.held.load(Ordering::Relaxed), 0);
    }
}
