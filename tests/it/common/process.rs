//! The real `portcullis` binary as a server process: started on free loopback ports with an
//! admin listener, signalled by its own PID, killed and reaped on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{Client, Proto};
use super::pki::{tls_block, TestPki};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// The spawned gateway process; killed (by its own PID) and reaped on drop.
pub struct Proc {
    pub child: std::process::Child,
    pub pid: u32,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub pki: TestPki,
    pub config_path: PathBuf,
    /// Where the config text really is (differs from `config_path` when that is a symlink).
    pub real_config: PathBuf,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.pid.to_string())
                .status();
        }
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Start the binary on `body` (a config without `listen`/`admin`/`tls`, which are added)
    /// and wait until `/healthz` answers.
    pub async fn start(body: &str) -> Proc {
        Self::start_with(body, false).await
    }

    /// Like [`Proc::start`]; with `symlinked`, the `-c` path is a symlink to a file in a
    /// subdirectory (which a watcher on the config's directory does not see change).
    pub async fn start_with(body: &str, symlinked: bool) -> Proc {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config_path = dir.path().join("gateway.yaml");
        let real_config = if symlinked {
            let hidden = dir.path().join("real");
            std::fs::create_dir(&hidden).expect("mkdir");
            let real = hidden.join("gateway.yaml");
            std::os::unix::fs::symlink(&real, &config_path).expect("symlink");
            real
        } else {
            config_path.clone()
        };
        let stderr_path = dir.path().join("stderr.log");
        std::fs::write(&real_config, Self::text(listen, admin, &pki, body)).expect("write config");
        let child = spawn(&config_path, &stderr_path);
        let pid = child.id();
        let mut proc = Proc {
            child,
            pid,
            listen,
            admin,
            pki,
            config_path,
            real_config,
            stderr_path,
            _dir: dir,
        };
        proc.until_healthy().await;
        proc
    }

    /// SIGKILL (a crash: no drain) and start again on the same ports and config.
    pub async fn restart(&mut self) {
        signal(self.pid, "KILL");
        let _ = self.child.wait();
        self.child = spawn(&self.config_path, &self.stderr_path);
        self.pid = self.child.id();
        self.until_healthy().await;
    }

    async fn until_healthy(&mut self) {
        let admin = self.admin;
        let proc = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("portcullis exited early ({status}):\n{}", proc.stderr());
            }
            if let Ok((200, _)) = admin_get(admin, "/healthz").await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never answered:\n{}",
                proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn text(listen: SocketAddr, admin: SocketAddr, pki: &TestPki, body: &str) -> String {
        format!("listen: {listen}\nadmin: {admin}\n{}{body}", tls_block(pki))
    }

    /// Rewrite the config with a new body (keeping listen/admin/tls); returns the full text.
    pub fn write_config(&self, body: &str) -> String {
        let text = Self::text(self.listen, self.admin, &self.pki, body);
        std::fs::write(&self.real_config, &text).expect("write config");
        text
    }

    pub fn h1(&self) -> Client {
        Client::new(self.listen, &self.pki.ca_der, Proto::H1)
    }

    pub fn h2(&self) -> Client {
        Client::new(self.listen, &self.pki.ca_der, Proto::H2)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Wait (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {within:?} after the signal:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, wait for a clean exit, and return everything it logged.
    pub async fn terminate(&mut self) -> String {
        signal(self.pid, "TERM");
        let status = self.wait_exit(Duration::from_secs(15)).await;
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            self.stderr()
        );
        self.stderr()
    }
}

/// `portcullis run -c config`, its stderr appended to `stderr_path`.
fn spawn(config_path: &std::path::Path, stderr_path: &std::path::Path) -> std::process::Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_path)
        .expect("stderr file");
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("run")
        .arg("-c")
        .arg(config_path)
        .env("RUST_LOG", "debug")
        .env_remove("PORTCULLIS_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn portcullis")
}

/// Plain-HTTP GET on the admin listener: (status, body).
pub async fn admin_get(admin: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("admin request timed out")))
}
