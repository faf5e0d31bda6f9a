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
//!                    │  first bytes peeked (TLS: ALPN) → hyper HTTP/1.1 + upgrades, or HTTP/2
//!                    ▼
//!                 proxy::handle
//!                    1 Shared::snapshot()  ── ArcSwap load, guard dropped before any await
//!                    2 routing::RoutingTable::resolve(host, path) → Arc<Pool>
//!                    3 Pool::pick(now) → Lease      (balance::Selector, in_flight += 1)
//!                    4 upstream::headers: hop-by-hop, X-Forwarded-*, X-Request-Id, Via
//!                    5 upstream ConnPool::send      (connect / TLS / response-header timeouts)
//!                      on failure: health::passive::record (outlier ejection), and
//!                      retry::* decides whether another endpoint may be tried
//!                    6 body::ResponseBody streams back; at its end the lease drops
//!                      (in_flight -= 1), the connection returns to the idle pool and
//!                      the access-log line and metrics are written
//!  limits: limits::check_head (414/413), limits::admit (pool slots, 503)
//!  errors: error::ProxyError::status() — 400/408/413/414 client faults, 404 no route,
//!          503 no endpoint, 502 connect/protocol failure, 504 timeout
//! ```
//!
//! # Planes
//!
//! The request path (`server → proxy → routing → upstream → balance`) only
//! reads shared state: one [`snapshot::Snapshot`] behind an `ArcSwap`, and
//! per-backend atomics (`balance::EndpointLoad`, `health::HealthCell`).
//!
//! The control plane writes it:
//!
//! - `config` parses and validates YAML (and TLS files) into a [`Config`];
//!   startup, `weir check` and every reload use the same code;
//! - `reload` (file watcher, SIGHUP, `POST /reload`) builds a new snapshot,
//!   reusing unchanged pools and backends, and swaps it in; it also owns
//!   listener lifecycles and each pool's background tasks;
//! - per pool, `discovery::drive` merges registry answers into the pool's
//!   backend set, and `health::active` probes endpoints and flips their
//!   `HealthCell`;
//! - `app` wires it together and shuts down in order.
//!
//! `balance`, `routing`, `retry::Budget` and `health::Tracker` are pure code,
//! with no IO, tested and benched alone.

pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod reload;
pub mod retry;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;

pub use app::{ShutdownReport, StartError, Weir};
pub use config::Config;
pub use reload::{ReloadError, ReloadSummary};
