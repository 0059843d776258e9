//! What an operator installs: the documented configuration file (every key, each valid), the
//! `check-config` command the service runs before starting, JSON logs, and the Prometheus
//! alerts and Grafana dashboard (naming only metrics the node exports).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use townhall_server::Config;

const BIN: &str = env!("CARGO_BIN_EXE_townhall");
const SHIPPED: &str = include_str!("../../../deploy/townhall.toml");

/// The shipped file with every `# key = value` example taken in (the first of each key).
fn uncommented(text: &str) -> String {
    let mut seen = BTreeSet::new();
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else { return line.to_owned() };
            let key = rest.split(" = ").next().unwrap_or("");
            let is_key = rest.contains(" = ")
                && !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            if is_key && seen.insert(key.to_owned()) { rest.to_owned() } else { line.to_owned() }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keys set in a TOML text.
fn keys(text: &str) -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(text).expect("TOML");
    table.keys().cloned().collect()
}

#[test]
fn the_shipped_config_documents_every_key_and_each_example_is_valid() {
    let every: BTreeSet<String> = serde_json::to_value(Config::default())
        .expect("json")
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    let all = uncommented(SHIPPED);
    let listed = keys(&all);
    let missing: Vec<_> = every.difference(&listed).collect();
    assert!(missing.is_empty(), "keys not in deploy/townhall.toml: {missing:?}");
    // Unknown keys are refused (deny_unknown_fields), so a typo in the file fails here.
    let config: Config = toml::from_str(&all).expect("every example parses");
    config.validate().expect("every example is in range");
    // As shipped: a node for the network, with the database, without the demo.
    let shipped: Config = toml::from_str(SHIPPED).expect("parses");
    assert!(!shipped.listen.ip().is_loopback() && shipped.database && !shipped.demo);
}

/// Runs `townhall check-config` on `path` with `env`; (success, stdout + stderr).
fn check(path: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("TOWNHALL_API_KEY")
        .env_remove("TOWNHALL_API_SECRET")
        .env_remove("TOWNHALL_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("townhall runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn check_config_passes_the_shipped_file_and_names_what_is_wrong() {
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/townhall.toml");
    let keys = [("TOWNHALL_API_KEY", "node-1"), ("TOWNHALL_API_SECRET", "sixteen bytes at least")];
    let (ok, text) = check(&shipped, &keys);
    assert!(ok, "{text}");
    assert!(text.contains(": ok") && text.contains("0.0.0.0:8080"), "{text}");

    // Off loopback without keys, the node would refuse to start: so does the check.
    let (ok, text) = check(&shipped, &[]);
    assert!(!ok && text.contains("TOWNHALL_API_SECRET"), "{text}");

    let dir = std::env::temp_dir().join(format!("townhall-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (body, names) in [
        ("listn = \"127.0.0.1:8080\"\n", "listn"),
        ("bitrate = 1\n", "bitrate"),
        ("role = \"edge\"\n", "redis"),
        ("listen = \"nowhere\"\n", "listen"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, body).expect("write");
        let (ok, text) = check(&path, &keys);
        assert!(!ok, "{body:?} passed: {text}");
        assert!(text.contains(names), "{body:?}: the message names {names}: {text}");
    }
    let (ok, text) = check(&dir.join("absent.toml"), &keys);
    assert!(!ok && text.contains("cannot read"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = std::env::temp_dir().join(format!("townhall-json-logs-{}", std::process::id()));
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--in-memory", "--log-format", "json"])
        .arg("--data-dir")
        .arg(&dir)
        .env("TOWNHALL_LOG", "info")
        .env_remove("TOWNHALL_CONFIG")
        .env_remove("TOWNHALL_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("townhall starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut logged = None;
    while logged.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else { continue };
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON: {line}: {e}"));
            logged = Some(v);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let v = logged.expect("a JSON log line within 30 s (the demo logs at start)");
    for key in ["timestamp", "level", "target", "message"] {
        assert!(v.get(key).is_some(), "no {key}: {v}");
    }
}

/// Metric names (`townhall_...`) in a text, histogram/summary suffixes taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("townhall_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let base = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(base.to_owned());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_the_dashboard_name_only_metrics_the_node_exports() {
    let alerts = include_str!("../../../deploy/prometheus/townhall-alerts.yml");
    let dashboard = include_str!("../../../deploy/grafana/townhall-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(dashboard).expect("the dashboard is JSON");
    let used: BTreeSet<String> =
        metric_names(alerts).into_iter().chain(metric_names(dashboard)).collect();
    assert!(used.len() >= 15, "{used:?}");
    // The node's metric names are constants in one module; those recorded at start show on
    // /metrics at once (the others appear with their first event).
    let declared = metric_names(include_str!("../src/metrics.rs"));
    let server = demo_server(Config::default()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let text = http()
        .get(format!("http://{}/metrics", server.addr()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let exported = metric_names(&text);
    assert!(
        exported.contains("townhall_mixer_ticks_total") && exported.is_subset(&declared),
        "{exported:?}"
    );
    let unknown: Vec<_> = used.iter().filter(|n| !declared.contains(*n)).collect();
    assert!(unknown.is_empty(), "not metrics of the node: {unknown:?}");
    server.shutdown().await;
}
