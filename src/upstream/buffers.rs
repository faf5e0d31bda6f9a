//! Per-worker pools of connection buffers, so an idle connection holds none.
//! Both sides take from them: the client connection driver
//! (`crate::server::http1`) and the endpoint client ([`super::h1`]).
//!
//! An HTTP/1.1 keep-alive connection between requests owns no read or
//! write buffer: it waits for readability, takes a buffer here, reads,
//! and gives it back once nothing is in flight (nginx frees its buffers in
//! `ngx_http_set_keepalive` the same way). The pools are thread-local, one
//! per tokio worker, so taking and giving is a `Vec` push/pop with no
//! atomics; each holds at most [`MAX_POOLED`] buffers, so a burst of
//! connections that went idle leaves little behind.
//!
//! A read buffer comes back only once no request still shares its memory
//! (zero-copy header values and body chunks are slices of it):
//! `BytesMut::try_reclaim` tells without allocating.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size a read buffer starts at (nginx's `client_header_buffer_size`
/// is 1 KiB); heads and body reads grow it as needed (up to the head
/// limit). Small, because a burst of requests in flight allocates one per
/// request and the allocator keeps what the burst freed.
pub const BUF_SIZE: usize = 2048;

/// The size a write buffer starts at: a response head and a small body.
const WRITE_SIZE: usize = 1024;

/// The most buffers a worker keeps for reuse, per kind.
pub const MAX_POOLED: usize = 64;

/// A write buffer larger than this is freed rather than kept.
const MAX_KEPT_WRITE: usize = 16 * 1024;

thread_local! {
    static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer: empty, with at least [`BUF_SIZE`] bytes of room.
pub fn take_read() -> BytesMut {
    READ.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(BUF_SIZE))
}

/// Gives back a read buffer that holds no unread bytes. One whose memory is
/// still shared with a request, or that grew past [`BUF_SIZE`]'s range, is
/// simply dropped.
pub fn give_read(mut buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() > MAX_KEPT_WRITE {
        return;
    }
    if !buf.try_reclaim(BUF_SIZE) {
        return;
    }
    READ.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < MAX_POOLED {
            p.push(buf);
        }
    });
}

/// An empty write buffer.
pub fn take_write() -> Vec<u8> {
    WRITE
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(WRITE_SIZE))
}

/// Gives back a write buffer (its contents are discarded).
pub fn give_write(mut buf: Vec<u8>) {
    if buf.capacity() > MAX_KEPT_WRITE {
        return;
    }
    buf.clear();
    WRITE.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < MAX_POOLED {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_once_no_request_shares_them() {
        let mut buf = take_read();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(buf.len()).freeze();
        let ptr = head.as_ptr();
        // Still shared with the head: not pooled.
        give_read(buf);
        let again = take_read();
        assert_ne!(again.as_ptr(), ptr);
        drop(head);
        give_read(again);
        let mut third = take_read();
        assert!(third.capacity() >= BUF_SIZE);
        third.extend_from_slice(b"x");
        // A buffer with unread bytes is never pooled.
        give_read(third);
    }

    #[test]
    fn write_buffers_come_back_empty_and_big_ones_are_freed() {
        let mut w = take_write();
        w.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let ptr = w.as_ptr();
        give_write(w);
        let w = take_write();
        assert!(w.is_empty());
        assert_eq!(w.as_ptr(), ptr);
        let pooled = || WRITE.with(|p| p.borrow().len());
        let before = pooled();
        let mut big = Vec::with_capacity(MAX_KEPT_WRITE * 2);
        big.push(1);
        give_write(big);
        assert_eq!(pooled(), before);
        give_write(w);
        assert_eq!(pooled(), before + 1);
    }
}
