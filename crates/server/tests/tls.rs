//! TLS on the listen address (`tls = "files"`): the page, the API, WHIP signalling, WebSocket
//! and Ogg listeners (written by the fan-out shards, encrypted per listener) over TLS, checked by
//! clients that trust only the test's own certificate authority; the certificate reloaded when
//! its files change and on SIGHUP; plain HTTP redirected to HTTPS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::tls::TestCa;
use common::*;
use townhall_client::rtc_client::{Mode, Offer};
use townhall_core::Role;
use townhall_media::SAMPLE_RATE;
use townhall_media::analysis::{ToneGenerator, tone_amplitude};
use townhall_server::config::TlsMode;
use townhall_server::{Config, Server};

async fn tls_server(ca: &TestCa, extra: Config) -> Server {
    server_with(Config {
        tls: TlsMode::Files,
        tls_cert: Some(ca.cert.clone()),
        tls_key: Some(ca.key.clone()),
        ..extra
    })
    .await
}

/// Publishes a 440 Hz tone over WHIP, the offer posted over HTTPS; returns the sender task.
async fn whip_tone(ca: &TestCa, addr: SocketAddr, space: &str) -> tokio::task::JoinHandle<()> {
    let offer =
        Offer::new("127.0.0.1".parse().expect("ip"), Mode::Publish { hear_back: false }, None)
            .await
            .expect("offer");
    let res = ca
        .http()
        .post(format!("https://127.0.0.1:{}/whip/{space}", addr.port()))
        .bearer_auth(token("alice", Role::Speaker, space))
        .header("content-type", "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await
        .expect("WHIP over HTTPS");
    assert_eq!(res.status(), 201, "WHIP answer");
    let location =
        res.headers().get("location").and_then(|v| v.to_str().ok()).expect("Location").to_owned();
    let answer = res.text().await.expect("answer");
    let mut session = offer.start(&answer, location).expect("session");
    session.connected(Duration::from_secs(10)).await.expect("WHIP connects");
    let send = session.send.clone();
    tokio::spawn(async move {
        let _session = session;
        let mut tone = ToneGenerator::new(440.0, 0.4);
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
                .expect("encoder");
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for seq in 0u32..600 {
            tick.tick().await;
            let packet = enc.encode_vec_float(&tone.next_frame(), 1275).expect("encode");
            let now = townhall_server::clock::now_us();
            if send.send((seq, Bytes::from(packet), now)).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_api_whip_websocket_and_ogg_work_over_tls_with_a_verified_certificate() {
    let ca = TestCa::new("paths");
    let server = tls_server(&ca, Config::default()).await;
    let addr = server.addr();
    let base = format!("https://127.0.0.1:{}", addr.port());
    assert_eq!(server.url(), format!("https://{addr}"));
    let http = ca.http();

    // The page and the API, over a verified connection.
    let page = http.get(format!("{base}/")).send().await.expect("page over TLS");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("body").contains("<html"), "the page");
    let res = http
        .post(format!("{base}/api/v1/spaces"))
        .bearer_auth(host())
        .json(&serde_json::json!({ "id": "secure", "title": "Over TLS", "live": true }))
        .send()
        .await
        .expect("create over TLS");
    assert_eq!(res.status(), 201);
    let spaces: serde_json::Value = http
        .get(format!("{base}/api/v1/spaces"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(spaces["spaces"][0]["id"], "secure", "{spaces}");
    // Bad input still gets its JSON error over TLS.
    assert_error(
        http.get(format!("{base}/api/v1/spaces/nope")).send().await.expect("get"),
        404,
        "not_found",
    )
    .await;

    // A client that does not trust the CA, or one speaking plain HTTP, gets nothing.
    let stranger = reqwest::Client::builder()
        .tls_certs_only([])
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert!(
        stranger.get(format!("{base}/")).send().await.is_err(),
        "unverified certificate accepted"
    );
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    assert!(plain.get(format!("http://{addr}/")).send().await.is_err(), "plain HTTP answered");

    // Listeners on the two fan-out paths, then a speaker over WHIP.
    let wss = ca.wss(addr, "/ws/secure?batch=5").await;
    let listening = tokio::spawn(listen_ws(wss, Duration::from_secs(6)));
    let ogg_url = format!("{base}/live/secure.opus");
    let ogg = tokio::spawn(async move {
        let mut res = http.get(ogg_url).send().await.expect("Ogg over TLS");
        assert_eq!(res.status(), 200);
        let mut body = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, res.chunk()).await {
            body.extend_from_slice(&chunk);
        }
        body
    });
    let speaker = whip_tone(&ca, addr, "secure").await;

    let heard = listening.await.expect("wss listener");
    assert_eq!(heard.gaps(), 0, "frames lost on the TLS WebSocket");
    let tail = heard.tail(2.0);
    assert!(tone_amplitude(tail, 440.0) > 0.1, "no 440 Hz tone over wss ({} samples)", tail.len());
    let pcm = decode_ogg(&ogg.await.expect("ogg listener"));
    let tail = &pcm[pcm.len().saturating_sub(2 * SAMPLE_RATE as usize)..];
    assert!(tone_amplitude(tail, 440.0) > 0.1, "no 440 Hz tone in the Ogg stream over TLS");
    speaker.abort();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_speaker_over_tls_is_heard() {
    let ca = TestCa::new("wss-speak");
    let server = tls_server(&ca, Config::default()).await;
    let addr = server.addr();
    let res = ca
        .http()
        .post(format!("https://127.0.0.1:{}/api/v1/spaces", addr.port()))
        .bearer_auth(host())
        .json(&serde_json::json!({ "id": "wss", "title": "WSS", "live": true }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let listener = ca.wss(addr, "/ws/wss?batch=5").await;
    let listening = tokio::spawn(listen_ws(listener, Duration::from_secs(5)));
    ca.speak_tone(addr, "wss", "bob", 660.0, 200).await;
    let heard = listening.await.expect("listener");
    let toned = heard
        .pcm
        .chunks(SAMPLE_RATE as usize / 10)
        .filter(|w| tone_amplitude(w, 660.0) > 0.1)
        .count();
    assert!(toned >= 10, "the wss speaker was heard in only {toned} 100 ms windows");
    server.shutdown().await;
}

/// The certificate a server presents to a new connection (its leaf, DER).
async fn presented(ca: &TestCa, addr: SocketAddr) -> Vec<u8> {
    let tls = ca.connect(addr).await.expect("TLS connect");
    let certs = tls.get_ref().1.peer_certificates().expect("certificates");
    certs[0].as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let ca = TestCa::new("reload");
    // The node serves copies, which the test then replaces as a renewal would.
    let dir = ca.cert.parent().expect("dir").join("live");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    std::fs::copy(&ca.cert, &cert).expect("copy");
    std::fs::copy(&ca.key, &key).expect("copy");
    let server = server_with(Config {
        tls: TlsMode::Files,
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    let first = presented(&ca, addr).await;
    // A broken renewal (half a file) keeps the old certificate in service.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB").expect("break");
    tokio::time::sleep(townhall_server::app::tls::RELOAD_CHECK + Duration::from_secs(1)).await;
    assert_eq!(presented(&ca, addr).await, first, "a broken file replaced the certificate");
    // The renewal done right: new connections get the new certificate.
    let (next_cert, next_key) = ca.next_pair();
    std::fs::copy(&next_key, &key).expect("renew key");
    std::fs::copy(&next_cert, &cert).expect("renew cert");
    let deadline = tokio::time::Instant::now() + townhall_server::app::tls::RELOAD_CHECK * 3;
    loop {
        if presented(&ca, addr).await != first {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate was not served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_the_binary() {
    let ca = TestCa::new("sighup");
    let dir = ca.cert.parent().expect("dir").join("hup");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&ca.cert, &cert).expect("copy");
    std::fs::copy(&ca.key, &key).expect("copy");
    let port = common::nodes::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_townhall"))
        .args(["serve", "--no-demo", "--in-memory", "--tls", "files"])
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(&dir)
        .env("TOWNHALL_API_KEY", TEST_API_KEY)
        .env("TOWNHALL_API_SECRET", TEST_API_SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("townhall starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Ok(tls) = ca.connect(addr).await {
            break tls.get_ref().1.peer_certificates().expect("certs")[0].as_ref().to_vec();
        }
        assert!(tokio::time::Instant::now() < deadline, "the node did not come up over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Replace the files but keep their old times, so only the signal can tell the node.
    let times: Vec<std::time::SystemTime> = [&cert, &key]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).expect("mtime"))
        .collect();
    let (next_cert, next_key) = ca.next_pair();
    std::fs::copy(&next_key, &key).expect("renew key");
    std::fs::copy(&next_cert, &cert).expect("renew cert");
    for (path, at) in [&cert, &key].iter().zip(times) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(at))
            .expect("keep mtime");
    }
    tokio::time::sleep(townhall_server::app::tls::RELOAD_CHECK + Duration::from_secs(1)).await;
    assert_eq!(presented(&ca, addr).await, first, "reloaded without a change or a signal");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if presented(&ca, addr).await != first {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP did not reload the certificate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(child.try_wait().expect("wait").is_none(), "SIGHUP stopped the node");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https() {
    let ca = TestCa::new("redirect");
    let redirect: SocketAddr =
        format!("127.0.0.1:{}", common::nodes::free_port()).parse().expect("addr");
    let server =
        tls_server(&ca, Config { tls_redirect: Some(redirect), ..Config::default() }).await;
    let port = server.addr().port();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = client
        .get(format!("http://127.0.0.1:{}/live/demo.opus?x=1", redirect.port()))
        .send()
        .await
        .expect("redirect port answers");
    assert_eq!(res.status(), 308);
    let location = res.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(location, format!("https://127.0.0.1:{port}/live/demo.opus?x=1"));
    // Following it lands on the TLS port with a verified certificate.
    let res = ca.http().get(location).send().await.expect("follow");
    // Answered over TLS (an unknown query parameter is refused, with its JSON error).
    assert_error(res, 400, "bad_query").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_missing_or_mismatched_certificate_does_not_start() {
    let ca = TestCa::new("refuse");
    let (_, other_key) = ca.next_pair();
    for (cert, key) in
        [(ca.cert.clone(), other_key), (ca.cert.with_extension("none"), ca.key.clone())]
    {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls: TlsMode::Files,
            tls_cert: Some(cert),
            tls_key: Some(key),
            api_key: Some(TEST_API_KEY.into()),
            api_secret: Some(TEST_API_SECRET.into()),
            demo: false,
            ..Config::default()
        };
        let err = townhall_server::start(config).await.expect_err("refused");
        assert!(matches!(err, townhall_server::StartError::Tls(_)), "{err}");
    }
}

/// Debian's pebble (a small ACME CA for tests), killed when dropped.
struct Pebble {
    child: std::process::Child,
    directory: String,
    management: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PEBBLE: &str = "/usr/bin/pebble";

impl Pebble {
    /// Starts pebble with its HTTPS certificate from `ca`, validating TLS-ALPN-01 on
    /// `tls_port` (the node's listen port).
    async fn start(ca: &TestCa, tls_port: u16) -> Pebble {
        let (listen, management) = (common::nodes::free_port(), common::nodes::free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": ca.cert, "privateKey": ca.key,
            "httpPort": common::nodes::free_port(), "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        let path = ca.cert.with_file_name("pebble.json");
        std::fs::write(&path, config.to_string()).expect("pebble config");
        let child = std::process::Command::new(PEBBLE)
            .arg("-config")
            .arg(&path)
            // No random pauses before validating, no random nonce rejections: a test CA that
            // behaves like a production one.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pebble starts (apt-get install pebble)");
        let pebble =
            Pebble { child, directory: format!("https://127.0.0.1:{listen}/dir"), management };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while ca.http().get(&pebble.directory).send().await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "pebble did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pebble
    }

    /// The root that signs what pebble issues (PEM).
    async fn root(&self, ca: &TestCa) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        ca.http().get(url).send().await.expect("roots").text().await.expect("pem")
    }
}

/// A TLS connection to `addr` for the name `localhost`, trusting only `root_pem`.
async fn connect_trusting(
    root_pem: &str,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(der.expect("root der")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await
}

fn acme_config(
    port: u16,
    directory: &str,
    ca_file: &std::path::Path,
    data: &std::path::Path,
) -> Config {
    Config {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        tls: TlsMode::Acme,
        acme_domains: vec!["localhost".into()],
        acme_contact: Some("mailto:ops@example.com".into()),
        acme_directory: directory.to_owned(),
        acme_ca: Some(ca_file.to_owned()),
        data_dir: data.to_owned(),
        api_key: Some(TEST_API_KEY.into()),
        api_secret: Some(TEST_API_SECRET.into()),
        demo: false,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_orders_a_certificate_over_tls_alpn_and_keeps_it_across_a_restart() {
    if !std::path::Path::new(PEBBLE).exists() {
        panic!("{PEBBLE} not found: apt-get install pebble (.ci/run installs it)");
    }
    let ca = TestCa::new("acme");
    let port = common::nodes::free_port();
    let pebble = Pebble::start(&ca, port).await;
    let ca_file = ca.cert.with_file_name("pebble-https-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).expect("ca file");
    let data = ca.cert.with_file_name("data");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let server = townhall_server::start(acme_config(port, &pebble.directory, &ca_file, &data))
        .await
        .expect("starts");
    let root = pebble.root(&ca).await;
    // The CA validates over TLS-ALPN-01 on the node's own port, then issues.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let issued = loop {
        if let Ok(tls) = connect_trusting(&root, addr).await {
            break tls;
        }
        assert!(tokio::time::Instant::now() < deadline, "no certificate from the ACME CA in 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let leaf = issued.get_ref().1.peer_certificates().expect("certs")[0].as_ref().to_vec();
    drop(issued);
    // Requests are served with it.
    let mut tls = connect_trusting(&root, addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.shutdown().await;

    // A restart with the CA gone: the cached certificate is served, nothing is ordered.
    let directory = pebble.directory.clone();
    drop(pebble);
    let server = townhall_server::start(acme_config(port, &directory, &ca_file, &data))
        .await
        .expect("restarts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        if let Ok(tls) = connect_trusting(&root, addr).await {
            break tls.get_ref().1.peer_certificates().expect("certs")[0].as_ref().to_vec();
        }
        assert!(tokio::time::Instant::now() < deadline, "the cached certificate was not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(again, leaf, "a different certificate after the restart");
    server.shutdown().await;
}
