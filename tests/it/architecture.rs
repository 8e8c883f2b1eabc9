//! The layering docs/ARCHITECTURE.md describes, checked on the source text: every
//! `crate::…` reference in non-test code points to a lower layer, no module imports another
//! in a circle, `policy/` does no I/O and reads no clock, and no source file grows past
//! 500 lines of non-test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first: each may use only modules listed before it.
const LAYERS: &[&str] = &[
    "body", "clock", "error", "policy", "auth", "config", "tls", "conn", "forward", "ops",
    "issuers", "fleet", "state", "pipeline", "server", "reload", "cli",
];

/// Lower layers a module still must not use (the codemap's "never imports" column beyond
/// what the order already forbids).
const ALSO_FORBIDDEN: &[(&str, &[&str])] = &[
    ("conn", &["config", "policy", "auth", "tls"]),
    ("forward", &["auth", "policy", "conn", "tls"]),
    ("ops", &["auth", "policy", "conn", "forward", "tls"]),
    ("issuers", &["conn", "forward", "tls"]),
    ("fleet", &["conn", "forward", "tls", "issuers", "ops"]),
];

/// Words that mean I/O, time, randomness or shared state; none may appear in `policy/` code.
const IMPURE: &[&str] = &[
    "std::fs",
    "std::io",
    "std::env",
    "std::thread",
    "std::time",
    "SystemTime",
    "Instant",
    "tokio",
    "hyper",
    "rand",
    "crate::clock",
    "thread_local",
    "static mut",
    "OnceLock",
    "LazyLock",
    "Mutex",
    "Atomic",
    "DashMap",
];

struct Source {
    /// Module path within the crate, e.g. `pipeline::login` (`mod.rs` names its folder).
    module: String,
    /// The code before `#[cfg(test)]`, without comment lines.
    code: String,
    non_test_lines: usize,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read source");
            let non_test = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = non_test
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .map(|line| format!("{line}\n"))
                .collect();
            let relative = path.strip_prefix(&root).expect("under src");
            let mut module = relative
                .with_extension("")
                .to_string_lossy()
                .replace('/', "::");
            if let Some(folder) = module.strip_suffix("::mod") {
                module = folder.to_owned();
            }
            if module == "lib" || module == "main" {
                module.clear();
            }
            Source {
                module,
                code,
                non_test_lines: non_test.lines().count(),
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b::…` path in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let path: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let segments: Vec<String> = path
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !segments.is_empty() {
            paths.push(segments);
        }
        rest = after;
    }
    paths
}

fn layer_of(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn module_imports_point_down_and_form_no_cycle() {
    let sources = sources();
    let modules: BTreeSet<&str> = sources.iter().map(|s| s.module.as_str()).collect();
    let rank = |layer: &str| LAYERS.iter().position(|l| *l == layer);
    let mut violations = Vec::new();
    let mut graph: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for source in &sources {
        if source.module.is_empty() {
            continue; // lib.rs and main.rs declare and re-export; they sit above everything.
        }
        let from = layer_of(&source.module);
        let from_rank =
            rank(from).unwrap_or_else(|| panic!("`{from}` is not in LAYERS; place it there"));
        for path in crate_paths(&source.code) {
            let to = path[0].as_str();
            if to == from {
                // Within a layer: record the file-level edge for the cycle check, resolved to
                // the deepest module the path names.
                let target = (1..=path.len())
                    .rev()
                    .map(|n| path[..n].join("::"))
                    .find(|m| modules.contains(m.as_str()));
                if let Some(target) = target.filter(|t| *t != source.module) {
                    graph
                        .entry(source.module.as_str())
                        .or_default()
                        .insert(target);
                }
                continue;
            }
            let Some(to_rank) = rank(to) else { continue };
            let forbidden = ALSO_FORBIDDEN
                .iter()
                .any(|(layer, banned)| *layer == from && banned.contains(&to));
            if to_rank > from_rank || forbidden {
                violations.push(format!("{} uses crate::{}", source.module, path.join("::")));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports pointing up or across:\n{}",
        violations.join("\n")
    );

    // Depth-first search for a back edge among the files of each layer.
    fn visit<'g>(
        node: &'g str,
        graph: &'g BTreeMap<&str, BTreeSet<String>>,
        state: &mut BTreeMap<&'g str, bool>,
        stack: &mut Vec<&'g str>,
    ) -> Option<Vec<String>> {
        state.insert(node, false);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(false) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(true) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node, true);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            let cycle = visit(node, &graph, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import circle: {}",
                cycle.unwrap_or_default().join(" -> ")
            );
        }
    }
}

#[test]
fn policy_does_no_io_and_reads_no_clock() {
    let mut found = Vec::new();
    for source in sources().iter().filter(|s| layer_of(&s.module) == "policy") {
        for word in IMPURE {
            if source.code.contains(word) {
                found.push(format!("{}: {word}", source.module));
            }
        }
        for path in crate_paths(&source.code) {
            if !matches!(path[0].as_str(), "policy" | "error") {
                found.push(format!("{}: crate::{}", source.module, path.join("::")));
            }
        }
    }
    assert!(
        found.is_empty(),
        "impure code in policy/:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_source_file_exceeds_500_lines_of_non_test_code() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|s| s.non_test_lines > 500)
        .map(|s| format!("{} ({} lines)", s.module, s.non_test_lines))
        .collect();
    assert!(
        long.is_empty(),
        "split these by concern: {}",
        long.join(", ")
    );
}

/// The checks themselves must see a violation when there is one.
#[test]
fn the_import_scanner_finds_crate_paths_and_skips_comments() {
    let paths = crate_paths(
        "use crate::policy::decision::{self, Permit};\nlet x = crate::clock::unix_now();",
    );
    assert_eq!(paths[0], ["policy", "decision"]);
    assert_eq!(paths[1], ["clock", "unix_now"]);
    assert_eq!(layer_of("pipeline::login"), "pipeline");
}
