//! What the tests of `tessera-bench` share: the real `tessera` binary,
//! a server started on loopback ports, and commands run to their end.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The news-feed registry spec.
pub const NEWS_FEED_SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/news_feed/registry.toml"
);

/// `tessera` next to `tessera-bench`, built if missing.
pub fn tessera_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_tessera-bench"));
    let tessera = bench.with_file_name("tessera");
    if !tessera.exists() {
        let release = bench
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "tessera-server", "--bin", "tessera"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build of tessera failed");
    }
    tessera
}

/// The server; killed if the test ends early.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub metrics: String,
}

impl Server {
    /// Starts `tessera serve` on loopback ports, with `config` as its
    /// config file and its data under `dir`.
    pub fn start(tessera: &Path, dir: &Path, config: &str) -> Server {
        let config_path = dir.join("tessera.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(tessera)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tessera serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() {
            let line = lines
                .next()
                .expect("tessera exited before listening")
                .expect("read stdout");
            if let Some(a) = line.strip_prefix("tessera metrics on http://") {
                metrics = Some(a.to_string());
            }
            if let Some(a) = line.strip_prefix("tessera listening on ") {
                addr = Some(a.to_string());
            }
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: addr.expect("address"),
            metrics: metrics.expect("the metrics address is printed before the listener's"),
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait().expect("wait for the server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to its end and prints its output.
pub fn output(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect(what);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    println!("--- {what} stdout\n{}", text(&out.stdout));
    println!("--- {what} stderr\n{}", text(&out.stderr));
    out
}

/// [`output`], panicking unless the command succeeds.
pub fn run(what: &str, cmd: &mut Command) -> Output {
    let out = output(what, cmd);
    assert!(out.status.success(), "{what} failed: {}", out.status);
    out
}
