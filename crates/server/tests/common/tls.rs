//! A certificate authority made for one test, its certificate for the loopback names, and
//! clients that trust only that authority (so verification is real: any other certificate
//! fails).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sha2::Digest;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A test CA and one server certificate it signed, written as PEM files.
pub struct TestCa {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The server's chain file.
    pub cert: PathBuf,
    /// The server's key file.
    pub key: PathBuf,
    /// base64(SHA-256(SubjectPublicKeyInfo)) of the server key, for Chromium's
    /// `--ignore-certificate-errors-spki-list` (it trusts that key as a CA-issued one).
    pub spki_sha256: String,
    dir: PathBuf,
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate for `localhost` and `127.0.0.1` signed by `issuer`, written to `dir/name.*`.
fn leaf(
    issuer: &CertifiedIssuer<'_, KeyPair>,
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf, String) {
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    let spki = sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key));
    (c, k, base64::engine::general_purpose::STANDARD.encode(spki))
}

impl TestCa {
    /// A fresh CA and server certificate in a temporary directory named after `tag`.
    pub fn new(tag: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!("townhall-ca-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Townhall test CA");
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let (cert, key, spki_sha256) = leaf(&issuer, &dir, "server");
        // A second certificate from the same CA, for reload tests.
        let (next_cert, next_key, _) = leaf(&issuer, &dir, "next");
        let _ = (next_cert, next_key);
        TestCa { ca_pem: issuer.pem(), cert, key, spki_sha256, dir }
    }

    /// The second certificate this CA signed (chain file, key file).
    pub fn next_pair(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("next.crt"), self.dir.join("next.key"))
    }

    /// An HTTP client that trusts this CA only.
    pub fn http(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// A rustls client configuration that trusts this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .expect("CA der");
        roots.add(der).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A verified TLS connection to `addr`, named `127.0.0.1`.
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
        TlsConnector::from(self.client_config()).connect(name, tcp).await
    }

    /// A WebSocket over TLS to `path` (a speaking token in it goes in the header, as in
    /// [`super::ws`]).
    pub async fn wss(
        &self,
        addr: std::net::SocketAddr,
        path: &str,
    ) -> tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let (path, token) = super::speaking_token(path);
        let mut req = format!("wss://127.0.0.1:{}{path}", addr.port())
            .into_client_request()
            .expect("request");
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("header");
            req.headers_mut().insert("authorization", value);
        }
        let tls = self.connect(addr).await.expect("TLS connect");
        let (ws, _) = tokio_tungstenite::client_async(req, tls).await.expect("wss handshake");
        ws
    }

    /// Speaks a `freq` Hz tone as `who` into `space` over wss for `frames` 20 ms frames.
    pub async fn speak_tone(
        &self,
        addr: std::net::SocketAddr,
        space: &str,
        who: &str,
        freq: f32,
        frames: usize,
    ) {
        use futures_util::SinkExt;
        let role = townhall_core::Role::Speaker;
        let path = format!("/ws/{space}?mode=speak&token={}", super::token(who, role, space));
        let mut speaker = self.wss(addr, &path).await;
        let mut tone = super::ToneSpeaker::new(freq, 0.4);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
        for _ in 0..frames {
            tick.tick().await;
            speaker
                .send(tokio_tungstenite::tungstenite::Message::Binary(tone.next_message()))
                .await
                .expect("send over wss");
        }
    }
}
