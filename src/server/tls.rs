//! The TLS handshake on an accepted connection, and the per-listener TLS
//! state a reload swaps in place (see `crate::tls::listener`).

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::TlsMetrics;
use crate::tls::listener::{failure_reason, FAILURE_TIMEOUT, HANDSHAKE_FAILURE_REASONS};

/// What a running TLS listener reads per connection.
#[derive(Debug)]
pub struct TlsRuntime {
    /// The rustls config for new handshakes.
    pub config: Arc<rustls::ServerConfig>,
    /// Time a client has to finish the handshake.
    pub handshake_timeout: Duration,
    /// Handshake counters of the listener.
    pub metrics: TlsMetrics,
}

/// A listener's current TLS settings (`None`: cleartext), swapped in place
/// by a reload.
pub type TlsSlot = Arc<arc_swap::ArcSwapOption<TlsRuntime>>;

/// Server-side handshake on an accepted connection, bounded by the
/// handshake timeout. Failures are counted by reason and logged at debug
/// level only: scanners and health checkers that open and close TCP
/// connections would otherwise flood the log.
pub async fn handshake(
    tls: &TlsRuntime,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
    match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            tls.metrics.handshakes.inc();
            Some(s)
        }
        Ok(Err(e)) => {
            let reason = failure_reason(&e);
            tls.metrics.failure(reason);
            tracing::debug!(
                %peer,
                reason = HANDSHAKE_FAILURE_REASONS.get(reason).copied().unwrap_or("other"),
                error = %e,
                "TLS handshake failed"
            );
            None
        }
        Err(_) => {
            tls.metrics.failure(FAILURE_TIMEOUT);
            tracing::debug!(%peer, timeout = ?tls.handshake_timeout, "TLS handshake timed out");
            None
        }
    }
}
