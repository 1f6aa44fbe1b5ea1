//! The one TLS client configuration of keel's outgoing HTTP (model
//! providers, plugin downloads, OTLP export, the CLI talking to `keel
//! serve`): rustls with the ring provider and the Web PKI roots. reqwest is
//! built without a default crypto provider, so every client gets this
//! (plain-HTTP clients too: the builder wants one).

use std::sync::Arc;

use tokio_rustls::rustls;

/// Web PKI roots with the ring provider; the error says what failed.
pub fn client_config() -> Result<rustls::ClientConfig, String> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
