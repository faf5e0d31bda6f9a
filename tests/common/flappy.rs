//! A backend that can be stopped and started again on the same port, for
//! fault and soak tests. Stopping closes the listening socket and every
//! open connection, as a crashed process would; starting binds the same
//! address again.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// An echo backend answering with `x-backend: <name>`.
pub struct Flappy {
    pub addr: SocketAddr,
    pub name: &'static str,
    hits: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Flappy {
    /// Starts on an ephemeral loopback port.
    pub async fn start(name: &'static str) -> Flappy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let task = Some(tokio::spawn(serve(listener, name, Arc::clone(&hits))));
        Flappy {
            addr,
            name,
            hits,
            task,
        }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.task.is_some()
    }

    /// Closes the listener and every connection. Aborting the accept task
    /// drops its `JoinSet`, which aborts the connection tasks.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Binds the same address again. `SO_REUSEADDR` lets the port be taken
    /// while connections of the previous life sit in TIME_WAIT.
    pub async fn restart(&mut self) {
        if self.task.is_some() {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            match socket.bind(self.addr).and_then(|()| socket.listen(1024)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot rebind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.task = Some(tokio::spawn(serve(
            listener,
            self.name,
            Arc::clone(&self.hits),
        )));
    }
}

impl Drop for Flappy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve(listener: TcpListener, name: &'static str, hits: Arc<AtomicUsize>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let hits = Arc::clone(&hits);
                conns.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let hits = Arc::clone(&hits);
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            hits.fetch_add(1, Ordering::Relaxed);
                            let mut res = Response::new(Full::new(body));
                            res.headers_mut()
                                .insert("x-backend", http::HeaderValue::from_static(name));
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
