//! The storage contract, the same checks on every implementation: the local directory, memory,
//! and (feature `s3`) an S3-compatible store, moto's server started here on 127.0.0.1 and
//! reached with SigV4-signed requests by object_store's real client. Then a live stream muxed
//! straight into the bucket: its playlist names only objects that are there, and ffprobe
//! decodes a segment read back from the store.
//!
//! Needs for the S3 part: FLEET_MOTO_SERVER, the path of moto's `moto_server`
//! (`scripts/install-moto.sh` installs it and prints the path; `scripts/test.sh` sets it).

use std::io::Write;

use streamcore::{FsStorage, MemoryStorage, Storage, StoredObject};

fn keys(mut objects: Vec<StoredObject>) -> Vec<String> {
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects.into_iter().map(|o| o.key).collect()
}

/// 300 kB that no two offsets of share: a segment-sized body whose corruption would show.
fn body() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// What every [`Storage`] promises, on an empty store.
fn contract(store: &dyn Storage, what: &str) {
    assert!(store.list("").unwrap().is_empty(), "{what}: starts empty");
    assert_eq!(store.read("live/cab_1/0.ts").unwrap(), None, "{what}");

    // A segment is neither listed nor readable until committed, then complete.
    let seg = body();
    let mut w = store.begin_segment("live/cab_1/0.ts").unwrap();
    w.write_all(&seg[..100_000]).unwrap();
    assert!(
        store.list("live").unwrap().is_empty(),
        "{what}: partial listed"
    );
    w.write_all(&seg[100_000..]).unwrap();
    assert_eq!(store.read("live/cab_1/0.ts").unwrap(), None, "{what}");
    w.commit().unwrap();
    assert!(
        store.read("live/cab_1/0.ts").unwrap().unwrap() == seg,
        "{what}: body"
    );
    let listed = store.list("live/cab_1").unwrap();
    assert_eq!(listed.len(), 1, "{what}");
    assert_eq!(listed[0].bytes, seg.len() as u64, "{what}");
    let age = std::time::SystemTime::now()
        .duration_since(listed[0].modified)
        .unwrap_or_default();
    assert!(age.as_secs() < 600, "{what}: modified is the write time");

    // An aborted segment leaves nothing.
    let mut w = store.begin_segment("live/cab_1/1.ts").unwrap();
    w.write_all(b"partial").unwrap();
    w.abort();

    // A playlist is replaced whole.
    store
        .replace_playlist("live/cab_1/index.m3u8", b"#EXTM3U\n#v1\n")
        .unwrap();
    store
        .replace_playlist("live/cab_1/index.m3u8", b"#EXTM3U\n#v2\n")
        .unwrap();
    assert_eq!(
        store.read("live/cab_1/index.m3u8").unwrap().unwrap(),
        b"#EXTM3U\n#v2\n",
        "{what}"
    );

    // A prefix is a directory, not a string prefix.
    let mut w = store.begin_segment("live/cab_10/0.ts").unwrap();
    w.write_all(b"other stream").unwrap();
    w.commit().unwrap();
    assert_eq!(
        keys(store.list("live/cab_1").unwrap()),
        ["live/cab_1/0.ts", "live/cab_1/index.m3u8"],
        "{what}"
    );
    assert_eq!(keys(store.list("").unwrap()).len(), 3, "{what}");
    assert!(store.list("live/cab").unwrap().is_empty(), "{what}");

    // Removal says whether there was something (retention counts it).
    assert!(store.remove("live/cab_1/0.ts").unwrap(), "{what}");
    assert!(!store.remove("live/cab_1/0.ts").unwrap(), "{what}");
    assert_eq!(store.read("live/cab_1/0.ts").unwrap(), None, "{what}");
    assert_eq!(store.list("").unwrap().len(), 2, "{what}");

    // Keys that name nothing we own are refused by every operation.
    for bad in ["../x", "/etc/passwd", "live//x", "a/./b", "a b", ""] {
        assert!(store.begin_segment(bad).is_err(), "{what}: {bad:?}");
        assert!(store.replace_playlist(bad, b"x").is_err(), "{what}");
        assert!(store.read(bad).is_err(), "{what}: {bad:?}");
        assert!(store.remove(bad).is_err(), "{what}: {bad:?}");
    }
}

#[test]
fn local_and_memory_storage_keep_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&FsStorage::open(dir.path(), false).unwrap(), "fs");
    let durable = tempfile::tempdir().unwrap();
    contract(
        &FsStorage::open(durable.path(), true).unwrap(),
        "fs durable",
    );
    contract(&MemoryStorage::new(), "memory");
    // Nothing partial was left on disk.
    assert!(!dir.path().join("live/cab_1/1.ts.part").exists());
}

#[cfg(feature = "s3")]
mod s3 {
    use super::*;

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use object_store::aws::AmazonS3Builder;
    use streamcore::storage::s3::{parse_s3_url, S3Storage};
    use streamcore::{LiveStream, StreamConfig};

    use crate::common::{ffmpeg_errors, fixture, parse_playlist, stepping_clock};

    /// moto's S3 server on a free port of 127.0.0.1, stopped on drop.
    struct Moto {
        child: Child,
        addr: SocketAddr,
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Moto {
        fn start() -> Moto {
            let server = std::env::var("FLEET_MOTO_SERVER").unwrap_or_else(|_| {
                panic!(
                    "FLEET_MOTO_SERVER is not set: the S3 tests need moto's server; \
                     run `export FLEET_MOTO_SERVER=$(scripts/install-moto.sh)` (scripts/test.sh does)"
                )
            });
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let t0 = Instant::now();
            while TcpStream::connect(addr).is_err() {
                assert!(t0.elapsed() < Duration::from_secs(30), "moto did not start");
                std::thread::sleep(Duration::from_millis(100));
            }
            Moto { child, addr }
        }

        /// Creates a bucket (a plain PUT /bucket, which is how S3's CreateBucket looks).
        fn create_bucket(&self, name: &str) {
            let mut s = TcpStream::connect(self.addr).unwrap();
            write!(
                s,
                "PUT /{name} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.addr
            )
            .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }

        fn storage(&self, url: &str, staging: &std::path::Path) -> S3Storage {
            let builder = AmazonS3Builder::new()
                .with_endpoint(format!("http://{}", self.addr))
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("fleet-test")
                .with_secret_access_key("fleet-test-secret");
            S3Storage::with_builder(url, builder, staging).unwrap()
        }
    }

    #[test]
    fn s3_urls_are_checked() {
        assert_eq!(
            parse_s3_url("s3://fleet-video/site-a/").unwrap(),
            ("fleet-video".into(), "site-a".into())
        );
        assert_eq!(
            parse_s3_url("s3://fleet-video").unwrap(),
            ("fleet-video".into(), String::new())
        );
        for bad in [
            "fleet-video",
            "s3://",
            "s3://Fleet",
            "s3://ab",
            "s3://fleet/../x",
            "s3://fleet/a b",
        ] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
    }

    /// The contract on a bucket's root and under a prefix; what the prefixed storage wrote is
    /// under its prefix in the bucket, and no staging file is left behind.
    #[test]
    fn s3_storage_keeps_the_contract() {
        let moto = Moto::start();
        moto.create_bucket("fleet-root");
        moto.create_bucket("fleet-prefixed");
        let staging = tempfile::tempdir().unwrap();
        contract(&moto.storage("s3://fleet-root", staging.path()), "s3");
        contract(
            &moto.storage("s3://fleet-prefixed/site-a", staging.path()),
            "s3 prefixed",
        );
        let whole = moto.storage("s3://fleet-prefixed", staging.path());
        assert_eq!(
            keys(whole.list("").unwrap()),
            ["site-a/live/cab_1/index.m3u8", "site-a/live/cab_10/0.ts"]
        );
        assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
        // A bucket that does not exist is an error, not an empty store.
        let missing = moto.storage("s3://no-such-bucket", staging.path());
        assert!(missing.list("").is_err());
        assert!(missing.replace_playlist("a.m3u8", b"x").is_err());
    }

    /// A live stream muxed into the bucket: every segment the playlist names is there, whole
    /// (ffmpeg decodes each one read back from the store without an error), and nothing else.
    #[test]
    fn a_live_stream_publishes_into_s3() {
        let moto = Moto::start();
        moto.create_bucket("fleet-live");
        let staging = tempfile::tempdir().unwrap();
        let storage = Arc::new(moto.storage("s3://fleet-live/live/cab_1", staging.path()));
        let cfg = StreamConfig {
            clock: stepping_clock(),
            ..Default::default()
        };
        let mut stream = LiveStream::with_storage("cab_1", storage.clone(), cfg).unwrap();
        let data = std::fs::read(fixture("baseline.h264")).unwrap();
        for chunk in data.chunks(1400) {
            stream.push_bytes(chunk).unwrap();
        }
        stream.finish(true).unwrap();

        let playlist = String::from_utf8(storage.read("index.m3u8").unwrap().unwrap()).unwrap();
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        let (segments, _) = parse_playlist(&playlist);
        assert!(segments.len() >= 2, "{playlist}");
        let mut stored = keys(storage.list("").unwrap());
        stored.retain(|k| k.ends_with(".ts"));
        let mut named: Vec<String> = segments.iter().map(|(_, uri)| uri.clone()).collect();
        named.sort();
        assert_eq!(stored, named, "the playlist names exactly what is stored");
        let dir = tempfile::tempdir().unwrap();
        for (_, uri) in &segments {
            let path = dir.path().join(uri);
            std::fs::write(&path, storage.read(uri).unwrap().unwrap()).unwrap();
            assert_eq!(ffmpeg_errors(&path), "", "{uri}");
        }
        assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
    }
}
