//! moto's S3 server (the `moto_server` of `scripts/install-moto.sh`, found through
//! FLEET_MOTO_SERVER) on a free port of 127.0.0.1, for the tests that need a real
//! S3-compatible store: streamcore's storage contract and hlsd's cluster suite include this
//! file. Requests to it are SigV4-signed by object_store's client like those to AWS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamcore::storage::s3::S3Storage;

/// moto's server, stopped on drop.
pub struct Moto {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(dead_code)] // Each including crate uses its part.
impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut moto = Moto {
            child: None,
            addr: ([127, 0, 0, 1], port).into(),
        };
        moto.restart();
        moto
    }

    /// The store goes down: connections are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port. moto keeps its buckets in memory: a restarted
    /// server is empty.
    pub fn restart(&mut self) {
        let server = std::env::var("FLEET_MOTO_SERVER").unwrap_or_else(|_| {
            panic!(
                "FLEET_MOTO_SERVER is not set: the S3 tests need moto's server; \
                 run `export FLEET_MOTO_SERVER=$(scripts/install-moto.sh)` (scripts/test.sh does)"
            )
        });
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a bucket (a plain PUT /bucket, which is how S3's CreateBucket looks).
    pub fn create_bucket(&self, name: &str) {
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

    /// The settings a daemon reads from its environment to reach this server.
    pub fn vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "fleet-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "fleet-test-secret".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A storage on `url` (`s3://bucket[/prefix]`) of this server.
    pub fn storage(&self, url: &str, staging: &std::path::Path) -> S3Storage {
        S3Storage::from_vars(url, self.vars(), staging).unwrap()
    }
}
