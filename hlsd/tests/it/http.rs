//! HTTP tests of every hlsd route over a real socket on 127.0.0.1, with segments encoded by
//! the ffmpeg CLI and an in-process hlsd.

use crate::common;

use std::io::Read as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{
    default_url, device_records, install, now_ms, raw, seg_pdt, session_records, start,
    write_catalog, write_playlist, Clips, ServerDb,
};
use reqwest::header;
use reqwest::StatusCode;
use streamcore::catalog::Record;
use streamcore::playlist::{format_pdt, MediaPlaylist};

const SIM: &str = "132570034500";

fn clips() -> &'static Clips {
    static C: OnceLock<Clips> = OnceLock::new();
    C.get_or_init(|| Clips::make(10, 6))
}

/// A data dir with a live device stream `<SIM>_1` (window: all segments, discontinuity before
/// the second encode), a finished device stream `<SIM>_2`, and a raw stream `cam-raw`; and the
/// catalog rows ingestd would have written for them in the default SQLite catalog
/// `DATA/catalog.sqlite`: the device with 50 fixes, one session per stream, every segment, and
/// an overspeed incident on channel 1 over `[pdt0 + 2 s, pdt0 + 7 s)`.
struct Fixture {
    dir: tempfile::TempDir,
    pdt0: i64,
    /// Session ids: the open `<SIM>_1`, the finished `<SIM>_2`.
    sid1: String,
    sid2: String,
    incident: i64,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let c = clips();
        let pdt0 = now_ms() - 60_000;
        let all = c.all();
        let live = install(&data, &format!("{SIM}_1"), &all);
        write_playlist(&live, &all, &[c.b[0].seq], 0, pdt0, false);
        let done = install(&data, &format!("{SIM}_2"), &c.a);
        write_playlist(&done, &c.a, &[], 0, pdt0, true);
        let rawdir = install(&data, "cam-raw", &c.a[..3]);
        write_playlist(&rawdir, &c.a[..3], &[], 0, pdt0, false);

        let sid1 = format!("{SIM}_1-{pdt0}-00000000000000a1");
        let sid2 = format!("{SIM}_2-{pdt0}-00000000000000a2");
        let mut records = device_records(SIM, now_ms(), pdt0, 50);
        records.extend(session_records(
            &sid1,
            &format!("{SIM}_1"),
            &all,
            &[c.b[0].seq],
            pdt0,
            false,
        ));
        records.extend(session_records(
            &sid2,
            &format!("{SIM}_2"),
            &c.a,
            &[],
            pdt0,
            true,
        ));
        records.extend(session_records(
            "cam-raw-1-0000000000000003",
            "cam-raw",
            &c.a[..3],
            &[],
            pdt0,
            false,
        ));
        records.push(Record::Incident {
            sim: SIM.into(),
            channel: Some(1),
            from_ms: pdt0 + 2000,
            to_ms: pdt0 + 7000,
            kind: "overspeed".into(),
            source: "0x0200 alarm".into(),
            session_id: None,
            open: false,
            alarm: 0,
            lat: None,
            lon: None,
            video_state: None,
            video_reason: None,
        });
        let cat = write_catalog(&default_url(&data), &records);
        let incident = cat.incidents(SIM, i64::MIN, i64::MAX).unwrap()[0].id;
        // A secret beside the data dir that traversal attempts aim at.
        std::fs::write(dir.path().join("secret.ts"), "TOPSECRET").unwrap();
        std::fs::write(dir.path().join("index.m3u8"), "#EXTM3U\nTOPSECRET\n").unwrap();
        Fixture {
            dir,
            pdt0,
            sid1,
            sid2,
            incident,
        }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn hdr(r: &reqwest::Response, name: header::HeaderName) -> &str {
    r.headers()
        .get(&name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("missing header {name}"))
}

fn seg_bytes(seq: u64) -> Vec<u8> {
    let s = clips().all().into_iter().find(|s| s.seq == seq).unwrap();
    std::fs::read(s.path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_playlist_and_segments_with_correct_headers() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |_| {}).await;
    let base = format!("http://{}", srv.addr);
    let c = client();

    let r = c
        .get(format!("{base}/live/{SIM}_1/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        hdr(&r, header::CONTENT_TYPE),
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(hdr(&r, header::CACHE_CONTROL), "public, max-age=1");
    assert_eq!(hdr(&r, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    assert!(hdr(&r, header::ETAG).starts_with('"'));
    assert!(hdr(&r, header::LAST_MODIFIED).ends_with("GMT"));
    let on_disk =
        std::fs::read_to_string(fx.data().join(format!("live/{SIM}_1/index.m3u8"))).unwrap();
    assert_eq!(r.text().await.unwrap(), on_disk);

    let r = c
        .get(format!("{base}/live/{SIM}_1/1.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(&r, header::CONTENT_TYPE), "video/mp2t");
    assert_eq!(
        hdr(&r, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(hdr(&r, header::ACCEPT_RANGES), "bytes");
    let expected = seg_bytes(1);
    assert_eq!(hdr(&r, header::CONTENT_LENGTH), expected.len().to_string());
    let body = r.bytes().await.unwrap();
    assert!(body.len() > 300 * 1024, "a real 2 s segment");
    assert_eq!(&body[..], &expected[..], "segment bytes identical");
    assert_eq!(body[0], 0x47, "MPEG-TS sync byte");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_ranges_206_and_416() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |_| {}).await;
    let url = format!("http://{}/live/{SIM}_1/2.ts", srv.addr);
    let c = client();
    let full = seg_bytes(2);
    let len = full.len();

    let r = c
        .get(&url)
        .header(header::RANGE, "bytes=0-187")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(hdr(&r, header::CONTENT_RANGE), format!("bytes 0-187/{len}"));
    assert_eq!(hdr(&r, header::CONTENT_LENGTH), "188");
    assert_eq!(&r.bytes().await.unwrap()[..], &full[..188]);

    // Spans several streaming chunks.
    let (a, b) = (1000usize, 400_000usize);
    let r = c
        .get(&url)
        .header(header::RANGE, format!("bytes={a}-{b}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        hdr(&r, header::CONTENT_RANGE),
        format!("bytes {a}-{b}/{len}")
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &full[a..=b]);

    let r = c
        .get(&url)
        .header(header::RANGE, "bytes=-188")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        hdr(&r, header::CONTENT_RANGE),
        format!("bytes {}-{}/{len}", len - 188, len - 1)
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &full[len - 188..]);

    let r = c
        .get(&url)
        .header(header::RANGE, format!("bytes={}-", len - 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &full[len - 10..]);

    let r = c
        .get(&url)
        .header(header::RANGE, format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hdr(&r, header::CONTENT_RANGE), format!("bytes */{len}"));

    // Several ranges: we answer with the whole body, which RFC 9110 permits.
    let r = c
        .get(&url)
        .header(header::RANGE, "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), len);

    // If-Range with a stale validator: whole body.
    let r = c
        .get(&url)
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Ranges on playlists too.
    let r = c
        .get(format!("http://{}/live/{SIM}_1/index.m3u8", srv.addr))
        .header(header::RANGE, "bytes=0-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.text().await.unwrap(), "#EXTM3U");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_304_last_modified_and_head() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |_| {}).await;
    let c = client();
    for path in [
        format!("/live/{SIM}_1/index.m3u8"),
        format!("/live/{SIM}_1/3.ts"),
    ] {
        let url = format!("http://{}{path}", srv.addr);
        let r = c.get(&url).send().await.unwrap();
        let etag = hdr(&r, header::ETAG).to_owned();
        let lm = hdr(&r, header::LAST_MODIFIED).to_owned();
        let len = r.bytes().await.unwrap().len();

        let r = c
            .get(&url)
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(hdr(&r, header::ETAG), etag);
        assert!(r.bytes().await.unwrap().is_empty());

        let r = c
            .get(&url)
            .header(header::IF_NONE_MATCH, "\"other\", W/\"x\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        let r = c
            .get(&url)
            .header(header::IF_MODIFIED_SINCE, &lm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
        let r = c
            .get(&url)
            .header(header::IF_MODIFIED_SINCE, "Thu, 01 Jan 2015 00:00:00 GMT")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        let r = c.head(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hdr(&r, header::CONTENT_LENGTH), len.to_string(), "{path}");
        assert_eq!(hdr(&r, header::ETAG), etag);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    // A new playlist version gets a new ETag.
    let url = format!("http://{}/live/cam-raw/index.m3u8", srv.addr);
    let e1 = hdr(&c.get(&url).send().await.unwrap(), header::ETAG).to_owned();
    let dir = fx.data().join("live/cam-raw");
    write_playlist(&dir, &clips().a[1..4], &[], 0, fx.pdt0, false);
    install(&fx.data(), "cam-raw", &clips().a[..4]);
    let r = c
        .get(&url)
        .header(header::IF_NONE_MATCH, &e1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(hdr(&r, header::ETAG), e1);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("#EXT-X-MEDIA-SEQUENCE:1\n"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_for_playlists_not_segments() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |_| {}).await;
    let c = client();
    let url = format!("http://{}/live/{SIM}_1/index.m3u8", srv.addr);
    let plain = c.get(&url).send().await.unwrap();
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    let plain_etag = hdr(&plain, header::ETAG).to_owned();
    let plain = plain.text().await.unwrap();

    let r = c
        .get(&url)
        .header(header::ACCEPT_ENCODING, "br, gzip;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(hdr(&r, header::CONTENT_ENCODING), "gzip");
    assert_eq!(hdr(&r, header::VARY), "Accept-Encoding");
    assert_ne!(
        hdr(&r, header::ETAG),
        plain_etag,
        "each coding has its own ETag"
    );
    let gz = r.bytes().await.unwrap();
    assert!(gz.len() < plain.len());
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, plain);

    let r = c
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip;q=0")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(header::CONTENT_ENCODING).is_none());

    let r = c
        .get(format!("http://{}/live/{SIM}_1/0.ts", srv.addr))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get(header::CONTENT_ENCODING).is_none(),
        "TS is not worth compressing"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_404s() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |_| {}).await;
    let c = client();
    for path in [
        "/live/nostream/index.m3u8",
        &format!("/live/{SIM}_1/999.ts"),
        "/nothing/here",
        "/api/devices/132570034500/bogus",
        "/vod/session/1/index.m3u8",
        "/static/nope.js",
    ] {
        let r = c
            .get(format!("http://{}{path}", srv.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(hdr(&r, header::CONTENT_TYPE), "application/json");
        assert_eq!(hdr(&r, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["status"], 404);
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_never_leave_the_data_dir() {
    let fx = Fixture::new();
    // A symlink planted inside a stream dir pointing outside the data dir.
    std::os::unix::fs::symlink(
        fx.dir.path().join("secret.ts"),
        fx.data().join(format!("live/{SIM}_1/4242.ts")),
    )
    .unwrap();
    std::os::unix::fs::symlink(fx.dir.path(), fx.data().join("live/evil")).unwrap();
    let srv = start(&fx.data(), |_| {}).await;
    let attempts = [
        "/live/../secret.ts",
        "/live/../../secret.ts",
        "/live/x/../../secret.ts",
        "/live/%2e%2e/secret.ts",
        "/live/%2e%2e/%2e%2e/secret.ts",
        "/live/%2E%2E/index.m3u8",
        "/live/..%2f..%2f/index.m3u8",
        "/live/..%2F..%2Fsecret.ts/index.m3u8",
        "/live/132570034500_1/..%2f..%2f..%2fsecret.ts",
        "/live/132570034500_1/%2e%2e%2f%2e%2e%2fsecret.ts",
        "/live//etc/passwd",
        "/live/132570034500_1//etc/passwd",
        "/live/132570034500_1/1.ts%00.m3u8",
        "/live/132570034500_1/-1.ts",
        "/live/132570034500_1/4242.ts",
        "/live/evil/index.m3u8",
        "/live/evil/secret.ts",
        "/live/a.b/index.m3u8",
        "/live/132570034500_1/t/x/../../../secret.ts",
        "/vod/session/..%2f..%2fsecret/index.m3u8",
        "/static/..%2f..%2fCargo.toml",
        "http://evil/live/../secret.ts",
    ];
    for path in attempts {
        let (status, head, body) = raw(srv.addr, &format!("GET {path} HTTP/1.1")).await;
        assert!(status == 404 || status == 400, "{path}: {status}\n{head}");
        assert!(
            !String::from_utf8_lossy(&body).contains("TOPSECRET"),
            "{path} leaked the secret"
        );
    }
    // The legitimate neighbour of the symlink is served.
    let (status, _, body) = raw(srv.addr, &format!("GET /live/{SIM}_1/0.ts HTTP/1.1")).await;
    assert_eq!(status, 200);
    assert_eq!(body, seg_bytes(0));
    let long = "a".repeat(65);
    let (status, _, _) = raw(srv.addr, &format!("GET /live/{long}/index.m3u8 HTTP/1.1")).await;
    assert_eq!(status, 404);
    srv.shutdown().await;
}

fn signer() -> hlsd::TokenSigner {
    hlsd::TokenSigner::new("s3cret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_accepted_expired_forged_and_carried_into_segment_urls() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |c| {
        c.token_secret = Some("s3cret".into());
        c.allow_anonymous = false;
    })
    .await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let stream = format!("{SIM}_1");
    let exp = hlsd::token::now_unix() + 600;
    let good = signer().sign(&stream, exp);

    let r = c
        .get(format!("{base}/live/{stream}/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "token or login required"
    );
    let r = c
        .get(format!("{base}/live/{stream}/0.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Query form: every segment URI in the playlist carries the token, and works.
    let r = c
        .get(format!("{base}/live/{stream}/index.m3u8?token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let uris: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(uris.len(), clips().all().len());
    for u in &uris {
        assert!(u.ends_with(&format!(".ts?token={good}")), "{u}");
    }
    let r = c
        .get(format!("{base}/live/{stream}/{}", uris[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], &seg_bytes(0)[..]);

    // Path form: relative URIs untouched, segments resolve under /t/<token>/.
    let r = c
        .get(format!("{base}/live/{stream}/t/{good}/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("\n0.ts\n"), "{text}");
    let seg_url = reqwest::Url::parse(&format!("{base}/live/{stream}/t/{good}/index.m3u8"))
        .unwrap()
        .join("1.ts")
        .unwrap();
    let r = c.get(seg_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], &seg_bytes(1)[..]);

    let expired = signer().sign(&stream, hlsd::token::now_unix() - 1);
    let forged = hlsd::TokenSigner::new("wrong").sign(&stream, exp);
    let other_stream = signer().sign("cam-raw", exp);
    let mut tampered = good.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (what, tok) in [
        ("expired", &expired),
        ("forged", &forged),
        ("other stream", &other_stream),
        ("tampered", &tampered),
        ("garbage", &"x".to_string()),
    ] {
        for url in [
            format!("{base}/live/{stream}/index.m3u8?token={tok}"),
            format!("{base}/live/{stream}/0.ts?token={tok}"),
            format!("{base}/live/{stream}/t/{tok}/index.m3u8"),
            format!("{base}/live/{stream}/t/{tok}/0.ts"),
        ] {
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}: {url}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert!(v["error"].as_str().unwrap().starts_with("token"), "{v}");
        }
    }
    let r = c
        .get(format!("{base}/live/{stream}/index.m3u8?token={expired}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "token expired"
    );

    // VOD: its own scope; each segment URI carries a token for that segment alone (scope
    // `<stream>/<n>.ts`), with the same expiry, so the recording's token opens nothing else.
    let sid = fx.sid2.clone();
    let r = c
        .get(format!("{base}/vod/session/{sid}/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let vtok = signer().sign(&format!("vod/session/{sid}"), exp);
    let seg_tok = signer().sign(&format!("{SIM}_2/0.ts"), exp);
    for url in [
        format!("{base}/vod/session/{sid}/index.m3u8?token={vtok}"),
        format!("{base}/vod/session/{sid}/t/{vtok}/index.m3u8"),
    ] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        let first = text.lines().find(|l| l.starts_with("/live/")).unwrap();
        assert_eq!(first, format!("/live/{SIM}_2/0.ts?token={seg_tok}"));
        assert_eq!(
            c.get(format!("{base}{first}"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        // Neither the segment's token nor the recording's opens the stream's live playlist.
        for tok in [&seg_tok, &vtok] {
            let r = c
                .get(format!("{base}/live/{SIM}_2/index.m3u8?token={tok}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
        }
    }
    srv.shutdown().await;
}

/// The token format as documented in hlsd/README.md, minted by Python's hmac module: an
/// independent implementation must agree with ours.
const PY_MINT: &str = "import hmac,hashlib,base64,struct,sys,time; s,scope,ttl=sys.argv[1],sys.argv[2],int(sys.argv[3]); e=int(time.time())+ttl; print(base64.urlsafe_b64encode(struct.pack('>Q',e)+hmac.new(s.encode(),f'{scope}|{e}'.encode(),hashlib.sha256).digest()).rstrip(b'=').decode())";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_minted_by_an_independent_implementation() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |c| {
        c.token_secret = Some("s3cret".into());
        c.allow_anonymous = false;
    })
    .await;
    let mint = |secret: &str, scope: &str, ttl: i64| {
        let out = std::process::Command::new("python3")
            .args(["-c", PY_MINT, secret, scope, &ttl.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let c = client();
    let url = |tok: &str| format!("http://{}/live/{SIM}_1/index.m3u8?token={tok}", srv.addr);
    assert_eq!(
        c.get(url(&mint("s3cret", &format!("{SIM}_1"), 60)))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(url(&mint("s3cret", &format!("{SIM}_1"), -5)))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.get(url(&mint("other", &format!("{SIM}_1"), 60)))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_session_and_incident_playlists() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |_| {}).await;
    let base = format!("http://{}", srv.addr);
    let c = client();

    // The finished stream: VOD, cacheable, every URI fetchable, and ffmpeg decodes it cleanly.
    let sid = fx.sid2.clone();
    let url = format!("{base}/vod/session/{sid}/index.m3u8");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        hdr(&r, header::CONTENT_TYPE),
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(hdr(&r, header::CACHE_CONTROL), "public, max-age=86400");
    let text = r.text().await.unwrap();
    assert!(text.starts_with("#EXTM3U\n"));
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
    assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    assert_eq!(text.matches("#EXT-X-PROGRAM-DATE-TIME:").count(), 1);
    let pl = MediaPlaylist::parse_any(&text).unwrap();
    assert_eq!(pl.segments().len(), clips().a.len());
    assert_eq!(pl.segments().next().unwrap().pdt_ms, Some(fx.pdt0));
    for s in pl.segments() {
        assert!((s.duration.as_secs_f64() - 2.0).abs() < 1e-6);
        assert_eq!(
            c.get(format!("{base}{}", s.uri))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-xerror", "-i", &url, "-f", "null", "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The live stream's session: still open, so an EVENT playlist, with the discontinuity.
    let sid1 = fx.sid1.clone();
    let r = c
        .get(format!("{base}/vod/session/{sid1}/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(hdr(&r, header::CACHE_CONTROL), "public, max-age=2");
    let text = r.text().await.unwrap();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n") && !text.contains("ENDLIST"));
    let b0 = clips().b[0].seq;
    assert!(
        text.contains(&format!("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:2.000000,\n/live/{SIM}_1/{b0}.ts\n", format_pdt(fx.pdt0 + b0 as i64 * 2000))),
        "{text}"
    );

    // The incident covers [pdt0+2 s, pdt0+7 s) on channel 1: the segments overlapping it.
    let inc = fx.incident;
    let r = c
        .get(format!("{base}/vod/incident/{inc}/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let pl = MediaPlaylist::parse_any(&r.text().await.unwrap()).unwrap();
    let seqs: Vec<_> = pl.segments().map(|s| s.uri.clone()).collect();
    assert_eq!(
        seqs,
        (1..4)
            .map(|i| format!("/live/{SIM}_1/{i}.ts"))
            .collect::<Vec<_>>()
    );
    assert!(pl.is_ended());
    let r = c
        .get(format!("{base}/vod/incident/{inc}/index.m3u8?channel=2"))
        .send()
        .await
        .unwrap();
    assert!(MediaPlaylist::parse_any(&r.text().await.unwrap())
        .unwrap()
        .segments()
        .next()
        .unwrap()
        .uri
        .starts_with(&format!("/live/{SIM}_2/")));
    assert_eq!(
        c.get(format!("{base}/vod/incident/{}/index.m3u8", inc + 1000))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // An incident the recording has not reached yet: on the live `_1` it stays open (the rest
    // is still to come), on the ended `_2` it is as complete as it will ever be.
    let later = |channel: u8| Record::Incident {
        sim: SIM.into(),
        channel: Some(channel),
        from_ms: fx.pdt0 + 3000,
        to_ms: now_ms() + 600_000,
        kind: format!("ongoing-{channel}"),
        source: "test".into(),
        session_id: None,
        open: false,
        alarm: 0,
        lat: None,
        lon: None,
        video_state: None,
        video_reason: None,
    };
    let cat = write_catalog(&default_url(&fx.data()), &[later(1), later(2)]);
    for (channel, ended) in [(1, false), (2, true)] {
        let id = cat
            .incidents(SIM, i64::MIN, i64::MAX)
            .unwrap()
            .into_iter()
            .find(|i| i.kind == format!("ongoing-{channel}"))
            .unwrap()
            .id;
        let r = c
            .get(format!("{base}/vod/incident/{id}/index.m3u8"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let pl = MediaPlaylist::parse_any(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            (pl.segments().len() > 0, pl.is_ended()),
            (true, ended),
            "channel {channel}"
        );
    }

    // Unknown (well-formed) ids and malformed ones: 404, never a catalog query on junk.
    let long = "a".repeat(129);
    for id in ["abc", "a.b", "%2e%2e", "a%2fb", long.as_str(), "-1"] {
        for kind in ["session", "incident"] {
            if kind == "session" && id == "-1" {
                continue;
            }
            let (status, _, _) = raw(
                srv.addr,
                &format!("GET /vod/{kind}/{id}/index.m3u8 HTTP/1.1"),
            )
            .await;
            assert_eq!(status, 404, "{kind}/{id}");
        }
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_streams_devices_sessions_positions_incidents() {
    let fx = Fixture::new();
    // A stale playlist (no ENDLIST, not updated for an hour) is not live.
    let stale = install(&fx.data(), "old-cam", &clips().a[..2]);
    write_playlist(&stale, &clips().a[..2], &[], 0, fx.pdt0, false);
    std::fs::File::options()
        .write(true)
        .open(stale.join("index.m3u8"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let srv = start(&fx.data(), |_| {}).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let get = |path: String| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let r = c.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(hdr(&r, header::CONTENT_TYPE), "application/json");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };

    let v = get("/api/streams".into()).await;
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["132570034500_1", "cam-raw"],
        "only live streams by default"
    );
    let s = &v[0];
    assert_eq!(s["url"], "/live/132570034500_1/index.m3u8");
    assert_eq!(s["live"], true);
    assert_eq!(s["sim"], SIM);
    assert_eq!(s["channel"], 1);
    assert_eq!(s["segments"], clips().all().len());
    assert_eq!(s["session_id"], fx.sid1.as_str());
    assert_eq!(s["session_started_ms"], fx.pdt0);
    assert!(s["updated"].as_str().unwrap().ends_with('Z'));
    let v = get("/api/streams?all=1".into()).await;
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["132570034500_1", "132570034500_2", "cam-raw", "old-cam"]
    );
    assert_eq!(v[1]["ended"], true);
    assert_eq!(v[3]["live"], false);
    assert!(
        v[1]["session_id"].is_null(),
        "a finished stream has no open session"
    );

    let v = get("/api/devices".into()).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["sim"], SIM);
    assert_eq!(v[0]["online"], true);
    assert_eq!(v[0]["channels"], serde_json::json!([1, 2]));
    assert_eq!(v[0]["last_position"]["time_ms"], fx.pdt0 + 49_000);

    let v = get(format!("/api/devices/{SIM}/sessions")).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    let v = get(format!(
        "/api/devices/{SIM}/sessions?from={}",
        now_ms() + 3_600_000
    ))
    .await;
    let only_open: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(
        only_open,
        vec!["132570034500_1"],
        "the finished session ended before `from`"
    );
    let to = format_pdt(fx.pdt0 - 1000);
    let v = get(format!(
        "/api/devices/{SIM}/sessions?to={}",
        to.replace(':', "%3A")
    ))
    .await;
    assert!(v.as_array().unwrap().is_empty());

    let v = get(format!(
        "/api/devices/{SIM}/positions?from={}&to={}&limit=5",
        fx.pdt0 + 10_000,
        fx.pdt0 + 30_000
    ))
    .await;
    let times: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["time_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(
        times,
        (10..15).map(|i| fx.pdt0 + i * 1000).collect::<Vec<_>>()
    );
    assert_eq!(v[0]["speed_kmh"], 42.5);
    assert_eq!(
        get(format!("/api/devices/{SIM}/positions"))
            .await
            .as_array()
            .unwrap()
            .len(),
        50
    );

    let v = get(format!("/api/devices/{SIM}/incidents")).await;
    assert_eq!(v[0]["id"], fx.incident);
    assert_eq!(v[0]["channel"], 1);
    assert_eq!(v[0]["started_ms"], fx.pdt0 + 2000);
    assert_eq!(v[0]["kind"], "overspeed");
    assert!(get(format!(
        "/api/devices/{SIM}/incidents?from={}",
        fx.pdt0 + 7000
    ))
    .await
    .as_array()
    .unwrap()
    .is_empty());
    assert!(get("/api/devices/999999999999/positions".into())
        .await
        .as_array()
        .unwrap()
        .is_empty());

    let r = c
        .get(format!(
            "http://{}/api/devices/{SIM}/positions?from=yesterday",
            srv.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(format!(
            "http://{}/api/devices/{SIM}/positions?limit=-1",
            srv.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(format!("http://{}/api/devices/12345/sessions", srv.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    srv.shutdown().await;
}

/// A stand-in for ingestd's control API (the real daemons together are in `e2e`): records requests and,
/// like a device starting to stream, writes the live playlist a little later when told to.
async fn fake_ingestd(
    data: &Path,
    writes_playlist: bool,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use warp::Filter;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let data = data.to_owned();
    // Strict about bodies like many servers: a POST without a Content-Length gets 411, which
    // is what hlsd's forwarding met against the real ingestd before it sent one.
    let route = warp::post()
        .and(warp::path::full())
        .and(warp::body::content_length_limit(16 * 1024))
        .map(move |p: warp::path::FullPath| {
            seen2.lock().unwrap().push(p.as_str().to_owned());
            if p.as_str().starts_with("/api/devices/999999999999/") {
                return warp::reply::with_status(
                    "device not connected".to_string(),
                    warp::http::StatusCode::NOT_FOUND,
                );
            }
            if writes_playlist && p.as_str().ends_with("/live") {
                let data = data.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(700));
                    let dir = install(&data, "132570034500_3", &clips().a[..1]);
                    write_playlist(&dir, &clips().a[..1], &[], 0, now_ms(), false);
                });
            }
            warp::reply::with_status("{}".to_string(), warp::http::StatusCode::OK)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_stop_forward_to_ingestd_and_wait_for_the_playlist() {
    let fx = Fixture::new();
    let (ing, seen) = fake_ingestd(&fx.data(), true).await;
    let srv = start(&fx.data(), |c| {
        c.ingestd_url = format!("http://{ing}/");
        c.watch_timeout = Duration::from_secs(5);
    })
    .await;
    let base = format!("http://{}", srv.addr);
    let c = client();

    let r = c
        .post(format!("{base}/api/devices/{SIM}/channels/3/watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["stream"], "132570034500_3");
    assert_eq!(v["playlist"], "/live/132570034500_3/index.m3u8");
    assert!(
        v["waited_ms"].as_u64().unwrap() >= 600,
        "answered only once the playlist existed: {v}"
    );
    assert_eq!(
        c.get(format!("{base}/live/132570034500_3/index.m3u8"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let r = c
        .post(format!("{base}/api/devices/{SIM}/channels/3/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["stopped"],
        true
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            format!("/api/devices/{SIM}/channels/3/live"),
            format!("/api/devices/{SIM}/channels/3/stop")
        ]
    );

    // ingestd's refusal passes through with its reason.
    let r = c
        .post(format!("{base}/api/devices/999999999999/channels/1/watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ingestd_body"], "device not connected");

    let r = c
        .post(format!("{base}/api/devices/{SIM}/channels/abc/watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .get(format!("{base}/api/devices/{SIM}/channels/1/watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "watch is POST only");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_times_out_with_504_and_reports_ingestd_down_with_502() {
    let fx = Fixture::new();
    let (ing, _) = fake_ingestd(&fx.data(), false).await;
    let srv = start(&fx.data(), |c| {
        c.ingestd_url = format!("http://{ing}");
        c.watch_timeout = Duration::from_secs(1);
    })
    .await;
    let c = client();
    let t = std::time::Instant::now();
    let r = c
        .post(format!(
            "http://{}/api/devices/{SIM}/channels/4/watch",
            srv.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(t.elapsed() >= Duration::from_secs(1) && t.elapsed() < Duration::from_secs(4));
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no segment of 132570034500_4"),
        "{v}"
    );
    srv.shutdown().await;

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let srv = start(&fx.data(), |c| c.ingestd_url = format!("http://{dead}")).await;
    let r = c
        .post(format!(
            "http://{}/api/devices/{SIM}/channels/1/watch",
            srv.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("ingestd unreachable"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_answers_503_and_recovers() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let fx = Fixture::new();
    let srv = start(&fx.data(), |c| c.max_connections = 2).await;
    // Two keep-alive connections, each having completed a request, hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let mut s = BufReader::new(s);
        s.get_mut()
            .write_all(b"GET /api/streams HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        held.push(s);
    }
    let (status, head, body) = raw(srv.addr, "GET /api/streams HTTP/1.1").await;
    assert_eq!(status, 503, "{head}");
    assert!(String::from_utf8_lossy(&body).contains("too many connections"));
    // The held connections still work.
    let s = &mut held[0];
    let mut rest = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut rest)).await;
    s.get_mut()
        .write_all(b"GET /api/streams HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    assert!(String::from_utf8_lossy(&all).contains("HTTP/1.1 200"));
    drop(held);
    // Slots free up once connections close.
    let mut ok = false;
    for _ in 0..50 {
        if raw(srv.addr, "GET /api/streams HTTP/1.1").await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a slot was released");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_connection_slots() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = Fixture::new();
    let srv = start(&fx.data(), |c| {
        c.max_connections = 2;
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    // Two slowloris clients: half a request head each, then nothing.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /api/streams HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        raw(srv.addr, "GET /api/streams HTTP/1.1").await.0,
        503,
        "both slots held"
    );
    // After the header timeout the server has closed them and serves others again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for s in &mut slow {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        assert!(n.is_ok(), "slow client was disconnected");
    }
    assert_eq!(raw(srv.addr, "GET /api/streams HTTP/1.1").await.0, 200);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_web_page() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |_| {}).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let r = c
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/live/{SIM}_1/0.ts"),
        )
        .header(header::ORIGIN, "http://player.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "range")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(hdr(&r, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    assert!(hdr(&r, header::ACCESS_CONTROL_ALLOW_METHODS).contains("GET"));
    assert_eq!(hdr(&r, header::ACCESS_CONTROL_ALLOW_HEADERS), "range");

    let r = c.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(html.contains("/static/hls.min.js") && html.contains("/static/app.js"));

    let r = c
        .get(format!("{base}/static/hls.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        hdr(&r, header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    let js = r.text().await.unwrap();
    assert!(
        js.len() > 100_000 && js.contains("Hls"),
        "the real hls.js bundle"
    );
    let r = c
        .get(format!("{base}/static/hls.min.js"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(hdr(&r, header::CONTENT_ENCODING), "gzip");
    let lic = c
        .get(format!("{base}/static/hls.js.LICENSE"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(lic.contains("Apache License"), "hls.js licence kept");
    for a in ["app.js", "app.css"] {
        assert_eq!(
            c.get(format!("{base}/static/{a}"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    srv.shutdown().await;
}

/// The same recordings in a PostgreSQL catalog of the test's own (`--database-url`): VOD session
/// and incident playlists render from it, decode with ffmpeg, and the API reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_from_a_postgresql_catalog() {
    let pg = ServerDb::postgres();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let c = clips();
    let pdt0 = now_ms() - 120_000;
    let stream = format!("{SIM}_3");
    // One encode: ffmpeg 5.1 reports "corrupt packet" wherever TS continuity counters restart,
    // which the two-encode discontinuity of the fixtures does (docs/hls.md, checkers).
    let all = c.a.clone();
    install(&data, &stream, &all);
    let sid = format!("{stream}-{pdt0}-0123456789abcdef");
    let mut records = device_records(SIM, now_ms(), pdt0, 20);
    records.extend(session_records(&sid, &stream, &all, &[], pdt0, true));
    records.push(Record::Incident {
        sim: SIM.into(),
        channel: Some(3),
        from_ms: pdt0 + 4500,
        to_ms: pdt0 + 9000,
        kind: "collision".into(),
        source: "0x0200 alarm".into(),
        session_id: None,
        open: false,
        alarm: 0,
        lat: None,
        lon: None,
        video_state: None,
        video_reason: None,
    });
    let cat = write_catalog(&pg.url, &records);
    let inc = cat.incidents(SIM, i64::MIN, i64::MAX).unwrap()[0].id;
    drop(cat);
    let url = pg.url.clone();
    let srv = start(&data, move |cfg| cfg.database_url = Some(url)).await;
    assert!(
        !data.join("catalog.sqlite").exists(),
        "--database-url must replace the default SQLite catalog, not add to it"
    );
    let base = format!("http://{}", srv.addr);
    let cl = client();

    let vod = format!("{base}/vod/session/{sid}/index.m3u8");
    let r = cl.get(&vod).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && text.ends_with("#EXT-X-ENDLIST\n"));
    let pl = MediaPlaylist::parse_any(&text).unwrap();
    assert_eq!(pl.segments().len(), all.len());
    assert_eq!(pl.segments().next().unwrap().pdt_ms, Some(pdt0));
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-xerror", "-i", &vod, "-f", "null", "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // [pdt0 + 4.5 s, pdt0 + 9 s) overlaps segments 2, 3 and 4.
    let r = cl
        .get(format!("{base}/vod/incident/{inc}/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let uris: Vec<String> = MediaPlaylist::parse_any(&r.text().await.unwrap())
        .unwrap()
        .segments()
        .map(|s| s.uri.clone())
        .collect();
    assert_eq!(
        uris,
        (2..5)
            .map(|i| format!("/live/{stream}/{i}.ts"))
            .collect::<Vec<_>>()
    );

    let v: serde_json::Value = cl
        .get(format!("{base}/api/devices/{SIM}/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v[0]["id"], sid.as_str());
    assert_eq!(v[0]["channel"], 3);
    let v: serde_json::Value = cl
        .get(format!("{base}/api/devices"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v[0]["sim"], SIM);
    assert_eq!(v[0]["channels"], serde_json::json!([3]));
    assert_eq!(v[0]["last_position"]["time_ms"], pdt0 + 19_000);
    srv.shutdown().await;
}

/// Runs ffprobe on `path`: (format_name, duration s, video packets, codec).
fn probe_mp4(path: &Path) -> (String, f64, u64, String) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_entries"])
        .arg("format=format_name,duration:stream=codec_name,nb_read_packets")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["format"]["format_name"].as_str().unwrap().to_owned(),
        v["format"]["duration"].as_str().unwrap().parse().unwrap(),
        v["streams"][0]["nb_read_packets"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        v["streams"][0]["codec_name"].as_str().unwrap().to_owned(),
    )
}

/// Counts the frames of a TS segment (ffprobe, independent of hlsd).
fn ts_frames(path: &Path) -> u64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"][0]["nb_read_packets"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_export_is_an_mp4_of_the_range_across_a_discontinuity() {
    let fx = Fixture::new();
    let srv = start(&fx.data(), |_| {}).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let stream = format!("{SIM}_1");
    let b0 = clips().b[0].seq;
    // From inside segment 1 to inside the second segment after the discontinuity: whole
    // segments 1..=b0+1 (cuts are at segment boundaries).
    let (from, to) = (seg_pdt(fx.pdt0, 1) + 500, seg_pdt(fx.pdt0, b0 + 1) + 500);
    let to_rfc = format_pdt(to).replace(':', "%3A");
    let r = c
        .get(format!(
            "{base}/api/streams/{stream}/clip.mp4?from={from}&to={to_rfc}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(&r, header::CONTENT_TYPE), "video/mp4");
    assert_eq!(
        hdr(&r, header::CONTENT_DISPOSITION),
        format!("attachment; filename=\"{stream}_{from}-{to}.mp4\"")
    );
    let covered: Vec<_> = clips()
        .all()
        .into_iter()
        .filter(|s| (1..=b0 + 1).contains(&s.seq))
        .collect();
    let end = seg_pdt(fx.pdt0, b0 + 1) + (covered.last().unwrap().duration * 1000.0).round() as i64;
    assert_eq!(
        r.headers()["x-clip-start-ms"],
        seg_pdt(fx.pdt0, 1).to_string().as_str()
    );
    assert_eq!(r.headers()["x-clip-end-ms"], end.to_string().as_str());
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[4..8], b"ftyp");
    // faststart: the moov box comes before mdat.
    let moov = body.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = body.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "moov at {moov}, mdat at {mdat}");
    let tmp = tempfile::tempdir().unwrap();
    let mp4 = tmp.path().join("clip.mp4");
    std::fs::write(&mp4, &body).unwrap();

    let (format, duration, frames, codec) = probe_mp4(&mp4);
    assert!(format.contains("mp4"), "{format}");
    assert_eq!(codec, "h264");
    let want_frames: u64 = covered.iter().map(|s| ts_frames(&s.path)).sum();
    let want_secs: f64 = covered.iter().map(|s| s.duration).sum();
    assert_eq!(
        frames, want_frames,
        "every frame of the covered segments, nothing else"
    );
    assert!(
        (duration - want_secs).abs() <= 0.1,
        "duration {duration} s, segments sum to {want_secs} s (the discontinuity must be closed, not kept as a 1000 s gap)"
    );
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&mp4)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Range requests work on the download like on any file.
    let r = c
        .get(format!(
            "{base}/api/streams/{stream}/clip.mp4?from={from}&to={to}"
        ))
        .header(header::RANGE, "bytes=0-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &body[..8]);

    // Bad ranges: 400; no recording there: 404; bad names: 404.
    for q in [
        format!("from={from}"),
        format!("from={to}&to={from}"),
        format!("from={from}&to={}", from + hlsd::server::MAX_CLIP_MS + 1),
        "from=yesterday&to=today".to_string(),
    ] {
        let r = c
            .get(format!("{base}/api/streams/{stream}/clip.mp4?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
    }
    let r = c
        .get(format!(
            "{base}/api/streams/{stream}/clip.mp4?from={}&to={}",
            fx.pdt0 - 60_000,
            fx.pdt0 - 30_000
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (status, _, _) = raw(
        srv.addr,
        &format!("GET /api/streams/..%2f..%2fsecret/clip.mp4?from={from}&to={to} HTTP/1.1"),
    )
    .await;
    assert_eq!(status, 404);
    srv.shutdown().await;

    // With tokens on, a clip needs the stream's token.
    let srv = start(&fx.data(), |c| {
        c.token_secret = Some("s3cret".into());
        c.allow_anonymous = false;
    })
    .await;
    let url = format!(
        "http://{}/api/streams/{stream}/clip.mp4?from={from}&to={to}",
        srv.addr
    );
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let tok = signer().sign(&stream, hlsd::token::now_unix() + 60);
    let r = c.get(format!("{url}&token={tok}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), body.len());
    srv.shutdown().await;
}
