//! `portcullis gen-key`: a new private signing key for `tokens.keys`, written with mode 0600.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::auth::jwt::SigningAlgorithm;
use crate::auth::keys::generate_private_key;

/// Algorithms `gen-key` makes keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

/// Write a new PKCS#8 PEM key to `out` (refusing to overwrite), or print it when `out` is
/// `None`.
pub fn gen_key(alg: KeyAlgorithm, out: Option<&Path>) -> ExitCode {
    let alg = match alg {
        KeyAlgorithm::Es256 => SigningAlgorithm::ES256,
        KeyAlgorithm::EdDsa => SigningAlgorithm::EdDSA,
    };
    let pem = match generate_private_key(alg) {
        Ok(pem) => pem,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Some(out) = out else {
        let _ = write!(std::io::stdout(), "{pem}");
        return ExitCode::SUCCESS;
    };
    match write_private(out, pem.as_bytes()) {
        Ok(()) => {
            eprintln!(
                "wrote a new {} private key to {}",
                alg.name(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}: {err}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// Create `path` readable by its owner only, never replacing an existing file (a key that
/// signs tokens must not be lost to a typo).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
