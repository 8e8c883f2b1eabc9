//! What ships for deployment besides the binary: the systemd unit, the Grafana dashboard and
//! the Prometheus alerts, checked against the real tools and the real gateway.

use std::path::Path;
use std::process::Command;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::read_to_string(path).expect("read example")
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies_without_a_complaint() {
    let unit = example("portcullis.service");
    for directive in [
        "User=portcullis",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=",
        "KillSignal=SIGTERM",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(directive)),
            "missing {directive}"
        );
    }
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: only the directives were checked");
        return;
    };
    assert!(probe.status.success());
    // Verified as installed, but pointing at the binary under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.service");
    let unit = unit.replace(
        "/usr/local/bin/portcullis",
        env!("CARGO_BIN_EXE_portcullis"),
    );
    std::fs::write(&path, unit).expect("write unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // `verify` exits 0 on directives it ignores; it says so on stderr.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
}

/// Every `portcullis_…` name a PromQL expression in `text` uses.
pub fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("portcullis_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    names
}

#[test]
fn the_dashboard_is_grafana_json_and_the_alerts_a_prometheus_rule_file() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&example("grafana-dashboard.json")).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    assert!(panels.iter().all(|p| p["targets"][0]["expr"].is_string()));
    let alerts = example("prometheus-alerts.yaml");
    assert!(alerts.starts_with('#') && alerts.contains("groups:\n  - name: portcullis"));
    assert_eq!(
        alerts.matches("- alert: ").count(),
        alerts.matches("expr:").count()
    );
    let Ok(probe) = Command::new("promtool").arg("--version").output() else {
        eprintln!("promtool is not installed: the rule file was checked for shape only");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alerts.yaml");
    std::fs::write(&path, alerts).expect("write rules");
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
