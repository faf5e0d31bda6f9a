//! The client's HTTP/1.1 request body, handed from the connection driver
//! that reads it off the socket to the upstream request that sends it on.
//!
//! A one-frame slot behind a mutex, not a channel: reading is demand-driven
//! (as with hyper's `want`). The driver reads the next body bytes only once
//! the consumer has asked for a frame and the slot is empty, so a slow
//! endpoint pushes back on the client through TCP, no body bytes are
//! buffered beyond the one frame in the slot, and `Expect: 100-continue` is
//! answered only when the body is really wanted (a request refused before
//! its body is read gets its final status without `100 Continue`).
//!
//! Each side wakes the other; the lock is held for a few field updates and
//! never across a wake or an `.await`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::error::ClientBodyError;

/// Creates a connected pair. `hint` is the body's size as its framing
/// declares it (exact for `Content-Length`): the upstream side uses it to
/// choose its own framing.
pub fn pipe(hint: SizeHint) -> (PipeSender, PipeBody) {
    let shared = Arc::new(Shared::default());
    (
        PipeSender {
            shared: Arc::clone(&shared),
            finished: false,
        },
        PipeBody { shared, hint },
    )
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    frame: Option<Result<Frame<Bytes>, ClientBodyError>>,
    /// The consumer is waiting for a frame.
    wanted: bool,
    /// The sender finished (cleanly or not); nothing more will come.
    ended: bool,
    /// The consumer dropped the body.
    consumer_gone: bool,
    consumer: Option<Waker>,
    producer: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere held it; the state
        // is plain data and still consistent enough to wind down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The consumer dropped the body: nothing more should be read for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerGone;

/// The driver's end.
#[derive(Debug)]
pub struct PipeSender {
    shared: Arc<Shared>,
    finished: bool,
}

impl PipeSender {
    /// Ready when the consumer waits for a frame and the slot is empty;
    /// `Err` once the consumer has dropped the body.
    pub fn poll_want(&self, cx: &mut Context<'_>) -> Poll<Result<(), ConsumerGone>> {
        let mut s = self.shared.lock();
        if s.consumer_gone {
            return Poll::Ready(Err(ConsumerGone));
        }
        if s.wanted && s.frame.is_none() {
            return Poll::Ready(Ok(()));
        }
        if !s.producer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.producer = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Puts one frame in the slot (call after `poll_want` said ready).
    pub fn send(&self, frame: Frame<Bytes>) {
        self.put(Ok(frame));
    }

    /// The body ended cleanly.
    pub fn finish(mut self) {
        self.finished = true;
        self.end(None);
    }

    /// The body failed: the consumer gets `err` after any frame in the slot.
    pub fn abort(mut self, err: ClientBodyError) {
        self.finished = true;
        self.end(Some(err));
    }

    fn put(&self, item: Result<Frame<Bytes>, ClientBodyError>) {
        let waker = {
            let mut s = self.shared.lock();
            s.frame = Some(item);
            s.wanted = false;
            s.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn end(&self, err: Option<ClientBodyError>) {
        let waker = {
            let mut s = self.shared.lock();
            s.ended = true;
            if let Some(err) = err {
                // The error takes the slot even over an unread frame: the
                // body fails anyway, and it must never look complete.
                s.frame = Some(Err(err));
            }
            s.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for PipeSender {
    fn drop(&mut self) {
        if !self.finished {
            // The connection went away mid-body.
            self.end(Some(ClientBodyError::Closed));
        }
    }
}

/// The consumer's end: an [`http_body::Body`].
#[derive(Debug)]
pub struct PipeBody {
    shared: Arc<Shared>,
    hint: SizeHint,
}

impl Body for PipeBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let (polled, waker) = {
            let mut s = self.shared.lock();
            if let Some(item) = s.frame.take() {
                (Poll::Ready(Some(item)), None)
            } else if s.ended {
                (Poll::Ready(None), None)
            } else {
                s.wanted = true;
                if !s.consumer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.consumer = Some(cx.waker().clone());
                }
                (Poll::Pending, s.producer.take())
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock();
        s.ended && s.frame.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

impl Drop for PipeBody {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.shared.lock();
            s.consumer_gone = true;
            s.producer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_flow_only_on_demand_and_end_cleanly() {
        let (tx, mut rx) = pipe(SizeHint::with_exact(3));
        // Nobody asked yet: the driver must not read.
        let want = std::future::poll_fn(|cx| Poll::Ready(tx.poll_want(cx))).await;
        assert!(want.is_pending());
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(f) = rx.frame().await {
                got.extend_from_slice(&f.unwrap().into_data().unwrap());
            }
            got
        });
        for part in [&b"a"[..], b"bc"] {
            std::future::poll_fn(|cx| tx.poll_want(cx)).await.unwrap();
            tx.send(Frame::data(Bytes::copy_from_slice(part)));
        }
        std::future::poll_fn(|cx| tx.poll_want(cx)).await.unwrap();
        tx.finish();
        assert_eq!(consumer.await.unwrap(), b"abc");
    }

    #[tokio::test]
    async fn a_dropped_sender_is_an_error_never_a_clean_end() {
        let (tx, mut rx) = pipe(SizeHint::default());
        drop(tx);
        assert!(matches!(
            rx.frame().await,
            Some(Err(ClientBodyError::Closed))
        ));
    }

    #[tokio::test]
    async fn the_sender_learns_the_consumer_is_gone() {
        let (tx, rx) = pipe(SizeHint::default());
        drop(rx);
        let want = std::future::poll_fn(|cx| tx.poll_want(cx)).await;
        assert_eq!(want, Err(ConsumerGone));
    }
}
