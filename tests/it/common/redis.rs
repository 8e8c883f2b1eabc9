//! A real `redis-server` on a free loopback port, without persistence, ended by its PID when
//! dropped. Tests that need one call [`RedisServer::start`], which returns `None` (skip) when
//! the binary is missing, unless `PORTCULLIS_REQUIRE_REDIS=1` (as CI sets it) makes that a
//! failure.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// `(certificate, key)` PEM files: serve TLS only (`rediss://`).
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl RedisServer {
    /// Start one, or `None` when `redis-server` is not installed (and not required).
    pub fn start() -> Option<RedisServer> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("PORTCULLIS_REQUIRE_REDIS").as_deref() != Ok("1"),
                "PORTCULLIS_REQUIRE_REDIS=1 but redis-server is not installed"
            );
            eprintln!("skipped: no redis-server (apt-get install redis-server)");
            return None;
        }
        let mut server = RedisServer {
            port: super::free_port(),
            child: None,
            tls: None,
        };
        server.restart();
        Some(server)
    }

    /// One serving TLS only, with this certificate and key (PEM files).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Option<RedisServer> {
        let mut server = RedisServer::start()?;
        server.tls = Some((cert.to_owned(), key.to_owned()));
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (its data is gone: nothing is persisted).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "yes", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it accepts connections (and, in plain mode, answers PING).
    fn answers(&self) -> bool {
        if self.tls.is_some() {
            return std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        }
        self.command(&["PING"]).as_deref() == Some("PONG")
    }

    /// Run one command with a plain RESP client; the first line of the answer without its
    /// type byte (`None` if the server does not answer).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line.trim_end().get(1..)?.to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
