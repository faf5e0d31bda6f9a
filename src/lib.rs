//! weir: a Layer-7 load-balancing reverse proxy.
//!
//! weir accepts HTTP/1.1 and HTTP/2 (h2c, or over TLS) from clients, routes each request
//! by host and path to a pool of upstream endpoints, picks one endpoint with
//! the pool's selector, and streams the request and response through pooled
//! keep-alive connections.
//!
//! # Layers
//!
//! The top-level modules form layers. A module uses only modules of its own
//! layer or below, and no two modules depend on each other, directly or
//! through others; `tests/layers.rs` reads every `crate::` path in `src/`
//! and fails on an upward import or a cycle. Bottom first:
//!
//! ```text
//!  app, demo                    wiring and shutdown order; the demo backends    (2)
//!  reload, admin                control plane: the only writers of shared state  (2)
//!  server                       traffic listeners: accept, TLS handshake,
//!                               protocol choice, connection drivers              (1)
//!  proxy                        one request: route → admit → forward → respond   (1)
//!  upstream, discovery,         pools, endpoints, upstream connections and the
//!  probe, middleware,           request body; what writes endpoint sets (registry
//!  snapshot                     sources) and active health; route middleware
//!                               (auth, rate limits, rewrites); the state requests
//!                               read                                             (5)
//!  metrics, error, routing,     metric handles; ProxyError → status (one place);
//!  limits                       host/path table; client and pool limits          (4)
//!  config                       validated, immutable; plain data and TLS material (1)
//!  tls, balance, retry, health, leaves: PEM/rustls configs and MaybeTls; pure
//!  http1                        selectors; retry rules and budget; health state,
//!                               rise/fall tracker and passive ejection; the
//!                               sans-IO HTTP/1.1 codec                           (5)
//! ```
//!
//! Pure code, with no IO and `now` passed in as a `tokio::time::Instant`
//! value (so tests drive it with a paused clock): `balance`, `routing`,
//! `retry`, `health`, and the decision functions of `proxy`
//! ([`retry::decide_retry`]). `std::time::Instant` is banned by clippy's
//! `disallowed-types`: all time is tokio's.
//!
//! # One request
//!
//! ```text
//!  client ──TCP──► server::serve (accept loop, one task per connection)
//!                    │  TLS handshake (server::tls) on TLS listeners
//!                    │  first bytes peeked (TLS: ALPN) → HTTP/1.1 or HTTP/2
//!                    │  HTTP/1.1: server::http1, weir's own driver on the sans-IO
//!                    │    http1 codec (no buffer while idle; head read with
//!                    │    header_read from its first byte; body through a
//!                    │    demand-driven upstream::pipe); HTTP/2: hyper
//!                    ▼
//!                 proxy::handle
//!                 (an HTTP/1.1 request's fields arrive as http1::RawFields, the
//!                  lines as received; its HeaderMap holds only what weir adds)
//!                    1 prepare: limits::check_head (414/413), the host (400 if
//!                      invalid), Shared::snapshot() → routing::RoutingTable::resolve
//!                      → Arc<Pool> and the route's middleware::Chain (guard
//!                      dropped before any await); the chain, if any, runs
//!                      (boxed): each step lets the request on, changed, or
//!                      answers it (error::Refusal → 401/403/429/30x/503),
//!                      Pool::admit → Lease (circuit breaker, pool slots,
//!                      balance::Selector, in_flight += 1), upstream::headers rewrite (lines dropped
//!                      in place, weir's fields into the map), replay buffer
//!                    2 attempts: upstream ConnPool::send within connect and
//!                      response-header timeouts — http1 pools: upstream::h1, weir's
//!                      own client in the same task (the client's lines as they
//!                      came, then the map's; response head checked by the codec
//!                      and kept as RawFields in the body); h2c pools: hyper,
//!                      with a map built from the lines — then health::passive::record;
//!                      retry::decide_retry → another endpoint, or the outcome stands
//!                    3 respond: response head rewritten (an HTTP/2 client gets a
//!                      map built from the endpoint's lines); 101 → proxy::Tunnel for
//!                      the driver; else upstream::body::ResponseBody streams back
//!                      and, at its end, drops the lease, returns the connection
//!                      to the idle pool, and writes the access-log line and metrics
//!  errors: error::ProxyError::status() — 400/408/413/414/431/501/505 client faults,
//!          404 no route, a middleware's Refusal (its own status), 503 no
//!          endpoint, pool full or circuit open, 502 connect/protocol
//!          failure (an endpoint's malformed response included), 504 timeout
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
//! - `reload::Control::apply` is the one transaction that binds new
//!   listeners, builds the next snapshot (reusing unchanged pools and
//!   backends), swaps it in, and restarts pool tasks. **Startup is its
//!   first call**, from the empty snapshot (version 0, no listeners, routes
//!   or pools); `reload::watch` (file watcher, SIGHUP, `POST /reload`)
//!   makes every later one;
//! - per pool, `discovery::drive` merges registry answers into the pool's
//!   backend set, and `probe::run` probes endpoints and flips their
//!   `HealthCell`;
//! - `admin` serves `/metrics` (with state gauges computed from the live
//!   snapshot at scrape time), `/status`, `/readyz` and `/reload`;
//! - `app` wires it together and shuts down in order.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod health;
pub mod http1;
pub mod limits;
pub mod metrics;
pub mod middleware;
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
