//! Hot reload: on a file change (debounced; the watch survives editors replacing the file) or
//! SIGHUP, load → validate → build the whole new snapshot → swap one pointer. A bad file is
//! logged with its `file:line:col` and the old snapshot keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::auth::keys::{stranded_keys, KeyRing, KeyState, StrandedKey};
use crate::config::Config;
use crate::state::{Shared, Snapshot};

/// Quiet period after the last file event before reloading (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest a burst of events can delay a reload.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new generation is serving.
    Applied { generation: u64 },
    /// The file content did not change.
    Unchanged,
    /// The file is invalid; the old config keeps serving.
    Rejected { error: String },
}

impl ReloadOutcome {
    fn label(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied { .. } => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Rejected { .. } => "rejected",
        }
    }
}

/// Load `path` and, if valid and different, publish it. Logs and counts the outcome.
pub fn reload(path: &Path, shared: &Shared) -> ReloadOutcome {
    let started = Instant::now();
    let current = shared.snapshot();
    let outcome = match Config::load(path) {
        Err(err) => ReloadOutcome::Rejected {
            error: err.to_string(),
        },
        Ok(config) if config.digest == current.config.digest => ReloadOutcome::Unchanged,
        Ok(config) => {
            warn_about_restart_only_changes(&current.config, &config);
            // Applied anyway: removing a compromised key at once must stay possible.
            // `check --previous` is the gate that refuses it before a deploy.
            for problem in stranded(shared, &current, &config) {
                tracing::warn!("{problem}");
            }
            match Snapshot::build(config, shared.next_generation()) {
                Err(err) => ReloadOutcome::Rejected {
                    error: format!("{}: {err}", path.display()),
                },
                Ok(snapshot) => {
                    let generation = snapshot.generation;
                    shared.publish(snapshot);
                    ReloadOutcome::Applied { generation }
                }
            }
        }
    };
    shared.metrics.reload(outcome.label());
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &outcome {
        ReloadOutcome::Applied { generation } => {
            tracing::info!(
                outcome = "applied",
                generation,
                elapsed_ms,
                "config reloaded"
            )
        }
        ReloadOutcome::Unchanged => tracing::debug!(outcome = "unchanged", "config unchanged"),
        ReloadOutcome::Rejected { error } => {
            tracing::error!(outcome = "rejected", error = %error, "config reload rejected; keeping the previous config")
        }
    }
    outcome
}

/// Why removing keys from the ring now would fail tokens they signed (empty: it would not).
fn stranded(shared: &Shared, current: &Snapshot, config: &Config) -> Vec<String> {
    let lifetime = (config.tokens.ttl + config.tokens.leeway).as_secs();
    let now = crate::clock::unix_now();
    let state = |ring: &KeyRing| -> Vec<KeyState> {
        ring.keys()
            .iter()
            .map(|key| KeyState {
                retired_at: shared.retired_since(key),
                ..key.state()
            })
            .collect()
    };
    stranded_keys(
        &state(current.keys.ring()),
        &state(&config.tokens.ring),
        lifetime,
        now,
    )
    .into_iter()
    .map(|key| describe_stranded(&key, now))
    .collect()
}

fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    if old.listen != new.listen {
        tracing::warn!(old = %old.listen, new = %new.listen, "`listen` changed: takes effect after a restart");
    }
    if old.admin != new.admin {
        tracing::warn!("`admin` changed: takes effect after a restart");
    }
    if old.limits.max_connections != new.limits.max_connections
        || old.limits.shutdown_grace != new.limits.shutdown_grace
    {
        tracing::warn!(
            "limits.max_connections / shutdown_grace changed: take effect after a restart"
        );
    }
    if old.login.lockout != new.login.lockout {
        tracing::warn!("login.lockout changed: takes effect after a restart");
    }
    if old.state != new.state {
        tracing::warn!("state changed: takes effect after a restart");
    }
    if old.otlp != new.otlp {
        // The export thread and its queue are made once, with the first config.
        tracing::warn!("trace.otlp changed: takes effect after a restart");
    }
    if old.log_format != new.log_format {
        // The log writer is set up once, before the first line; lines already queued in the
        // old format would otherwise mix with new ones.
        tracing::warn!("log.format changed: takes effect after a restart");
    }
}

/// Start watching the config (and its users file) and listening for SIGHUP. The returned
/// guard keeps the file watcher alive.
pub fn spawn(path: PathBuf, shared: Arc<Shared>) -> Option<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    #[cfg(unix)]
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading config");
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    let watcher = watch_files(&path, &shared, tx);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until events stop arriving for a moment, but never postpone a
            // reload by more than MAX_DELAY under a steady stream of events.
            let first = Instant::now();
            while first.elapsed() < MAX_DELAY {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let path = path.clone();
            let shared_for_reload = shared.clone();
            // Loading hashes nothing but does read files and build TLS: keep it off the
            // serving threads and off this runtime's only thread.
            let _ = tokio::task::spawn_blocking(move || reload(&path, &shared_for_reload)).await;
        }
    });
    watcher
}

/// Watch the *directories* holding the config files: editors and `mv` replace files (new
/// inode), which a watch on the file itself would silently stop seeing.
fn watch_files(
    path: &Path,
    shared: &Shared,
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let files: Vec<PathBuf> = shared
        .snapshot()
        .config
        .files
        .iter()
        .chain(std::iter::once(&path.to_owned()))
        .filter_map(|f| std::path::absolute(f).ok())
        .collect();
    // React to events naming one of our files, or Kubernetes-style `..data` symlink swaps
    // (ConfigMap updates never name the file itself). Other files in the directory (say, a
    // log file) must not trigger reloads.
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_owned()))
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|name| {
                names.iter().any(|n| n == name) || name.to_string_lossy().starts_with("..")
            })
        });
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|err| tracing::warn!(error = %err, "cannot watch config files; SIGHUP still reloads"))
    .ok()?;
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_owned))
        .collect();
    dirs.dedup();
    for dir in dirs {
        if let Err(err) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %err, dir = %dir.display(), "cannot watch directory");
        }
    }
    Some(watcher)
}

/// What to tell the operator about a key they may not remove yet.
pub fn describe_stranded(key: &StrandedKey, now: u64) -> String {
    match key.until {
        None => format!(
            "tokens.keys: `{}` is the active key: removing it fails every token it signed; make another key active and keep `{}` as `retired` for ttl + leeway",
            key.kid, key.kid
        ),
        Some(until) => format!(
            "tokens.keys: removing retired key `{}` fails tokens it signed for another {} s (ttl + leeway after its retirement); keep it until then, or give `retired_at` if it was retired earlier",
            key.kid,
            until.saturating_sub(now)
        ),
    }
}
