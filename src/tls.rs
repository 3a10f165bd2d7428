//! STARTTLS server configuration from PEM files, via rustls.
//!
//! Loaded at start and again on SIGHUP; sessions pick up the current
//! configuration at each STARTTLS, so a renewed certificate needs no restart
//! and no connection is dropped.

use std::path::Path;
use std::sync::Arc;

/// Builds a rustls server configuration from a PEM certificate chain and key.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = {
        let data = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        rustls_pemfile::certs(&mut data.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: bad PEM: {e}", cert.display()))?
    };
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let key_der = {
        let data = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
        rustls_pemfile::private_key(&mut data.as_slice())
            .map_err(|e| format!("{}: bad PEM: {e}", key.display()))?
            .ok_or_else(|| format!("{}: no private key found", key.display()))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(config))
}

/// The protocol name for a Received header and logs (`TLSv1.3`).
pub fn version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}
