//! Protocols beyond plain request/response: WebSocket upgrades through an
//! HTTP/1.1 pool, and gRPC (unary and server-streaming, with trailers)
//! through an h2c pool, using real tungstenite and tonic peers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::result_large_err
)]

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::*;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_upgrade_passes_through_and_echoes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let be = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });
    let weir = start(&simple_config(&[be], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let (mut ws, res) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    // The tunnel counts as in flight until it closes.
    let snap = weir.shared().snapshot_full();
    let backend = snap.pools[0].backends().backends()[0].clone();
    assert_eq!(backend.in_flight(), 1);
    ws.close(None).await.unwrap();
    drop(ws);
    assert!(
        eventually(std::time::Duration::from_secs(5), || backend.in_flight()
            == 0)
        .await
    );
}

// ---- gRPC: a hand-written service (no protoc needed) ----

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    n: u32,
}

#[derive(Clone)]
struct Echo;

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

struct Unary;
impl tonic::server::UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<Msg>, tonic::Status>> + Send>,
    >;
    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner();
            Ok(tonic::Response::new(Msg {
                text: m.text.to_uppercase(),
                n: m.n + 1,
            }))
        })
    }
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, tonic::Status>> + Send>>;
struct Streaming;
impl tonic::server::ServerStreamingService<Msg> for Streaming {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<MsgStream>, tonic::Status>>
                + Send,
        >,
    >;
    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner();
            // `n` messages, then a NOT_FOUND status in the trailers, so the
            // client can only see it if trailers survive the proxy.
            let n = m.n;
            let items = (0..n)
                .map(move |i| {
                    Ok(Msg {
                        text: format!("{}-{i}", m.text),
                        n: i,
                    })
                })
                .chain(std::iter::once(Err(tonic::Status::not_found(
                    "end of test stream",
                ))));
            let s: MsgStream = Box::pin(futures_util::stream::iter(items));
            Ok(tonic::Response::new(s))
        })
    }
}

impl tower_service::Service<http::Request<tonic::body::BoxBody>> for Echo {
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::BoxBody>) -> Self::Future {
        Box::pin(async move {
            let codec = tonic::codec::ProstCodec::<Msg, Msg>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            let res = match req.uri().path() {
                "/test.Echo/Unary" => grpc.unary(Unary, req).await,
                "/test.Echo/Stream" => grpc.server_streaming(Streaming, req).await,
                _ => tonic::Status::unimplemented("no such method").into_http(),
            };
            Ok(res)
        })
    }
}

#[tokio::test]
async fn grpc_unary_and_streaming_pass_through_an_h2c_pool_with_trailers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let be = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Echo)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let weir = start(&simple_config(&[be], "    protocol: h2c\n")).await;
    let addr = weir.listener_addr("main").unwrap();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);

    client.ready().await.unwrap();
    let res = client
        .unary(
            tonic::Request::new(Msg {
                text: "ping".into(),
                n: 41,
            }),
            http::uri::PathAndQuery::from_static("/test.Echo/Unary"),
            tonic::codec::ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        res.into_inner(),
        Msg {
            text: "PING".into(),
            n: 42
        }
    );

    client.ready().await.unwrap();
    let res = client
        .server_streaming(
            tonic::Request::new(Msg {
                text: "s".into(),
                n: 3,
            }),
            http::uri::PathAndQuery::from_static("/test.Echo/Stream"),
            tonic::codec::ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap();
    let mut stream = res.into_inner();
    for i in 0..3 {
        let m = stream.message().await.unwrap().unwrap();
        assert_eq!(
            m,
            Msg {
                text: format!("s-{i}"),
                n: i
            }
        );
    }
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "end of test stream");
}
