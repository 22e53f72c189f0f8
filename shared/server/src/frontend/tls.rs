//! TLS on a frontend's client port (`tls.cert`, `tls.key`): every connection is TLS, then
//! sniffed like a plain one, so wss and TLS over raw TCP share the port.

use std::sync::Arc;

use anyhow::Context as _;
use shaddock_config::TlsOptions;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The acceptor of `opts`; `None` when no certificate is configured.
pub fn acceptor(opts: &TlsOptions) -> anyhow::Result<Option<TlsAcceptor>> {
    match (opts.cert.as_str(), opts.key.as_str()) {
        ("", "") => Ok(None),
        ("", _) | (_, "") => anyhow::bail!("tls.cert and tls.key go together: set both or neither"),
        (cert, key) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading tls.cert {cert}"))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing tls.cert {cert}"))?;
            anyhow::ensure!(!certs.is_empty(), "tls.cert {cert} holds no certificate");
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading tls.key {key}"))?;
            let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .context("tls.cert and tls.key do not make a certificate")?;
            tracing::info!(%cert, "TLS on the client port (wss, TLS over TCP)");
            Ok(Some(TlsAcceptor::from(Arc::new(config))))
        }
    }
}
