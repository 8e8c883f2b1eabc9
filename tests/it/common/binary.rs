//! The real `portcullis` binary, run as an operator runs it.

use std::ffi::OsStr;
use std::process::Command;

/// Run the binary with `args` (no `PORTCULLIS_CONFIG` from the environment); returns its exit
/// code, stdout and stderr.
pub fn portcullis<I, S>(args: I) -> (i32, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("run portcullis");
    (
        output
            .status
            .code()
            .expect("exit code (not killed by a signal)"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The gateway binary serving a config of its own in a process of its own (for fleets of
/// real processes); killed by its PID when dropped.
pub struct GatewayProcess {
    pub addr: std::net::SocketAddr,
    pub pki: super::TestPki,
    pub config_path: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl GatewayProcess {
    /// Start `portcullis run` on `yaml` (a config without `listen`/`tls`, which are added) on
    /// a free loopback port, and wait until it accepts connections.
    pub fn start(yaml: &str) -> GatewayProcess {
        let pki = super::TestPki::new();
        let config_path = pki.dir.path().join("gateway.yaml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let text = super::config_text(&pki, yaml).replacen(
            "listen: 127.0.0.1:0",
            &format!("listen: 127.0.0.1:{port}"),
            1,
        );
        std::fs::write(&config_path, text).expect("write config");
        let mut process = GatewayProcess {
            addr: ([127, 0, 0, 1], port).into(),
            pki,
            config_path,
            child: None,
        };
        process.restart();
        process
    }

    /// (Re)start the process on the same port and config.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "-c"])
            .arg(&self.config_path)
            .env_remove("PORTCULLIS_CONFIG")
            .env("PORTCULLIS_WORKERS", "1")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn portcullis");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "gateway process did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL: no drain, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn h1(&self) -> super::Client {
        super::Client::new(self.addr, &self.pki.ca_der, super::Proto::H1)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
