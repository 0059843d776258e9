//! Certificates for the listen address.
//!
//! - `tls = "files"`: a chain and key read from PEM files, swapped in place when the files
//!   change or on SIGHUP, so a renewed certificate is served to new connections without a
//!   restart (connections already open keep theirs). A reload that fails (a half-written file,
//!   a key that does not match) keeps the certificate being served and logs why: a renewal
//!   script's mistake never takes the node off TLS.
//! - `tls = "acme"`: certificates ordered from an ACME CA and renewed before they expire
//!   (rustls-acme), proved by TLS-ALPN-01 (RFC 8737) on the listen address itself; the account
//!   and certificates are cached in `data_dir/acme`, so a restart does not order again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

/// The ALPN protocols offered: HTTP/1.1 (WebSocket upgrades and the raw Ogg stream need it).
const ALPN: &[&[u8]] = &[b"http/1.1"];
/// The ALPN protocols offered with ACME: HTTP/1.1, and the CA's TLS-ALPN-01 validation.
pub const ACME_ALPN: &[&[u8]] = &[b"http/1.1", b"acme-tls/1"];

/// How often the files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or is not PEM.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The key is not one rustls can sign with, or does not match the certificate.
    #[error("{path}: {message}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The server configuration could not be built.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every TLS configuration of the node uses (aws-lc-rs, which the tree
/// already builds), named explicitly so no other crate's choice can change it.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a certificate chain and its private key from PEM files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let file_err = |path: &Path, message: String| TlsError::File { path: path.into(), message };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no CERTIFICATE in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let key_err = |message: String| TlsError::Key { path: key.into(), message };
    let signing =
        provider().key_provider.load_private_key(der).map_err(|e| key_err(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| key_err(format!("does not match {}: {e}", cert.display())))?;
    Ok(pair)
}

/// The certificate served to every client, replaceable while the node runs.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
}

impl ReloadingCert {
    /// Loads the pair (a failure here stops the node from starting).
    pub fn load(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let pair = load_pair(cert, key)?;
        Ok(ReloadingCert {
            current: RwLock::new(Arc::new(pair)),
            cert: cert.into(),
            key: key.into(),
        })
    }

    /// Reads the files again and serves the new pair from now on; on failure the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = Arc::new(load_pair(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = pair;
        Ok(())
    }

    /// The newest modification time of the two files.
    fn modified(&self) -> Option<SystemTime> {
        let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        at(&self.cert).max(at(&self.key))
    }

    /// Reloads when the files change (checked every [`RELOAD_CHECK`]) or on SIGHUP, until
    /// `shutdown` flips.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut seen = self.modified();
        let mut hup = hangups();
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        loop {
            let asked = tokio::select! {
                _ = tick.tick() => false,
                _ = hup.recv() => true,
                _ = shutdown.changed() => return,
            };
            let now = self.modified();
            if !asked && now == seen {
                continue;
            }
            seen = now;
            let reloaded = tokio::task::spawn_blocking({
                let this = self.clone();
                move || this.reload()
            })
            .await;
            match reloaded {
                Ok(Ok(())) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded")
                }
                Ok(Err(e)) => {
                    tracing::error!("TLS certificate not reloaded (still serving the old one): {e}")
                }
                Err(e) => tracing::error!("TLS reload failed: {e}"),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// SIGHUP deliveries (none where signals do not exist or cannot be installed).
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Hangups { signal: signal(SignalKind::hangup()).ok() }
    }
    #[cfg(not(unix))]
    Hangups {}
}

impl Hangups {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.signal.as_mut() {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// Starts ordering and renewing certificates for `config.acme_domains`; returns the resolver
/// that serves them (and the TLS-ALPN-01 challenge certificates while an order is open). Until
/// the first certificate arrives, handshakes fail.
pub fn acme(
    config: &crate::app::config::Config,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<dyn ResolvesServerCert>, TlsError> {
    let mut acme = rustls_acme::AcmeConfig::new(&config.acme_domains)
        .directory(&config.acme_directory)
        .contact(config.acme_contact.iter());
    if let Some(ca) = &config.acme_ca {
        acme = acme.client_tls_config(client_config_trusting(ca)?);
    }
    let state =
        acme.cache(rustls_acme::caches::DirCache::new(config.data_dir.join("acme"))).state();
    let resolver = state.resolver();
    tokio::spawn(drive_acme(state, shutdown));
    Ok(resolver)
}

/// A TLS client configuration that trusts only the roots in a PEM file.
fn client_config_trusting(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let file_err = |message: String| TlsError::File { path: ca.into(), message };
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(e.to_string()))? {
        roots
            .add(der.map_err(|e| file_err(e.to_string()))?)
            .map_err(|e| file_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(file_err("no CERTIFICATE in the file".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Polls the ACME state machine (orders, renewals, cache writes) until `shutdown`, logging what
/// it does; errors are retried by the state machine itself, with its own backoff.
async fn drive_acme<EC, EA>(
    mut state: rustls_acme::AcmeState<EC, EA>,
    mut shutdown: watch::Receiver<bool>,
) where
    EC: std::fmt::Debug + std::fmt::Display + 'static,
    EA: std::fmt::Debug + std::fmt::Display + 'static,
{
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            event = state.next() => match event {
                Some(Ok(ok)) => tracing::info!(event = ?ok, "ACME"),
                Some(Err(e)) => tracing::error!("ACME: {e}"),
                None => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// A TLS server configuration over a certificate resolver, offering `alpn` (or HTTP/1.1).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Option<&[&[u8]]>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.unwrap_or(ALPN).iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.cert.pem()).expect("write cert");
        std::fs::write(&k, cert.signing_key.serialize_pem()).expect("write key");
        (c, k)
    }

    fn served_name(r: &ReloadingCert) -> Vec<u8> {
        let current = r.current.read().expect("lock").clone();
        current.cert[0].as_ref().to_vec()
    }

    #[test]
    fn a_pair_loads_and_a_bad_reload_keeps_the_old_certificate() {
        let dir = std::env::temp_dir().join(format!("townhall-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (c1, k1) = write_pair(&dir, "one.test");
        let r = ReloadingCert::load(&c1, &k1).expect("load");
        let first = served_name(&r);
        // A half-written file: the old certificate stays.
        std::fs::write(&c1, "-----BEGIN CERTIFICATE-----\nAAAA").expect("truncate");
        assert!(r.reload().is_err());
        assert_eq!(served_name(&r), first);
        // A new pair in place: served from now on.
        let (c2, k2) = write_pair(&dir, "two.test");
        std::fs::copy(&c2, &c1).expect("copy cert");
        std::fs::copy(&k2, &k1).expect("copy key");
        r.reload().expect("reload");
        assert_ne!(served_name(&r), first);
        // A key that is not the certificate's.
        let (_, k3) = write_pair(&dir, "three.test");
        assert!(matches!(load_pair(&c2, &k3), Err(TlsError::Key { .. })));
        assert!(matches!(load_pair(&dir.join("none.crt"), &k3), Err(TlsError::File { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
