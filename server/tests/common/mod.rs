//! Starts the real `tessera` binary on an ephemeral loopback port, on a
//! fresh data directory, for integration tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use tessera_protocol::{
    encode_request, Client, ClientError, ClientOptions, ErrorCode, Hello, Request, SpecFile,
};

/// A `HELLO` frame (request id 0, no token), for tests that speak raw
/// bytes.
pub fn hello_frame() -> Vec<u8> {
    let hello = Request::Hello(Hello {
        min_version: 1,
        max_version: 1,
        client: "raw-test".into(),
        token: String::new(),
    });
    let mut out = Vec::new();
    encode_request(0, &hello, &mut out).expect("encode");
    out
}

/// A day, µs.
pub const DAY_US: i64 = 86_400_000_000;

/// Now, µs since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Every record batch of a Parquet file.
pub fn read_parquet(path: &Path) -> Vec<arrow_array::RecordBatch> {
    let f = std::fs::File::open(path).expect("open output");
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("batches")
}

/// The code of a server error; panics on any other failure.
pub fn server_code(e: ClientError) -> ErrorCode {
    match e {
        ClientError::Server(body) => body.code,
        other => panic!("expected a server error, got {other}"),
    }
}

/// Runs `tessera ARGS --addr <server>`, with `stdin` piped in.
pub fn run_cli(server: &TestServer, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .args(["--addr", &server.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tessera");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut input, text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait")
}

/// The news-feed registry spec the tests apply.
pub const NEWS_FEED_SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/news_feed/registry.toml"
);

/// A running server; killed when dropped.
pub struct TestServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on a fresh directory with `config` (TOML) if given.
    pub fn start(config: Option<&str>) -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = TestServer::start_in(&dir, config, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `dir` (kept), with extra flags.
    pub fn start_in(dir: &Path, config: Option<&str>, flags: &[&str]) -> TestServer {
        TestServer::start_on("127.0.0.1:0", dir, config, flags)
    }

    /// Starts a server listening on `listen`, on `dir` (kept).
    pub fn start_on(listen: &str, dir: &Path, config: Option<&str>, flags: &[&str]) -> TestServer {
        TestServer::start_with_stderr(listen, dir, config, flags, Stdio::inherit())
    }

    /// [`TestServer::start_on`], with the server's stderr sent to `stderr`.
    pub fn start_with_stderr(
        listen: &str,
        dir: &Path,
        config: Option<&str>,
        flags: &[&str],
        stderr: Stdio,
    ) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(text) = config {
            let path = dir.join("tessera.toml");
            std::fs::write(&path, text).expect("write config");
            cmd.arg("--config").arg(path);
        }
        let mut child = cmd.spawn().expect("spawn tessera");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() {
            let line = lines
                .next()
                .expect("tessera exited before listening")
                .expect("read stdout");
            if let Some(a) = line.strip_prefix("tessera metrics on http://") {
                metrics = a.parse().ok();
            }
            if let Some(a) = line.strip_prefix("tessera listening on ") {
                addr = a.parse().ok();
            }
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        TestServer {
            child,
            addr: addr.expect("address"),
            metrics,
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// A client authenticated with `token`.
    pub fn client_with(&self, token: &str) -> Client {
        let opts = ClientOptions {
            token: token.into(),
            client_name: "integration-test".into(),
            request_timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        };
        Client::connect(self.addr, opts).expect("connect")
    }

    /// A client in local development mode.
    pub fn client(&self) -> Client {
        self.client_with("")
    }

    /// Applies the news-feed spec.
    pub fn apply_news_feed(&self, client: &mut Client) -> u64 {
        let text = std::fs::read_to_string(NEWS_FEED_SPEC).expect("spec");
        let files = vec![SpecFile {
            name: "registry.toml".into(),
            text,
        }];
        let (version, _, _) = client.registry_plan(files.clone()).expect("plan");
        let (new_version, _) = client.registry_apply(version, files).expect("apply");
        new_version
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait().expect("wait")
    }
}

impl TestServer {
    /// A `/proc/<pid>/status` figure of the server in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("the field is in the status")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
