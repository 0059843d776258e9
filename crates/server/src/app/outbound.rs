//! The node's outgoing HTTP(S): to other nodes of its cluster (the relay's WebSocket, room
//! actions and captions switches forwarded to an origin) and to webhook receivers.
//!
//! `https://` and `wss://` are checked against the public Web PKI (webpki-roots, compiled in:
//! no dependence on the host's store) plus the CA certificates in `tls_client_ca`, for a
//! cluster whose nodes carry certificates from a private CA.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::app::config::Config;
use crate::app::tls::{TlsError, provider};

/// An HTTP/1.1 client for `http://` and `https://` URLs.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How the node talks to others: one TLS client configuration, one pooled HTTP client.
#[derive(Clone)]
pub struct Outbound {
    /// The TLS client configuration (for `wss://` relays).
    pub tls: Arc<rustls::ClientConfig>,
    /// The pooled HTTP client over it.
    pub http: HttpClient,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl Outbound {
    /// The node's outgoing client, trusting the Web PKI and `config.tls_client_ca`.
    pub fn new(config: &Config) -> Result<Outbound, TlsError> {
        let tls = Arc::new(client_config(config.tls_client_ca.as_deref())?);
        // The connector offers the ALPN of the HTTP versions it enables (HTTP/1.1) itself.
        let mut for_http = (*tls).clone();
        for_http.alpn_protocols.clear();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(for_http)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Outbound { tls, http })
    }
}

/// A TLS client configuration trusting the Web PKI and the PEM certificates in `extra`.
pub fn client_config(extra: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra {
        let file_err = |message: String| TlsError::File { path: path.into(), message };
        let before = roots.len();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_err(e.to_string()))? {
            roots.add(cert.map_err(|e| file_err(e.to_string()))?)?;
        }
        if roots.len() == before {
            return Err(file_err("no CA certificate in the file".into()));
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_and_none_means_the_web_pki() {
        let dir = std::env::temp_dir().join(format!("townhall-outbound-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let err = client_config(Some(&empty)).expect_err("no certificate");
        assert!(err.to_string().contains("no CA certificate"), "{err}");
        assert!(client_config(Some(&dir.join("missing.pem"))).is_err());
        assert!(client_config(None).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
