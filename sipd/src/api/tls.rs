//! The management API's TLS: the shared certificate handling ([`crate::tls`]) with ALPN
//! `http/1.1`.

use std::sync::Arc;

use anyhow::Result;
use rustls::ServerConfig;

pub use crate::tls::{MANAGEMENT, Resolver, TlsState};

/// The API's rustls config: [`crate::tls::server_config`] with ALPN `http/1.1`.
pub fn server_config(resolver: Arc<Resolver>) -> Result<ServerConfig> {
    let mut cfg = crate::tls::server_config(resolver)?;
    // acme-tls/1 is only ever chosen by an ACME validator (it offers nothing else), and is
    // answered by the challenge certificate (see crate::tls::Resolver).
    cfg.alpn_protocols = vec![b"http/1.1".to_vec(), crate::tls::ACME_TLS_ALPN.to_vec()];
    Ok(cfg)
}
