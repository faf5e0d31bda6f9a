//! `timeouts.body_read` is a stream idle timeout: a client that has sent
//! its message and keeps its request body open while the endpoint streams
//! its answer (gRPC bidirectional streams, watches) is not cut, over an h2c
//! pool and over HTTP/1.1 alike; once neither direction moves any bytes for
//! the timeout, the stream is cut.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use common::{simple_config, start};

/// The read timeout under test; the streams below last three times longer.
const BODY_READ: &str = "1s";

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Http1,
    H2c,
}

/// What the backend streams: `frames` messages, one every `gap`.
#[derive(Clone, Copy)]
struct Script {
    frames: usize,
    gap: Duration,
}

fn message(i: usize) -> String {
    format!("msg-{i:02};")
}

/// A backend (HTTP/1.1 or h2c only) that reads the first frame of each
/// request body, never more, answers at once, and streams the script's
/// messages; the request body is held open until the response ends.
async fn streaming_backend(proto: Proto, script: Script) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let mut body = req.into_body();
                    let _first = body.frame().await;
                    let stream =
                        futures_util::stream::unfold((0, body), move |(i, body)| async move {
                            if i == script.frames {
                                return None;
                            }
                            tokio::time::sleep(script.gap).await;
                            let frame = Frame::data(Bytes::from(message(i)));
                            Some((Ok::<_, Infallible>(frame), (i + 1, body)))
                        });
                    Ok::<_, Infallible>(Response::new(StreamBody::new(Box::pin(stream))))
                });
                let io = TokioIo::new(tcp);
                let _ = match proto {
                    Proto::Http1 => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                    }
                    Proto::H2c => {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    }
                };
            });
        }
    });
    addr
}

type OpenBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// What the client saw of its streamed exchange.
struct Seen {
    status: StatusCode,
    data: Vec<u8>,
    /// The response body's error, if it did not end cleanly.
    error: Option<String>,
    /// When the response body ended (cleanly or not), from the request.
    ended: Duration,
}

/// Sends one request whose body is a single frame and then stays open
/// (its sender is held until the response is over), and reads the
/// streamed response to its end, within 10 s.
async fn open_stream(proto: Proto, weir: SocketAddr) -> Seen {
    let tcp = TcpStream::connect(weir).await.unwrap();
    let io = TokioIo::new(tcp);
    let (tx, rx) = mpsc::channel(4);
    tx.send(Ok(Frame::data(Bytes::from_static(b"watch me"))))
        .await
        .unwrap();
    let body: OpenBody = StreamBody::new(ReceiverStream::new(rx));
    let started = Instant::now();
    let res = match proto {
        Proto::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let req = Request::post("/watch")
                .header("host", "streams")
                .header("transfer-encoding", "chunked")
                .body(body)
                .unwrap();
            send.send_request(req).await.unwrap()
        }
        Proto::H2c => {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::post(format!("http://{weir}/watch"))
                .body(body)
                .unwrap();
            send.send_request(req).await.unwrap()
        }
    };
    let status = res.status();
    let mut body = res.into_body();
    let deadline = started + Duration::from_secs(10);
    let mut data = Vec::new();
    let error = loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => break Some("no end within 10 s".to_owned()),
            Ok(None) => break None,
            Ok(Some(Err(e))) => break Some(format!("{e:?}")),
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    data.extend_from_slice(d);
                }
            }
        }
    };
    let ended = started.elapsed();
    drop(tx);
    Seen {
        status,
        data,
        error,
        ended,
    }
}

async fn weir_for(proto: Proto, backend: SocketAddr) -> weir::Weir {
    let pool = match proto {
        Proto::Http1 => "",
        Proto::H2c => "    protocol: h2c\n",
    };
    let yaml = format!(
        "timeouts:\n  body_read: {BODY_READ}\n{}",
        simple_config(&[backend], pool)
    );
    start(&yaml).await
}

/// 15 messages 200 ms apart outlast the 1 s read timeout threefold while
/// the client's body stays quiet: all of them arrive, and the stream ends
/// cleanly.
async fn stream_lives_while_the_response_moves(proto: Proto) {
    let script = Script {
        frames: 15,
        gap: Duration::from_millis(200),
    };
    let weir = weir_for(proto, streaming_backend(proto, script).await).await;
    let seen = open_stream(proto, weir.listener_addr("main").unwrap()).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.error, None, "stream cut after {:?}", seen.ended);
    let want: String = (0..script.frames).map(message).collect();
    assert_eq!(String::from_utf8_lossy(&seen.data), want);
    assert!(
        seen.ended >= Duration::from_millis(2800),
        "{:?}",
        seen.ended
    );
    weir.shutdown().await;
}

/// The backend answers its head, then is silent for 3 s; the client sends
/// nothing after its first frame: the stream is cut about 1 s in, before
/// the backend's message.
async fn stream_is_cut_once_neither_direction_moves(proto: Proto) {
    let script = Script {
        frames: 1,
        gap: Duration::from_secs(3),
    };
    let weir = weir_for(proto, streaming_backend(proto, script).await).await;
    let seen = open_stream(proto, weir.listener_addr("main").unwrap()).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.error.is_some(), "an idle stream ended cleanly");
    assert!(
        seen.data.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&seen.data)
    );
    assert!(
        seen.ended >= Duration::from_millis(900) && seen.ended < Duration::from_millis(2500),
        "cut after {:?}",
        seen.ended
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn h2c_stream_with_a_quiet_request_body_lives_while_the_response_moves() {
    stream_lives_while_the_response_moves(Proto::H2c).await;
}

#[tokio::test]
async fn h2c_stream_is_reset_once_neither_direction_moves() {
    stream_is_cut_once_neither_direction_moves(Proto::H2c).await;
}

#[tokio::test]
async fn http1_stream_with_a_quiet_request_body_lives_while_the_response_moves() {
    stream_lives_while_the_response_moves(Proto::Http1).await;
}

#[tokio::test]
async fn http1_stream_is_cut_once_neither_direction_moves() {
    stream_is_cut_once_neither_direction_moves(Proto::Http1).await;
}
