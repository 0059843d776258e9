//! A client connection: plain TCP, or TLS over it when the target speaks TLS.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection to a target: the same reads and writes whether or not it is encrypted.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: its state is large, and most connections are plain).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why a TLS client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    /// The CA file could not be read or holds no certificate.
    #[error("CA certificates {path}: {message}")]
    Ca {
        /// The file.
        path: String,
        /// What was wrong with it.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// How a target's TLS is checked: the CAs it trusts. Made once per process and never freed,
/// so that [`Target`](crate::target::Target) stays `Copy`.
#[derive(Clone, Copy)]
pub struct TlsClient {
    config: &'static Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &TlsClient) -> bool {
        std::ptr::eq(self.config, other.config)
    }
}

impl Eq for TlsClient {}

impl TlsClient {
    /// A client that trusts the CA certificates in the PEM file `ca` (and nothing else), and
    /// offers HTTP/1.1 by ALPN. Certificates are checked against the target's IP address.
    pub fn trusting(ca: &Path) -> Result<TlsClient, TlsClientError> {
        let err = |message: String| TlsClientError::Ca { path: ca.display().to_string(), message };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(e.to_string()))? {
            roots.add(cert.map_err(|e| err(e.to_string()))?)?;
        }
        if roots.is_empty() {
            return Err(err("no certificate in the file".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClient { config: Box::leak(Box::new(Arc::new(config))) })
    }

    /// Does the TLS handshake on `stream`, checking the certificate names `ip`.
    pub async fn handshake(&self, ip: IpAddr, stream: TcpStream) -> io::Result<Conn> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls = connector.connect(ServerName::IpAddress(ip.into()), stream).await?;
        Ok(Conn::Tls(Box::new(tls)))
    }
}

impl Conn {
    /// The underlying TCP stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}
