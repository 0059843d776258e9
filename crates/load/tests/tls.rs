//! townhall-load over TLS: `tls-cert` makes a CA and a loopback certificate, a real server
//! serves it (`--tls files`), and listeners and joiners that trust that CA hear the demo; a
//! load generator trusting another CA gets nothing (the certificate is really checked).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_townhall-load");

fn run_load(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(BIN).args(args).output().expect("townhall-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json =
        stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, format!("{stdout}\n{stderr}"))
}

fn certificates(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("townhall-load-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().expect("utf-8 path");
    let (code, _, output) = run_load(&["tls-cert", "--out", out]);
    assert_eq!(code, 0, "{output}");
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        assert!(dir.join(file).is_file(), "tls-cert wrote no {file}");
    }
    dir
}

async fn tls_demo(dir: &Path) -> townhall_server::Server {
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        demo: true,
        tls: townhall_server::config::TlsMode::Files,
        tls_cert: Some(dir.join("cert.pem")),
        tls_key: Some(dir.join("key.pem")),
        data_dir: dir.join("data"),
        ..Default::default()
    };
    townhall_server::start(config).await.expect("server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_joiners_hear_the_demo_over_tls_with_the_ca_they_trust() {
    let dir = certificates("ok");
    let other = certificates("other");
    let server = tls_demo(&dir).await;
    let target = format!("https://{}", server.addr());
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().expect("path");
    let listen = ["listen", "--target", &target, "--tls-ca", ca, "--listeners", "5"];
    let (code, report, output) = tokio::task::spawn_blocking({
        let args: Vec<String> = listen.iter().map(|s| s.to_string()).collect();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_load(&[&args[..], &["--duration", "3", "--json"]].concat())
        }
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["connected"], 5, "{report}");
    assert_eq!(report["target"], target.as_str(), "{report}");
    assert!(report["frames"].as_u64().is_some_and(|n| n > 5 * 50), "{report}");
    let storm = ["join-storm", "--target", &target, "--tls-ca", ca, "--rate", "20"];
    let (code, report, output) = tokio::task::spawn_blocking({
        let args: Vec<String> = storm.iter().map(|s| s.to_string()).collect();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_load(&[&args[..], &["--duration", "1", "--json"]].concat())
        }
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["admitted"], 20, "every joiner heard audio over TLS: {report}");
    // Trusting another CA: every handshake fails, nobody connects.
    let wrong = other.join("ca.pem");
    let wrong = wrong.to_str().expect("path").to_owned();
    let (_, report, output) = tokio::task::spawn_blocking({
        let target = target.clone();
        move || {
            run_load(&[
                "listen",
                "--target",
                &target,
                "--tls-ca",
                &wrong,
                "--listeners",
                "3",
                "--duration",
                "1",
                "--json",
            ])
        }
    })
    .await
    .expect("join");
    assert_eq!(report["connected"], 0, "a certificate from another CA was accepted: {output}");
    assert_eq!(report["failed"], 3, "{report}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn a_ca_file_without_certificates_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("townhall-load-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("empty.pem");
    std::fs::write(&bad, "not a certificate\n").expect("write");
    let (code, _, output) = run_load(&[
        "listen",
        "--target",
        "https://127.0.0.1:9",
        "--tls-ca",
        bad.to_str().expect("path"),
    ]);
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("no certificate"), "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}
