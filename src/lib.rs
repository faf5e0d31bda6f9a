//! weir: a Layer-7 load-balancing reverse proxy.
//!
//! weir accepts HTTP/1.1 and HTTP/2 (h2c, or over TLS) from clients, routes each request
//! by host and path to a pool of upstream endpoints, picks one endpoint with
//! the pool's selector, and streams the request and response through pooled
//! keep-alive connections.
//!
//! # One request
//!
//! ```text
//!  client ──TCP──► server::serve (accept loop, one task per connection)
//!                    │  TLS handshake (server::tls) on TLS listeners
//!                    │  hyper-util auto builder: HTTP/1.1 + upgrades, HTTP/2
//!                    ▼
//!                 proxy::handle
//!                    1 Shared::snapshot()  ── ArcSwap load, guard dropped before any await
//!                    2 routing::RoutingTable::resolve(host, path) → Arc<Pool>
//!                    3 Pool::pick(now) → Lease      (balance::Selector, in_flight += 1)
//!                    4 upstream::headers: hop-by-hop, X-Forwarded-*, X-Request-Id, Via
//!                    5 upstream ConnPool::send      (connect / response-header timeouts)
//!                    6 body::ResponseBody streams back; at its end the lease drops
//!                      (in_flight -= 1), the connection returns to the idle pool and
//!                      the access-log line is written
//!  limits: limits::check_head (414/413), limits::admit (pool slots, 503)
//!  errors: error::ProxyError::status() — 404 no route, 503 no endpoint,
//!          502 connect/protocol failure, 504 timeout
//! ```
//!
//! # Planes
//!
//! The request path (`server → proxy → routing → upstream → balance`) only
//! reads shared state. The control plane (`config`, `app`, `reload`, and the
//! background tasks of each pool) builds a new [`snapshot::Snapshot`] and
//! stores it atomically. `balance` and `routing` are pure code, with no IO.

pub mod app;
pub mod balance;
pub mod body;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod retry;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod upstream;

pub use app::{ShutdownReport, StartError, Weir};
pub use config::Config;
pub use reload::{ReloadError, ReloadSummary};
