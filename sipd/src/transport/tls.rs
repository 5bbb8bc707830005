//! SIP over TLS: the handshakes in front of the stream connection tasks of `tcp.rs`.
//!
//! An accepted connection has passed the same checks as a TCP one (fd reserve, firewall,
//! total and per-source caps: it holds its slot from accept) and then has
//! [`TlsSettings::handshake_timeout`] to finish the handshake; only then does the
//! first-message deadline start. An outbound one verifies the peer's certificate against
//! the configured roots and the name [`TlsSettings::names`] gives for its address; a
//! handshake that fails (an unknown CA, a wrong name) fails every send queued on it, so the
//! call fails over as for a refused TCP connect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tcp::{Ends, fail_connect, run_conn};
use super::{Counters, NewConn, Shared};

/// The name to verify an upstream's certificate against, by the address we connect to
/// (None: the address itself, which the certificate must then carry as an IP SAN).
pub type TlsNames = Arc<dyn Fn(SocketAddr) -> Option<String> + Send + Sync>;

/// What SIP over TLS needs beyond TCP: the server side (certificate, client verification)
/// and the client side (roots, names), and the handshake deadline.
#[derive(Clone)]
pub struct TlsSettings {
    /// Accepts inbound handshakes (our certificate, TLS 1.2+).
    pub acceptor: TlsAcceptor,
    /// Opens outbound ones (verifying against the configured roots, TLS 1.2+).
    pub connector: TlsConnector,
    /// An accepted connection must finish its handshake within this, or it is closed.
    pub handshake_timeout: Duration,
    /// The name each upstream address's certificate must carry.
    pub names: TlsNames,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Runs an accepted connection's handshake within the deadline, then the connection.
pub(super) async fn accept(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    conn: NewConn,
    stream: TcpStream,
    mut ends: Ends,
) {
    let Some(deadline) = shared.tls.as_ref().map(|t| t.handshake_timeout) else {
        shared.unregister(conn.id);
        return;
    };
    let remote = ends.remote;
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            Counters::inc(&shared.counters.tls_handshakes);
            // rustls verified the chain against `[sip] tls_client_roots` (a certificate that
            // does not chain failed the handshake), so its names can be trusted.
            ends.client_names = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(client_names)
                .unwrap_or_default()
                .into();
            tracing::debug!(%remote, conn = conn.id, client = ?ends.client_names, "tls handshake done");
            run_conn(shared, conn, tls, ends, true).await;
        }
        Ok(Err(e)) => {
            Counters::inc(&shared.counters.tls_handshake_failures);
            tracing::debug!(%remote, conn = conn.id, error = %e, "tls handshake failed");
            shared.unregister(conn.id);
        }
        Err(_) => {
            Counters::inc(&shared.counters.tls_handshake_timeouts);
            tracing::debug!(%remote, conn = conn.id, "tls handshake not done in time");
            shared.unregister(conn.id);
        }
    }
}

/// The DNS names (SAN) of a verified client certificate; none when it cannot be read.
fn client_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(c) => c.valid_dns_names().map(str::to_owned).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "client certificate names unreadable");
            Vec::new()
        }
    }
}

/// Runs an outbound connection's handshake (within the connect timeout), verifying the
/// upstream's certificate, then the connection.
pub(super) async fn connect(shared: Arc<Shared>, conn: NewConn, stream: TcpStream, ends: Ends) {
    let remote = ends.remote;
    let Some(tls) = shared.tls.clone() else {
        let error = format!("tls {remote}: SIP over TLS is not configured ([sip] tls)");
        return fail_connect(&shared, conn, remote, ends.proto, error);
    };
    let name = (tls.names)(remote).unwrap_or_else(|| remote.ip().to_string());
    let server_name = match ServerName::try_from(name.clone()) {
        Ok(n) => n,
        Err(e) => {
            let error = format!("tls {remote}: {name:?} is not a valid server name: {e}");
            return fail_connect(&shared, conn, remote, ends.proto, error);
        }
    };
    let timeout = shared.limits.connect_timeout;
    let error =
        match tokio::time::timeout(timeout, tls.connector.connect(server_name, stream)).await {
            Ok(Ok(s)) => {
                Counters::inc(&shared.counters.tls_connected);
                tracing::debug!(%remote, conn = conn.id, %name, "tls connected");
                run_conn(shared, conn, s, ends, false).await;
                return;
            }
            Ok(Err(e)) => format!("tls {remote} (as {name}): {e}"),
            Err(_) => format!("tls {remote} (as {name}): handshake not done in {timeout:?}"),
        };
    Counters::inc(&shared.counters.tls_upstream_refused);
    // Warn: an upstream whose certificate we refuse is a misconfiguration (or an attack)
    // an operator must hear about; it happens once per connection attempt, not per packet.
    tracing::warn!(%remote, %error, "SIP over TLS to an upstream refused; the call fails over");
    fail_connect(&shared, conn, remote, ends.proto, error);
}
