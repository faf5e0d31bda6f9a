//! `weir demo`: three local backends with weir in front, zero setup.
//!
//! The backends are tiny hyper servers on loopback ephemeral ports that
//! answer every request with their name, the method and the path, so
//! repeated `curl`s show the round robin at work. The config is built as
//! YAML text and loaded through [`Config::from_yaml`], the same path a real
//! config file takes.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};

/// Starts a demo backend named `name` on `127.0.0.1:0` and returns its
/// address. It runs until the runtime shuts down.
pub async fn spawn_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let body =
                        format!("hello from {name}: {} {}\n", req.method(), req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo's config: one listener on `listen`, the admin API on `admin`,
/// one round-robin pool over `backends`.
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &[SocketAddr],
) -> Result<Config, ConfigError> {
    let endpoints: String = backends
        .iter()
        .map(|b| format!("      - address: \"{b}\"\n"))
        .collect();
    let yaml = format!(
        "listeners:\n  - name: demo\n    bind: \"{listen}\"\n\
         admin:\n  bind: \"{admin}\"\n\
         routes:\n  - name: all\n    path_prefix: /\n    pool: demo\n\
         pools:\n  - name: demo\n    balance: round_robin\n    endpoints:\n{endpoints}"
    );
    Config::from_yaml(&yaml, "<demo>")
}
