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
