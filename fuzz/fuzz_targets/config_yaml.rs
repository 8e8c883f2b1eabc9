//! `Config::from_text`: YAML text → validated `Config` or a `ConfigError`, then the `check`
//! report of what loaded. Never panics; time is bounded by running with `-timeout` (a YAML
//! bomb must hit serde-saphyr's budget, not expand).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::config::{lint, Config};

/// `gateway.yaml` in an empty directory of its own, so relative `users_file` / `tls` paths
/// resolve to nothing.
fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("portcullis-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("gateway.yaml")
    })
}

fuzz_target!(|text: &str| {
    // The loader reads `users_file` and the TLS files whole; a device or proc file there is a
    // filesystem question (it may never end), not a parsing one.
    if ["/dev", "/proc", "/sys"]
        .iter()
        .any(|dir| text.contains(dir))
    {
        return;
    }
    match Config::from_text(config_path(), text) {
        Ok(config) => {
            let report = lint::report(&config);
            assert!(!report.text.is_empty());
        }
        Err(err) => {
            assert!(!err.message.is_empty(), "empty error message");
            if let Some((line, column)) = err.position {
                assert!(line >= 1 && column >= 1, "position {line}:{column}");
                // Past the last line by at most one (an error at end of input).
                let lines = line_count(text);
                assert!(line <= lines + 1, "line {line} of {lines}: {}", err.message);
            }
        }
    }
});

/// Lines as YAML counts them (CR LF, CR and LF each end one).
fn line_count(text: &str) -> u64 {
    let breaks = text.replace("\r\n", "\n").matches(['\r', '\n']).count();
    breaks as u64 + 1
}
